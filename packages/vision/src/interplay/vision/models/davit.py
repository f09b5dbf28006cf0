"""DaViT: Dual Attention Vision Transformers (Ding, Xiao, Codella, Luo, Wang, Yuan; ECCV 2022).

Every stage is ``depth x [spatial block, channel block]`` (Sec. 3, Fig. 3). Both blocks read::

    x = x + DWConv3x3(x)                 # conv position encoding (cpe1)
    x = x + Attn(LN(x))                  # spatial: 7x7 window MHSA; channel: channel group attention
    x = x + DWConv3x3(x)                 # cpe2
    x = x + MLP_4(LN(x))

* Spatial window attention (Eq. 1): tokens are split into non-overlapping ``7 x 7`` windows and
  attend within their window, ``softmax(Q K^T / sqrt(C_h)) V`` per head, through
  :func:`interplay.core.attention.attend` on the batch of windows.
* Channel group attention (Eq. 2-3): channels are split into ``N_g = heads`` groups of ``C_g``
  channels; per group ``A = softmax((K C_g^-1/2)^T V)`` is ``C_g x C_g`` and the output is
  ``(A Q^T)^T``: :class:`interplay.core.attention.ChannelAttention` (the released code's form).
* Stem: Conv7x7 stride 4 (padding 3) + LayerNorm; between stages LayerNorm + Conv2x2 stride 2.
  Head: global average pool -> LayerNorm -> Linear (the released model normalises after pooling).

Like the released code, feature maps whose side is not a multiple of the window are zero-padded
after ``norm1`` and the padded tokens take part in the attention unmasked (so released weights
give the released outputs at every input size); at 224^2 no padding happens.

Parameter names follow timm's ``davit.py`` (``stem``, ``stages.i.downsample``,
``stages.i.blocks.j.{0,1}``, ``cpe1``/``cpe2``, ``head.norm``/``head.fc``), so timm checkpoints load
as they are; :func:`checkpoint_filter_fn` renames the official (MSFT) checkpoints' keys
(``patch_embeds``, ``main_blocks``, ``cpe.0``, ``norms``, ``head``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import ChannelAttention, attend
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import (
    LayerNorm2d,
    Mlp,
    init_weights_vit,
    window_partition,
    window_reverse,
)

__all__ = [
    "DaViT",
    "ChannelBlock",
    "SpatialBlock",
    "WindowAttention",
    "checkpoint_filter_fn",
    "davit_base",
    "davit_small",
    "davit_tiny",
    "window_partition",
    "window_reverse",
]

SOURCE = "https://github.com/dingmyu/davit"


class ConvPosEnc(nn.Module):
    """Conv position encoding ``x + DWConv3x3(x)`` on ``[B, C, H, W]`` maps."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(x)


class Stem(nn.Module):
    """Conv7x7 stride 4 (padding 3) -> LayerNorm over channels."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=7, stride=4, padding=3)
        self.norm = LayerNorm2d(out_chs)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class Downsample(nn.Module):
    """LayerNorm over channels -> Conv2x2 stride 2."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window (no position bias, as DaViT):
    ``qkv = Linear(C, 3C)``, ``softmax(q k^T / sqrt(C / heads)) v`` per head, ``proj = Linear(C, C)``."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"DaViT window attention: dim={dim} is not divisible by heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B * nW, N, C]`` windows -> the same shape."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attend(q, k, v)  # [B*nW, heads, N, head_dim]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SpatialBlock(nn.Module):
    """DaViT spatial block: cpe1, ``x += WindowAttn(LN x)``, cpe2, ``x += MLP(LN x)`` on ``[B, C, H, W]``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.cpe1 = ConvPosEnc(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_path)
        self.cpe2 = ConvPosEnc(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.cpe1(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        shortcut = x
        x = self.norm1(x)
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:  # zero tokens join the last windows unmasked, as in the released code
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        x = window_reverse(self.attn(window_partition(x, ws)), ws, hp, wp)[:, :h, :w]
        x = shortcut + self.drop_path1(x)
        x = self.cpe2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class ChannelBlock(nn.Module):
    """DaViT channel block: cpe1, ``x += ChannelAttn(LN x)``, cpe2, ``x += MLP(LN x)`` on ``[B, C, H, W]``."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.cpe1 = ConvPosEnc(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ChannelAttention(dim, heads, qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_path)
        self.cpe2 = ConvPosEnc(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.cpe1(x).flatten(2).transpose(1, 2)  # [B, N, C]
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = self.cpe2(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.transpose(1, 2).reshape(b, c, h, w)


class DaViTStage(nn.Module):
    """Optional downsampling, then ``depth`` dual blocks ``Sequential(SpatialBlock, ChannelBlock)``."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        heads: int,
        *,
        downsample: bool,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path_rates: Sequence[float],
    ) -> None:
        super().__init__()
        self.downsample = Downsample(in_chs, out_chs) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                nn.Sequential(
                    SpatialBlock(out_chs, heads, window_size, mlp_ratio, qkv_bias, drop_path_rates[2 * i]),
                    ChannelBlock(out_chs, heads, mlp_ratio, qkv_bias, drop_path_rates[2 * i + 1]),
                )
                for i in range(depth)
            ]
        )


class DaViT(VisionBackbone):
    """DaViT backbone (see the module docstring). ``dims``/``depths``/``heads`` per stage."""

    def __init__(
        self,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (1, 1, 3, 1),
        heads: Sequence[int] = (3, 6, 12, 24),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(heads):
            raise ConfigError(
                f"DaViT: dims {dims}, depths {depths} and heads {heads} must have one entry per stage"
            )
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = dims[-1]
        self.stem = Stem(in_chans, dims[0])
        # the released code spreads the rates over all 2 * sum(depths) spatial and channel blocks
        n_blocks = 2 * sum(depths)
        rates = [drop_path_rate * i / max(1, n_blocks - 1) for i in range(n_blocks)]
        stages, start = [], 0
        for i, (dim, depth, h) in enumerate(zip(dims, depths, heads, strict=True)):
            stages.append(
                DaViTStage(
                    dims[i - 1] if i else dim,
                    dim,
                    depth,
                    h,
                    downsample=i > 0,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path_rates=rates[start : start + 2 * depth],
                )
            )
            start += 2 * depth
        self.stages = nn.Sequential(*stages)
        self.feature_info = [FeatureInfo(d, 4 * 2**i, f"stages.{i}") for i, d in enumerate(dims)]
        self.head = ClassifierHead(
            self.num_features,
            num_classes,
            pool="avg",
            norm=nn.LayerNorm(self.num_features),
            drop_rate=drop_rate,
        )
        self._reduction = 4 * 2 ** (len(dims) - 1)
        self.apply(init_weights_vit)

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        self.check_input(x, multiple=self._reduction, channels=self.in_chans)
        n = len(self.stages)
        wanted = list(range(n)) if indices is None else [i % n for i in indices]
        outs: dict[int, Tensor] = {}
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > max(wanted):
                break
            x = checkpoint_seq(stage.blocks, stage.downsample(x), enabled=self.grad_checkpointing)
            outs[i] = x
        return [outs[i] for i in wanted]


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename the official (MSFT ``dingmyu/davit``) keys to ours; timm-layout checkpoints pass as they are.

    ``patch_embeds.0.{proj,norm}`` -> ``stem.{conv,norm}``; ``patch_embeds.i.{proj,norm}`` ->
    ``stages.i.downsample.{conv,norm}``; ``main_blocks.i.j.k`` -> ``stages.i.blocks.j.k``;
    ``cpe.0``/``cpe.1`` -> ``cpe1``/``cpe2``; ``norms`` -> ``head.norm``; ``head`` -> ``head.fc``.
    """
    if "head.fc.weight" in state_dict or "stem.conv.weight" in state_dict:
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^patch_embeds\.0\.proj", "stem.conv", key)
        key = re.sub(r"^patch_embeds\.0\.norm", "stem.norm", key)
        key = re.sub(r"^patch_embeds\.(\d+)\.proj", r"stages.\1.downsample.conv", key)
        key = re.sub(r"^patch_embeds\.(\d+)\.norm", r"stages.\1.downsample.norm", key)
        key = re.sub(r"^main_blocks\.(\d+)\.", r"stages.\1.blocks.", key)
        key = key.replace(".cpe.0.", ".cpe1.").replace(".cpe.1.", ".cpe2.")
        key = re.sub(r"^norms\.", "head.norm.", key)
        key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        out[key] = value
    return out


_COMMON = dict(
    input_size=224,
    test_input_size=32,
    family="davit",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=SOURCE,
)


@register_model(paper_params=28.3e6, paper_gmacs=4.5, paper_top1=82.8, **_COMMON)
def davit_tiny(num_classes: int = 1000, **kwargs) -> DaViT:
    """DaViT-Tiny (Ding et al., ECCV 2022): C 96, depths (1, 1, 3, 1), heads (3, 6, 12, 24)."""
    return DaViT((96, 192, 384, 768), (1, 1, 3, 1), (3, 6, 12, 24), num_classes=num_classes, **kwargs)


@register_model(paper_params=49.7e6, paper_gmacs=8.8, paper_top1=84.2, **_COMMON)
def davit_small(num_classes: int = 1000, **kwargs) -> DaViT:
    """DaViT-Small (Ding et al., ECCV 2022): C 96, depths (1, 1, 9, 1), heads (3, 6, 12, 24)."""
    return DaViT((96, 192, 384, 768), (1, 1, 9, 1), (3, 6, 12, 24), num_classes=num_classes, **kwargs)


@register_model(paper_params=87.9e6, paper_gmacs=15.5, paper_top1=84.6, **_COMMON)
def davit_base(num_classes: int = 1000, **kwargs) -> DaViT:
    """DaViT-Base (Ding et al., ECCV 2022): C 128, depths (1, 1, 9, 1), heads (4, 8, 16, 32)."""
    return DaViT((128, 256, 512, 1024), (1, 1, 9, 1), (4, 8, 16, 32), num_classes=num_classes, **kwargs)
