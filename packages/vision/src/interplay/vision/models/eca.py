"""ECA-Net (Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020): the ECA module and ECA-ResNet-50 / -101.

ECA (Sec. 3.2, Eq. 9 and Fig. 2): ``y = GAP(x)``; ``w = sigmoid(C1D_k(y))`` (a 1-D convolution of
size ``k`` across the channel axis, no bias, shared by all channels); ``out = x * w``. The kernel
size adapts to the width (Eq. 12, gamma = 2, b = 1): ``k = psi(C) = |log2(C) / gamma + b / gamma|_odd``
(the nearest odd integer; computed as the released code and timm do: truncate, bump an even value to
the next odd one, at least 3).

Kernel sizes: the paper's adaptive rule gives 5, 5, 5, 7 for the ResNet-50 stage widths 256 ... 2048,
but the released ImageNet checkpoints were trained with fixed per-stage sizes -- ``eca_resnet50_k3557``
(3, 5, 5, 7) and ``eca_resnet101_k3357`` (3, 3, 5, 7) -- and a 1-D kernel of another size cannot load
them. The registered models therefore default to the released per-stage sizes;
``eca_kernel_sizes="adaptive"`` selects Eq. 12 per block width instead. The module sits after ``bn3``,
before the residual addition (released ``ECABottleneck``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.vision.models.factory import register_model
from interplay.vision.models.resnet import ResNet, bottleneck_fn


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """Eq. 12: ``|log2(C) / gamma + beta / gamma|_odd``, at least 3."""
    if channels < 1:
        raise ConfigError(f"ECA needs a positive channel count, got {channels}")
    t = int(abs((math.log2(channels) + beta) / gamma))
    return max(t if t % 2 else t + 1, 3)


# candidate for interplay.core: a parameter-light channel gate other vision families (CAS-ViT's channel
# operation, ECA-HaloNeXt) could share; core has only softmax channel attention (channel.py).
class EfficientChannelAttention(nn.Module):
    """``x * sigmoid(Conv1d_k(GAP(x)))`` over ``[B, C, H, W]`` (parameter name ``conv`` as released).

    ``kernel_size=None`` picks :func:`eca_kernel_size` from ``channels``.
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size is None:
            if channels is None:
                raise ConfigError("EfficientChannelAttention needs channels or kernel_size")
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"ECA kernel size must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean(dim=(-2, -1))  # [B, C]
        w = torch.sigmoid(self.conv(y.unsqueeze(1))).squeeze(1)  # 1-D conv across the channel axis
        return x * w[:, :, None, None]

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def _eca_layers(stage_out_chs: Sequence[int], kernel_sizes: Sequence[int] | str) -> list:
    if isinstance(kernel_sizes, str):
        if kernel_sizes != "adaptive":
            raise ConfigError(f"eca_kernel_sizes must be 4 odd ints or 'adaptive', got '{kernel_sizes}'")
        return [partial(EfficientChannelAttention) for _ in stage_out_chs]
    if len(kernel_sizes) != len(stage_out_chs):
        raise ConfigError(f"eca_kernel_sizes needs one size per stage, got {tuple(kernel_sizes)}")
    return [partial(EfficientChannelAttention, kernel_size=int(k)) for k in kernel_sizes]


def eca_resnet(
    depths: Sequence[int], kernel_sizes: Sequence[int] | str, num_classes: int = 1000, **kwargs
) -> ResNet:
    """A ResNet whose bottlenecks end with ECA (``kernel_sizes``: per stage, or ``"adaptive"``)."""
    _, out_chs = bottleneck_fn()
    make, _ = bottleneck_fn(channel_attn_layers=_eca_layers(out_chs, kernel_sizes))
    return ResNet(make, depths, out_chs, num_classes, **kwargs)


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Released ECA-Net layout (``models/eca_resnet.py``; a ``module.`` prefix from DataParallel is
    dropped by the loader) -> ours: ``layerX.Y.eca.conv`` -> ``layerX.Y.channel_attn.conv``, ``fc`` ->
    ``head.fc``; every other name (conv1/bn1/layerX.Y.convN/bnN/downsample.N) is already the same."""
    out = {}
    for key, value in state.items():
        key = key.replace(".eca.", ".channel_attn.")
        if key.startswith("fc."):
            key = "head." + key
        out[key] = value
    return out


SOURCE = "https://github.com/BangguWu/ECANet (models/eca_resnet.py)"


@register_model(
    paper_params=25.56e6,
    paper_gmacs=3.86,
    paper_top1=77.48,
    test_input_size=32,
    family="eca",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=SOURCE,
)
def eca_resnet50(
    num_classes: int = 1000, eca_kernel_sizes: Sequence[int] | str = (3, 5, 5, 7), **kwargs
) -> ResNet:
    """ECA-ResNet-50 (Wang et al., CVPR 2020), ECA after bn3 of every bottleneck; k = 3, 5, 5, 7.

    25,557,112 parameters (the README's "24.37M" is that count / 2^20); 77.48 % top-1.
    """
    return eca_resnet((3, 4, 6, 3), eca_kernel_sizes, num_classes, **kwargs)


@register_model(
    paper_params=44.55e6,
    paper_gmacs=7.35,
    paper_top1=78.65,
    test_input_size=32,
    family="eca",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=SOURCE,
)
def eca_resnet101(
    num_classes: int = 1000, eca_kernel_sizes: Sequence[int] | str = (3, 3, 5, 7), **kwargs
) -> ResNet:
    """ECA-ResNet-101 (Wang et al., CVPR 2020), ECA after bn3 of every bottleneck; k = 3, 3, 5, 7.

    44,549,317 parameters (README "42.49M" = count / 2^20); 78.65 % top-1.
    """
    return eca_resnet((3, 4, 23, 3), eca_kernel_sizes, num_classes, **kwargs)
