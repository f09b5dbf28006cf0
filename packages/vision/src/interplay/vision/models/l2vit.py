"""L2ViT: The Linear Attention Resurrection in Vision Transformer (Chuanyang Zheng, 2025).

Four stages; inside a stage the blocks alternate local window attention (LWA, even positions) and
enhanced linear global attention (LGA, odd positions), as the released ``mix_local_enhanced_vit``:

* LWA block: ``x = CPE(x)``; ``x = x + WinAttn_7x7(LN x)``; ``x = CPE'(x)``; ``x = x + MLP_4(LN x)``
  (two conv position encodings ``CPE(x) = x + DWConv3x3(x)``; softmax window attention without
  position bias, through :func:`interplay.core.attention.attend` on the batch of windows).
* LGA block: ``x = CPE(x)``; ``x = x + LinAttn(LN x)``; ``x = x + LCM(LN x)``; ``x = x + MLP_4(LN x)``.
  Enhanced linear attention (Sec. 3.2): ``phi = ReLU``; per head
  ``out_i = t_h * phi(q_i) (sum_j phi(k_j)^T v_j) / max(phi(q_i) . sum_j phi(k_j), 100)``
  with a learned per-head temperature ``t_h`` (initialised to ``d^-1/2``) and the denominator clamped
  at 100 (:func:`l2vit_linear_attention`, O(N d^2)). Local concentration module (LCM):
  ``DWConv7x7 -> GELU -> BN -> DWConv7x7``.
* Stem: ``Conv3x3 s2 -> BN -> ReLU -> Conv3x3 s2 -> BN`` then LayerNorm; between stages
  ``LN -> Conv2x2 s2``; head: LN on every token, global average, Linear.

Like the released code, maps whose side is not a multiple of the window are zero-padded after
``norm1`` and the padded tokens take part in the window attention unmasked (released weights give
the released outputs at every size); at 224^2 no padding happens. We ask for inputs divisible by 32
so that every stage has the exact stride of :attr:`L2ViT.feature_info`.

Parameter names follow the released code (``downsample_layers``, ``stages.i.j``, ``cpe.0``,
``attn.temperature``, ``local_mp``, ``norm``), so official checkpoints load after
:func:`checkpoint_filter_fn` renames the classifier (``head`` -> ``head.fc``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import attend
from interplay.core.attention.linear import l2vit_linear_attention
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import Mlp, window_partition, window_reverse

__all__ = [
    "L2ViT",
    "LGABlock",
    "LWABlock",
    "LinearAttention",
    "checkpoint_filter_fn",
    "l2vit_base",
    "l2vit_small",
    "l2vit_tiny",
]

SOURCE = "https://github.com/ChuanyangZheng/L2ViT"


class CPE(nn.Module):
    """Conditional position encoding ``x + DWConv3x3(x)`` on channels-last maps ``[B, H, W, C]``."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class WindowAttention(nn.Module):
    """Softmax MHSA inside each window, no position bias: ``qkv = Linear(C, 3C)``, ``proj = Linear(C, C)``."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B * nW, N, C]`` windows -> the same shape."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(attend(q, k, v).transpose(1, 2).reshape(b, n, c))


class LinearAttention(nn.Module):
    """L2ViT's enhanced linear attention on tokens ``[B, N, C]`` (:func:`l2vit_linear_attention`).

    ``temperature`` is ``[heads, 1, 1]``, initialised to ``(C / heads)^-1/2`` as released.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, denominator_min: float = 100.0) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.denominator_min = denominator_min
        self.temperature = nn.Parameter(torch.full((heads, 1, 1), self.head_dim**-0.5))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = l2vit_linear_attention(q, k, v, self.temperature, denominator_min=self.denominator_min)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LCM(nn.Module):
    """Local concentration module: ``DWConv7x7 -> GELU -> BatchNorm -> DWConv7x7`` on ``[B, C, H, W]``."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.bn(self.act(self.conv1(x))))


class LWABlock(nn.Module):
    """Local window attention block on channels-last maps ``[B, H, W, C]`` (module docstring)."""

    def __init__(
        self, dim: int, heads: int, window_size: int = 7, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.cpe = nn.ModuleList([CPE(dim), CPE(dim)])
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        shortcut = self.cpe[0](x)
        x = self.norm1(shortcut)
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:  # zero tokens join the last windows unmasked, as in the released code
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        x = window_reverse(self.attn(window_partition(x, ws)), ws, h + pad_b, w + pad_r)[:, :h, :w]
        x = self.cpe[1](shortcut + self.drop_path(x))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LGABlock(nn.Module):
    """Enhanced linear global attention block on channels-last maps ``[B, H, W, C]`` (module docstring)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.cpe = nn.ModuleList([CPE(dim)])
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim)
        self.local_mp = LCM(dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x).reshape(b, h * w, c)).view(b, h, w, c))
        local = self.local_mp(self.norm3(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(local)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class StemEmbed(nn.Module):
    """``Conv3x3 s2 -> BN -> ReLU -> Conv3x3 s2 -> BN`` (``proj.proj``), LayerNorm: ``[B, H/4, W/4, C]``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Module()
        self.proj.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, 2, 1),
            nn.BatchNorm2d(dim // 2),
            nn.ReLU(),
            nn.Conv2d(dim // 2, dim, 3, 2, 1),
            nn.BatchNorm2d(dim),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj.proj(x).permute(0, 2, 3, 1))


class MergeEmbed(nn.Module):
    """``LayerNorm -> Conv2x2 s2`` between stages, channels-last in and out."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, 2, 2)
        self.norm = nn.LayerNorm(in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class L2ViT(VisionBackbone):
    """L2ViT backbone (see the module docstring): ``dims`` / ``depths`` / ``heads`` per stage."""

    def __init__(
        self,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        heads: Sequence[int] = (3, 6, 12, 24),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(heads):
            raise ConfigError(
                f"L2ViT: dims {dims}, depths {depths} and heads {heads} need one entry per stage"
            )
        for d, h in zip(dims, heads, strict=True):
            if d % h:
                raise ConfigError(f"L2ViT: width {d} is not divisible by {h} heads")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = dims[-1]
        self.downsample_layers = nn.ModuleList(
            [StemEmbed(in_chans, dims[0])] + [MergeEmbed(dims[i - 1], dims[i]) for i in range(1, len(dims))]
        )
        rates = _drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            nn.Sequential(
                *[
                    LWABlock(dim, h, window_size, mlp_ratio, rates[i][j])
                    if j % 2 == 0
                    else LGABlock(dim, h, mlp_ratio, rates[i][j])
                    for j in range(depth)
                ]
            )
            for i, (dim, depth, h) in enumerate(zip(dims, depths, heads, strict=True))
        )
        self.norm = nn.LayerNorm(self.num_features)
        self.feature_info = [FeatureInfo(d, 4 * 2**i, f"stages.{i}") for i, d in enumerate(dims)]
        self.head = ClassifierHead(self.num_features, num_classes, pool="avg", drop_rate=drop_rate)
        self._reduction = 4 * 2 ** (len(dims) - 1)
        self.apply(_init_weights)

    def _run(self, x: Tensor, last: int) -> list[Tensor]:
        """Channels-last outputs of stages ``0 .. last``."""
        self.check_input(x, multiple=self._reduction, channels=self.in_chans)
        outs = []
        for i in range(last + 1):
            x = checkpoint_seq(self.stages[i], self.downsample_layers[i](x), enabled=self.grad_checkpointing)
            outs.append(x)
        return outs

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        n = len(self.stages)
        wanted = list(range(n)) if indices is None else [i % n for i in indices]
        outs = self._run(x, max(wanted))
        return [outs[i].permute(0, 3, 1, 2) for i in wanted]

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage with the final LayerNorm applied to every token, ``[B, C, H/32, W/32]``."""
        return self.norm(self._run(x, len(self.stages) - 1)[-1]).permute(0, 3, 1, 2)


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    # layers.drop_path_rates builds a tensor, which fails under torch.device("meta"): plain floats here
    total = sum(depths)
    flat = [rate * i / max(1, total - 1) for i in range(total)]
    return [flat[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(len(depths))]


def _init_weights(module: nn.Module) -> None:
    # the released init: truncated normal (std 0.02) for every Linear and Conv2d, zero biases
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Official L2ViT keys -> ours: only the classifier moves (``head.{weight,bias}`` -> ``head.fc.*``)."""
    return {re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k): v for k, v in state_dict.items()}


_COMMON = dict(
    input_size=224,
    test_input_size=32,
    family="l2vit",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=SOURCE,
)


@register_model(paper_params=28.6e6, paper_gmacs=4.7, paper_top1=83.1, **_COMMON)
def l2vit_tiny(num_classes: int = 1000, **kwargs) -> L2ViT:
    """L2ViT-T (Zheng, "The Linear Attention Resurrection in Vision Transformer", 2025).

    C 96, depths (2, 2, 6, 2); heads (3, 6, 12, 24), window 7, MLP ratio 4.
    Paper: 28.6M parameters (README: 29M), 4.7 GFLOPs, 83.1 %.
    """
    return L2ViT((96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24), num_classes=num_classes, **kwargs)


@register_model(paper_params=50.2e6, paper_gmacs=9.0, paper_top1=84.1, **_COMMON)
def l2vit_small(num_classes: int = 1000, **kwargs) -> L2ViT:
    """L2ViT-S (Zheng, "The Linear Attention Resurrection in Vision Transformer", 2025).

    C 96, depths (2, 2, 18, 2); heads (3, 6, 12, 24), window 7, MLP ratio 4.
    Paper: 50.2M parameters (README: 50M), 9.0 GFLOPs, 84.1 %.
    """
    return L2ViT((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24), num_classes=num_classes, **kwargs)


@register_model(paper_params=88.6e6, paper_gmacs=15.9, paper_top1=84.4, **_COMMON)
def l2vit_base(num_classes: int = 1000, **kwargs) -> L2ViT:
    """L2ViT-B (Zheng, "The Linear Attention Resurrection in Vision Transformer", 2025).

    C 128, depths (2, 2, 18, 2); heads (4, 8, 16, 32), window 7, MLP ratio 4.
    Paper: 88.6M parameters (README: 89M), 15.9 GFLOPs, 84.4 %.
    """
    return L2ViT((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), num_classes=num_classes, **kwargs)
