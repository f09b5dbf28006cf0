"""Multi-head attention module on ``torch.nn.functional.scaled_dot_product_attention``.

Layout follows the attention contract: projections produce ``[B, H, L, D]`` tensors. Masks are
boolean, ``True`` = may attend, broadcastable to ``[B, H, Lq, Lk]``; a ``key_padding_mask`` of
shape ``[B, Lk]`` (``True`` = real token) is folded into it. Rows with no visible key return zeros
rather than NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with ``heads`` heads and optional grouped-query KV heads.

    Args:
        dim: model width (input and output).
        heads: number of query heads; ``dim`` must be divisible by it.
        kv_heads: number of key/value heads (grouped-query attention); must divide ``heads``.
        qkv_bias: bias in the input projections.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
        kv_dim: width of the key/value input for cross-attention (default ``dim``).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        *,
        kv_heads: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        kv_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        kv_heads = kv_heads or heads
        if heads % kv_heads:
            raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}")
        self.dim, self.heads, self.kv_heads = dim, heads, kv_heads
        self.head_dim = dim // heads
        kv_dim = kv_dim or dim
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(kv_dim, 2 * kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """``x``: ``[B, Lq, dim]``; ``context``: ``[B, Lk, kv_dim]`` (default ``x``).

        With ``is_causal`` and ``Lq != Lk`` the causal mask is aligned bottom-right: query ``i``
        sits at position ``Lk - Lq + i`` (the queries are the last ``Lq`` tokens, as when decoding
        with a cache).
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape [B, L, {self.dim}], got {tuple(x.shape)}")
        context = x if context is None else context
        kv_dim = self.kv_proj.in_features
        if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != kv_dim:
            raise ValueError(
                f"expected context of shape [{x.shape[0]}, L, {kv_dim}], got {tuple(context.shape)}"
            )
        b, lq, _ = x.shape
        lk = context.shape[1]
        q = self.q_proj(x).view(b, lq, self.heads, self.head_dim).transpose(1, 2)
        kv = self.kv_proj(context).view(b, lk, 2, self.kv_heads, self.head_dim)
        k, v = kv.unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        mask = _combine_masks(attn_mask, key_padding_mask, is_causal, b, lq, lk, x.device)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            is_causal=is_causal and mask is None,  # only reached when Lq == Lk
        )
        if mask is not None:
            # SDPA returns NaN for rows whose keys are all masked; the contract says zeros.
            visible = mask.any(dim=-1, keepdim=True)
            if not bool(visible.all()):
                out = out.masked_fill(~visible, 0.0)
        out = out.transpose(1, 2).reshape(b, lq, self.dim)
        return self.proj_drop(self.out_proj(out))


def _combine_masks(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
    batch: int,
    lq: int,
    lk: int,
    device: torch.device,
) -> Tensor | None:
    """One boolean mask (True = may attend) or None when SDPA's own causal flag suffices."""
    mask = None
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise TypeError("attn_mask must be boolean (True = may attend)")
        mask = attn_mask
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (batch, lk):
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape [{batch}, {lk}], got "
                f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        kp = key_padding_mask[:, None, None, :]
        mask = kp if mask is None else mask & kp
    if is_causal and (mask is not None or lq != lk):
        # bottom-right aligned, so that it agrees with SDPA's is_causal when lq == lk
        causal = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)
        mask = causal if mask is None else mask & causal
    return mask
