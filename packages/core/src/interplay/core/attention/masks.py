"""Attention mask specifications, described once and compiled for every backend.

A :class:`MaskSpec` is a boolean predicate ``allowed(b, h, q_idx, kv_idx)`` (``True`` = the query may
attend the key). Specs combine with ``&`` and ``|`` and compile to

* a dense boolean tensor ``[B|1, H|1, Lq, Lk]`` (:meth:`MaskSpec.dense`) for SDPA and the math
  reference,
* a FlexAttention ``mask_mod`` (:meth:`MaskSpec.mask_mod`) and a ``BlockMask``
  (:func:`block_mask`), built block row by block row so that long sequences never materialise an
  ``Lq x Lk`` tensor.

Index convention when ``Lq != Lk``: queries are the *last* ``Lq`` positions of the key sequence
(query ``i`` sits at position ``i + Lk - Lq``), as when decoding against a cache. Every predicate is
written with elementwise torch operations, so one definition serves broadcast evaluation (dense
masks) and FlexAttention's vmap tracing (mask_mod).

Specs: :func:`causal`, :func:`key_padding`, :func:`sliding_window`, :func:`sinks` (StreamingLLM),
:func:`chunk_local` (MEGA / TCNCA), :func:`block_sparse` (Orion-MSP's intended pattern),
:func:`window_2d` (Swin / DaViT), :func:`dilated_2d` (CrossFormer LDA), :func:`halo` (HaloNet),
:func:`concentric_causal` (CCA) with :func:`concentric_position_ids`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Predicate = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class MaskSpec:
    """A boolean attention pattern. Subclasses implement :meth:`predicate` and :meth:`key`."""

    #: whether the pattern differs between batch entries / heads (otherwise it broadcasts)
    per_batch: bool = False
    per_head: bool = False

    def key(self) -> tuple:
        """Hashable identity of the pattern (for caches)."""
        raise NotImplementedError

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        """``fn(b, h, q_idx, kv_idx) -> bool tensor`` for the given lengths (elementwise ops only)."""
        raise NotImplementedError

    def check(self, batch: int, heads: int, lq: int, lk: int) -> None:
        """Raise ValueError when the pattern cannot apply to these sizes."""

    # -- composition ------------------------------------------------------------------------------
    def __and__(self, other: MaskSpec) -> MaskSpec:
        return Combined("and", (self, _as_spec(other)))

    def __or__(self, other: MaskSpec) -> MaskSpec:
        return Combined("or", (self, _as_spec(other)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaskSpec) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"MaskSpec{self.key()}"

    # -- compilation ------------------------------------------------------------------------------
    def mask_mod(self, lq: int, lk: int, device: torch.device | str = "cpu") -> Predicate:
        """The FlexAttention ``mask_mod``; the same function object for the same spec and lengths."""
        return _cached_predicate(self, lq, lk, torch.device(device))

    def dense(
        self,
        batch: int,
        heads: int,
        lq: int,
        lk: int,
        device: torch.device | str = "cpu",
        q_range: tuple[int, int] | None = None,
    ) -> Tensor:
        """Boolean mask ``[B or 1, H or 1, Lq, Lk]`` (rows ``q_range`` only, when given)."""
        device = torch.device(device)
        self.check(batch, heads, lq, lk)
        fn = self.mask_mod(lq, lk, device)
        b = torch.arange(batch if self.per_batch else 1, device=device).view(-1, 1, 1, 1)
        h = torch.arange(heads if self.per_head else 1, device=device).view(1, -1, 1, 1)
        start, stop = q_range or (0, lq)
        q = torch.arange(start, stop, device=device).view(1, 1, -1, 1)
        kv = torch.arange(lk, device=device).view(1, 1, 1, -1)
        out = fn(b, h, q, kv)
        return out.expand(b.shape[0], h.shape[1], stop - start, lk)


def _as_spec(value: object) -> MaskSpec:
    if not isinstance(value, MaskSpec):
        raise TypeError(f"cannot combine a mask spec with {type(value).__name__}")
    return value


class Combined(MaskSpec):
    def __init__(self, op: str, parts: Sequence[MaskSpec]) -> None:
        flat: list[MaskSpec] = []
        for p in parts:  # flatten nested combinations of the same operator
            flat.extend(p.parts if isinstance(p, Combined) and p.op == op else [p])
        self.op, self.parts = op, tuple(flat)
        self.per_batch = any(p.per_batch for p in self.parts)
        self.per_head = any(p.per_head for p in self.parts)

    def key(self) -> tuple:
        return (self.op, *(p.key() for p in self.parts))

    def check(self, batch: int, heads: int, lq: int, lk: int) -> None:
        for p in self.parts:
            p.check(batch, heads, lq, lk)

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        fns = [p.mask_mod(lq, lk, device) for p in self.parts]
        if self.op == "and":

            def combined(b, h, q, kv):
                out = fns[0](b, h, q, kv)
                for fn in fns[1:]:
                    out = out & fn(b, h, q, kv)
                return out
        else:

            def combined(b, h, q, kv):
                out = fns[0](b, h, q, kv)
                for fn in fns[1:]:
                    out = out | fn(b, h, q, kv)
                return out

        return combined

    def __repr__(self) -> str:
        return "(" + f" {'&' if self.op == 'and' else '|'} ".join(map(repr, self.parts)) + ")"


_PREDICATES: OrderedDict[tuple, Predicate] = OrderedDict()
_PREDICATE_CACHE_SIZE = 256


def _cached_predicate(spec: MaskSpec, lq: int, lk: int, device: torch.device) -> Predicate:
    # FlexAttention recompiles for every new mask_mod object: hand out one per (spec, lengths, device)
    key = (spec.key(), lq, lk, str(device))
    fn = _PREDICATES.get(key)
    if fn is None:
        fn = spec.predicate(lq, lk, device)
        _PREDICATES[key] = fn
        if len(_PREDICATES) > _PREDICATE_CACHE_SIZE:
            _PREDICATES.popitem(last=False)
    else:
        _PREDICATES.move_to_end(key)
    return fn


# -- 1-D patterns -------------------------------------------------------------------------------------
class _Simple(MaskSpec):
    """A spec defined by a name, parameters and a predicate over (query position, key index)."""

    def __init__(self, name: str, params: tuple, rule: Callable[..., Tensor]) -> None:
        self.name, self.params, self.rule = name, params, rule

    def key(self) -> tuple:
        return (self.name, *self.params)

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        offset, rule, params = lk - lq, self.rule, self.params

        def fn(b, h, q, kv):
            return rule(q + offset, kv, *params)

        return fn

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.params))})"


def _causal_rule(q: Tensor, kv: Tensor) -> Tensor:
    return kv <= q


def causal() -> MaskSpec:
    """Each query sees itself and earlier keys (bottom-right aligned when Lq != Lk)."""
    return _Simple("causal", (), _causal_rule)


def _window_rule(q: Tensor, kv: Tensor, window: int, is_causal: bool) -> Tensor:
    if is_causal:
        return (kv <= q) & (q - kv < window)
    return (q - kv <= window) & (kv - q <= window)


def sliding_window(window: int, causal: bool = True) -> MaskSpec:
    """Causal: the ``window`` most recent keys, the query's own included. Non-causal: keys with
    ``|q - kv| <= window`` (``window`` on each side)."""
    if window < 1:
        raise ValueError(f"sliding_window needs window >= 1, got {window}")
    return _Simple("sliding_window", (int(window), bool(causal)), _window_rule)


def _sinks_rule(q: Tensor, kv: Tensor, n_sink: int, window: int) -> Tensor:
    return (kv <= q) & ((kv < n_sink) | (q - kv < window))


def sinks(n_sink: int, window: int) -> MaskSpec:
    """StreamingLLM: the first ``n_sink`` keys are always visible, plus a causal window of ``window``."""
    if n_sink < 0 or window < 1:
        raise ValueError(f"sinks needs n_sink >= 0 and window >= 1, got {n_sink}, {window}")
    return _Simple("sinks", (int(n_sink), int(window)), _sinks_rule)


def _chunk_rule(q: Tensor, kv: Tensor, chunk: int) -> Tensor:
    return (kv <= q) & (
        torch.div(q, chunk, rounding_mode="floor") == torch.div(kv, chunk, rounding_mode="floor")
    )


def chunk_local(chunk: int) -> MaskSpec:
    """Causal attention inside non-overlapping chunks of ``chunk`` tokens (MEGA, TCNCA)."""
    if chunk < 1:
        raise ValueError(f"chunk_local needs chunk >= 1, got {chunk}")
    return _Simple("chunk_local", (int(chunk),), _chunk_rule)


class _KeyPadding(MaskSpec):
    per_batch = True

    def __init__(self, lengths: Sequence[int] | Tensor) -> None:
        values = lengths.tolist() if isinstance(lengths, Tensor) else list(lengths)
        if not values or any(int(v) < 0 for v in values):
            raise ValueError(f"key_padding needs non-negative lengths, got {values}")
        self.lengths = tuple(int(v) for v in values)

    def key(self) -> tuple:
        return ("key_padding", self.lengths)

    def check(self, batch: int, heads: int, lq: int, lk: int) -> None:
        if len(self.lengths) != batch:
            raise ValueError(f"key_padding has {len(self.lengths)} lengths for a batch of {batch}")
        if max(self.lengths) > lk:
            raise ValueError(f"key_padding length {max(self.lengths)} exceeds the key length {lk}")

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        lengths = torch.tensor(self.lengths, device=device)

        def fn(b, h, q, kv):
            return kv < lengths[b]

        return fn

    def __repr__(self) -> str:
        return f"key_padding({list(self.lengths)})"


def key_padding(lengths: Sequence[int] | Tensor) -> MaskSpec:
    """Variable-length batches: entry ``b`` has ``lengths[b]`` real keys, the rest is padding."""
    return _KeyPadding(lengths)


class _Table(MaskSpec):
    """A pattern given by a boolean ``[Lq, Lk]`` table built for the lengths (lookups in mask_mod)."""

    def __init__(self, name: str, params: tuple, build: Callable[[int, int], Tensor]) -> None:
        self.name, self.params, self.build = name, params, build

    def key(self) -> tuple:
        return (self.name, *self.params)

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        table = self.build(lq, lk).to(device)

        def fn(b, h, q, kv):
            return table[q, kv]

        return fn

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.params))})"


def block_sparse_random_links(length: int, n_global: int, n_random: int, seed: int = 0) -> Tensor:
    """The random links of :func:`block_sparse`: ``[length - n_global, k]`` key indices, row ``r`` for
    feature query ``n_global + r``, ``k = min(n_random, length - n_global)`` distinct feature keys
    (drawn with ``seed``; a link may fall inside the query's window band, the query itself included).

    The one definition shared by the mask table and the gather path
    (:func:`interplay.core.attention.banded.block_sparse_attention`), so the two cannot drift.
    """
    n_feat = max(0, length - n_global)
    k = min(n_random, n_feat)
    if k <= 0:
        return torch.zeros(n_feat, 0, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n_feat, n_feat, generator=gen).topk(k, dim=1).indices + n_global


def block_sparse(n_global: int, window: int, n_random: int = 0, seed: int = 0) -> MaskSpec:
    """Orion-MSP's intended pattern (BigBird style) over ``[special tokens | features]``.

    The first ``n_global`` tokens see and are seen by every token; each other token sees the tokens
    with ``|i - j| <= window`` plus ``n_random`` random other tokens drawn with ``seed``
    (:func:`block_sparse_random_links`; the released code's mask loses the band; this is the paper's
    pattern).
    """
    if n_global < 0 or window < 0 or n_random < 0:
        raise ValueError(f"block_sparse needs non-negative sizes, got {n_global}, {window}, {n_random}")

    def build(lq: int, lk: int) -> Tensor:
        if lq != lk:
            raise ValueError(f"block_sparse is a self-attention pattern: Lq ({lq}) must equal Lk ({lk})")
        idx = torch.arange(lk)
        table = (idx[:, None] - idx[None, :]).abs() <= window
        table[:n_global, :] = True
        table[:, :n_global] = True
        picks = block_sparse_random_links(lk, n_global, n_random, seed)
        if picks.shape[1]:
            rows = torch.arange(n_global, lk).unsqueeze(1).expand_as(picks)
            table[rows, picks] = True
        return table

    return _Table("block_sparse", (int(n_global), int(window), int(n_random), int(seed)), build)


# -- 2-D patterns over an H x W grid of tokens (row-major) -----------------------------------------------
def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return int(h), int(w)


class _Grid(MaskSpec):
    """A pattern over the tokens of an H x W grid: predicate of (row, col) of query and key."""

    def __init__(self, name: str, grid: tuple[int, int], params: tuple, rule: Callable[..., Tensor]) -> None:
        self.name, self.grid, self.params, self.rule = name, grid, params, rule

    def key(self) -> tuple:
        return (self.name, self.grid, *self.params)

    def check(self, batch: int, heads: int, lq: int, lk: int) -> None:
        n = self.grid[0] * self.grid[1]
        if lq != n or lk != n:
            raise ValueError(
                f"{self.name} over a {self.grid[0]}x{self.grid[1]} grid needs Lq = Lk = {n}, "
                f"got {lq} and {lk}"
            )

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        width, rule, params = self.grid[1], self.rule, self.params

        def fn(b, h, q, kv):
            qr, qc = torch.div(q, width, rounding_mode="floor"), q % width
            kr, kc = torch.div(kv, width, rounding_mode="floor"), kv % width
            return rule(qr, qc, kr, kc, *params)

        return fn

    def __repr__(self) -> str:
        return f"{self.name}({self.grid}, {', '.join(map(str, self.params))})"


def _fdiv(x: Tensor, d: int) -> Tensor:
    return torch.div(x, d, rounding_mode="floor")


def _window_2d_rule(qr, qc, kr, kc, window: int, shift: int) -> Tensor:
    return (_fdiv(qr + shift, window) == _fdiv(kr + shift, window)) & (
        _fdiv(qc + shift, window) == _fdiv(kc + shift, window)
    )


def window_2d(grid: int | Sequence[int], window: int, shift: int = 0) -> MaskSpec:
    """Swin / DaViT windows: tokens attend the tokens of their ``window x window`` tile.

    ``shift`` displaces the tiles by ``shift`` rows and columns (Swin's shifted windows, with the
    wrap-around masked, which is what Swin's cyclic roll plus mask computes).
    """
    if window < 1 or not 0 <= shift < window:
        raise ValueError(f"window_2d needs window >= 1 and 0 <= shift < window, got {window}, {shift}")
    return _Grid("window_2d", _grid(grid), (int(window), int(shift)), _window_2d_rule)


def _dilated_rule(qr, qc, kr, kc, interval: int) -> Tensor:
    return (qr % interval == kr % interval) & (qc % interval == kc % interval)


def dilated_2d(grid: int | Sequence[int], group: int | None = None, interval: int | None = None) -> MaskSpec:
    """CrossFormer long-distance attention: tokens ``interval`` apart form a group and attend each other.

    Give ``interval`` (I) directly, or ``group`` (G, tokens per group side) with ``interval = H / G``.
    """
    h, w = _grid(grid)
    if interval is None:
        if group is None or h % group or w % group:
            raise ValueError(f"dilated_2d needs interval, or a group dividing the grid {h}x{w}; got {group}")
        interval = h // group
    if interval < 1:
        raise ValueError(f"dilated_2d needs interval >= 1, got {interval}")
    return _Grid("dilated_2d", (h, w), (int(interval),), _dilated_rule)


def _halo_rule(qr, qc, kr, kc, block: int, halo: int) -> Tensor:
    r0, c0 = _fdiv(qr, block) * block, _fdiv(qc, block) * block
    return (kr >= r0 - halo) & (kr < r0 + block + halo) & (kc >= c0 - halo) & (kc < c0 + block + halo)


def halo(grid: int | Sequence[int], block: int, halo: int) -> MaskSpec:
    """HaloNet: queries in ``block x block`` tiles attend the tile grown by ``halo`` on each side.

    Keys outside the image do not exist here, so they are excluded rather than attended as zeros
    (the padded implementation attends zero vectors at the border).
    """
    if block < 1 or halo < 0:
        raise ValueError(f"halo needs block >= 1 and halo >= 0, got {block}, {halo}")
    return _Grid("halo", _grid(grid), (int(block), int(halo)), _halo_rule)


def ring_index(grid: int) -> Tensor:
    """Concentric ring of each token of a ``grid x grid`` image: 0 on the border, up to the centre."""
    idx = torch.arange(grid)
    r, c = idx.view(-1, 1), idx.view(1, -1)
    return torch.minimum(torch.minimum(r, c), torch.minimum(grid - 1 - r, grid - 1 - c)).reshape(-1)


class _Concentric(MaskSpec):
    def __init__(self, grid: int, n_text_before: int) -> None:
        if grid < 1 or n_text_before < 0:
            raise ValueError(
                f"concentric_causal needs grid >= 1 and n_text_before >= 0, got {grid}, {n_text_before}"
            )
        self.grid, self.n_before = int(grid), int(n_text_before)

    def key(self) -> tuple:
        return ("concentric_causal", self.grid, self.n_before)

    def check(self, batch: int, heads: int, lq: int, lk: int) -> None:
        if lq != lk or lk < self.n_before + self.grid**2:
            raise ValueError(
                f"concentric_causal needs Lq = Lk >= {self.n_before + self.grid**2}, got {lq} and {lk}"
            )

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        start, stop = self.n_before, self.n_before + self.grid**2
        # rank of each position: text before = its index, image = start + ring, text after continues
        rank = torch.arange(lk, dtype=torch.long)
        rank[start:stop] = start + ring_index(self.grid)
        rank[stop:] = torch.arange(lk - stop) + start + (self.grid + 1) // 2
        rank = rank.to(device)

        def fn(b, h, q, kv):
            q_img = (q >= start) & (q < stop)
            kv_img = (kv >= start) & (kv < stop)
            image_pair = q_img & kv_img
            # inside the image: ring order; elsewhere: causal in sequence order
            return torch.where(image_pair, rank[kv] <= rank[q], kv <= q)

        return fn

    def __repr__(self) -> str:
        return f"concentric_causal({self.grid}, {self.n_before})"


def concentric_causal(grid: int, n_text_before: int) -> MaskSpec:
    """Concentric causal attention (CCA) over ``[text before | grid x grid image | text after]``.

    Text is causal; inside the image a query of ring ``r`` (0 = border) sees the image keys of
    rings ``<= r``; text after the image sees everything before it.
    """
    return _Concentric(grid, n_text_before)


def concentric_position_ids(grid: int, n_text_before: int, n_text_after: int = 0) -> Tensor:
    """CCA position ids: text before 0..n-1; image token = n + ring; text after continues from
    ``n + ceil(grid / 2)`` (a 24x24 image uses 12 positions, not 576)."""
    rings = ring_index(grid)
    n_rings = (grid + 1) // 2
    return torch.cat(
        [
            torch.arange(n_text_before),
            n_text_before + rings,
            n_text_before + n_rings + torch.arange(n_text_after),
        ]
    )


# -- BlockMask compilation ----------------------------------------------------------------------------------
_BLOCK_MASKS: OrderedDict[tuple, object] = OrderedDict()
_BLOCK_MASK_CACHE_SIZE = 64
BLOCK_STATS = {"built": 0, "hits": 0}


def block_mask(
    spec: MaskSpec,
    batch: int,
    heads: int,
    lq: int,
    lk: int,
    device: torch.device | str = "cpu",
    block_size: int = 128,
):
    """FlexAttention ``BlockMask`` of ``spec``, cached by (spec, sizes, device, block size).

    Built one query-block row at a time (memory ``O(block_size * Lk)``, never ``Lq x Lk``): blocks
    that are entirely visible become full blocks (no mask_mod call inside), partly visible blocks
    keep the mask_mod, empty blocks are skipped.
    """
    from torch.nn.attention.flex_attention import BlockMask

    device = torch.device(device)
    spec.check(batch, heads, lq, lk)
    b_eff, h_eff = (batch if spec.per_batch else 1), (heads if spec.per_head else 1)
    key = (spec.key(), b_eff, h_eff, lq, lk, str(device), block_size)
    cached = _BLOCK_MASKS.get(key)
    if cached is not None:
        BLOCK_STATS["hits"] += 1
        _BLOCK_MASKS.move_to_end(key)
        return cached
    n_qb, n_kb = math.ceil(lq / block_size), math.ceil(lk / block_size)
    partial = torch.zeros(b_eff, h_eff, n_qb, n_kb, dtype=torch.bool, device=device)
    full = torch.zeros_like(partial)
    pad_k = n_kb * block_size - lk
    for i in range(n_qb):
        start, stop = i * block_size, min(lq, (i + 1) * block_size)
        rows = spec.dense(b_eff, h_eff, lq, lk, device, q_range=(start, stop))
        rows = torch.nn.functional.pad(rows, (0, pad_k), value=False)
        tiles = rows.reshape(b_eff, h_eff, stop - start, n_kb, block_size)
        anyv = tiles.any(dim=(2, 4))
        # a block is "full" only if every real (q, kv) pair in it is visible; padded keys don't count
        real = torch.ones(stop - start, n_kb, block_size, dtype=torch.bool, device=device)
        if pad_k:
            real[:, -1, block_size - pad_k :] = False
        allv = (tiles | ~real).all(dim=2).all(dim=-1)
        full[:, :, i] = allv & anyv
        partial[:, :, i] = anyv & ~allv
    mask = BlockMask.from_kv_blocks(
        *_to_kv_blocks(partial),
        *_to_kv_blocks(full),
        BLOCK_SIZE=block_size,
        mask_mod=spec.mask_mod(lq, lk, device),
        seq_lengths=(lq, lk),
    )
    BLOCK_STATS["built"] += 1
    _BLOCK_MASKS[key] = mask
    if len(_BLOCK_MASKS) > _BLOCK_MASK_CACHE_SIZE:
        _BLOCK_MASKS.popitem(last=False)
    return mask


def _to_kv_blocks(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, H, n_qb, n_kb]`` flags -> (kv_num_blocks ``[B, H, n_qb]``, kv_indices ``[B, H, n_qb, n_kb]``)."""
    num = blocks.sum(dim=-1).to(torch.int32)
    # stable sort puts the selected block indices first, in increasing order
    order = torch.sort((~blocks).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return num, order
