"""CrossFormer: A Versatile Vision Transformer Based on Cross-scale Attention (Wang, Yao, Chen, Lin, Cai,
He, Liu; ICLR 2022).

* Cross-scale embedding layer, CEL (Sec. 3.1, Fig. 2): several convolutions with the same stride
  and kernels of different sizes, concatenated along the channels, then LayerNorm. Stem: kernels
  4 / 8 / 16 / 32, stride 4, padding ``(k - 4) / 2``, giving ``C/2, C/4, C/8, C/8`` channels;
  patch merging between stages: LayerNorm, then kernels 2 / 4, stride 2, padding ``(k - 2) / 2``,
  ``C_out / 2`` channels each.
* Long short distance attention, LSDA (Sec. 3.2, Fig. 2b-c): blocks alternate short-distance
  attention (SDA: groups of ``G x G`` adjacent embeddings, ``G = 7``) and long-distance attention
  (LDA: embeddings sampled every ``I`` positions, ``I = 8, 4, 2, 1`` per stage, form a group of
  ``H / I x W / I``); attention runs inside each group through
  :func:`interplay.core.attention.attend`.
* Dynamic position bias, DPB (Sec. 3.3, Fig. 3): ``B[i, j] = MLP(dy, dx)`` per head over the
  group's ``(2G_h - 1)(2G_w - 1)`` relative offsets, indexed as Swin's relative position table:
  :class:`interplay.core.attention.DynamicPositionBias` (``D' = dim / 16``).
* Block: ``x += LSDA(LN x); x += MLP_4(LN x)``; the last stage output is LayerNorm-ed over tokens,
  average-pooled and classified.

Input sizes: as the released detection / segmentation backbone (``crossformer_backbone.py``) does,
a map whose side is not a multiple of ``G`` (SDA) or ``I`` (LDA) is zero-padded and the padded keys
are masked; a map no larger than ``G`` is one SDA group of its own size. At 224^2 nothing is padded
and this is exactly the released classification model.

Parameter names follow the released code (``patch_embed.projs``, ``layers.i.blocks.j.attn.pos.pos1``,
``layers.i.downsample.reductions``, ``norm``), so :func:`checkpoint_filter_fn` only drops the
released buffers (``biases``, ``relative_position_index``, ``attn_mask``) and moves ``head`` to
``head.fc``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import DynamicPositionBias, attend
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import Mlp, init_weights_vit

__all__ = [
    "CrossFormer",
    "CrossFormerBlock",
    "CrossScaleEmbedding",
    "LSDAttention",
    "PatchMerging",
    "checkpoint_filter_fn",
    "crossformer_base",
    "crossformer_large",
    "crossformer_small",
    "crossformer_tiny",
    "group_tokens",
    "ungroup_tokens",
]

SOURCE = "https://github.com/cheerss/CrossFormer"


def _split_dims(total: int, n: int) -> list[int]:
    """CEL channel split: ``total / 2, total / 4, ...`` with the last kernel taking the remainder's
    share (``[C/2, C/4, C/8, C/8]`` for four kernels, ``[C/2, C/2]`` for two)."""
    return [total // 2 ** (i + 1) if i < n - 1 else total // 2**i for i in range(n)]


class CrossScaleEmbedding(nn.Module):
    """The stem CEL: convolutions of ``kernel_sizes`` with a common ``stride``, concatenated, then
    LayerNorm. Output ``[B, H / stride, W / stride, C]`` (channels last)."""

    def __init__(
        self, in_chs: int, dim: int, kernel_sizes: Sequence[int] = (4, 8, 16, 32), stride: int = 4
    ) -> None:
        super().__init__()
        self.projs = nn.ModuleList(
            nn.Conv2d(in_chs, d, kernel_size=k, stride=stride, padding=(k - stride) // 2)
            for k, d in zip(kernel_sizes, _split_dims(dim, len(kernel_sizes)), strict=True)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(torch.cat([proj(x) for proj in self.projs], dim=1).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """The CEL between stages: LayerNorm, then convolutions of ``kernel_sizes`` with stride 2
    (``out_dim / 2`` channels each for two kernels), concatenated. ``[B, H, W, C]`` in and out."""

    def __init__(self, dim: int, out_dim: int, kernel_sizes: Sequence[int] = (2, 4)) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reductions = nn.ModuleList(
            nn.Conv2d(dim, d, kernel_size=k, stride=2, padding=(k - 2) // 2)
            for k, d in zip(kernel_sizes, _split_dims(out_dim, len(kernel_sizes)), strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x).permute(0, 3, 1, 2)
        return torch.cat([r(x) for r in self.reductions], dim=1).permute(0, 2, 3, 1)


def group_tokens(x: Tensor, mode: str, size: int) -> tuple[Tensor, tuple[int, int]]:
    """Split ``[B, H, W, C]`` into attention groups ``[B * nG, Gh * Gw, C]`` (groups in row-major
    order per image, tokens row-major inside a group).

    ``mode="sda"``: ``size = G``, groups of ``G x G`` adjacent tokens. ``mode="lda"``: ``size = I``,
    the tokens ``(I a + i, I b + j)`` for a fixed ``(i, j)`` form group ``(i, j)`` of ``H / I x W / I``
    tokens. ``H`` and ``W`` must be multiples of ``size``. Returns the groups and ``(Gh, Gw)``.
    """
    b, h, w, c = x.shape
    if mode == "sda":
        gh = gw = size
        x = x.reshape(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    elif mode == "lda":
        gh, gw = h // size, w // size
        x = x.reshape(b, gh, size, gw, size, c).permute(0, 2, 4, 1, 3, 5)
    else:
        raise ConfigError(f"unknown CrossFormer attention mode '{mode}' (use 'sda' or 'lda')")
    return x.reshape(-1, gh * gw, c), (gh, gw)


def ungroup_tokens(groups: Tensor, mode: str, size: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`group_tokens`: ``[B * nG, Gh * Gw, C]`` -> ``[B, H, W, C]``."""
    c = groups.shape[-1]
    if mode == "sda":
        x = groups.reshape(-1, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
    else:
        x = groups.reshape(-1, size, size, h // size, w // size, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, h, w, c)


class LSDAttention(nn.Module):
    """Multi-head self-attention inside each group with CrossFormer's dynamic position bias.

    ``qkv = Linear(C, 3C)``; per head ``softmax(q k^T / sqrt(C / heads) + DPB(Gh, Gw)) v`` (``mask``:
    keys that may be attended); ``proj = Linear(C, C)``. Submodule names (``qkv``, ``pos``, ``proj``)
    are the released ones.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"CrossFormer attention: dim={dim} is not divisible by heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.attn_drop = attn_drop
        self.pos = DynamicPositionBias(dim, heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, group_hw: tuple[int, int], mask: Tensor | None = None) -> Tensor:
        """``x``: ``[B * nG, Gh * Gw, C]`` groups; ``mask``: ``[B * nG, 1, 1, Gh * Gw]`` bool or None."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.pos(*group_hw)
        out = attend(q, k, v, mask=mask, bias=bias, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossFormerBlock(nn.Module):
    """``x += LSDA(LN x); x += MLP(LN x)`` on ``[B, H, W, C]``; ``mode`` is ``"sda"`` or ``"lda"``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mode: str,
        group_size: int = 7,
        interval: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ("sda", "lda"):
            raise ConfigError(f"unknown CrossFormer attention mode '{mode}' (use 'sda' or 'lda')")
        self.mode, self.group_size, self.interval = mode, group_size, interval
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LSDAttention(dim, heads, qkv_bias=qkv_bias, attn_drop=attn_drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def grouping(self, h: int, w: int) -> tuple[str, int]:
        """``(mode, size)`` used on an ``h x w`` map: a map no larger than ``G`` is one SDA group."""
        if min(h, w) <= self.group_size:
            return "sda", min(h, w)
        return self.mode, self.group_size if self.mode == "sda" else self.interval

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        mode, size = self.grouping(h, w)
        shortcut = x
        x = self.norm1(x)
        pad_b, pad_r = (size - h % size) % size, (size - w % size) % size
        mask = None
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            real = torch.zeros(1, h + pad_b, w + pad_r, 1, dtype=torch.bool, device=x.device)
            real[:, :h, :w] = True
            real, _ = group_tokens(real, mode, size)  # [nG, N, 1]
            mask = real.transpose(1, 2).repeat(b, 1, 1).unsqueeze(1)  # [B * nG, 1, 1, N]
        groups, group_hw = group_tokens(x, mode, size)
        x = ungroup_tokens(self.attn(groups, group_hw, mask), mode, size, h + pad_b, w + pad_r)
        x = shortcut + self.drop_path(x[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossFormerStage(nn.Module):
    """``depth`` blocks alternating SDA / LDA, then (except in the last stage) patch merging."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        heads: int,
        *,
        group_size: int,
        interval: int,
        merge_sizes: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path_rates: Sequence[float],
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                CrossFormerBlock(
                    dim,
                    heads,
                    mode="sda" if i % 2 == 0 else "lda",
                    group_size=group_size,
                    interval=interval,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path_rates[i],
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim, out_dim, merge_sizes) if out_dim is not None else None


class CrossFormer(VisionBackbone):
    """CrossFormer backbone (see the module docstring); stage widths ``embed_dim * 2^i``."""

    def __init__(
        self,
        embed_dim: int = 64,
        depths: Sequence[int] = (1, 1, 8, 6),
        heads: Sequence[int] = (2, 4, 8, 16),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        group_size: int = 7,
        intervals: Sequence[int] = (8, 4, 2, 1),
        patch_sizes: Sequence[int] = (4, 8, 16, 32),
        merge_sizes: Sequence[int] = (2, 4),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(depths)
        if not len(heads) == len(intervals) == n:
            raise ConfigError(
                f"CrossFormer: depths {depths}, heads {heads} and intervals {intervals} "
                "need one entry per stage"
            )
        dims = [embed_dim * 2**i for i in range(n)]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = dims[-1]
        self.patch_embed = CrossScaleEmbedding(in_chans, embed_dim, patch_sizes, stride=4)
        self.pos_drop = nn.Dropout(drop_rate)
        # pure Python: layers.drop_path_rates calls torch.linspace(...).tolist(), which fails when
        # the model is built under torch.device("meta")
        total = sum(depths)
        flat = [drop_path_rate * j / max(1, total - 1) for j in range(total)]
        rates = [flat[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(n)]
        self.layers = nn.ModuleList(
            CrossFormerStage(
                dims[i],
                dims[i + 1] if i < n - 1 else None,
                depths[i],
                heads[i],
                group_size=group_size,
                interval=intervals[i],
                merge_sizes=merge_sizes,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path_rates=rates[i],
            )
            for i in range(n)
        )
        self.norm = nn.LayerNorm(self.num_features)
        self.feature_info = [FeatureInfo(d, 4 * 2**i, f"layers.{i}.blocks") for i, d in enumerate(dims)]
        self.head = ClassifierHead(self.num_features, num_classes, pool="avg", drop_rate=drop_rate)
        self._reduction = 4 * 2 ** (n - 1)
        self.apply(init_weights_vit)

    def _stages(self, x: Tensor, last: int) -> list[Tensor]:
        """Channels-last stage outputs ``[B, H_i, W_i, C_i]`` of stages ``0 .. last``."""
        self.check_input(x, multiple=self._reduction, channels=self.in_chans)
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for i, layer in enumerate(self.layers):
            x = checkpoint_seq(layer.blocks, x, enabled=self.grad_checkpointing)
            outs.append(x)
            if i == last:
                break
            x = layer.downsample(x)
        return outs

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        n = len(self.layers)
        wanted = list(range(n)) if indices is None else [i % n for i in indices]
        outs = self._stages(x, max(wanted))
        return [outs[i].permute(0, 3, 1, 2) for i in wanted]

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's tokens after the final LayerNorm, as a ``[B, C, H, W]`` map."""
        return self.norm(self._stages(x, len(self.layers) - 1)[-1]).permute(0, 3, 1, 2)


_RELEASED_BUFFERS = re.compile(r"\.(biases|relative_position_index|attn_mask)$")


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Released CrossFormer checkpoints -> ours: drop the recomputed buffers (``attn.biases``,
    ``attn.relative_position_index``, ``attn_mask``) and move ``head.{weight,bias}`` to ``head.fc``."""
    out = {}
    for key, value in state_dict.items():
        if _RELEASED_BUFFERS.search(key):
            continue
        out[re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)] = value
    return out


_COMMON = dict(
    input_size=224,
    test_input_size=32,
    family="crossformer",
    checkpoint_filter_fn=checkpoint_filter_fn,
    source=SOURCE,
)


@register_model(paper_params=27.8e6, paper_gmacs=2.9, paper_top1=81.5, **_COMMON)
def crossformer_tiny(num_classes: int = 1000, **kwargs) -> CrossFormer:
    """CrossFormer-T (Wang et al., ICLR 2022): C 64, depths (1, 1, 8, 6), heads (2, 4, 8, 16)."""
    return CrossFormer(64, (1, 1, 8, 6), (2, 4, 8, 16), num_classes=num_classes, **kwargs)


@register_model(paper_params=30.7e6, paper_gmacs=4.9, paper_top1=82.5, **_COMMON)
def crossformer_small(num_classes: int = 1000, **kwargs) -> CrossFormer:
    """CrossFormer-S (Wang et al., ICLR 2022): C 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24)."""
    return CrossFormer(96, (2, 2, 6, 2), (3, 6, 12, 24), num_classes=num_classes, **kwargs)


@register_model(paper_params=52.0e6, paper_gmacs=9.2, paper_top1=83.4, **_COMMON)
def crossformer_base(num_classes: int = 1000, **kwargs) -> CrossFormer:
    """CrossFormer-B (Wang et al., ICLR 2022): C 96, depths (2, 2, 18, 2), heads (3, 6, 12, 24)."""
    return CrossFormer(96, (2, 2, 18, 2), (3, 6, 12, 24), num_classes=num_classes, **kwargs)


@register_model(paper_params=92.0e6, paper_gmacs=16.1, paper_top1=84.0, **_COMMON)
def crossformer_large(num_classes: int = 1000, **kwargs) -> CrossFormer:
    """CrossFormer-L (Wang et al., ICLR 2022): C 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32)."""
    return CrossFormer(128, (2, 2, 18, 2), (4, 8, 16, 32), num_classes=num_classes, **kwargs)
