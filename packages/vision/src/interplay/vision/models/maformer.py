"""MAFormer: A Transformer Network with Multi-scale Attention Fusion for Visual Recognition
(Wang, Sun, Wang, Zhang, Li, Xin, Zhang, Ding, Han; arXiv 2209.01620, 2022; Neurocomputing 2024).

**No public code, and the paper's architecture table was not available offline**: this module is
our reading of the method as described (abstract; Sec. 3 as summarised by later work, e.g. its
equations for the GLD and fusion); widths, depths and heads of the registered sizes are ours.

Every block is a Multi-scale Attention Fusion (MAF) block with two streams computed from the
block input ``Y`` (channels-last ``[B, H, W, C]``, ``M = H W`` tokens):

* local stream: ``Y_L = Y + LWA(LN Y)``; ``Y_L = Y_L + MLP(LN Y_L)`` -- multi-head
  self-attention inside non-overlapping ``7 x 7`` windows with Swin's relative position bias
  (:class:`interplay.core.attention.RelativePositionBias2D`), through
  :func:`interplay.core.attention.attend` on the batch of windows;
* global stream, Global Learning with Down-sampling (GLD): the normalised tokens, seen as
  ``C x M``, are compressed along the token axis by a fully connected layer to ``M' = P M`` global
  tokens (``P = 0.5``) and a learned positional embedding is added:
  ``Y_G = FC_{M -> M'}(LN(Y)^T)^T + E_pos``;
* fusion: the local tokens query the global ones,
  ``Z = Y_L + W_o softmax((LN Y_L) W_q ((LN Y_G) W_k)^T / sqrt(d)) (LN Y_G) W_v`` -- multi-head
  cross-attention (:class:`interplay.core.nn.MultiHeadAttention`).

The GLD layer is tied to the token count it was built for (``img_size``): at another input size
its weight is resampled over the input grid (:meth:`GLD.token_weight`; at ``img_size`` nothing is
resampled), so the number of global tokens stays ``M'``. Windows that do not fit the map
are zero-padded and the padded keys masked out.

Stem: ``Conv7x7 s4 (padding 2) -> LN``; between stages ``Conv3x3 s2 -> LN``; head: LN on every
token, global average, Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import RelativePositionBias2D, attend
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath, MultiHeadAttention
from interplay.vision.models.base import ClassifierHead, FeatureInfo, VisionBackbone, checkpoint_seq
from interplay.vision.models.factory import register_model
from interplay.vision.models.layers import Mlp, init_weights_vit, window_partition, window_reverse

__all__ = [
    "GLD",
    "MAFBlock",
    "MAFormer",
    "LocalWindowAttention",
    "maformer_base",
    "maformer_small",
]

SOURCE = "https://arxiv.org/abs/2209.01620"


class LocalWindowAttention(nn.Module):
    """Window MHSA with Swin's relative position bias on ``[B, H, W, C]`` (padded keys masked)."""

    def __init__(self, dim: int, heads: int, window_size: int = 7, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim, self.window_size = heads, dim // heads, window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = RelativePositionBias2D(heads, window_size)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        mask = None
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            valid = torch.zeros(1, h + pad_b, w + pad_r, 1, dtype=torch.bool, device=x.device)
            valid[:, :h, :w] = True
            mask = window_partition(valid, ws).reshape(-1, 1, 1, ws * ws)  # [nW, 1, 1, N] keys
            mask = mask.repeat(b, 1, 1, 1)
        windows = window_partition(x, ws)
        n = windows.shape[1]
        q, k, v = (
            self.qkv(windows).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        )
        out = attend(q, k, v, mask=mask, bias=self.rel_pos())
        out = self.proj(out.transpose(1, 2).reshape(-1, n, c))
        return window_reverse(out, ws, h + pad_b, w + pad_r)[:, :h, :w]


class GLD(nn.Module):
    """Global Learning with Down-sampling: ``M`` tokens -> ``M' = ratio * M`` global tokens.

    ``fc``: ``Linear(M, M')`` over the token axis (``M`` = tokens of the construction ``grid``);
    ``pos_embed``: ``[1, M', C]``. Input ``[B, H, W, C]``. On another grid ``h x w`` the FC weight,
    seen as ``[M', H0, W0]``, is resampled to ``[M', h, w]`` (area when shrinking, bilinear when
    growing), scaled by ``H0 W0 / (h w)`` and shifted per row so that a constant map gives exactly
    the same global tokens at every size.
    """

    def __init__(self, dim: int, grid: tuple[int, int], ratio: float = 0.5) -> None:
        super().__init__()
        self.grid = grid
        tokens = grid[0] * grid[1]
        self.num_global = max(1, round(tokens * ratio))
        self.fc = nn.Linear(tokens, self.num_global)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_global, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def token_weight(self, h: int, w: int) -> Tensor:
        """The FC weight ``[M', h * w]`` for an ``h x w`` map."""
        if (h, w) == self.grid:
            return self.fc.weight
        h0, w0 = self.grid
        weight = self.fc.weight.view(self.num_global, 1, h0, w0)
        mode = "area" if h <= h0 and w <= w0 else "bilinear"
        weight = F.interpolate(
            weight, size=(h, w), mode=mode, **({} if mode == "area" else {"align_corners": False})
        )
        weight = weight.reshape(self.num_global, h * w) * (h0 * w0 / (h * w))
        # shift each row so that its sum (the response to a constant map) is exactly the original one
        return weight + (self.fc.weight.sum(1, keepdim=True) - weight.sum(1, keepdim=True)) / (h * w)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c).transpose(1, 2)  # [B, C, M]
        return F.linear(tokens, self.token_weight(h, w), self.fc.bias).transpose(1, 2) + self.pos_embed


class MAFBlock(nn.Module):
    """Multi-scale attention fusion block on ``[B, H, W, C]`` (module docstring)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        grid: tuple[int, int],
        *,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        gld_ratio: float = 0.5,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"MAFormer: width {dim} is not divisible by {heads} heads")
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LocalWindowAttention(dim, heads, window_size, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_global = nn.LayerNorm(dim)
        self.gld = GLD(dim, grid, gld_ratio)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.fusion = MultiHeadAttention(dim, heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        local = x + self.drop_path(self.attn(self.norm1(x)))
        local = local + self.drop_path(self.mlp(self.norm2(local)))
        glob = self.norm_kv(self.gld(self.norm_global(x)))  # [B, M', C]
        tokens = local.reshape(b, h * w, c)
        fused = tokens + self.drop_path(self.fusion(self.norm_q(tokens), context=glob))
        return fused.view(b, h, w, c)


class MAFormer(VisionBackbone):
    """MAFormer backbone (see the module docstring): ``dims`` / ``depths`` / ``heads`` per stage."""

    def __init__(
        self,
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 6, 2),
        heads: Sequence[int] = (2, 4, 8, 16),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        gld_ratio: float = 0.5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(heads):
            raise ConfigError(
                f"MAFormer: dims {dims}, depths {depths} and heads {heads} need one entry per stage"
            )
        self._reduction = 4 * 2 ** (len(dims) - 1)
        if img_size % self._reduction:
            raise ConfigError(f"MAFormer: img_size must be divisible by {self._reduction}, got {img_size}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = dims[-1]
        total = sum(depths)
        flat = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        self.stem = nn.Conv2d(in_chans, dims[0], 7, 4, 2)
        self.stem_norm = nn.LayerNorm(dims[0])
        self.downsamples = nn.ModuleList(
            nn.Conv2d(dims[i - 1], dims[i], 3, 2, 1) for i in range(1, len(dims))
        )
        self.downsample_norms = nn.ModuleList(nn.LayerNorm(dims[i]) for i in range(1, len(dims)))
        stages, start = [], 0
        for i, (dim, depth, h) in enumerate(zip(dims, depths, heads, strict=True)):
            side = img_size // (4 * 2**i)
            stages.append(
                nn.Sequential(
                    *[
                        MAFBlock(
                            dim,
                            h,
                            (side, side),
                            window_size=window_size,
                            mlp_ratio=mlp_ratio,
                            gld_ratio=gld_ratio,
                            drop_path=flat[start + j],
                        )
                        for j in range(depth)
                    ]
                )
            )
            start += depth
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.feature_info = [FeatureInfo(d, 4 * 2**i, f"stages.{i}") for i, d in enumerate(dims)]
        self.head = ClassifierHead(self.num_features, num_classes, pool="avg", drop_rate=drop_rate)
        self.apply(init_weights_vit)

    def _run(self, x: Tensor, last: int) -> list[Tensor]:
        self.check_input(x, multiple=self._reduction, channels=self.in_chans)
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1))
        outs = []
        for i in range(last + 1):
            if i > 0:
                x = self.downsamples[i - 1](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                x = self.downsample_norms[i - 1](x)
            x = checkpoint_seq(self.stages[i], x, enabled=self.grad_checkpointing)
            outs.append(x)
        return outs

    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None) -> list[Tensor]:
        n = len(self.stages)
        wanted = list(range(n)) if indices is None else [i % n for i in indices]
        outs = self._run(x, max(wanted))
        return [outs[i].permute(0, 3, 1, 2) for i in wanted]

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage with the final LayerNorm on every token, ``[B, C, H/32, W/32]``."""
        return self.norm(self._run(x, len(self.stages) - 1)[-1]).permute(0, 3, 1, 2)


_COMMON = dict(input_size=224, test_input_size=32, family="maformer", source=SOURCE)


@register_model(paper_params=None, paper_gmacs=None, paper_top1=None, **_COMMON)
def maformer_small(num_classes: int = 1000, **kwargs) -> MAFormer:
    """MAFormer-S (Wang et al., arXiv 2022, "MAFormer ... Multi-scale Attention Fusion"), our reading.

    Our sizes (the paper's table was not available offline, so no paper figures are registered):
    dims (64, 128, 256, 512), depths (2, 2, 6, 2), heads (2, 4, 8, 16), window 7, GLD ratio 0.5.
    Ours at 224^2: 28.54M parameters (9.84M in the two stage-1 GLD layers), 4.8 GMACs.
    """
    return MAFormer((64, 128, 256, 512), (2, 2, 6, 2), (2, 4, 8, 16), num_classes=num_classes, **kwargs)


@register_model(paper_params=None, paper_gmacs=None, paper_top1=None, **_COMMON)
def maformer_base(num_classes: int = 1000, **kwargs) -> MAFormer:
    """MAFormer-B (Wang et al., arXiv 2022, "MAFormer ... Multi-scale Attention Fusion"), our reading.

    Our sizes (the paper's table was not available offline, so no paper figures are registered; its
    abstract gives 85.9 % top-1 for MAFormer-L only): dims (96, 192, 384, 768), depths (2, 2, 18, 2),
    heads (3, 6, 12, 24), window 7, GLD ratio 0.5. Ours at 224^2: 79.31M parameters, 14.7 GMACs.
    """
    return MAFormer((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24), num_classes=num_classes, **kwargs)
