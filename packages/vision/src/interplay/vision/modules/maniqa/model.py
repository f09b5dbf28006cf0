"""MANIQA (Yang et al., CVPRW 2022, "MANIQA: Multi-dimension Attention Network for No-Reference Image
Quality Assessment"; NTIRE 2022 NR-IQA winner), Sec. 3 and Fig. 2 of the paper.

Pipeline on a ``S x S`` crop (224 in the paper), with ``N = (S / p)^2`` patch tokens of a ViT of width
``D`` and patch size ``p`` (ViT-B/8: ``N = 784``, ``D = 768``):

1. **ViT features** (Sec. 3.1): the patch tokens of blocks 6, 7, 8, 9 (0-based, the released
   ``extract_feature``) concatenated along the channels: ``F in R^{4D x N}`` (3072 x 784).
2. **TAB** x ``num_tab`` (transposed attention block, Sec. 3.2): attention *across channels*,
   ``q, k, v = W_q F, W_k F, W_v F`` with ``W: Linear(N, N)`` acting on each channel's token vector;
   ``A = softmax(q k^T / sqrt(N))`` (``C x C``); ``F <- F + Dropout(A v)``. Computed by core's
   :func:`~interplay.core.attention.channel.channel_attention` (``scores="qk"``, one group, default
   scale ``N^-1/2``: its docstring's MANIQA form).
3. ``Conv1x1: 4D -> D``, then an **SSTB** (scale Swin transformer block, Sec. 3.3): ``len(depths)``
   stages, each ``depth`` Swin blocks (window attention with Swin's relative position bias, windows
   shifted by half a window in every second block) followed by ``Conv3x3 + ReLU``, and a scaled
   residual around the whole stage: ``x = alpha * stage(x) + x`` (``alpha = 0.8``).
4. TAB x ``num_tab`` again, ``Conv1x1: D -> D / 2``, a second SSTB.
5. **Dual branch** (Sec. 3.4, Eq. 7): per token a score ``s = ReLU(MLP(x))`` and a weight
   ``w = sigmoid(MLP(x))``; the image score is ``q = sum_i w_i s_i / sum_i w_i``.

Window attention runs through core's :func:`~interplay.core.attention.attend` on the partitioned
windows with :class:`~interplay.core.attention.bias.RelativePositionBias2D` (Swin's table) and a
boolean mask for the shifted windows (the released code adds -100 instead of masking; the weights
it leaves are below 1e-40).

Differences from the released ``models/maniqa.py`` / ``models/swin.py``:

* The released ``TABlock`` ends with ``(attn @ v).transpose(1, 2).reshape(B, C, N)``, which re-reads a
  ``[B, N, C]`` buffer as ``[B, C, N]`` and so mixes tokens and channels whenever ``N != C``. We
  compute the paper's ``A v``; ``released_reshape=True`` reproduces the released layout bit for bit
  (needed to reuse released MANIQA checkpoints).
* ViT blocks after the last feature layer, the final norm and the classifier are never used by
  MANIQA; we drop them (``prune_backbone=True``) instead of running the whole ViT and hooking it.
* The score is computed for the whole batch at once (the released loop runs one image at a time).
* The score branch's last bias starts at 0.5 (``score_bias_init``), not PyTorch's default, so that
  training from scratch cannot start with every token in the final ReLU's zero region.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interplay.core.attention import RelativePositionBias2D, attend, channel_attention
from interplay.core.errors import ConfigError
from interplay.core.nn import DropPath
from interplay.vision.models.layers import Mlp, window_partition, window_reverse
from interplay.vision.models.vit import VisionTransformer

PAPER = "Yang et al., MANIQA, CVPRW 2022 (NTIRE 2022 NR-IQA track winner)"


def weighted_quality(scores: Tensor, weights: Tensor) -> Tensor:
    """Eq. (7): ``q_b = sum_i w_bi s_bi / sum_i w_bi`` over the tokens ``i``; ``scores``, ``weights``:
    ``[B, N]`` (weights positive, e.g. sigmoid outputs) -> ``[B]``."""
    if scores.shape != weights.shape or scores.dim() != 2:
        raise ValueError(
            f"scores and weights must both be [B, N], got {tuple(scores.shape)} and {tuple(weights.shape)}"
        )
    return (scores * weights).sum(dim=1) / weights.sum(dim=1)


class TransposedAttentionBlock(nn.Module):
    """TAB on ``x [B, C, N]`` (``C`` channels of ``N`` tokens): ``x + Dropout(softmax(q k^T / sqrt(N)) v)``
    with ``q, k, v = Linear(N, N)`` of ``x`` (the released ``c_q``, ``c_k``, ``c_v`` names)."""

    def __init__(self, num_tokens: int, drop: float = 0.1, *, released_reshape: bool = False) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.released_reshape = released_reshape
        self.c_q = nn.Linear(num_tokens, num_tokens)
        self.c_k = nn.Linear(num_tokens, num_tokens)
        self.c_v = nn.Linear(num_tokens, num_tokens)
        self.proj_drop = nn.Dropout(drop)

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(A v [B, C, N], A [B, C, C])`` of ``x [B, C, N]``, before dropout and residual."""
        if x.dim() != 3 or x.shape[-1] != self.num_tokens:
            raise ConfigError(
                f"TAB expects [B, C, N = {self.num_tokens}] (the token count is fixed by the crop size), "
                f"got {tuple(x.shape)}"
            )
        # core's layout is [B, G, N, Cg]: one group holding every channel
        q, k, v = (proj(x).transpose(1, 2).unsqueeze(1) for proj in (self.c_q, self.c_k, self.c_v))
        out, attn = channel_attention(q, k, v, scores="qk", return_attention=True)
        out = out[:, 0]  # [B, N, C] = (A v)^T
        b, n, c = out.shape
        out = out.reshape(b, c, n) if self.released_reshape else out.transpose(1, 2)
        return out, attn[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj_drop(self.attention(x)[0])


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> Tensor:
    """Boolean ``[nW, window^2, window^2]``: after Swin's cyclic shift by ``-shift``, tokens of one window
    may attend each other only if they come from the same region of the unshifted map."""
    region = torch.zeros(h, w, dtype=torch.long)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            region[rows, cols] = label
            label += 1
    windows = window_partition(region.view(1, h, w, 1), window)[..., 0]  # [nW, window^2]
    return windows[:, :, None] == windows[:, None, :]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window x window`` windows with Swin's relative position bias
    (``qkv``, ``proj`` and ``relative_position_bias_table`` as in Swin / the released code)."""

    def __init__(self, dim: int, heads: int, window: int, *, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"window attention: dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.window = dim, heads, window
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.position_bias = RelativePositionBias2D(heads, window)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, windows: Tensor, mask: Tensor | None = None) -> Tensor:
        """``windows [Bw, L, C]``; ``mask``: boolean ``[Bw, L, L]`` (True = may attend) or None."""
        bw, n, c = windows.shape
        q, k, v = self.qkv(windows).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.position_bias().dense(n, n, windows.device, q.dtype)  # [1, heads, L, L]
        out = attend(q, k, v, mask=None if mask is None else mask[:, None], bias=bias)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(bw, n, c)))


class SwinBlock(nn.Module):
    """Pre-norm Swin block on ``[B, H*W, C]``: ``x += DropPath(W-MSA or SW-MSA(LN x))``, ``x += DropPath(
    MLP(LN x))`` with an MLP of hidden width ``dim_mlp`` (the released ``SwinBlock``)."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        heads: int,
        window: int,
        shift: int,
        dim_mlp: int,
        *,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = resolution
        if min(h, w) <= window:  # the released rule: one window covering the map, no shift
            window, shift = min(h, w), 0
        if h % window or w % window:
            raise ConfigError(f"SSTB: the {h}x{w} token grid is not divisible by the window size {window}")
        self.resolution, self.window, self.shift = (h, w), window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim_mlp, drop=drop)
        mask = shifted_window_mask(h, w, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        if n != h * w:
            raise ConfigError(f"SwinBlock built for a {h}x{w} grid got {n} tokens")
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window)
        mask = None if self.attn_mask is None else self.attn_mask.repeat(b, 1, 1)
        x = window_reverse(self.attn(windows, mask), self.window, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, n, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ScaleSwinStage(nn.Module):
    """``depth`` Swin blocks (shift 0, window/2, 0, ...) then ``Conv3x3 + ReLU`` (the released
    ``BasicLayer``); ``[B, H*W, C]`` -> ``[B, H*W, C]``."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        depth: int,
        heads: int,
        window: int,
        dim_mlp: int,
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2, dim_mlp, drop_path=p)
            for i, p in enumerate(drop_path)
        )
        if len(self.blocks) != depth:
            raise ConfigError(f"stage depth {depth} does not match {len(drop_path)} drop-path rates")
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        h, w = self.resolution
        b, n, c = x.shape
        x = torch.relu(self.conv(x.transpose(1, 2).reshape(b, c, h, w)))
        return x.flatten(2).transpose(1, 2)


class ScaleSwinTransformer(nn.Module):
    """SSTB on maps ``[B, C, H, W]``: input dropout, then per stage ``x = scale * stage(x) + x``."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        depths: Sequence[int] = (2, 2),
        heads: Sequence[int] = (4, 4),
        window: int = 4,
        dim_mlp: int = 768,
        scale: float = 0.8,
        drop: float = 0.1,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        if len(depths) != len(heads):
            raise ConfigError(f"SSTB depths {list(depths)} and heads {list(heads)} differ in length")
        self.scale, self.resolution = scale, resolution
        self.dropout = nn.Dropout(drop)
        total = sum(depths)
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        self.stages = nn.ModuleList()
        start = 0
        for depth, h in zip(depths, heads):
            self.stages.append(
                ScaleSwinStage(dim, resolution, depth, h, window, dim_mlp, rates[start : start + depth])
            )
            start += depth

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.dropout(x).flatten(2).transpose(1, 2)
        for stage in self.stages:
            x = self.scale * stage(x) + x
        return x.transpose(1, 2).reshape(b, c, h, w)


class MANIQA(nn.Module):
    """MANIQA on a plain registry ViT (see the module docstring). ``forward(x [B, 3, S, S]) -> [B]``
    quality scores; :meth:`patch_scores` gives the per-token scores and weights ``[B, N]`` as well.

    Args:
        vit: a :class:`~interplay.vision.models.vit.VisionTransformer` (its ``img_size`` fixes ``S``).
        feature_layers: ViT blocks whose patch tokens are concatenated (paper: 6, 7, 8, 9).
        embed_dim: width after the first 1x1 convolution (paper: 768 = the ViT width); the second
            stage runs at ``embed_dim // 2``.
        num_tab: TABs before each SSTB; depths, num_heads, window_size, dim_mlp, scale: the SSTB's.
        drop: dropout of the TABs, the SSTB input and the score / weight MLPs (0.1).
        released_reshape: reproduce the released TAB's token/channel re-read (see module docstring).
        prune_backbone: drop the ViT blocks after the last feature layer, its norm and classifier.
        score_bias_init: initial bias of the score branch's last layer (0.5; the released code keeps
            PyTorch's default, which can leave every score in the final ReLU's dead zone from scratch).
    """

    def __init__(
        self,
        vit: VisionTransformer,
        *,
        feature_layers: Sequence[int] = (6, 7, 8, 9),
        embed_dim: int | None = None,
        num_tab: int = 2,
        depths: Sequence[int] = (2, 2),
        num_heads: Sequence[int] = (4, 4),
        window_size: int = 4,
        dim_mlp: int = 768,
        scale: float = 0.8,
        drop: float = 0.1,
        drop_path_rate: float = 0.1,
        released_reshape: bool = False,
        prune_backbone: bool = True,
        score_bias_init: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise ConfigError(f"MANIQA needs a plain ViT backbone (vit_*), got {type(vit).__name__}")
        depth = len(vit.blocks)
        layers = [int(i) for i in feature_layers]
        if not layers or any(not 0 <= i < depth for i in layers):
            raise ConfigError(f"feature_layers {layers} must be block indices of the ViT (0..{depth - 1})")
        self.feature_layers = layers
        self.img_size, self.patch_size = vit.img_size, vit.patch_size
        grid = vit.img_size // vit.patch_size
        self.resolution = (grid, grid)
        self.num_tokens = grid * grid
        if prune_backbone:
            vit.blocks = nn.ModuleList(list(vit.blocks)[: max(layers) + 1])
            vit.norm = nn.Identity()
            vit.reset_classifier(0)
        self.vit = vit
        in_dim = vit.embed_dim * len(layers)
        embed_dim = embed_dim or vit.embed_dim
        if embed_dim % 2:
            raise ConfigError(
                f"MANIQA embed_dim must be even (the second stage runs at embed_dim / 2), got {embed_dim}"
            )
        half = embed_dim // 2
        sstb = dict(
            depths=depths, heads=num_heads, window=window_size, dim_mlp=dim_mlp, scale=scale, drop=drop
        )
        sstb["drop_path_rate"] = drop_path_rate
        tab = dict(drop=drop, released_reshape=released_reshape)
        self.tablock1 = nn.ModuleList(
            TransposedAttentionBlock(self.num_tokens, **tab) for _ in range(num_tab)
        )
        self.conv1 = nn.Conv2d(in_dim, embed_dim, 1)
        self.swintransformer1 = ScaleSwinTransformer(embed_dim, self.resolution, **sstb)
        self.tablock2 = nn.ModuleList(
            TransposedAttentionBlock(self.num_tokens, **tab) for _ in range(num_tab)
        )
        self.conv2 = nn.Conv2d(embed_dim, half, 1)
        self.swintransformer2 = ScaleSwinTransformer(half, self.resolution, **sstb)
        self.fc_score = nn.Sequential(
            nn.Linear(half, half), nn.ReLU(), nn.Dropout(drop), nn.Linear(half, 1), nn.ReLU()
        )
        self.fc_weight = nn.Sequential(
            nn.Linear(half, half), nn.ReLU(), nn.Dropout(drop), nn.Linear(half, 1), nn.Sigmoid()
        )
        # the score ends in a ReLU: start it at the middle of the [0, 1] normalised score range, so
        # that no token starts (and, trained from scratch, stays) in the ReLU's flat zero region
        nn.init.constant_(self.fc_score[3].bias, score_bias_init)

    def features(self, x: Tensor) -> Tensor:
        """The concatenated ViT patch tokens ``[B, len(feature_layers) * D, N]``."""
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ConfigError(
                f"MANIQA takes {self.img_size}x{self.img_size} crops (its TABs act on a fixed "
                f"{self.num_tokens}-token grid), got input of shape {tuple(x.shape)}"
            )
        maps = self.vit.forward_intermediates(x, self.feature_layers)
        return torch.cat(maps, dim=1).flatten(2)

    def patch_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token scores ``s`` and weights ``w``, both ``[B, N]``."""
        h, w = self.resolution
        f = self.features(x)
        for tab in self.tablock1:
            f = tab(f)
        f = self.swintransformer1(self.conv1(f.unflatten(2, (h, w))))
        f = f.flatten(2)
        for tab in self.tablock2:
            f = tab(f)
        f = self.swintransformer2(self.conv2(f.unflatten(2, (h, w))))
        tokens = f.flatten(2).transpose(1, 2)  # [B, N, embed_dim / 2]
        return self.fc_score(tokens)[..., 0], self.fc_weight(tokens)[..., 0]

    def forward(self, x: Tensor) -> Tensor:
        scores, weights = self.patch_scores(x)
        return weighted_quality(scores, weights)
