"""Multi-head attention module on :func:`interplay.core.attention.attend`.

Layout follows the attention contract: projections produce ``[B, H, L, D]`` tensors. A mask is a
:class:`~interplay.core.attention.masks.MaskSpec` fixed at construction (``mask=sliding_window(128)``)
and/or per-call boolean tensors (``attn_mask`` broadcastable to ``[B, H, Lq, Lk]``, ``True`` = may
attend; ``key_padding_mask`` ``[B, Lk]``, ``True`` = real token). Rows with no visible key return
zeros rather than NaN. ``bias`` is an :class:`~interplay.core.attention.bias.AttentionBias`, or a
module / callable ``bias(lq, lk) -> AttentionBias`` (relative position tables and the like).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from interplay.core.attention.api import attend
from interplay.core.attention.bias import AttentionBias
from interplay.core.attention.masks import MaskSpec, causal


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
        mask: a mask spec applied on every call (e.g. ``sliding_window(128)``).
        bias: an attention bias, or a module / callable ``(lq, lk) -> AttentionBias``.
        backend: attention backend (``auto``, ``math``, ``sdpa``, ``flex``).
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
        mask: MaskSpec | None = None,
        bias: AttentionBias | nn.Module | Callable[[int, int], AttentionBias] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        kv_heads = kv_heads or heads
        if heads % kv_heads:
            raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}")
        if mask is not None and not isinstance(mask, MaskSpec):
            raise TypeError(
                f"mask must be a MaskSpec (per-call tensors go to forward), got {type(mask).__name__}"
            )
        self.dim, self.heads, self.kv_heads = dim, heads, kv_heads
        self.head_dim = dim // heads
        kv_dim = kv_dim or dim
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(kv_dim, 2 * kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.mask = mask
        self.bias = bias
        self.backend = backend

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
        mask = self._mask(attn_mask, key_padding_mask, is_causal, b, lq, lk, x.device)
        bias = self.bias
        if bias is not None and not isinstance(bias, AttentionBias):
            bias = bias(lq, lk)
        out = attend(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            dropout_p=self.attn_drop if self.training else 0.0,
            backend=self.backend,
        )
        out = out.transpose(1, 2).reshape(b, lq, self.dim)
        return self.proj_drop(self.out_proj(out))

    def _mask(
        self, attn_mask, key_padding_mask, is_causal, batch, lq, lk, device
    ) -> MaskSpec | Tensor | None:
        """The module's spec, ``is_causal`` and the per-call tensors as one mask for ``attend``."""
        spec = self.mask
        if is_causal:
            spec = causal() if spec is None else spec & causal()
        dense = None
        if attn_mask is not None:
            if attn_mask.dtype != torch.bool:
                raise TypeError("attn_mask must be boolean (True = may attend)")
            dense = attn_mask
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (batch, lk):
                raise ValueError(
                    f"key_padding_mask must be a bool tensor of shape [{batch}, {lk}], got "
                    f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
                )
            kp = key_padding_mask[:, None, None, :]
            dense = kp if dense is None else dense & kp
        if dense is None:
            return spec
        if spec is not None:
            dense = dense & spec.dense(batch, self.heads, lq, lk, device)
        return dense
