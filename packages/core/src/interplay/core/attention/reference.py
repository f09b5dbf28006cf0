"""Plain, readable, differentiable references. Every fast path is tested against these.

Masks here are dense booleans (``True`` = may attend) and biases dense additive tensors, both
broadcastable to ``[B, H, Lq, Lk]``. A query row with no visible key returns zeros (and an LSE of
``-inf``) without producing NaN in the forward or the backward pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def repeat_kv(x: Tensor, heads: int) -> Tensor:
    """Grouped-query attention: repeat ``[B, Hkv, L, D]`` key/value heads up to ``heads``."""
    hkv = x.shape[1]
    return x if hkv == heads else x.repeat_interleave(heads // hkv, dim=1)


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale + bias, masked) v`` in ``[B, H, L, D]`` layout.

    Half-precision inputs are computed in float32 and the output is cast back.
    """
    out_dtype = q.dtype
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q, k, v = q.to(compute), k.to(compute), v.to(compute)
    heads = q.shape[1]
    k, v = repeat_kv(k, heads), repeat_kv(v, heads)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        scores = scores + bias.to(compute)
    row_visible = None
    if mask is not None:
        visible = mask.expand_as(scores)
        row_visible = visible.any(dim=-1, keepdim=True)
        # rows with no visible key attend everything here and are zeroed below: no -inf-only rows, no NaN
        scores = scores.masked_fill(~(visible | ~row_visible), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        probs = torch.nn.functional.dropout(probs, p=dropout_p)
    out = probs @ v
    if row_visible is not None:
        out = out.masked_fill(~row_visible, 0.0)
        lse = lse.masked_fill(~row_visible.squeeze(-1), float("-inf"))
    out = out.to(out_dtype)
    return (out, lse) if return_lse else out
