"""Additive attention biases, usable as ``attend(..., bias=...)`` on every backend that can express them.

An :class:`AttentionBias` adds ``bias(b, h, q_idx, kv_idx)`` to the scaled scores. It compiles to a
dense tensor ``[B|1, H|1, Lq, Lk]`` for the math and SDPA backends and to a FlexAttention
``score_mod`` for the flex backend. A plain tensor broadcastable to ``[B, H, Lq, Lk]`` is accepted as
well (dense only).

:class:`TableBias` covers every learned relative bias: a per-head value table ``[H, N]`` and an index
map ``[Lq, Lk]`` telling which entry each (query, key) pair reads. The modules built on it (1-D and
2-D relative position tables, CrossFormer's dynamic position bias, LeViT's attention bias) and the
fixed ones (ALiBi) live further down; RoPE rotates queries and keys instead of adding a bias
(:mod:`interplay.core.attention.rope`).

All of them implement ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + B) V`` with a different ``B``:

* :class:`RelativePositionBias1D` -- ``B[h, i, j] = t_h[clip(j - i, -M, M)]``, the clipped relative
  distance of Shaw et al. 2018 ("Self-Attention with Relative Position Representations", Eq. 3-4,
  ``clip(x, k) = max(-k, min(k, x))``) used as a scalar bias per head, or T5's logarithmic buckets
  (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", Sec. 2.1).
* :class:`RelativePositionBias2D` -- Swin Transformer (Liu et al. 2021), Eq. 4, with the table
  ``B^ in R^{(2M-1) x (2M-1)}`` indexed by the window's relative coordinates.
* :class:`DynamicPositionBias` -- CrossFormer (Wang et al. 2022, ICLR), Sec. 3.3 / Fig. 3: the same
  bias as Swin, but ``B^`` is produced by an MLP from the offsets ``(dy, dx)``, so any group size works.
* :class:`LeViTAttentionBias` -- LeViT (Graham et al. 2021), Sec. 4.2, Eq. 1:
  ``A^h_{(x,y),(x',y')} = Q_{(x,y)} . K_{(x',y')} + B^h_{|x-x'|, |y-y'|}``, also on the strided query
  grid of the shrinking (subsample) attention.
* :class:`ALiBi` -- Press et al. 2022 ("Train Short, Test Long"), Sec. 3:
  ``softmax(q_i K^T + m . [-(i-1), ..., -2, -1, 0])`` with head slopes ``m`` a geometric sequence.

Index convention when ``Lq != Lk`` (as in :mod:`~interplay.core.attention.masks`): query ``i`` sits at
position ``i + Lk - Lq`` (bottom-right alignment, as when decoding against a cache).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


class AttentionBias:
    """An additive score bias; subclasses implement :meth:`dense` and :meth:`score_mod`."""

    per_batch: bool = False

    def dense(self, lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Bias tensor broadcastable to ``[B, H, Lq, Lk]``."""
        raise NotImplementedError

    def score_mod(self, lq: int, lk: int, device: torch.device) -> ScoreMod:
        """``fn(score, b, h, q_idx, kv_idx) -> score + bias`` (elementwise ops only)."""
        raise NotImplementedError


class DenseBias(AttentionBias):
    """A materialised bias tensor ``[B|1, H|1, Lq, Lk]`` (or anything broadcastable to it)."""

    def __init__(self, values: Tensor) -> None:
        if values.dim() > 4:
            raise ValueError(f"a dense bias has at most 4 dims [B, H, Lq, Lk], got {tuple(values.shape)}")
        self.values = values
        self.per_batch = values.dim() == 4 and values.shape[0] > 1

    def dense(self, lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        # a 0-d or 1-d tensor broadcasts as [1, 1] / [1, Lk] (as score_mod treats it)
        last_two = (1,) * max(0, 2 - self.values.dim()) + tuple(self.values.shape[-2:])
        if last_two not in ((lq, lk), (1, lk), (lq, 1), (1, 1)):
            raise ValueError(f"bias of shape {tuple(self.values.shape)} does not fit scores of {lq} x {lk}")
        return self.values.to(device=device, dtype=dtype)

    def score_mod(self, lq: int, lk: int, device: torch.device) -> ScoreMod:
        values = self.values.to(device)
        while values.dim() < 4:
            values = values.unsqueeze(0)
        values = values.expand(values.shape[0], values.shape[1], lq, lk)
        single_b, single_h = values.shape[0] == 1, values.shape[1] == 1

        def fn(score, b, h, q, kv):
            return score + values[0 if single_b else b, 0 if single_h else h, q, kv]

        return fn


class TableBias(AttentionBias):
    """``bias[h, q, kv] = table[h, index[q, kv]]``: relative position tables and their kin.

    ``table``: ``[H, N]`` (learned, differentiable); ``index``: ``[Lq, Lk]`` long tensor.
    """

    def __init__(self, table: Tensor, index: Tensor) -> None:
        if table.dim() != 2 or index.dim() != 2:
            raise ValueError(f"TableBias needs table [H, N] and index [Lq, Lk], got {tuple(table.shape)}, "
                             f"{tuple(index.shape)}")
        self.table, self.index = table, index.long()

    def dense(self, lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        if tuple(self.index.shape) != (lq, lk):
            raise ValueError(f"bias index of shape {tuple(self.index.shape)} does not fit scores of {lq} x {lk}")
        return self.table[:, self.index.to(self.table.device)].to(device=device, dtype=dtype).unsqueeze(0)

    def score_mod(self, lq: int, lk: int, device: torch.device) -> ScoreMod:
        table, index = self.table.to(device), self.index.to(device)
        shared = table.shape[0] == 1  # one row for every head: dense() broadcasts it, so must this

        def fn(score, b, h, q, kv):
            return score + table[0 if shared else h, index[q, kv]]

        return fn


def as_bias(bias: AttentionBias | Tensor | None) -> AttentionBias | None:
    if bias is None or isinstance(bias, AttentionBias):
        return bias
    if isinstance(bias, Tensor):
        return DenseBias(bias)
    raise TypeError(f"bias must be an AttentionBias or a tensor, got {type(bias).__name__}")
