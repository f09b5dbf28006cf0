"""HorNet (Rao et al., "HorNet: Efficient High-Order Spatial Interactions with Recursive Gated
Convolutions", NeurIPS 2022).

The token mixer is the recursive gated convolution g^n Conv (paper, Section 3)::

    [p_0, q] = split(proj_in(x))                     # C -> 2C; p_0 has C_0 = C / 2^(n-1) channels
    [q_0, ..., q_{n-1}] = split(DW(q) * s)           # q_k has C_k = C / 2^(n-k-1) channels, s = 1/3
    p_{k+1} = pw_k(p_k) * q_k   (p_1 = p_0 * q_0)     # pw_k: Conv1x1 C_{k-1} -> C_k
    out = proj_out(p_n)

``DW`` is a 7x7 depth-wise convolution, or (the GF variants, stages 3-4 as in the released code) the
global-local filter: half of the channels through a 3x3 depth-wise convolution, the other half
through a learnable filter in the 2-D Fourier domain (GFNet), the two halves interleaved channel by
channel, between two channels-first LayerNorms. Block: ``x += gamma1 g^nConv(LN x);
x += gamma2 MLP4(LN x)``, gamma initialised to 1e-6; orders 2, 3, 4, 5 in the four stages.

Module names follow the released ``hornet.py`` so its checkpoints load with a two-key remap
(:func:`checkpoint_filter_fn`: its ``norm`` / ``head`` become our ``head.norm`` / ``head.fc``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import LayerNorm2d

__all__ = ["GlobalLocalFilter", "GnConv", "HorNet", "HorNetBlock", "checkpoint_filter_fn", "gnconv_dims"]


def gnconv_dims(dim: int, order: int) -> list[int]:
    """Channels of ``p_0 .. p_{n-1}``: ``C_k = C / 2^(n-k-1)`` (so the last is ``C``)."""
    if order < 1:
        raise ValueError(f"gnConv order must be >= 1, got {order}")
    if dim % 2 ** (order - 1):
        raise ValueError(f"gnConv of order {order} needs channels divisible by {2 ** (order - 1)}, got {dim}")
    return [dim // 2 ** (order - 1 - k) for k in range(order)]


class GlobalLocalFilter(nn.Module):
    """HorNet's GF layer: 3x3 depth-wise conv on the first half of the channels, a learnable global
    filter (``irfft2(rfft2(x) * W)``, orthonormal FFTs) on the second half, outputs interleaved
    (``[a_0, b_0, a_1, b_1, ...]`` as released) between two channels-first LayerNorms.

    ``W`` is stored as ``[C/2, h, w, 2]`` (real, imaginary) for the 224^2 grid (stage 3: 14 x 8,
    stage 4: 7 x 4 rfft bins) and is bilinearly resized (``align_corners=True``) for other sizes.
    """

    def __init__(self, dim: int, h: int = 14, w: int = 8) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"GlobalLocalFilter needs an even channel count, got {dim}")
        self.dw = nn.Conv2d(dim // 2, dim // 2, kernel_size=3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.empty(dim // 2, h, w, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNorm2d(dim, eps=1e-6)
        self.post_norm = LayerNorm2d(dim, eps=1e-6)

    def filter_weight(self, height: int, width_bins: int) -> Tensor:
        """The complex filter ``[C/2, height, width_bins]`` for an rfft2 grid of that size."""
        weight = self.complex_weight
        if weight.shape[1:3] != (height, width_bins):
            weight = F.interpolate(
                weight.permute(3, 0, 1, 2), size=(height, width_bins), mode="bilinear", align_corners=True
            ).permute(1, 2, 3, 0)
        return torch.view_as_complex(weight.float().contiguous())

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre_norm(x)
        local, glob = torch.chunk(x, 2, dim=1)
        local = self.dw(local)
        b, c, h, w = glob.shape
        spectrum = torch.fft.rfft2(glob.float(), dim=(2, 3), norm="ortho")
        spectrum = spectrum * self.filter_weight(*spectrum.shape[2:4])
        glob = torch.fft.irfft2(spectrum, s=(h, w), dim=(2, 3), norm="ortho").to(local.dtype)
        x = torch.stack([local, glob], dim=2).reshape(b, 2 * c, h, w)
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution of order ``n`` (module docstring). ``global_filter=(h, w)`` swaps
    the 7x7 depth-wise convolution for :class:`GlobalLocalFilter`."""

    def __init__(
        self, dim: int, order: int = 5, scale: float = 1.0, global_filter: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.order = order
        self.dims = gnconv_dims(dim, order)
        self.scale = scale
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        total = sum(self.dims)
        if global_filter is None:
            self.dwconv: nn.Module = nn.Conv2d(total, total, 7, padding=3, groups=total)
        else:
            self.dwconv = GlobalLocalFilter(total, *global_filter)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))

    def forward(self, x: Tensor) -> Tensor:
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(q) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for pw, gate in zip(self.pws, gates[1:], strict=True):
            p = pw(p) * gate
        return self.proj_out(p)


class HorNetBlock(nn.Module):
    """``x += gamma1 gnConv(LN x); x += gamma2 MLP(LN x)`` (MLP ratio 4, Linear layers over NHWC)."""

    def __init__(
        self,
        dim: int,
        order: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        global_filter: tuple[int, int] | None = None,
        scale: float = 1.0 / 3.0,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order, scale=scale, global_filter=global_filter)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_init_value = layer_scale_init_value
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale_init_value))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.gamma1[:, None, None] * self.gnconv(self.norm1(x)))
        y = self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + self.drop_path((self.gamma2 * y).permute(0, 3, 1, 2))


class HorNet(VisionBackbone):
    """HorNet: ConvNeXt-style stem (Conv4x4 s4 + LN) and down-sampling (LN + Conv2x2 s2), widths
    ``base_dim * (1, 2, 4, 8)``, g^n Conv orders ``orders`` per stage, pooled LayerNorm head.

    ``global_filters[i] = (h, w)`` puts the global-local filter in stage ``i`` (``None``: 7x7 DW).
    """

    def __init__(
        self,
        base_dim: int = 64,
        depths: Sequence[int] = (2, 3, 18, 2),
        orders: Sequence[int] = (2, 3, 4, 5),
        global_filters: Sequence[tuple[int, int] | None] = (None, None, None, None),
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        scale: float = 1.0 / 3.0,
    ) -> None:
        super().__init__()
        # Build on the meta device and initialise once (the default init of the convolutions and
        # linears would be overwritten anyway: half the construction time of an 88M model).
        device = torch.get_default_device()
        with torch.device("meta"):
            dims = [base_dim * 2**i for i in range(4)]
            self.num_classes = num_classes
            self.num_features = dims[-1]
            self.in_chans = in_chans
            self.downsample_layers = nn.ModuleList(
                [nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))]
            )
            for i in range(3):
                self.downsample_layers.append(
                    nn.Sequential(
                        LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)
                    )
                )
            rates = _drop_path_rates(drop_path_rate, depths)
            self.stages = nn.ModuleList(
                nn.Sequential(
                    *[
                        HorNetBlock(
                            dims[i], orders[i], rates[i][j], layer_scale_init_value, global_filters[i], scale
                        )
                        for j in range(depths[i])
                    ]
                )
                for i in range(4)
            )
            self.feature_info = [FeatureInfo(dims[i], 4 * 2**i, f"stages.{i}") for i in range(4)]
            self.head = ClassifierHead(
                dims[-1], num_classes, pool="avg", norm=nn.LayerNorm(dims[-1], eps=1e-6), drop_rate=drop_rate
            )
        if device.type != "meta":
            self.to_empty(device=device)
            _init_weights(self)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check_input(x, multiple=32, channels=self.in_chans)
        wanted = set(range(4) if indices is None else (i % 4 for i in indices))
        outs = []
        for i in range(max(wanted) + 1):
            x = self.downsample_layers[i](x)
            x = checkpoint_seq(self.stages[i], x, self.grad_checkpointing)
            if i in wanted:
                outs.append(x)
        return outs


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Linear 0 -> ``rate`` over all blocks, per stage (plain Python: layers.drop_path_rates calls
    torch.linspace, which fails while building on the meta device)."""
    total = sum(depths)
    flat = [rate * i / max(total - 1, 1) for i in range(total)]
    return [flat[sum(depths[:s]) : sum(depths[: s + 1])] for s in range(len(depths))]


def _init_weights(model: nn.Module) -> None:
    """Initialise every parameter and buffer (the model may come from ``to_empty``): as released,
    ``trunc_normal_(std=0.02)`` convolutions, linears and global filters (its default bounds, +-2,
    sit 100 standard deviations out, so a plain normal draw is the same distribution), zero biases,
    unit norms, layer scales at their initial value. Raises if something was left out."""
    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()
        elif isinstance(module, GlobalLocalFilter):
            nn.init.normal_(module.complex_weight, std=0.02)
        elif isinstance(module, HorNetBlock):
            module.gamma1.data.fill_(module.layer_scale_init_value)
            module.gamma2.data.fill_(module.layer_scale_init_value)
        done.update(id(t) for t in module.parameters(recurse=False))
        done.update(id(t) for t in module.buffers(recurse=False))
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if id(t) not in done]
    if missing:
        raise RuntimeError(f"HorNet init left {missing[:5]} uninitialised")


def checkpoint_filter_fn(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Released HorNet checkpoints -> ours: ``norm.*`` -> ``head.norm.*``, ``head.*`` -> ``head.fc.*``."""
    out = {}
    for key, value in state.items():
        if key.startswith("norm."):
            key = "head." + key
        elif key.startswith("head.") and not key.startswith(("head.fc.", "head.norm.")):
            key = "head.fc." + key.removeprefix("head.")
        out[key] = value
    return out


# Global filter grids of the released GF models (rfft bins of the 14x14 and 7x7 maps at 224^2).
_GF = (None, None, (14, 8), (7, 4))
_SOURCE = "https://github.com/raoyongming/HorNet"


def _hornet(base_dim: int, gf: bool, num_classes: int, **kw) -> HorNet:
    return HorNet(base_dim=base_dim, global_filters=_GF if gf else (None,) * 4, num_classes=num_classes, **kw)


@register_model(
    paper_params=22.4e6,
    paper_gmacs=4.0,
    paper_top1=82.8,
    test_input_size=32,
    family="hornet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_SOURCE,
)
def hornet_tiny_7x7(num_classes: int = 1000, **kw) -> HorNet:
    """HorNet (Rao et al., NeurIPS 2022), HorNet-T 7x7: base 64, depths (2, 3, 18, 2), 7x7 DW gnConv."""
    return _hornet(64, False, num_classes, **kw)


@register_model(
    paper_params=23.0e6,
    paper_gmacs=3.9,
    paper_top1=83.0,
    test_input_size=32,
    family="hornet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_SOURCE,
)
def hornet_tiny_gf(num_classes: int = 1000, **kw) -> HorNet:
    """HorNet (Rao et al., NeurIPS 2022), HorNet-T GF: global-local filters in stages 3-4."""
    return _hornet(64, True, num_classes, **kw)


@register_model(
    paper_params=49.5e6,
    paper_gmacs=8.8,
    paper_top1=84.0,
    test_input_size=32,
    family="hornet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_SOURCE,
)
def hornet_small_7x7(num_classes: int = 1000, **kw) -> HorNet:
    """HorNet (Rao et al., NeurIPS 2022), HorNet-S 7x7: base 96, depths (2, 3, 18, 2)."""
    return _hornet(96, False, num_classes, **kw)


@register_model(
    paper_params=50.4e6,
    paper_gmacs=8.7,
    paper_top1=84.2,
    test_input_size=32,
    family="hornet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_SOURCE,
)
def hornet_small_gf(num_classes: int = 1000, **kw) -> HorNet:
    """HorNet (Rao et al., NeurIPS 2022), HorNet-S GF: base 96, global-local filters in stages 3-4."""
    return _hornet(96, True, num_classes, **kw)


@register_model(
    paper_params=87.3e6,
    paper_gmacs=15.6,
    paper_top1=84.3,
    test_input_size=32,
    family="hornet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_SOURCE,
)
def hornet_base_7x7(num_classes: int = 1000, **kw) -> HorNet:
    """HorNet (Rao et al., NeurIPS 2022), HorNet-B 7x7: base 128, depths (2, 3, 18, 2)."""
    return _hornet(128, False, num_classes, **kw)


@register_model(
    paper_params=88.4e6,
    paper_gmacs=15.5,
    paper_top1=84.5,
    test_input_size=32,
    family="hornet",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=_SOURCE,
)
def hornet_base_gf(num_classes: int = 1000, **kw) -> HorNet:
    """HorNet (Rao et al., NeurIPS 2022), HorNet-B GF: base 128, global-local filters in stages 3-4."""
    return _hornet(128, True, num_classes, **kw)
