"""TransDAE (Azad, Adibfar and Fu, 2024, "TransDAE: Dual Attention Mechanism in a Hierarchical
Transformer for Efficient Medical Image Segmentation", arXiv 2409.02018): a U-shaped hierarchical
transformer whose blocks pair *efficient spatial attention* with *channel attention*, and whose skip
connections pass through an *inter-scale interaction module*. No code was released; this is our
implementation of the paper's description, built the way DAE-Former (Azad et al. 2023, its released
code) builds the same parts, with the deviations listed below.

**Encoder** (4 stages, strides 4, 8, 16, 32): overlapping patch embedding (Conv 7x7/4, then 3x3/2, +
LayerNorm), ``depths[i]`` dual-attention blocks, LayerNorm. **Dual-attention block** (DAE-Former's
order)::

    x = x + ChannelAttn(LN x);   x = x + MixFFN(LN x);   x = x + SpatialAttn(LN x);   x = x + MixFFN(LN x)

* Efficient spatial attention (Shen et al. 2021, "Efficient Attention: Attention with Linear
  Complexities", Eq. 3): ``E(Q, K, V) = rho_q(Q) (rho_k(K)^T V)`` with ``rho_q`` the softmax over each
  query's channels and ``rho_k`` the softmax over the tokens for each key channel, i.e. core's
  :func:`~interplay.core.attention.linear.linear_attention` with the feature-map pair
  ``(softmax over D, softmax over L)``, no normaliser (it is 1 already) and scale 1: ``O(N d^2)``.
  Keys and values come from the map spatially reduced by ``sr_ratio`` (a strided ``sr x sr``
  convolution + LayerNorm, PVT's spatial reduction), so the key set has ``N / sr^2`` tokens.
* Channel attention: core's :class:`~interplay.core.attention.channel.TransposedAttention` (L2-
  normalised ``q, k`` along the tokens, learnable temperature per head, ``A = softmax(q^T k t)``
  ``Cg x Cg``): the same maths as DAE-Former's ``ChannelAttention``.
* MixFFN (SegFormer, DAE-Former's ``mix_skip``): ``fc2(GELU(LN(DW3x3(h) + h)))``, ``h = fc1(x)``.

**Decoder** (3 stages then a 4x expansion): at stage ``i`` the deeper features are patch-expanded
(Swin-Unet's ``PatchExpand``: ``Linear(C, 2C)`` then a 2x2 pixel shuffle to ``C / 2`` channels +
LN), projected to the stage width, fused with the encoder skip by the inter-scale interaction module,
refined by ``decoder_depth`` dual-attention blocks; the last stage expands 4x (``Linear(C, 16C)``, 4x4
shuffle, LN) and a 1x1 convolution gives the class logits at the input resolution.

**Inter-scale interaction module** (our formulation of the paper's "decomposed large-kernel" skip
fusion): each scale gates the other through a large-kernel attention map, decomposed as in VAN's LKA
(Guo et al. 2022) into ``DW 5x5 -> DW 7x7 (dilation 3) -> 1x1`` (a 21x21 receptive field)::

    e' = e * (1 + LKA_d(d)),    d' = d * (1 + LKA_e(e)),    out = W [e'; d']

with ``e`` the encoder skip and ``d`` the decoder features of the same resolution; with both LKA maps
zero it reduces to a linear fusion of the concatenation.

Deviations from DAE-Former's code: 1x1 convolutions are ``nn.Linear`` on tokens (same maths), the
channel attention's output projection has no bias (core's module), DAE-Former's skip cross-attention
is replaced by the module above, and keys/values are spatially reduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import TransposedAttention
from interplay.core.attention.linear import linear_attention
from interplay.core.errors import ConfigError

PAPER = "Azad, Adibfar and Fu, TransDAE, arXiv 2409.02018 (2024)"
SYNAPSE_CLASSES = (
    "background",
    "aorta",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "spleen",
    "stomach",
)


def _softmax_channels(x: Tensor) -> Tensor:
    return x.softmax(dim=-1)


def _softmax_tokens(x: Tensor) -> Tensor:
    return x.softmax(dim=-2)


def efficient_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``rho_q(Q) (rho_k(K)^T V)`` on ``[B, H, L, D]`` inputs (``k, v`` may have another length)."""
    return linear_attention(
        q, k, v, feature_map=(_softmax_channels, _softmax_tokens), normalize=False, scale=1.0
    )


class EfficientSpatialAttention(nn.Module):
    """Efficient attention over the tokens of an ``H x W`` map ``[B, H*W, C]`` with ``heads`` heads and
    keys / values from the map reduced ``sr_ratio`` times along each side."""

    def __init__(self, dim: int, heads: int = 1, sr_ratio: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"efficient attention: dim {dim} is not divisible by heads {heads}")
        if sr_ratio < 1:
            raise ConfigError(f"sr_ratio must be >= 1, got {sr_ratio}")
        self.dim, self.heads, self.sr_ratio = dim, heads, sr_ratio
        self.queries = nn.Linear(dim, dim)
        self.keys = nn.Linear(dim, dim)
        self.values = nn.Linear(dim, dim)
        self.reprojection = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def reduce(self, x: Tensor, h: int, w: int) -> Tensor:
        """The key / value tokens: ``x`` itself, or its ``sr x sr``-strided reduction."""
        if self.sr_ratio == 1:
            return x
        if h % self.sr_ratio or w % self.sr_ratio:
            raise ConfigError(f"a {h}x{w} map cannot be reduced by sr_ratio {self.sr_ratio}")
        b, n, c = x.shape
        grid = self.sr(x.transpose(1, 2).reshape(b, c, h, w))
        return self.sr_norm(grid.flatten(2).transpose(1, 2))

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        kv = self.reduce(x, h, w)

        def split(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2)

        out = efficient_attention(split(self.queries(x)), split(self.keys(kv)), split(self.values(kv)))
        return self.reprojection(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """``fc2(GELU(LN(DW3x3(h) + h)))`` with ``h = fc1(x)`` on ``[B, H*W, C]`` tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        hidden = self.fc1(x)
        b, n, c = hidden.shape
        local = self.dwconv(hidden.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(self.norm(local + hidden)))


class DualAttentionBlock(nn.Module):
    """Channel attention, MixFFN, efficient spatial attention, MixFFN; pre-norm residuals."""

    def __init__(
        self,
        dim: int,
        *,
        spatial_heads: int = 1,
        channel_heads: int = 8,
        sr_ratio: int = 1,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if dim % channel_heads:
            raise ConfigError(
                f"channel attention: dim {dim} is not divisible by channel_heads {channel_heads}"
            )
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.channel_attn = TransposedAttention(dim, channel_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp1 = MixFFN(dim, hidden)
        self.norm3 = nn.LayerNorm(dim)
        self.spatial_attn = EfficientSpatialAttention(dim, spatial_heads, sr_ratio)
        self.norm4 = nn.LayerNorm(dim)
        self.mlp2 = MixFFN(dim, hidden)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.channel_attn(self.norm1(x))
        x = x + self.mlp1(self.norm2(x), h, w)
        x = x + self.spatial_attn(self.norm3(x), h, w)
        return x + self.mlp2(self.norm4(x), h, w)


class OverlapPatchEmbed(nn.Module):
    """``Conv k x k / s`` + LayerNorm: ``[B, C_in, H, W]`` -> tokens ``[B, H/s * W/s, C]`` and its size."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class LargeKernelAttention(nn.Module):
    """VAN's decomposed large kernel: ``1x1(DW 7x7 dilation 3(DW 5x5(x)))`` on ``[B, C, H, W]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv_spatial(self.conv0(x)))


class InterScaleInteraction(nn.Module):
    """``out = W [e * (1 + LKA_d(d)); d * (1 + LKA_e(e))]`` for encoder skip ``e`` and decoder features
    ``d``, both ``[B, H*W, C]`` (see the module docstring)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lka_from_decoder = LargeKernelAttention(dim)
        self.lka_from_encoder = LargeKernelAttention(dim)
        self.fuse = nn.Linear(2 * dim, dim)

    def forward(self, skip: Tensor, decoder: Tensor, h: int, w: int) -> Tensor:
        if skip.shape != decoder.shape:
            raise ConfigError(f"skip {tuple(skip.shape)} and decoder {tuple(decoder.shape)} features differ")
        b, n, c = skip.shape

        def grid(t: Tensor) -> Tensor:
            return t.transpose(1, 2).reshape(b, c, h, w)

        def tokens(t: Tensor) -> Tensor:
            return t.flatten(2).transpose(1, 2)

        gate_e = tokens(self.lka_from_decoder(grid(decoder)))
        gate_d = tokens(self.lka_from_encoder(grid(skip)))
        return self.fuse(torch.cat([skip * (1 + gate_e), decoder * (1 + gate_d)], dim=-1))


class PatchExpand(nn.Module):
    """A linear expansion, a ``scale x scale`` pixel shuffle and LayerNorm (Swin-Unet's expanding layers):
    2x with ``C / 2`` output channels (``scale=2``) or 4x keeping ``C`` (``scale=4``)."""

    def __init__(self, dim: int, scale: int = 2) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ConfigError(f"PatchExpand scale must be 2 or 4, got {scale}")
        self.scale = scale
        self.out_dim = dim // 2 if scale == 2 else dim
        self.expand = nn.Linear(dim, self.out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, int, int]:
        b = x.shape[0]
        s, c = self.scale, self.out_dim
        x = self.expand(x).view(b, h, w, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * s * w * s, c)
        return self.norm(x), h * s, w * s


class DecoderStage(nn.Module):
    """Project the expanded deeper features, fuse with the skip, refine, expand (2x, or 4x at the last)."""

    def __init__(self, in_dim: int, dim: int, depth: int, block: dict, *, last: bool) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, dim)
        self.interaction = InterScaleInteraction(dim)
        self.blocks = nn.ModuleList(DualAttentionBlock(dim, **block) for _ in range(depth))
        self.expand = PatchExpand(dim, 4 if last else 2)

    def forward(self, deeper: Tensor, skip: Tensor, h: int, w: int) -> tuple[Tensor, int, int]:
        x = self.interaction(skip, self.project(deeper), h, w)
        for blk in self.blocks:
            x = blk(x, h, w)
        return self.expand(x, h, w)


class TransDAE(nn.Module):
    """TransDAE segmentation network: ``[B, in_chans, H, W]`` -> logits ``[B, num_classes, H, W]`` (``H``,
    ``W`` multiples of 32).

    Args:
        num_classes: classes including background (Synapse: 9).
        in_chans: input channels (1 for CT slices).
        dims, depths: encoder widths and blocks per stage (paper size: 64/128/320/512, 2 each).
        decoder_depth: dual-attention blocks per decoder stage (2).
        spatial_heads, channel_heads: heads of the efficient spatial (1, as DAE-Former) and channel
            attention (8).
        sr_ratios: key / value reduction of the spatial attention per stage (8, 4, 2, 1).
        mlp_ratio: MixFFN expansion (4).
    """

    def __init__(
        self,
        num_classes: int = 9,
        in_chans: int = 1,
        dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        decoder_depth: int = 2,
        spatial_heads: int = 1,
        channel_heads: int = 8,
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if not (len(dims) == len(depths) == len(sr_ratios) == 4):
            raise ConfigError(
                f"TransDAE has 4 stages: dims {list(dims)}, depths {list(depths)}, sr {list(sr_ratios)}"
            )
        if num_classes < 2:
            raise ConfigError(f"num_classes must count background plus >= 1 class, got {num_classes}")
        self.num_classes, self.in_chans, self.dims = num_classes, in_chans, list(dims)
        kernels, strides = (7, 3, 3, 3), (4, 2, 2, 2)
        chans = [in_chans, *dims[:-1]]
        self.patch_embeds = nn.ModuleList(
            OverlapPatchEmbed(c, d, k, s) for c, d, k, s in zip(chans, dims, kernels, strides)
        )

        def block(i: int) -> dict:
            return dict(
                spatial_heads=spatial_heads,
                channel_heads=channel_heads,
                sr_ratio=sr_ratios[i],
                mlp_ratio=mlp_ratio,
            )

        self.encoder = nn.ModuleList(
            nn.ModuleList(DualAttentionBlock(dims[i], **block(i)) for _ in range(depths[i])) for i in range(4)
        )
        self.encoder_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.bottleneck_expand = PatchExpand(dims[3], 2)
        self.decoder = nn.ModuleList(
            DecoderStage(dims[i + 1] // 2, dims[i], decoder_depth, block(i), last=i == 0) for i in (2, 1, 0)
        )
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_encoder(self, x: Tensor) -> list[tuple[Tensor, int, int]]:
        """Per stage the normalised tokens ``[B, H_i W_i, C_i]`` with ``(H_i, W_i)``."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"TransDAE expects [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ConfigError(f"TransDAE needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        outs = []
        for embed, blocks, norm in zip(self.patch_embeds, self.encoder, self.encoder_norms):
            t, h, w = embed(x)
            for blk in blocks:
                t = blk(t, h, w)
            t = norm(t)
            outs.append((t, h, w))
            x = t.transpose(1, 2).reshape(t.shape[0], -1, h, w)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        skips = self.forward_encoder(x)
        deepest, h, w = skips[3]
        y, h, w = self.bottleneck_expand(deepest, h, w)
        for stage, i in zip(self.decoder, (2, 1, 0)):
            skip, hs, ws = skips[i]
            if (hs, ws) != (h, w):
                raise ConfigError(f"decoder stage {i}: {h}x{w} features do not match the {hs}x{ws} skip")
            y, h, w = stage(y, skip, h, w)
        b = y.shape[0]
        return self.head(y.transpose(1, 2).reshape(b, -1, h, w))


def interpolate_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of integer label maps ``[..., H, W]``."""
    shape = labels.shape
    flat = labels.reshape(-1, 1, *shape[-2:]).float()
    out = F.interpolate(flat, size=size, mode="nearest")
    return out.reshape(*shape[:-2], *size).long()
