"""Attention sinks: StreamingLLM's constant-memory KV cache for decoding without end.

Xiao et al., ICLR 2024, "Efficient Streaming Language Models with Attention Sinks", Sec. 3.2
("Rolling KV Cache with Attention Sinks", Fig. 4) and the released ``StartRecentKVCache``:

* the cache keeps the first ``n_sink`` tokens ever seen (the attention sinks, 4 in the paper) and the
  most recent ``window`` tokens; it holds at most ``n_sink + window`` entries, whatever the step;
* keys are cached *before* RoPE. At every step the cached keys are rotated by their index *inside
  the cache* (``0 .. n - 1``), not by their position in the text, and the query by its own index in
  the cache (the cache length before it was added): "StreamingLLM focuses on positions within the
  cache rather than those in the original text" (Sec. 3.2). So the relative distances the model sees
  never exceed the cache size, which is what lets it run past its pre-training length;
* when ``L`` new tokens arrive and there is no room, the oldest window entries are evicted first
  (``evict_for_space``), then the new tokens attend to ``sinks + window`` with causal order among
  themselves.

:class:`SinkKVCache` stores the entries in preallocated buffers of ``n_sink + window`` slots; the
window part is a ring, so decoding writes one slot in place and never reallocates (constant memory).
The ring order does not matter to attention: every slot carries its logical in-cache position.

:func:`sink_attention_reference` is the plain definition: for every token ``t`` it rebuilds the cache
content from the whole history (``[0, n_sink) + (t - window, t]``), re-indexes positions and runs
softmax attention. Without RoPE the cache computes exactly ``attend(..., mask=sinks(n_sink,
window))`` over the full sequence.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from interplay.core.attention.api import attend
from interplay.core.attention.reference import repeat_kv
from interplay.core.attention.rope import RotaryEmbedding, apply_rope

__all__ = ["SinkKVCache", "sink_attention_reference", "sink_cache_indices"]

RopeArg = RotaryEmbedding | float | None


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_rope(rope: RopeArg) -> RopeArg:
    if rope is None or isinstance(rope, RotaryEmbedding):
        return rope
    if isinstance(rope, numbers.Real) and not isinstance(rope, bool) and rope > 0:
        return float(rope)
    raise ValueError(f"rope must be a RotaryEmbedding, a positive RoPE base or None, got {rope!r}")


def _rotate(x: Tensor, positions: Tensor, rope: RopeArg) -> Tensor:
    if rope is None:
        return x
    if isinstance(rope, RotaryEmbedding):
        return rope(x, positions=positions)
    return apply_rope(x, positions, base=rope)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape [B, H, L, D], got {shape}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]) or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"q, k, v must share the batch and k, v their heads and length: q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must hold the same new tokens, got lengths {q.shape[2]} and {k.shape[2]}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"k's heads ({k.shape[1]}) must divide q's heads ({q.shape[1]})")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")


def sink_cache_indices(step: int, n_sink: int, window: int) -> list[int]:
    """Token indices the cache holds after token ``step`` (0-based) was added, in cache order."""
    seen = step + 1
    if seen <= n_sink + window:
        return list(range(seen))
    return list(range(n_sink)) + list(range(seen - window, seen))


def sink_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    n_sink: int,
    window: int,
    *,
    rope: RopeArg = 10000.0,
    scale: float | None = None,
) -> Tensor:
    """StreamingLLM decoding of a whole sequence, one token at a time, computed directly.

    ``q [B, H, L, D]``, ``k [B, Hkv, L, D]`` (before RoPE), ``v [B, Hkv, L, Dv]``. For token ``t`` the
    cache is ``[0, n_sink) + (t - window, t]`` (:func:`sink_cache_indices`); its keys are rotated by
    ``0 .. n - 1`` and the query by ``n - 1``; ``o_t = softmax(q_t K^T * scale) V``.
    """
    _check_qkv(q, k, v)
    n_sink, window = _positive_int("n_sink", n_sink, 0), _positive_int("window", window, 1)
    rope = _check_rope(rope)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    outputs = []
    for t in range(q.shape[2]):
        idx = sink_cache_indices(t, n_sink, window)
        positions = torch.arange(len(idx), device=q.device)
        keys = _rotate(k[:, :, idx], positions, rope)
        query = _rotate(q[:, :, t : t + 1], positions[-1:], rope)
        weights = torch.softmax((query @ keys.transpose(-2, -1)) * scale, dim=-1)
        outputs.append(weights @ v[:, :, idx])
    return torch.cat(outputs, dim=2)


class SinkKVCache:
    """KV cache with attention sinks: the first ``n_sink`` tokens plus the last ``window`` tokens.

    Args:
        n_sink: attention-sink tokens kept forever (StreamingLLM uses 4).
        window: most recent tokens kept (the current token counts); capacity ``n_sink + window``.
        rope: a :class:`~interplay.core.attention.rope.RotaryEmbedding`, a RoPE base (a rotary
            embedding over the whole head dim) or ``None`` (no position encoding).

    ``cache(q, k, v)`` (= :meth:`attend`) adds the new tokens' keys (before RoPE) and values, evicting
    the oldest window entries to make room, and returns their attention output ``[B, H, L, Dv]``
    over the cache. One cache serves one attention layer; a model keeps one per layer. The cache is
    for inference: it stores detached copies.
    """

    def __init__(self, n_sink: int = 4, window: int = 1020, *, rope: RopeArg = 10000.0) -> None:
        self.n_sink = _positive_int("n_sink", n_sink, 0)
        self.window = _positive_int("window", window, 1)
        self.rope = _check_rope(rope)
        self.k: Tensor | None = None  # [B, Hkv, capacity, D], keys before RoPE
        self.v: Tensor | None = None  # [B, Hkv, capacity, Dv]
        self._rope_module: RotaryEmbedding | None = None
        self.reset()

    @property
    def capacity(self) -> int:
        return self.n_sink + self.window

    @property
    def length(self) -> int:
        """Entries held now (at most :attr:`capacity`)."""
        return self._count

    @property
    def seen(self) -> int:
        """Tokens added since the last :meth:`reset`."""
        return self._seen

    def reset(self) -> None:
        """Forget every entry (the buffers are kept and reused)."""
        self._count = 0
        self._seen = 0
        self._start = 0  # ring index (inside the window slots) of the oldest window entry

    def nbytes(self) -> int:
        """Bytes held by the key and value buffers."""
        return sum(t.numel() * t.element_size() for t in (self.k, self.v) if t is not None)

    def positions(self) -> Tensor:
        """In-cache position (``0 .. length - 1``) of each stored slot, in slot order ``[length]``."""
        device = self.k.device if self.k is not None else None
        pos = torch.arange(self._count, device=device)
        if self._count == self.capacity and self._start:
            ring = torch.arange(self.window, device=device)
            pos[self.n_sink :] = self.n_sink + (ring - self._start) % self.window
        return pos

    def ordered(self) -> tuple[Tensor, Tensor]:
        """Stored keys (before RoPE) and values in cache order: sinks, then the window oldest first."""
        if self.k is None:
            raise ValueError("the cache is empty")
        order = torch.argsort(self.positions())
        return self.k[:, :, : self._count][:, :, order], self.v[:, :, : self._count][:, :, order]

    def _allocate(self, k: Tensor, v: Tensor) -> None:
        b, hkv, _, d = k.shape
        shape_k, shape_v = (b, hkv, self.capacity, d), (b, hkv, self.capacity, v.shape[-1])
        same = self.k is not None and (self.k.shape, self.v.shape) == (shape_k, shape_v)
        if same and (self.k.dtype, self.k.device, self.v.dtype) == (k.dtype, k.device, v.dtype):
            return
        if self._count:
            raise ValueError(
                f"k {tuple(k.shape)} {k.dtype} / v {tuple(v.shape)} {v.dtype} do not match the cached "
                f"keys {tuple(self.k.shape)} {self.k.dtype} / values {tuple(self.v.shape)} {self.v.dtype} "
                "(call reset() to start a new sequence)"
            )
        self.k = torch.zeros(shape_k, dtype=k.dtype, device=k.device)
        self.v = torch.zeros(shape_v, dtype=v.dtype, device=v.device)

    def append(self, k: Tensor, v: Tensor) -> Tensor:
        """Evict for space, then store ``k [B, Hkv, L, D]`` (before RoPE) and ``v [B, Hkv, L, Dv]``.

        ``L`` must be at most ``window``. Returns the new tokens' in-cache positions ``[L]``.
        """
        length = k.shape[2]
        if length > self.window:
            raise ValueError(f"append takes at most window = {self.window} tokens at once, got {length}")
        self._allocate(k, v)
        n0, cap, w = self._count, self.capacity, self.window
        if n0 + length <= cap:  # room left: nothing has been evicted yet, slots are in order
            slots = torch.arange(n0, n0 + length, device=k.device)
            self._count = n0 + length
        else:  # n0 >= n_sink here, since length <= window
            evict = n0 + length - cap
            ring = (self._start + (n0 - self.n_sink) + torch.arange(length, device=k.device)) % w
            slots = self.n_sink + ring
            self._start = (self._start + evict) % w
            self._count = cap
        self.k.index_copy_(2, slots, k.detach())
        self.v.index_copy_(2, slots, v.detach())
        self._seen += length
        return torch.arange(self._count - length, self._count, device=k.device)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None, backend: str = "auto"
    ) -> Tensor:
        """Add the new tokens and return their attention over the cache, ``[B, H, L, Dv]``.

        ``q [B, H, L, D]``, ``k [B, Hkv, L, D]`` (before RoPE), ``v [B, Hkv, L, Dv]``; ``L = 1`` when
        decoding. More than ``window`` tokens are added ``window`` at a time. ``backend`` goes to
        :func:`~interplay.core.attention.api.attend`.
        """
        _check_qkv(q, k, v)
        if self.k is not None and self._count and q.shape[1] % self.k.shape[1]:
            raise ValueError(f"cached key heads ({self.k.shape[1]}) must divide q's heads ({q.shape[1]})")
        outputs = []
        for start in range(0, q.shape[2], self.window):
            stop = min(q.shape[2], start + self.window)
            outputs.append(
                self._attend_piece(
                    q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop], scale, backend
                )
            )
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

    __call__ = attend

    def _rotary(self, dim: int) -> RotaryEmbedding | None:
        if isinstance(self.rope, float):  # a base: one table-backed rotary embedding over the head dim
            if self._rope_module is None or self._rope_module.dim != dim:
                self._rope_module = RotaryEmbedding(dim, base=self.rope)
            return self._rope_module
        return self.rope

    def rotated_keys(self) -> Tensor:
        """The stored keys rotated by their in-cache positions, in slot order ``[B, Hkv, length, D]``.

        The slots hold at most three runs of consecutive positions (the sinks, the window from its
        oldest slot to the buffer end, the wrapped part of the ring), each rotated from the cached
        cos/sin table of :class:`RotaryEmbedding` (no trigonometry per step).
        """
        if self.k is None:
            raise ValueError("the cache is empty")
        n, keys = self._count, self.k[:, :, : self._count]
        rope = self._rotary(keys.shape[-1])
        if rope is None:
            return keys
        if n < self.capacity or self._start == 0:  # slots in cache order: positions 0 .. n - 1
            return rope(keys)
        s, split, w = self.n_sink, self.n_sink + self._start, self.window
        out = torch.empty_like(keys)
        if s:
            out[:, :, :s] = rope(keys[:, :, :s])
        out[:, :, split:] = rope(keys[:, :, split:], offset=s)  # the oldest window entries
        out[:, :, s:split] = rope(keys[:, :, s:split], offset=s + w - self._start)  # the wrapped newest
        return out

    def _attend_piece(self, q: Tensor, k: Tensor, v: Tensor, scale, backend) -> Tensor:
        q_pos = self.append(k, v)
        n = self._count
        keys = self.rotated_keys()
        rope = self._rotary(q.shape[-1])
        query = q if rope is None else rope(q, offset=n - q.shape[2])  # the new tokens: n - L .. n - 1
        mask = None
        if q.shape[2] > 1:  # causal order among the new tokens (all older entries precede them)
            mask = self.positions()[None, :] <= q_pos[:, None]
        return attend(query, keys, self.v[:, :, :n], mask=mask, scale=scale, backend=backend)

    def __repr__(self) -> str:
        return (
            f"SinkKVCache(n_sink={self.n_sink}, window={self.window}, length={self._count}, "
            f"seen={self._seen})"
        )
