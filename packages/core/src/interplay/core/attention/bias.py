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
import operator
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

    def _check_fits(self, lq: int, lk: int) -> None:
        # a 0-d or 1-d tensor broadcasts as [1, 1] / [1, Lk] (as score_mod treats it)
        last_two = (1,) * max(0, 2 - self.values.dim()) + tuple(self.values.shape[-2:])
        if last_two not in ((lq, lk), (1, lk), (lq, 1), (1, 1)):
            raise ValueError(f"bias of shape {tuple(self.values.shape)} does not fit scores of {lq} x {lk}")

    def dense(self, lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        self._check_fits(lq, lk)
        return self.values.to(device=device, dtype=dtype)

    def score_mod(self, lq: int, lk: int, device: torch.device) -> ScoreMod:
        self._check_fits(lq, lk)
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
            raise ValueError(
                f"TableBias needs table [H, N] and index [Lq, Lk], got {tuple(table.shape)}, "
                f"{tuple(index.shape)}"
            )
        self.table, self.index = table, index.long()

    def _check_fits(self, lq: int, lk: int) -> None:
        if tuple(self.index.shape) != (lq, lk):
            raise ValueError(f"bias index of shape {tuple(self.index.shape)} does not fit scores {lq} x {lk}")

    def dense(self, lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        self._check_fits(lq, lk)
        return self.table[:, self.index.to(self.table.device)].to(device=device, dtype=dtype).unsqueeze(0)

    def score_mod(self, lq: int, lk: int, device: torch.device) -> ScoreMod:
        # unchecked, a wrong index shape would read out of bounds inside the traced kernel
        self._check_fits(lq, lk)
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


# --------------------------------------------------------------------------------------------------
# argument checks


def _positive_int(value, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _check_lengths(lq: int | None, lk: int | None, nq: int, nk: int, what: str) -> None:
    for name, given, expected in (("lq", lq, nq), ("lk", lk, nk)):
        if given is not None and given != expected:
            raise ValueError(f"{name} = {given} does not match {what} ({expected} tokens)")


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return _positive_int(value[0], name), _positive_int(value[1], name)
    size = _positive_int(value, name)
    return size, size


# --------------------------------------------------------------------------------------------------
# 1-D relative position bias (Shaw et al. clipping, T5 buckets)


def relative_position_1d(lq: int, lk: int, device: torch.device | str | None = None) -> Tensor:
    """``kv - q_pos`` as a long tensor ``[Lq, Lk]``, query ``i`` at position ``i + Lk - Lq``."""
    lq, lk = _positive_int(lq, "lq"), _positive_int(lk, "lk")
    q_pos = torch.arange(lq, device=device) + (lk - lq)
    return torch.arange(lk, device=device)[None, :] - q_pos[:, None]


def t5_relative_position_bucket(
    relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """T5's bucket of each relative position ``kv - q`` (Raffel et al. 2020, Sec. 2.1).

    Half the buckets (per direction when ``bidirectional``) hold exact distances ``0 .. n/2 - 1``; the
    rest grow logarithmically up to ``max_distance``, beyond which everything shares the last bucket.
    Unidirectional: only ``kv <= q`` is distinguished, later keys share bucket 0. The log is taken in
    float32 as in the T5 reference code, so pretrained tables index the same buckets.
    """
    buckets = torch.zeros_like(relative_position)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets = buckets + (relative_position > 0).long() * n
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = n // 2
    is_small = distance < max_exact
    ratio = distance.clamp(min=1).float() / max_exact
    large = max_exact + (torch.log(ratio) / math.log(max_distance / max_exact) * (n - max_exact)).long()
    large = large.clamp(max=n - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias1D(nn.Module):
    """Learned per-head bias of the relative distance ``kv - q`` of a 1-D sequence.

    Default: clipped distances (Shaw et al. 2018), ``table [H, 2M + 1]``, entry ``clip(kv - q, -M, M) + M``.
    ``num_buckets``: T5's logarithmic buckets instead (``table [H, num_buckets]``), two-sided unless
    ``bidirectional=False`` (decoder style, only past keys distinguished). Table init: truncated normal,
    std 0.02. ``forward(lq, lk)`` aligns the queries bottom-right (query ``i`` at ``i + lk - lq``).
    """

    def __init__(
        self, heads: int, max_distance: int = 128, num_buckets: int | None = None, bidirectional: bool = True
    ) -> None:
        super().__init__()
        self.heads = _positive_int(heads, "heads")
        self.max_distance = _positive_int(max_distance, "max_distance")
        self.bidirectional = bool(bidirectional)
        if num_buckets is None:
            if not self.bidirectional:
                raise ValueError(
                    "bidirectional=False needs num_buckets (T5 buckets); the clipped table is two-sided"
                )
            size = 2 * self.max_distance + 1
        else:
            num_buckets = _positive_int(num_buckets, "num_buckets")
            minimum = 4 if self.bidirectional else 2
            if num_buckets < minimum:
                raise ValueError(
                    f"num_buckets must be >= {minimum} with bidirectional={bidirectional}, got {num_buckets}"
                )
            max_exact = (num_buckets // 2 if self.bidirectional else num_buckets) // 2
            if self.max_distance <= max_exact:
                raise ValueError(
                    f"max_distance ({max_distance}) must exceed the {max_exact} exact T5 buckets"
                )
            size = num_buckets
        self.num_buckets = num_buckets
        self.table = nn.Parameter(torch.empty(self.heads, size))
        nn.init.trunc_normal_(self.table, std=0.02)

    def index(self, lq: int, lk: int, device: torch.device | str | None = None) -> Tensor:
        """Table entry of each (query, key) pair, ``[Lq, Lk]``."""
        relative = relative_position_1d(lq, lk, device=device)
        if self.num_buckets is None:
            return relative.clamp(-self.max_distance, self.max_distance) + self.max_distance
        return t5_relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)

    def forward(self, lq: int, lk: int) -> TableBias:
        return TableBias(self.table, self.index(lq, lk, device=self.table.device))

    def extra_repr(self) -> str:
        text = f"heads={self.heads}, max_distance={self.max_distance}"
        if self.num_buckets is None:
            return text + ", clipped"
        return text + f", num_buckets={self.num_buckets}, bidirectional={self.bidirectional}"


# --------------------------------------------------------------------------------------------------
# 2-D relative position bias (Swin) and CrossFormer's dynamic position bias


def relative_position_index_2d(
    window_h: int, window_w: int, device: torch.device | str | None = None
) -> Tensor:
    """Swin's ``relative_position_index`` ``[N, N]`` (``N = Wh * Ww``, tokens in row-major order).

    ``index[i, j] = (y_i - y_j + Wh - 1) * (2 Ww - 1) + (x_i - x_j + Ww - 1)``, an entry of the
    ``(2Wh - 1)(2Ww - 1)`` table; computed exactly as Swin's reference code does.
    """
    window_h, window_w = _positive_int(window_h, "window_h"), _positive_int(window_w, "window_w")
    rows, cols = torch.arange(window_h, device=device), torch.arange(window_w, device=device)
    coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))  # 2, Wh, Ww
    flat = coords.flatten(1)  # 2, N
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # N, N, 2
    relative[:, :, 0] += window_h - 1
    relative[:, :, 1] += window_w - 1
    relative[:, :, 0] *= 2 * window_w - 1
    return relative.sum(-1)


def relative_offsets_2d(
    group_h: int, group_w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The ``(2Gh - 1)(2Gw - 1)`` offsets ``(dy, dx)`` as ``[.., 2]``, ordered as the Swin table's rows."""
    group_h, group_w = _positive_int(group_h, "group_h"), _positive_int(group_w, "group_w")
    dy = torch.arange(1 - group_h, group_h, device=device)
    dx = torch.arange(1 - group_w, group_w, device=device)
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij")).flatten(1).t().to(dtype)


class RelativePositionBias2D(nn.Module):
    """Swin's relative position bias for windows of ``Wh x Ww`` tokens (Liu et al. 2021, Eq. 4).

    Parameter ``relative_position_bias_table [(2Wh - 1)(2Ww - 1), H]`` (Swin's name and layout;
    truncated normal init, std 0.02) and buffer ``relative_position_index [N, N]``.
    ``forward()`` returns the bias of one window (``Lq = Lk = Wh * Ww``, tokens in row-major order).
    """

    def __init__(self, heads: int, window_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.heads = _positive_int(heads, "heads")
        self.window_size = _pair(window_size, "window_size")
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * wh - 1) * (2 * ww - 1), self.heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index_2d(wh, ww), persistent=False)

    def forward(self, lq: int | None = None, lk: int | None = None) -> TableBias:
        """The window's bias; ``lq``, ``lk`` (optional, as ``MultiHeadAttention`` passes them) are checked."""
        n = self.relative_position_index.shape[0]
        _check_lengths(lq, lk, n, n, f"a {self.window_size[0]}x{self.window_size[1]} window")
        return TableBias(self.relative_position_bias_table.t(), self.relative_position_index)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, window_size={self.window_size}"


class DynamicPositionBias(nn.Module):
    """CrossFormer's dynamic position bias (Wang et al. 2022, Sec. 3.3, Fig. 3).

    An MLP maps each offset ``(dy, dx)`` of a ``Gh x Gw`` group to one bias per head::

        Linear(2 -> D') -> [LayerNorm, ReLU, Linear(D' -> D')] x 2 -> LayerNorm, ReLU, Linear(D' -> H)

    with ``D' = dim // 16`` (CrossFormer builds ``DynamicPosBias(dim // 4)`` which uses ``pos_dim =
    dim // 4`` again); ``hidden_dim`` overrides it. ``residual=True`` is the reference code's other
    option, ``x = x + block(x)`` around the two hidden blocks (CrossFormer itself uses ``False``).
    Offsets are the raw integers, as in the reference code. Submodule names follow the reference
    (``pos_proj``, ``pos1``, ``pos2``, ``pos3``) so its checkpoints load.

    ``forward(group_h, group_w)`` evaluates the MLP over the ``(2Gh - 1)(2Gw - 1)`` offsets and returns a
    :class:`TableBias` indexed by :func:`relative_position_index_2d`, for groups of any size (SDA's
    adjacent groups and LDA's dilated ones alike: both are indexed by group coordinates).
    """

    def __init__(self, dim: int, heads: int, residual: bool = False, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.heads = _positive_int(heads, "heads")
        if hidden_dim is None:
            dim = _positive_int(dim, "dim")
            if dim // 16 < 1:
                raise ValueError(f"dim must be >= 16 (the MLP width is dim // 16), got {dim}")
            hidden_dim = dim // 16
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        self.residual = bool(residual)

        def block(out_features: int) -> nn.Sequential:
            return nn.Sequential(
                nn.LayerNorm(self.hidden_dim), nn.ReLU(), nn.Linear(self.hidden_dim, out_features)
            )

        self.pos_proj = nn.Linear(2, self.hidden_dim)
        self.pos1 = block(self.hidden_dim)
        self.pos2 = block(self.hidden_dim)
        self.pos3 = block(self.heads)

    def mlp(self, offsets: Tensor) -> Tensor:
        """``[..., 2]`` offsets ``(dy, dx)`` -> ``[..., H]`` biases."""
        x = self.pos_proj(offsets)
        if self.residual:
            x = x + self.pos1(x)
            x = x + self.pos2(x)
        else:
            x = self.pos2(self.pos1(x))
        return self.pos3(x)

    def forward(self, group_h: int, group_w: int | None = None) -> TableBias:
        group_w = group_h if group_w is None else group_w
        weight = self.pos_proj.weight
        offsets = relative_offsets_2d(group_h, group_w, device=weight.device, dtype=weight.dtype)
        table = self.mlp(offsets).t()  # [H, (2Gh - 1)(2Gw - 1)]
        return TableBias(table, relative_position_index_2d(group_h, group_w, device=weight.device))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, hidden_dim={self.hidden_dim}, residual={self.residual}"


# --------------------------------------------------------------------------------------------------
# LeViT attention bias


def levit_attention_bias_index(
    resolution: int | tuple[int, int], stride: int = 1, device: torch.device | str | None = None
) -> tuple[Tensor, int]:
    """LeViT's ``attention_bias_idxs`` ``[Nq, N]`` and the number of offsets.

    Keys lie on the ``Rh x Rw`` grid, queries on the grid subsampled by ``stride`` (LeViT's shrinking
    attention; ``stride=1``: the same grid), ``(Rh - 1) // stride + 1`` rows. Pair ``(p, p')`` reads the
    offset ``(|s p_y - p'_y|, |s p_x - p'_x|)``. LeViT numbers offsets in order of first appearance;
    query ``(0, 0)`` comes first and meets every offset, so that numbering is ``|dy| * Rw + |dx|`` and
    there are ``Rh * Rw`` offsets.
    """
    rh, rw = _pair(resolution, "resolution")
    stride = _positive_int(stride, "stride")
    qh, qw = (rh - 1) // stride + 1, (rw - 1) // stride + 1
    ky, kx = torch.meshgrid(torch.arange(rh, device=device), torch.arange(rw, device=device), indexing="ij")
    qy, qx = torch.meshgrid(torch.arange(qh, device=device), torch.arange(qw, device=device), indexing="ij")
    dy = (qy.reshape(-1, 1) * stride - ky.reshape(1, -1)).abs()
    dx = (qx.reshape(-1, 1) * stride - kx.reshape(1, -1)).abs()
    return dy * rw + dx, rh * rw


class LeViTAttentionBias(nn.Module):
    """LeViT's translation-invariant attention bias (Graham et al. 2021, Sec. 4.2, Eq. 1).

    ``B^h_{|dy|, |dx|}`` per head, parameter ``attention_biases [H, num_offsets]`` (zero init, as
    LeViT) and buffer ``attention_bias_idxs [Nq, N]`` (LeViT's names). ``stride > 1``: queries on the
    strided grid of LeViT's ``AttentionSubsample``. ``forward()`` returns the bias for
    ``Lq = Nq``, ``Lk = Rh * Rw`` tokens in row-major order.
    """

    def __init__(self, heads: int, resolution: int | tuple[int, int], stride: int = 1) -> None:
        super().__init__()
        self.heads = _positive_int(heads, "heads")
        self.resolution = _pair(resolution, "resolution")
        self.stride = _positive_int(stride, "stride")
        index, num_offsets = levit_attention_bias_index(self.resolution, self.stride)
        self.query_resolution = tuple((r - 1) // self.stride + 1 for r in self.resolution)
        self.attention_biases = nn.Parameter(torch.zeros(self.heads, num_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, lq: int | None = None, lk: int | None = None) -> TableBias:
        """The grid's bias; ``lq``, ``lk`` (optional, as ``MultiHeadAttention`` passes them) are checked."""
        nq, nk = self.attention_bias_idxs.shape
        _check_lengths(lq, lk, nq, nk, f"resolution {self.resolution} with stride {self.stride}")
        return TableBias(self.attention_biases, self.attention_bias_idxs)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, resolution={self.resolution}, stride={self.stride}"


# --------------------------------------------------------------------------------------------------
# ALiBi


def alibi_slopes(heads: int) -> list[float]:
    """Press et al.'s head slopes: ``2^(-8 i / n)``, ``i = 1 .. n`` for ``n`` a power of two; otherwise
    the slopes of the closest smaller power of two ``p`` followed by every other slope of ``2p``."""
    heads = _positive_int(heads, "heads")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    if heads & (heads - 1) == 0:
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


class ALiBi(AttentionBias):
    """Attention with linear biases (Press et al. 2022, Sec. 3): ``bias = -m_h * (q_pos - kv)``.

    Causal form (default): keys after the query get a positive bias; combine with a causal mask, as the
    paper does. ``symmetric=True``: ``-m_h * |q_pos - kv|`` for bidirectional attention. Query ``i`` sits
    at ``q_pos = i + Lk - Lq``.
    """

    def __init__(self, heads: int, symmetric: bool = False) -> None:
        self.heads = _positive_int(heads, "heads")
        self.symmetric = bool(symmetric)
        self.slopes = torch.tensor(alibi_slopes(self.heads), dtype=torch.float64)

    def _distance(self, q: Tensor, kv: Tensor, offset: int) -> Tensor:
        distance = q + offset - kv
        return distance.abs() if self.symmetric else distance

    def dense(self, lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        lq, lk = _positive_int(lq, "lq"), _positive_int(lk, "lk")
        q = torch.arange(lq, device=device)[:, None]
        kv = torch.arange(lk, device=device)[None, :]
        # computed in float32 (float64 if asked) and rounded once: long distances do not fit bf16
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        distance = self._distance(q, kv, lk - lq).to(compute)
        bias = -self.slopes.to(device=device, dtype=compute)[:, None, None] * distance
        return bias.unsqueeze(0).to(dtype)

    def score_mod(self, lq: int, lk: int, device: torch.device) -> ScoreMod:
        slopes = self.slopes.to(device=device, dtype=torch.float32)
        offset = _positive_int(lk, "lk") - _positive_int(lq, "lq")

        def fn(score, b, h, q, kv):
            return score + (-slopes[h] * self._distance(q, kv, offset)).to(score.dtype)

        return fn

    def __repr__(self) -> str:
        return f"ALiBi(heads={self.heads}, symmetric={self.symmetric})"
