"""ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016): the bottleneck
backbone that ECA-ResNet (:mod:`.eca`) and HaloNet (:mod:`.halonet`) are built on.

Layout and parameter names follow torchvision's ResNet v1.5 (the stride sits on the 3x3 convolution,
as in the ECA-Net code): ``conv1, bn1`` stem + max-pool, ``layer1 .. layer4`` of :class:`Bottleneck`
blocks (``conv1, bn1, conv2, bn2, conv3, bn3, downsample.{0,1}``), so torchvision-layout checkpoints
load after renaming ``fc`` to ``head.fc`` (:func:`checkpoint_filter_fn`). Two hooks make the block
reusable:

* ``spatial_layer`` replaces the 3x3 convolution ``conv2`` (HaloNet puts halo attention there; it may
  change the width, ``mid -> spatial_out_chs``, and carries the block's stride);
* ``channel_attn_layer`` is applied after ``bn3``, before the residual addition (ECA-Net's position).

Eq. (2) of the paper: ``y = F(x, {W_i}) + W_s x`` with ``W_s`` a strided 1x1 convolution + BN where
the shape changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import ConvBNAct, drop_path_rates, init_weights_conv

# (stage index, block index, in channels, stride, drop-path rate) -> block with an ``out_chs`` attribute
BlockFn = Callable[[int, int, int, int, float], nn.Module]


def downsample_shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut ``W_s`` (1x1 conv with stride, BN), or ``None`` for the identity."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


class Bottleneck(nn.Module):
    """``1x1 (in -> mid) BN ReLU -> spatial (mid -> spatial_out, stride) BN ReLU -> 1x1 (-> out) BN
    -> channel attention -> + shortcut -> ReLU``.

    ``spatial_layer(mid_chs, spatial_out_chs, stride)`` builds the spatial mixer (default: the 3x3
    convolution of ResNet); ``channel_attn_layer(out_chs)`` the gate after ``bn3`` (default: none).
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        stride: int = 1,
        *,
        spatial_out_chs: int | None = None,
        spatial_layer: Callable[[int, int, int], nn.Module] | None = None,
        channel_attn_layer: Callable[[int], nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        spatial_out_chs = spatial_out_chs or mid_chs
        self.out_chs = out_chs
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.act1 = nn.ReLU()
        if spatial_layer is None:
            self.conv2: nn.Module = nn.Conv2d(mid_chs, spatial_out_chs, 3, stride, 1, bias=False)
        else:
            self.conv2 = spatial_layer(mid_chs, spatial_out_chs, stride)
        self.bn2 = nn.BatchNorm2d(spatial_out_chs)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(spatial_out_chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.channel_attn = channel_attn_layer(out_chs) if channel_attn_layer is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = downsample_shortcut(in_chs, out_chs, stride)
        self.act3 = nn.ReLU()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero (Goyal et al. 2017), so each block begins as the identity."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.channel_attn(self.bn3(self.conv3(out)))
        return self.act3(self.drop_path(out) + shortcut)


def bottleneck_fn(
    stage_planes: Sequence[int] = (64, 128, 256, 512),
    *,
    expansion: int = 4,
    channel_attn_layers: Sequence[Callable[[int], nn.Module] | None] | None = None,
) -> tuple[BlockFn, list[int]]:
    """The plain ResNet block builder (``planes -> 4 planes``), optionally with a per-stage channel
    attention layer; returns the builder and the stage output widths."""
    out_chs = [p * expansion for p in stage_planes]

    def make(stage: int, index: int, in_chs: int, stride: int, drop_path: float) -> nn.Module:
        attn = channel_attn_layers[stage] if channel_attn_layers is not None else None
        return Bottleneck(
            in_chs, stage_planes[stage], out_chs[stage], stride, channel_attn_layer=attn, drop_path=drop_path
        )

    return make, out_chs


class ResNet(VisionBackbone):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) -> four stages of blocks -> optional 1x1 conv
    (``final_chs``, HaloNet's ``d_f``) -> global average pool -> linear.

    ``block_fn(stage, index, in_chs, stride, drop_path)`` builds every block (its ``out_chs`` gives
    the next block's input); ``stage_chs`` are the stage output widths (for ``feature_info``).
    """

    def __init__(
        self,
        block_fn: BlockFn,
        depths: Sequence[int],
        stage_chs: Sequence[int],
        num_classes: int = 1000,
        *,
        in_chans: int = 3,
        stem_chs: int = 64,
        stage_strides: Sequence[int] = (1, 2, 2, 2),
        final_chs: int | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(stage_chs) != 4 or len(stage_strides) != 4:
            raise ConfigError(f"ResNet needs 4 stages, got depths {tuple(depths)}, widths {tuple(stage_chs)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, stem_chs, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        dpr = drop_path_rates(drop_path_rate, list(depths))
        in_chs, reduction = stem_chs, 4
        self.feature_info = []
        for s, (depth, stride) in enumerate(zip(depths, stage_strides)):
            blocks = []
            for i in range(depth):
                block = block_fn(s, i, in_chs, stride if i == 0 else 1, dpr[s][i])
                blocks.append(block)
                in_chs = block.out_chs
            if in_chs != stage_chs[s]:
                raise ConfigError(f"stage {s} ends with {in_chs} channels, stage_chs says {stage_chs[s]}")
            reduction *= stride
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(in_chs, reduction, f"layer{s + 1}"))
        self.final_conv = ConvBNAct(in_chs, final_chs, 1) if final_chs else None
        self.num_features = final_chs or in_chs
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)

        self.apply(init_weights_conv)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def check(self, x: Tensor) -> None:
        """Input check (subclasses whose windows need a size multiple override it)."""
        self.check_input(x, channels=self.in_chans)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check(x)
        wanted = set(range(4)) if indices is None else {i % 4 for i in indices}
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        outs = []
        for s, stage in enumerate(self.stages):
            if s > max(wanted):
                break
            x = checkpoint_seq(stage, x, enabled=self.grad_checkpointing)
            if s in wanted:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.forward_intermediates(x)[-1]
        return x if self.final_conv is None else self.final_conv(x)


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """torchvision / ECA-Net layout -> ours: the classifier ``fc`` is ``head.fc`` here."""
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            key = "head." + key
        out[key] = value
    return out


@register_model(
    paper_params=25.557e6,
    paper_gmacs=3.86,
    paper_top1=75.20,
    test_input_size=32,
    family="resnet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source="https://github.com/pytorch/vision (torchvision ResNet v1.5)",
)
def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50 (He et al., CVPR 2016), the baseline of ECA-Net's Table 2 (75.20 %, 3.86 GFLOPs).

    Stages (3, 4, 6, 3) of bottlenecks with widths 64..512 and expansion 4; 25,557,032 parameters.
    """
    make, out_chs = bottleneck_fn()
    return ResNet(make, (3, 4, 6, 3), out_chs, num_classes, **kwargs)
