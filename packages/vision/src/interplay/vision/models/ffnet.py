"""FFNet (Yun, Lee and Ro, "MetaMixer Is All You Need", arXiv 2406.02021, 2024; later titled
"FFNet: MetaMixer-based Efficient Convolutional Mixer Design").

FFNification keeps self-attention's query-key-value structure but swaps its sub-operations for an
FFN's: the query-key interaction becomes a large-kernel depth-wise convolution, the softmax a GELU,
the coefficient-value interaction another depth-wise convolution. As released (``models/ffnet.py``)::

    token mixer     x += gamma DW_{k2}(GELU(DW_{k1}(Conv1x1-BN x)))      k1 = k2 = 3, 3, 7, 7
    channel mixer   x += gamma FC2(GELU(FC1_{C -> 3C}(DW_k-BN x)))        k = 3 (FFNet-1), 7 (FFNet-2..4)

Every 7x7 depth-wise convolution is a RepVGG-style pair (7x7-BN + 3x3-BN, summed) during training;
the stem is Conv3x3-BN s2, GELU, Conv3x3-BN s2; patch merging is a (7x7 + 3x3)-BN depth-wise
convolution with stride 2 that doubles the channels (``groups = C_in``) followed by ``x + Conv1x1(BN x)``.
``gamma`` (layer scale, init 1e-6) exists in FFNet-3/4 only. Final BN, average pooling, linear head.

:meth:`FFNet.fuse` re-parameterises for inference (as the released ``replace_batchnorm``): every
Conv-BN pair becomes one convolution with bias, each 7x7 + 3x3 pair one 7x7 convolution, and the
merging layer's ``x + Conv1x1(BN x)`` one 1x1 convolution. The published parameter counts (13.7M,
26.9M, 48.3M, 79.2M) are those of the fused network; the trainable network this module builds has
the BN affine parameters and 3x3 branches on top (the registered ``paper_params`` is that training
form, see the table at :data:`FUSED_PAPER_PARAMS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model

__all__ = [
    "FFNET_CFGS",
    "FUSED_PAPER_PARAMS",
    "BNConv",
    "ChannelMixer",
    "ConvBN",
    "FFBlock",
    "FFNet",
    "PatchMerging",
    "RepDW",
    "TokenMixer",
    "checkpoint_filter_fn",
    "fuse_modules",
    "fusion_overhead",
]


class ConvBN(nn.Sequential):
    """Conv2d (no bias) -> BN, fusable into one convolution (``c`` / ``bn`` as released)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        )
        self.add_module("bn", nn.BatchNorm2d(out_chs))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        c, bn = self.c, self.bn
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        fused = nn.Conv2d(
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups, bias=True
        ).to(c.weight.device, c.weight.dtype)
        fused.weight.copy_(c.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class BNConv(nn.Sequential):
    """BN -> Conv1x1 (no bias); fusable: the BN shift passes through the 1x1 as a bias."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.add_module("bn", nn.BatchNorm2d(in_chs))
        self.add_module("c", nn.Conv2d(in_chs, out_chs, 1, bias=False))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        bn, c = self.bn, self.c
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        shift = bn.bias - bn.running_mean * scale
        fused = nn.Conv2d(c.in_channels, c.out_channels, 1, bias=True).to(c.weight.device, c.weight.dtype)
        fused.weight.copy_(c.weight * scale[None, :, None, None])
        fused.bias.copy_(c.weight[:, :, 0, 0] @ shift)
        return fused


class RepDW(nn.Module):
    """RepVGG-style depth-wise ``ConvBN_k(x) + ConvBN_{k//2}(x)`` (7x7 + 3x3), one ``k x k`` conv once
    fused. ``out_chs`` may be a multiple of ``in_chs`` (``groups = in_chs``), as in patch merging."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 7, stride: int = 1) -> None:
        super().__init__()
        small = kernel_size // 2
        if small % 2 == 0:
            raise ValueError(f"RepDW needs kernel_size // 2 odd (7 -> 3), got {kernel_size}")
        self.conv = ConvBN(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=in_chs)
        self.conv1 = ConvBN(in_chs, out_chs, small, stride, small // 2, groups=in_chs)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + self.conv1(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        big, small = self.conv.fuse(), self.conv1.fuse()
        pad = (big.kernel_size[0] - small.kernel_size[0]) // 2
        big.weight.add_(F.pad(small.weight, [pad] * 4))
        big.bias.add_(small.bias)
        return big


def _dw(dim: int, kernel_size: int, bn: bool) -> nn.Module:
    """Depth-wise conv: RepDW for 7x7, else ConvBN (``bn``) or a plain conv with bias."""
    if kernel_size == 7:
        return RepDW(dim, dim, 7)
    if bn:
        return ConvBN(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)
    return nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)


class TokenMixer(nn.Module):
    """FFNified attention: ``DW_{k2}(GELU(DW_{k1}(Conv1x1-BN x)))``."""

    def __init__(self, dim: int, ks1: int, ks2: int, use_gelu: bool = True) -> None:
        super().__init__()
        self.fc = ConvBN(dim, dim)
        self.conv1 = _dw(dim, ks1, bn=False)
        self.act = nn.GELU() if use_gelu else nn.ReLU()
        self.conv2 = _dw(dim, ks2, bn=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.act(self.conv1(self.fc(x))))


class ChannelMixer(nn.Module):
    """``FC2(GELU(FC1(DW_k-BN x)))``, hidden width ``expansion_ratio * C``."""

    def __init__(self, dim: int, kernel_size: int, expansion_ratio: float, use_gelu: bool = True) -> None:
        super().__init__()
        hidden = int(dim * expansion_ratio)
        self.conv = _dw(dim, kernel_size, bn=True)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU() if use_gelu else nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class Residual(nn.Module):
    """``x + drop_path(gamma * main(x))`` (``gamma`` only with layer scale), as the released
    ``ResidualBlock`` (``main`` / ``layer_scale`` names)."""

    def __init__(
        self, main: nn.Module, dim: int, drop_path: float = 0.0, layer_scale_init_value: float | None = None
    ) -> None:
        super().__init__()
        self.main = main
        self.layer_scale_init_value = layer_scale_init_value
        self.layer_scale = (
            nn.Parameter(torch.full((dim, 1, 1), layer_scale_init_value)) if layer_scale_init_value else None
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        y = self.main(x)
        if self.layer_scale is not None:
            y = y * self.layer_scale
        return x + self.drop_path(y)


class FFBlock(nn.Module):
    """Token mixer then channel mixer, each residual (``token_mixer.0`` keeps the released index; the
    released ``token_mixer.1`` is an optional SE layer that no FFNet variant uses)."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        ks1: int,
        ks2: int,
        expansion_ratio: float = 3.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = None,
        use_gelu: bool = True,
    ) -> None:
        super().__init__()
        self.token_mixer = nn.Sequential(
            Residual(TokenMixer(dim, ks1, ks2, use_gelu), dim, drop_path, layer_scale_init_value)
        )
        self.channel_mixer = Residual(
            ChannelMixer(dim, kernel_size, expansion_ratio, use_gelu), dim, drop_path, layer_scale_init_value
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.channel_mixer(self.token_mixer(x))


class BNConvSkip(nn.Module):
    """``x + Conv1x1(BN x)``; fuses to one 1x1 convolution (identity added to its weight)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = BNConv(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        fused = self.conv.fuse()
        fused.weight[:, :, 0, 0].add_(torch.eye(fused.in_channels, device=fused.weight.device))
        return fused


class PatchMerging(nn.Module):
    """Stride-2 (7x7 + 3x3) depth-wise conv, ``C -> 2C`` with ``groups = C``, then ``x + Conv1x1(BN x)``."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(RepDW(dim, out_dim, 7, 2), BNConvSkip(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def fuse_modules(module: nn.Module) -> None:
    """Replace, recursively and in place, every child that has a ``fuse()`` by what it returns."""
    for name, child in module.named_children():
        if hasattr(child, "fuse") and not isinstance(child, VisionBackbone):
            setattr(module, name, child.fuse())
        else:
            fuse_modules(child)


class FFNet(VisionBackbone):
    """FFNet: stem (stride 4), four stages (patch merging at the start of stages 2-4) of
    :class:`FFBlock`, BN, average pooling, linear head. :meth:`fuse` for inference."""

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 8, 2),
        dims: Sequence[int] = (80, 160, 320, 640),
        in_dim: int = 64,
        kernel_sizes: Sequence[int] = (3, 3, 3, 3),
        kernel_sizes1: Sequence[int] = (3, 3, 7, 7),
        kernel_sizes2: Sequence[int] = (3, 3, 7, 7),
        expansion_ratio: float = 3.0,
        layer_scale_init_value: float | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        # Build on the meta device and initialise once (see hornet.py: the default init of every
        # convolution would be overwritten anyway).
        device = torch.get_default_device()
        with torch.device("meta"):
            self.num_classes = num_classes
            self.num_features = dims[-1]
            self.in_chans = in_chans
            self.patch_embed = nn.Sequential(
                ConvBN(in_chans, in_dim, 3, 2, 1), nn.GELU(), ConvBN(in_dim, dims[0], 3, 2, 1)
            )
            total = sum(depths)
            stages, start = [], 0
            for i, depth in enumerate(depths):
                layers: list[nn.Module] = [PatchMerging(dims[i - 1], dims[i])] if i else []
                for j in range(depth):
                    rate = drop_path_rate * (start + j) / max(total - 1, 1)
                    layers.append(
                        FFBlock(
                            dims[i],
                            kernel_sizes[i],
                            kernel_sizes1[i],
                            kernel_sizes2[i],
                            expansion_ratio,
                            rate,
                            layer_scale_init_value,
                        )
                    )
                stages.append(nn.Sequential(*layers))
                start += depth
            self.stages = nn.ModuleList(stages)
            self.feature_info = [FeatureInfo(dims[i], 4 * 2**i, f"stages.{i}") for i in range(len(depths))]
            self.norm = nn.BatchNorm2d(dims[-1])
            self.head = ClassifierHead(dims[-1], num_classes, pool="avg", drop_rate=drop_rate)
            self.fused = False
        if device.type != "meta":
            self.to_empty(device=device)
            _init_weights(self)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check_input(x, channels=self.in_chans)
        n = len(self.stages)
        wanted = set(range(n) if indices is None else (i % n for i in indices))
        x = self.patch_embed(x)
        outs = []
        for i in range(max(wanted) + 1):
            x = checkpoint_seq(self.stages[i], x, self.grad_checkpointing)
            if i in wanted:
                outs.append(x)
        return outs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.forward_intermediates(x)[-1])

    @torch.no_grad()
    def fuse(self) -> FFNet:
        """Re-parameterise in place for inference (BN folded into the convolutions, 7x7 + 3x3 branches
        merged, merging skip folded); outputs are unchanged in eval mode. Call after training (it uses
        the BN running statistics); the final BN before pooling stays as is. Returns ``self``."""
        fuse_modules(self)
        self.fused = True
        return self.eval()


def _init_weights(model: nn.Module) -> None:
    """Initialise every parameter and buffer (the model may come from ``to_empty``): as released,
    ``trunc_normal_(std=0.02)`` convolutions and linears (bounds +-2 = 100 standard deviations, so
    a plain normal draw), zero biases, BN at identity, layer scales at their initial value. Raises
    if something was left out."""
    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
        elif isinstance(module, Residual) and module.layer_scale is not None:
            module.layer_scale.data.fill_(module.layer_scale_init_value)
        done.update(id(t) for t in module.parameters(recurse=False))
        done.update(id(t) for t in module.buffers(recurse=False))
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if id(t) not in done]
    if missing:
        raise RuntimeError(f"FFNet init left {missing[:5]} uninitialised")


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Released FFNet checkpoints (training form) -> ours: only the classifier moves, ``head.*`` ->
    ``head.fc.*``; every other module keeps its released name."""
    out = {}
    for key, value in state.items():
        if key.startswith("head.") and not key.startswith("head.fc."):
            key = "head.fc." + key.removeprefix("head.")
        out[key] = value
    return out


# Published (fused) parameter counts; the sweep's ``paper_params`` is the training form, i.e. this
# plus what fusion removes: the BN affine parameters (2 per channel) minus the biases they become,
# the 3x3 branches of every RepDW, and the BN of the merging skip.
FUSED_PAPER_PARAMS = {"ffnet_1": 13.7e6, "ffnet_2": 26.9e6, "ffnet_3": 48.3e6, "ffnet_4": 79.2e6}

_SOURCE = "https://github.com/ysj9909/FFNet"
_REG = dict(test_input_size=32, family="ffnet", checkpoint_filter_fn=checkpoint_filter_fn, source=_SOURCE)

# The released configurations (``models/ffnet.py``): FFNet-1 uses 3x3 (Conv-BN) depth-wise convs in
# its channel mixers, FFNet-2..4 7x7 RepDW; FFNet-3/4 add layer scale.
FFNET_CFGS: dict[str, dict] = {
    "ffnet_1": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640), kernel_sizes=(3, 3, 3, 3)),
    "ffnet_2": dict(depths=(3, 3, 15, 3), dims=(88, 176, 352, 704), kernel_sizes=(7, 7, 7, 7)),
    "ffnet_3": dict(
        depths=(4, 4, 22, 5), dims=(96, 192, 384, 768), kernel_sizes=(7, 7, 7, 7), layer_scale_init_value=1e-6
    ),
    "ffnet_4": dict(
        depths=(4, 4, 27, 3),
        dims=(128, 256, 512, 1024),
        kernel_sizes=(7, 7, 7, 7),
        layer_scale_init_value=1e-6,
    ),
}


def fusion_overhead(
    depths: Sequence[int],
    dims: Sequence[int],
    kernel_sizes: Sequence[int],
    kernel_sizes1: Sequence[int] = (3, 3, 7, 7),
    kernel_sizes2: Sequence[int] = (3, 3, 7, 7),
    in_dim: int = 64,
    **_: object,
) -> int:
    """Parameters that :meth:`FFNet.fuse` removes, in closed form: a Conv-BN (or BN-Conv) pair of
    ``C`` outputs loses ``2C`` BN parameters and gains ``C`` biases (``C``); a 7x7 + 3x3 RepDW pair
    of ``C`` outputs also loses its 3x3 weights (``9C + 3C``)."""

    def dw(kernel: int, channels: int, bn: bool) -> int:
        return 12 * channels if kernel == 7 else (channels if bn else 0)

    total = in_dim + dims[0]  # stem
    for i, (depth, d) in enumerate(zip(depths, dims, strict=True)):
        if i:
            total += 12 * d + d  # merging: RepDW + BN-Conv skip
        block = (
            d + dw(kernel_sizes1[i], d, False) + dw(kernel_sizes2[i], d, False) + dw(kernel_sizes[i], d, True)
        )
        total += depth * block
    return total


def _register(name: str, gmacs: float, top1: float, input_size: int):
    cfg = FFNET_CFGS[name]
    return register_model(
        paper_params=FUSED_PAPER_PARAMS[name] + fusion_overhead(**cfg),
        paper_gmacs=gmacs,
        paper_top1=top1,
        input_size=input_size,
        **_REG,
    )


@_register("ffnet_1", 2.9, 81.3, 256)
def ffnet_1(num_classes: int = 1000, **kw) -> FFNet:
    """FFNet (Yun, Lee and Ro, arXiv 2024, "MetaMixer Is All You Need"), FFNet-1: 13.7M fused.

    Depths (2, 2, 8, 2), widths 80-640.
    """
    return FFNet(**FFNET_CFGS["ffnet_1"], num_classes=num_classes, **kw)


@_register("ffnet_2", 6.0, 82.9, 256)
def ffnet_2(num_classes: int = 1000, **kw) -> FFNet:
    """FFNet (Yun, Lee and Ro, arXiv 2024, "MetaMixer Is All You Need"), FFNet-2: 26.9M fused.

    Depths (3, 3, 15, 3), widths 88-704.
    """
    return FFNet(**FFNET_CFGS["ffnet_2"], num_classes=num_classes, **kw)


@_register("ffnet_3", 10.1, 83.9, 256)
def ffnet_3(num_classes: int = 1000, **kw) -> FFNet:
    """FFNet (Yun, Lee and Ro, arXiv 2024, "MetaMixer Is All You Need"), FFNet-3: 48.3M fused.

    Depths (4, 4, 22, 5), widths 96-768.
    """
    return FFNet(**FFNET_CFGS["ffnet_3"], num_classes=num_classes, **kw)


@_register("ffnet_4", 43.1, 85.3, 384)
def ffnet_4(num_classes: int = 1000, **kw) -> FFNet:
    """FFNet (Yun, Lee and Ro, arXiv 2024, "MetaMixer Is All You Need"), FFNet-4: 79.2M fused.

    Depths (4, 4, 27, 3), widths 128-1024. Paper figures at 384^2 (the 256^2 model is not released).
    """
    return FFNet(**FFNET_CFGS["ffnet_4"], num_classes=num_classes, **kw)
