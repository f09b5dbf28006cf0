"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018)
with ECA (Wang et al., CVPR 2020) after the linear projection of every inverted residual block.

The layout and parameter names are the released ECA-Net code's (``models/eca_mobilenetv2.py``, itself
torchvision's MobileNetV2): ``features.0`` stem ConvBNReLU6, ``features.1 .. 17`` inverted residuals
(``conv.{i}``: [1x1 expand ConvBNReLU6], 3x3 depthwise ConvBNReLU6, 1x1 projection, BN, ECA),
``features.18`` the 1x1 ConvBNReLU6 to 1280 channels; only the classifier (``classifier.1`` there,
after a 0.25 dropout) is ``head.fc`` here.

ECA kernel sizes: the released code (and its ``eca_mobilenetv2_k13`` checkpoint) uses ``k = 1`` for
blocks whose output has ``C <= 96`` channels and ``k = 3`` above; ``eca_kernel_sizes="adaptive"``
selects Eq. 12 of the ECA paper per block width instead (see :mod:`.eca`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.eca import EfficientChannelAttention
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import ConvBNAct, make_divisible

# t (expansion), c (output channels), n (blocks), s (stride of the first block): Table 2 of the paper
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """``[1x1 expand BN ReLU6] -> 3x3 depthwise BN ReLU6 -> 1x1 linear projection BN -> [ECA]``, with
    the identity shortcut when the stride is 1 and the width is unchanged."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        expand_ratio: int,
        *,
        eca: bool = True,
        eca_kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        hidden = int(round(in_chs * expand_ratio))
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_chs, hidden, 1, act_layer=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act_layer=nn.ReLU6),
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        if eca:  # kernel_size None: the adaptive size of Eq. 12
            layers.append(EfficientChannelAttention(out_chs, eca_kernel_size))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(VisionBackbone):
    """MobileNetV2 with optional ECA; ``feature_info`` at strides 2, 4, 8, 16, 32 (the last block of
    each resolution, 320 channels at stride 32); ``forward_features`` adds the 1x1 conv to 1280."""

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        width_mult: float = 1.0,
        eca_kernel_sizes: str | None = "official",
        in_chans: int = 3,
        drop_rate: float = 0.25,
    ) -> None:
        super().__init__()
        if eca_kernel_sizes not in (None, "official", "adaptive"):
            raise ConfigError(
                f"eca_kernel_sizes must be 'official', 'adaptive' or None, got {eca_kernel_sizes!r}"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        in_chs = make_divisible(32 * width_mult)
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(in_chans, in_chs, 3, 2, act_layer=nn.ReLU6)]
        self.feature_info = []
        reduction = 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_chs = make_divisible(c * width_mult)
            if s == 2:  # the previous block closed a resolution level
                self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
                reduction *= 2
            # released code: `if c <= 96: ksize = 1 else: ksize = 3`
            k = (1 if c <= 96 else 3) if eca_kernel_sizes == "official" else None
            for i in range(n):
                features.append(
                    InvertedResidual(
                        in_chs,
                        out_chs,
                        s if i == 0 else 1,
                        t,
                        eca=eca_kernel_sizes is not None,
                        eca_kernel_size=k,
                    )
                )
                in_chs = out_chs
        self.feature_info.append(FeatureInfo(in_chs, reduction, f"features.{len(features) - 1}"))
        features.append(ConvBNAct(in_chs, self.num_features, 1, act_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        # the feature levels end after these indices of `features`
        self._level_ends = [int(f.module.split(".")[1]) for f in self.feature_info]
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check_input(x, channels=self.in_chans)
        n = len(self._level_ends)
        wanted = set(range(n)) if indices is None else {i % n for i in indices}
        outs, start = [], 0
        for level, end in enumerate(self._level_ends):
            if level > max(wanted):
                break
            x = checkpoint_seq(self.features[start : end + 1], x, enabled=self.grad_checkpointing)
            start = end + 1
            if level in wanted:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features[-1](self.forward_intermediates(x)[-1])


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Released ECA-MobileNetV2 layout -> ours: ``classifier.1`` (after the dropout) is ``head.fc``."""
    out = {}
    for key, value in state.items():
        if key.startswith("classifier.1."):
            key = "head.fc." + key.removeprefix("classifier.1.")
        out[key] = value
    return out


@register_model(
    paper_params=3.50e6,
    paper_gmacs=0.320,
    paper_top1=72.56,
    test_input_size=32,
    family="eca",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source="https://github.com/BangguWu/ECANet (models/eca_mobilenetv2.py)",
)
def eca_mobilenetv2(num_classes: int = 1000, **kwargs) -> MobileNetV2:
    """ECA-MobileNetV2 (Wang et al., CVPR 2020): MobileNetV2 1.0 with ECA, k = 1 (C <= 96) / 3.

    3,504,897 parameters (the README's "3.34M" is that count / 2^20); 319.9 MFLOPs; 72.56 % top-1.
    """
    return MobileNetV2(num_classes, **kwargs)
