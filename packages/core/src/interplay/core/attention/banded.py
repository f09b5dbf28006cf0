"""Exact gather-based attention for the block-sparse (BigBird-style) pattern of Orion-MSP.

Bouadi et al., "Orion-MSP: Multi-Scale Sparse Attention for Tabular In-Context Learning" (Lexsi
Labs, arXiv:2511.02818, 2025), multi-scale sparse attention: over tokens ``[special | features]``
the first ``n_global`` tokens attend to and are attended by every token; a feature token ``i``
attends to the global tokens, to the features of its window band ``|i - j| <= window`` and to
``n_random`` random features (BigBird, Zaheer et al., 2020).
:func:`interplay.core.attention.masks.block_sparse` describes the same pattern as a mask; this module
computes it without the ``L x L`` score matrix:

* global queries: dense attention over all ``L`` keys (``n_global x L`` scores, SDPA);
* feature queries, in blocks of :data:`BAND_BLOCK` consecutive queries: scores against the
  ``n_global`` global keys, against the block's window of ``block + 2 * window`` keys (one gather of
  overlapping windows and one small matmul per block, masked to the exact band) and against the
  ``n_random`` random keys (one gather), side by side in one buffer and normalised by **one** softmax,
  i.e. ``softmax(s)_j = exp(s_j - LSE(s))`` with the log-sum-exp taken over the union of the three
  key sets. Band slots outside the feature range are masked (keys before the features are the global
  keys, already counted) and a random link that falls inside the band (the query itself included) is
  masked, so no key is counted twice.

Cost ``O(L * (n_global + block + 2 * window + n_random) * D)`` time and memory instead of ``O(L^2)``
(the block trades a constant factor of band scores for matmuls instead of per-offset passes).
Forward and backward go through autograd. The random links are
:func:`~interplay.core.attention.masks.block_sparse_random_links`, the function the mask table uses,
so for the same ``seed`` the two compute the same attention (tested against
``attend(q, k, v, mask=block_sparse(...), backend="math")`` for outputs and gradients).

On CUDA, compiled FlexAttention with the cached ``BlockMask`` (``attend(mask=block_sparse(...))``) is
the fast path; this module is the CPU path for long feature sequences (training and inference:
FlexAttention has no CPU backward in torch 2.13). CPU SDPA's fused kernel wins below about 500 tokens
and needs less memory (it never materialises scores); see ``benchmarks/tabular/orion_msp.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from interplay.core.attention.masks import block_sparse_random_links

__all__ = ["block_sparse_attention", "block_sparse_key_count"]

_LINKS: OrderedDict[tuple, tuple[Tensor, Tensor, Tensor]] = OrderedDict()
_LINKS_CACHE_SIZE = 64
# feature queries are processed in blocks of this many: each block scores its band as one dense
# [block, block + 2 * window] tile (a matmul), masked to the exact band
BAND_BLOCK = 32


def block_sparse_key_count(length: int, n_global: int, window: int, n_random: int) -> int:
    """Keys scored per feature query: ``n_global + 2 * window + 1 + n_random`` (before masking)."""
    n_feat = max(0, length - n_global)
    band = 2 * min(window, max(n_feat - 1, 0)) + 1
    return min(n_global, length) + band + min(n_random, n_feat)


def _structure(
    length: int, n_global: int, window: int, n_random: int, seed: int, block: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index structure of the feature queries, cached per (pattern, length, block, device):

    window keys ``[nb * (block + 2w)]`` (absolute indices, clamped into range), their validity
    ``[nb, block, block + 2w]``, random links ``[Lf, R]`` and their validity ``[Lf, R]``.
    """
    key = (length, n_global, window, n_random, seed, block, str(device))
    cached = _LINKS.get(key)
    if cached is not None:
        _LINKS.move_to_end(key)
        return cached
    n_feat = length - n_global
    n_blocks = -(-n_feat // block)
    query = torch.arange(n_blocks * block).view(n_blocks, block, 1)
    # slot c of block n holds feature key n * block - window + c
    block_start = (torch.arange(n_blocks) * block).view(n_blocks, 1, 1)
    slot_key = block_start - window + torch.arange(block + 2 * window)
    band_valid = ((query - slot_key).abs() <= window) & (slot_key >= 0) & (slot_key < n_feat)
    # padding queries (past the last feature) are discarded: give them their slots so that no row is
    # fully masked (a NaN there would reach the keys' gradients)
    band_valid |= query >= n_feat
    window_keys = slot_key.reshape(-1).clamp(0, n_feat - 1) + n_global
    links = block_sparse_random_links(length, n_global, n_random, seed)
    # a link inside the band (|i - j| <= window, the query itself included) is already a band key
    link_valid = (links - n_global - torch.arange(n_feat)[:, None]).abs() > window
    cached = tuple(t.to(device) for t in (window_keys, band_valid, links, link_valid))
    _LINKS[key] = cached
    if len(_LINKS) > _LINKS_CACHE_SIZE:
        _LINKS.popitem(last=False)
    return cached


def block_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    n_global: int,
    window: int,
    n_random: int = 0,
    seed: int = 0,
    scale: float | None = None,
) -> Tensor:
    """``softmax(q k^T * scale, block_sparse(n_global, window, n_random, seed)) v`` without ``L x L``.

    Args:
        q, k, v: ``[B, H, L, D]`` (self-attention: one length); k and v may have ``Hkv`` heads
            dividing ``H`` (grouped-query attention).
        n_global: leading tokens that attend to and are attended by every token (CLS and global).
        window: band half-width: feature ``i`` sees features ``j`` with ``|i - j| <= window``.
        n_random: random feature keys per feature query (BigBird links), drawn with ``seed``.
        scale: score scale, default ``D ** -0.5``.

    Returns ``[B, H, L, D]``, equal to ``attend(q, k, v, mask=block_sparse(n_global, window, n_random,
    seed))`` up to rounding.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(
                f"block_sparse_attention expects {name} of shape [B, H, L, D], got {tuple(t.shape)}"
            )
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"block_sparse_attention is self-attention: q {tuple(q.shape)}, k {tuple(k.shape)} and "
            f"v {tuple(v.shape)} must share batch, length and head dim"
        )
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"key/value heads ({k.shape[1]}) must divide query heads ({q.shape[1]})")
    if n_global < 0 or window < 0 or n_random < 0:
        raise ValueError(
            f"block_sparse_attention needs non-negative sizes, got {n_global}, {window}, {n_random}"
        )
    if k.shape[1] != q.shape[1]:
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    length = q.shape[2]
    n_global = min(n_global, length)
    n_feat = length - n_global
    parts = []
    if n_global:
        # global tokens attend densely: n_global x L scores
        parts.append(F.scaled_dot_product_attention(q[:, :, :n_global], k, v, scale=scale))
    if n_feat:
        parts.append(_feature_queries(q, k, v, n_global, window, n_random, seed, scale))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def _feature_queries(
    q: Tensor, k: Tensor, v: Tensor, n_global: int, window: int, n_random: int, seed: int, scale: float
) -> Tensor:
    length = q.shape[2]
    n_feat = length - n_global
    block = min(max(BAND_BLOCK, window), n_feat)
    window_keys, band_valid, links, link_valid = _structure(
        length, n_global, window, n_random, seed, block, q.device
    )
    n_blocks = band_valid.shape[0]
    pad_end = n_blocks * block - n_feat
    span = block + 2 * window

    qf = q[:, :, n_global:] * scale
    if pad_end:
        qf = F.pad(qf, (0, 0, 0, pad_end))
    q_blocks = qf.unflatten(2, (n_blocks, block))  # [B, H, nb, b, D]
    batch, heads = q.shape[0], q.shape[1]
    n_links = links.shape[1]
    # scores of the three key sets side by side: [globals | band window | random links]; one buffer
    # filled slice by slice (no concatenated copy), normalised by one softmax below
    scores = q.new_empty(batch, heads, n_blocks, block, n_global + span + n_links)
    if n_global:
        scores[..., :n_global] = (qf @ k[:, :, :n_global].transpose(-1, -2)).unflatten(2, (n_blocks, block))
    # block n sees feature keys [n * b - w, (n + 1) * b + w): one gather of overlapping windows
    k_win = k.index_select(2, window_keys).unflatten(2, (n_blocks, span))  # [B, H, nb, b + 2w, D]
    scores[..., n_global : n_global + span] = (q_blocks @ k_win.transpose(-1, -2)).masked_fill_(
        ~band_valid, float("-inf")
    )
    del k_win
    if n_links:
        k_rand = k.index_select(2, links.reshape(-1)).unflatten(2, (n_feat, n_links))  # [B, H, Lf, R, D]
        # elementwise product and sum: R is tiny, and a batched matmul per query would be slow
        rand = (qf[:, :, :n_feat].unsqueeze(-2) * k_rand).sum(-1).masked_fill_(~link_valid, float("-inf"))
        del k_rand
        if pad_end:
            rand = F.pad(rand, (0, 0, 0, pad_end))  # padding queries: finite, discarded below
        scores[..., n_global + span :] = rand.unflatten(2, (n_blocks, block))
    # one softmax over the union of the three key sets (their joint log-sum-exp); every feature query
    # has itself in its band, so no row is fully masked
    probs = scores.softmax(dim=-1)
    del scores

    v_win = v.index_select(2, window_keys).unflatten(2, (n_blocks, span))
    out = (probs[..., n_global : n_global + span] @ v_win).flatten(2, 3)
    if n_global:
        out = out + probs[..., :n_global].flatten(2, 3) @ v[:, :, :n_global]
    out = out[:, :, :n_feat]
    if n_links:
        v_rand = v.index_select(2, links.reshape(-1)).unflatten(2, (n_feat, n_links))
        p_rand = probs[..., n_global + span :].flatten(2, 3)[:, :, :n_feat]
        out = out + (p_rand.unsqueeze(-1) * v_rand).sum(-2)
    return out
