"""Small layers several backbones share (one definition each, per DESIGN.md's "one way")."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without dropping below 90 % of it
    (MobileNet's rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (ConvNeXt / DaViT style)."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """Token MLP ``Linear -> act -> drop -> Linear -> drop`` on ``[..., C]`` (timm's Mlp; ``fc1``/``fc2``
    names so official checkpoints map one to one)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class ConvMlp(nn.Module):
    """The same MLP with 1x1 convolutions on ``[B, C, H, W]`` maps."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_features, out_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (``act_layer=None`` for none)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] | None = nn.ReLU,
        padding: int | None = None,
    ) -> None:
        padding = kernel_size // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)


def drop_path_rates(drop_path_rate: float, depths: list[int] | tuple[int, ...]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly over all blocks, split per stage."""
    # plain Python (not torch.linspace) so that models can be built on the meta device
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out


def init_weights_vit(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases, unit norms (the usual ViT init)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_weights_conv(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions as in ResNet."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def tokens_to_map(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """``[B, H*W, C]`` -> ``[B, C, H, W]``."""
    b, n, c = x.shape
    h, w = hw
    if n != h * w:
        raise ValueError(f"{n} tokens do not form a {h}x{w} grid")
    return x.transpose(1, 2).reshape(b, c, h, w)


def map_to_tokens(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, H*W, C]``."""
    return x.flatten(2).transpose(1, 2)


def sqrt_int(n: int) -> int:
    root = math.isqrt(n)
    if root * root != n:
        raise ValueError(f"{n} is not a square")
    return root


def window_partition(x: Tensor, window: int) -> Tensor:
    """``[B, H, W, C]`` -> ``[B * nW, window * window, C]`` (windows in row-major order per image,
    batch outermost); ``H`` and ``W`` must be multiples of ``window`` (pad first)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, window * window, C]`` -> ``[B, H, W, C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)
