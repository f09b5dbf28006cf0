"""RAT: gated linear recurrence inside chunks, softmax attention across chunks.

Wei, Yadav, Pascanu and Gulcehre 2025, "RAT: Bridging RNN Efficiency and Attention Accuracy in
Language Modeling" (arXiv:2507.04416), Sec. 3 and the released ``RAT`` layer (equations numbered
here). The sequence is cut into chunks of ``C`` tokens. Inside chunk ``c`` a gated linear
recurrence, reset at every chunk start, summarises the values and the keys (one gate per channel,
shared by both)::

    h_l = g_l * h_{l-1} + (1 - g_l) * [x_l; k_l],    h_{-1} = 0            ->  x~_l, k~_l        (1)

computed for training by an associative scan (:func:`chunk_scan`, ``log2 C`` elementwise steps of
``(a, b) o (a', b') = (a a', a' b + b')``). Each query then attends, with softmax, over the chunk-end
states of the *strictly earlier* chunks and over its own running state::

    o_t = [sum_{j < c} e^{s_tj} x~_end(j) + e^{s_tt} x~_t] / [sum_{j < c} e^{s_tj} + e^{s_tt}]     (2)
    s_tj = scale * RoPE(q_t, c) . RoPE(k~_end(j), j),    s_tt = scale * q_t . k~_t

with RoPE positions = chunk indices (the code's ``InterRoPE``; the own state shares the query's chunk,
so its rotation cancels). The first sum is softmax attention over ``L / C`` keys with a block-causal
mask and needs its log-sum-exp ``lse_t``; (2) is then the merge
``o_t = (e^lse o_inter + e^s_tt x~_t) / (e^lse + e^s_tt)`` (computed stably).

:class:`RATBlock` is the layer of the paper / code: input RMSNorm; ``in_proj -> z, x, g, q, k``;
``g = sigmoid(g + b)`` with ``b`` initialised to ``log U(1, C - 1)``; (1)-(2) per head;
``out_proj(sigmoid(z) * o) + residual``. Queries and keys may be shared by ``qk_groups`` groups of
heads (the code's ``ngroups``; the key is shared *before* the per-head recurrence).

Decoding (:func:`rat_attention_step`, :meth:`RATBlock.step`) carries a :class:`RATState`: the
running recurrent state of the current chunk (``[B, H, D]`` for keys and values, constant size) plus
the chunk-end keys/values of finished chunks (one entry per ``C`` tokens: a cache ``C`` times smaller
than a KV cache). References: :func:`chunk_scan_reference` (the loop of (1)) and
:func:`rat_attention_reference` (loops over tokens and chunks, explicit softmax over (2)).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention.api import AttentionBackendError, attend
from interplay.core.attention.masks import MaskSpec, Predicate
from interplay.core.attention.rope import apply_rope

__all__ = [
    "RAT_BACKENDS",
    "RATBlock",
    "RATState",
    "chunk_scan",
    "chunk_scan_reference",
    "earlier_chunks",
    "rat_attention",
    "rat_attention_reference",
    "rat_attention_step",
]

RAT_BACKENDS = ("auto", "math", "flash", "flex")
# query rows per block of the CPU inter-chunk attention: bounds its score matrix to rows x L / C
QUERY_BLOCK_ROWS = 4096


class _EarlierChunks(MaskSpec):
    """Query token ``t`` (row) sees chunk-end key ``j`` (column) iff ``j < t // chunk``."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk

    def key(self) -> tuple:
        return ("rat_earlier_chunks", self.chunk)

    def predicate(self, lq: int, lk: int, device: torch.device) -> Predicate:
        chunk = self.chunk

        def fn(b, h, q, kv):
            return kv < torch.div(q, chunk, rounding_mode="floor")

        return fn


def earlier_chunks(chunk: int) -> MaskSpec:
    """RAT's inter-chunk mask: token ``t`` attends the chunk-end states of chunks ``< t // chunk``.

    Rows are token indices and columns chunk indices (no bottom-right alignment: ``Lk = L / C``).
    """
    return _EarlierChunks(_positive_int("chunk", chunk))


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# -- the recurrence (1) -------------------------------------------------------------------------------


def _check_scan(a: Tensor, b: Tensor) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or b.dim() < 2 or a.dim() < 2:
        raise ValueError("a and b must be tensors of shape [..., L, D]")
    try:
        ok = torch.broadcast_shapes(a.shape, b.shape) == b.shape and a.shape[-2] == b.shape[-2]
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            "a must broadcast to b's shape [..., L, D] with the same L, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def chunk_scan(a: Tensor, b: Tensor, chunk: int) -> Tensor:
    """``h_l = a_l h_{l-1} + b_l`` along dim ``-2``, restarted (``h = 0``) every ``chunk`` rows.

    Hillis-Steele associative scan: ``ceil(log2 chunk)`` elementwise steps combining each row with the
    one ``2^s`` rows earlier, ``(a', b') o (a, b) = (a a', a b' + b)``; no division by the (possibly
    tiny) gate products; differentiable. ``b``: ``[..., L, D]``; ``a`` broadcasts to it (one gate for
    several stacked sequences); any ``L``.
    """
    _check_scan(a, b)
    chunk = _positive_int("chunk", chunk)
    length = b.shape[-2]
    pad = -length % chunk
    if pad:
        a = F.pad(a, (0, 0, 0, pad), value=1.0)
        b = F.pad(b, (0, 0, 0, pad))
    n = (length + pad) // chunk
    a = a.reshape(*a.shape[:-2], n, chunk, a.shape[-1])
    b = b.reshape(*b.shape[:-2], n, chunk, b.shape[-1])
    offset = 1
    while offset < chunk:
        # rows before ``offset`` in their chunk have nothing earlier to combine with: kept as they are
        combined = torch.addcmul(b[..., offset:, :], a[..., offset:, :], b[..., :-offset, :])
        b = torch.cat((b[..., :offset, :], combined), dim=-2)
        if 2 * offset < chunk:  # the last step needs no gate products
            a = torch.cat((a[..., :offset, :], a[..., offset:, :] * a[..., :-offset, :]), dim=-2)
        offset *= 2
    return b.reshape(*b.shape[:-3], n * chunk, b.shape[-1])[..., :length, :]


def chunk_scan_reference(a: Tensor, b: Tensor, chunk: int) -> Tensor:
    """The loop of (1): one row at a time, ``h`` reset at every chunk start."""
    _check_scan(a, b)
    chunk = _positive_int("chunk", chunk)
    rows = []
    h = torch.zeros_like(b[..., 0, :])
    for t in range(b.shape[-2]):
        if t % chunk == 0:
            h = torch.zeros_like(h)
        h = a[..., t, :] * h + b[..., t, :]
        rows.append(h)
    return torch.stack(rows, dim=-2)


# -- attention (2) ------------------------------------------------------------------------------------


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape [B, H, L, D], got {shape}")
    if not (q.shape == k.shape == v.shape == g.shape):  # dtypes may differ: all are computed in fp32
        raise ValueError(
            "q, k, v and g must share one shape [B, H, L, D] (one gate per channel for keys and "
            f"values), got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}"
        )
    if q.shape[2] < 1 or q.shape[3] % 2:
        raise ValueError(f"q needs L >= 1 and an even head dim (RoPE), got {tuple(q.shape)}")


def _check_backend(backend: str) -> None:
    if backend not in RAT_BACKENDS:
        raise ValueError(f"unknown RAT backend '{backend}' (choose from {', '.join(RAT_BACKENDS)})")


def _merge(o_inter: Tensor, lse: Tensor, x_own: Tensor, s_own: Tensor) -> Tensor:
    """``(e^lse o_inter + e^s x_own) / (e^lse + e^s)`` without overflow; ``lse = -inf`` gives ``x_own``."""
    m = torch.maximum(lse, s_own)
    w_inter = torch.exp(lse - m)[..., None]
    w_own = torch.exp(s_own - m)[..., None]
    return (w_inter * o_inter + w_own * x_own) / (w_inter + w_own)


def _fused_cpu_attention():
    """torch's fused CPU flash-attention op, which also returns the log-sum-exp (no LSE gradient)."""
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _inter_chunk_blocks(q: Tensor, k_end: Tensor, x_end: Tensor, chunk: int, scale: float, fused: bool):
    """Softmax attention over the earlier chunk ends with its log-sum-exp, in blocks of query rows
    (scores or mask ``rows x L / C`` at a time). Rows of chunk 0 see no key: ``o = 0``, ``lse = -inf``;
    every later row sees at least chunk 0's end, so no row is all ``-inf``.

    ``fused``: torch's fused CPU kernel (forward only) instead of the plain differentiable matmuls."""
    b, h, length, _ = q.shape
    head = min(chunk, length)
    outs = [q.new_zeros(b, h, head, x_end.shape[-1])]
    lses = [q.new_full((b, h, head), float("-inf"))]
    rows = max(chunk, QUERY_BLOCK_ROWS // chunk * chunk)
    for start in range(chunk, length, rows):
        stop = min(length, start + rows)
        visible = min(k_end.shape[2], (stop - 1) // chunk)  # chunks earlier than the block's last row
        t = torch.arange(start, stop, device=q.device)
        hidden = (
            torch.arange(visible, device=q.device)[None, :]
            >= torch.div(t, chunk, rounding_mode="floor")[:, None]
        )
        keys, values = k_end[:, :, :visible], x_end[:, :, :visible]
        if fused:
            bias = torch.zeros(hidden.shape, dtype=q.dtype, device=q.device).masked_fill_(
                hidden, float("-inf")
            )
            o, lse = _fused_cpu_attention()(
                q[:, :, start:stop], keys, values, 0.0, False, attn_mask=bias, scale=scale
            )
        else:
            scores = (q[:, :, start:stop] @ keys.transpose(-2, -1)) * scale
            scores = scores.masked_fill(hidden, float("-inf"))
            lse = torch.logsumexp(scores, dim=-1)
            o = torch.exp(scores - lse[..., None]) @ values
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _resolve_backend(backend: str, q: Tensor, grad: bool) -> str:
    if backend == "auto":
        if q.is_cuda:
            return "flex"
        return "math" if grad or _fused_cpu_attention() is None else "flash"
    if backend == "flash" and (q.device.type != "cpu" or grad or _fused_cpu_attention() is None):
        raise AttentionBackendError(
            "RAT backend 'flash' (torch's fused CPU kernel) runs on CPU without gradients only "
            "(use 'math' for training, 'flex' on CUDA)"
        )
    return backend


def _scan_keys_values(k: Tensor, v: Tensor, g: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """(1) on ``[x; k]`` with the gate shared by both: returns ``x~, k~``."""
    states = chunk_scan(g, (1.0 - g) * torch.stack((v, k)), chunk)  # one gate for the stacked pair
    return states[0], states[1]


def rat_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    chunk: int,
    *,
    scale: float | None = None,
    rope_base: float = 10000.0,
    backend: str = "auto",
    return_state: bool = False,
) -> Tensor | tuple[Tensor, RATState]:
    """RAT's token mixer, Eqs. (1)-(2), in parallel over the whole sequence.

    Args:
        q, k, v: ``[B, H, L, D]`` queries, keys (before the recurrence) and values; any ``L``.
        g: ``[B, H, L, D]`` forget gates in ``(0, 1)``, one per channel, shared by keys and values.
        chunk: chunk length ``C``.
        scale: score scale (default ``D^-1/2``).
        backend: ``math`` (blockwise attention with log-sum-exp in plain differentiable ops; any
            device), ``flash`` (the same blocks through torch's fused CPU flash-attention kernel, which
            returns the LSE: CPU inference only, about 5x faster), ``flex`` (FlexAttention with a
            block-causal ``BlockMask`` returning the LSE, differentiable; CUDA, or eager on CPU
            without gradients) or ``auto`` (CUDA: flex; CPU: flash without gradients, math with).
        return_state: also return the :class:`RATState` after the last token (to continue decoding).

    Returns ``o [B, H, L, D]`` (before the output gate and projection). Half precision is computed in
    float32 and cast back.
    """
    _check_inputs(q, k, v, g)
    chunk = _positive_int("chunk", chunk)
    _check_backend(backend)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, g))
    backend = _resolve_backend(backend, q, grad)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    q, k, v, g = (t.to(compute) for t in (q, k, v, g))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    length = q.shape[2]
    x_state, k_state = _scan_keys_values(k, v, g, chunk)
    chunk_index = torch.arange(length, device=q.device) // chunk
    q_rot = apply_rope(q, chunk_index, base=rope_base)
    k_rot = apply_rope(k_state, chunk_index, base=rope_base)
    s_own = (q * k_state).sum(dim=-1) * scale  # both rotated by the same chunk index: it cancels
    n_full = length // chunk
    k_end = k_rot[:, :, chunk - 1 :: chunk][:, :, :n_full].contiguous()
    x_end = x_state[:, :, chunk - 1 :: chunk][:, :, :n_full].contiguous()
    if n_full == 0 or length <= chunk:  # every token is in the first chunk: only its own state
        out = x_state
    else:
        if backend == "flex":
            o_inter, lse = attend(
                q_rot, k_end, x_end, mask=earlier_chunks(chunk), scale=scale, backend="flex", return_lse=True
            )
            o_inter, lse = o_inter.to(compute), lse.to(compute)
        else:
            o_inter, lse = _inter_chunk_blocks(q_rot, k_end, x_end, chunk, scale, fused=backend == "flash")
        out = _merge(o_inter, lse, x_state, s_own)
    out = out.to(out_dtype)
    if not return_state:
        return out
    partial = length % chunk != 0
    state = RATState(
        h_x=x_state[:, :, -1] if partial else torch.zeros_like(x_state[:, :, -1]),
        h_k=k_state[:, :, -1] if partial else torch.zeros_like(k_state[:, :, -1]),
        keys=k_end,
        values=x_end,
        position=length,
    )
    return out, state


def rat_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    chunk: int,
    *,
    scale: float | None = None,
    rope_base: float = 10000.0,
) -> Tensor:
    """Eqs. (1)-(2) with loops: the recurrence token by token, then for each token an explicit softmax
    over the rotated chunk-end keys of the earlier chunks and its own state."""
    _check_inputs(q, k, v, g)
    chunk = _positive_int("chunk", chunk)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    length = q.shape[2]
    x_state = chunk_scan_reference(g, (1 - g) * v, chunk)
    k_state = chunk_scan_reference(g, (1 - g) * k, chunk)
    outputs = []
    for t in range(length):
        c = t // chunk
        pos = torch.tensor([c], device=q.device)
        query = apply_rope(q[:, :, t : t + 1], pos, base=rope_base)[:, :, 0]  # [B, H, D]
        keys, values = [], []
        for j in range(c):  # chunk-end states of the strictly earlier chunks, rotated by j
            end = (j + 1) * chunk - 1
            keys.append(
                apply_rope(k_state[:, :, end : end + 1], torch.tensor([j], device=q.device), base=rope_base)
            )
            values.append(x_state[:, :, end : end + 1])
        keys.append(apply_rope(k_state[:, :, t : t + 1], pos, base=rope_base))  # own state, chunk c
        values.append(x_state[:, :, t : t + 1])
        keys, values = torch.cat(keys, dim=2), torch.cat(values, dim=2)
        weights = torch.softmax((keys @ query[..., None])[..., 0] * scale, dim=-1)  # [B, H, c + 1]
        outputs.append((weights[..., None] * values).sum(dim=2))
    return torch.stack(outputs, dim=2)


# -- decoding -----------------------------------------------------------------------------------------


@dataclass
class RATState:
    """Decoding state of one RAT layer after ``position`` tokens.

    ``h_x [B, H, Dv]``, ``h_k [B, H, D]``: the running recurrent state of the current chunk (constant
    size; zero at a chunk start). ``keys [B, H, n, D]`` (rotated by their chunk index) and ``values
    [B, H, n, Dv]``: the chunk-end states of the ``n = position // C`` finished chunks.
    """

    h_x: Tensor
    h_k: Tensor
    keys: Tensor
    values: Tensor
    position: int = 0

    @classmethod
    def zeros(cls, batch: int, heads: int, dim: int, device=None, dtype=torch.float32) -> RATState:
        h = torch.zeros(batch, heads, dim, device=device, dtype=dtype)
        empty = torch.zeros(batch, heads, 0, dim, device=device, dtype=dtype)
        return cls(h_x=h, h_k=h.clone(), keys=empty, values=empty.clone())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.h_x, self.h_k, self.keys, self.values))


def rat_attention_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    state: RATState | None,
    chunk: int,
    *,
    scale: float | None = None,
    rope_base: float = 10000.0,
) -> tuple[Tensor, RATState]:
    """One decoding step of (1)-(2): ``q, k, v, g [B, H, 1, D]`` for the token at ``state.position``.

    Returns ``(o [B, H, 1, D], new_state)``; equal to the row of :func:`rat_attention` at that position.
    """
    _check_inputs(q, k, v, g)
    chunk = _positive_int("chunk", chunk)
    if q.shape[2] != 1:
        raise ValueError(f"rat_attention_step takes one token (L = 1), got q {tuple(q.shape)}")
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    q, k, v, g = (t[:, :, 0].to(compute) for t in (q, k, v, g))
    b, h, d = q.shape
    if state is None:
        state = RATState.zeros(b, h, d, device=q.device, dtype=compute)
    if state.h_k.shape != (b, h, d) or state.keys.shape[:2] != (b, h) or state.keys.shape[-1] != d:
        raise ValueError(
            f"state does not match q {tuple(q.shape)}: h_k {tuple(state.h_k.shape)}, "
            f"keys {tuple(state.keys.shape)}"
        )
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    c, offset = divmod(state.position, chunk)
    h_x, h_k = (
        (state.h_x, state.h_k) if offset else (torch.zeros_like(state.h_x), torch.zeros_like(state.h_k))
    )
    h_x = g * h_x.to(compute) + (1 - g) * v
    h_k = g * h_k.to(compute) + (1 - g) * k
    pos = torch.tensor([c], device=q.device)
    q_rot = apply_rope(q[:, :, None], pos, base=rope_base)  # [B, H, 1, D]
    s_own = (q * h_k).sum(dim=-1, keepdim=True) * scale  # [B, H, 1]
    keys, values = state.keys.to(compute), state.values.to(compute)
    if keys.shape[2]:
        o_inter, lse = attend(q_rot, keys, values, scale=scale, backend="math", return_lse=True)
        out = _merge(o_inter, lse, h_x[:, :, None], s_own)
    else:
        out = h_x[:, :, None]
    if offset == chunk - 1:  # the chunk is complete: its end state joins the inter-chunk cache
        keys = torch.cat((keys, apply_rope(h_k[:, :, None], pos, base=rope_base)), dim=2)
        values = torch.cat((values, h_x[:, :, None]), dim=2)
    new_state = RATState(h_x=h_x, h_k=h_k, keys=keys, values=values, position=state.position + 1)
    return out.to(out_dtype), new_state


# -- the layer ----------------------------------------------------------------------------------------


class RATBlock(nn.Module):
    """RAT layer: ``x + out_proj(sigmoid(z) * RAT(q, k, x, g))`` with input RMSNorm (Sec. 3, code).

    Args:
        dim: model width; heads: attention heads (``dim`` divisible by it, even head dim).
        chunk: chunk length ``C`` (16 in the paper's efficiency figures, 64 in the code's default).
        qk_groups: query/key groups shared by the heads (``None``: one per head; the code uses 2).
        rope_base, norm_eps: RoPE base, RMSNorm epsilon. backend: see :func:`rat_attention`.

    ``forward(x [B, L, dim]) -> [B, L, dim]``; ``prefill(x) -> (y, state)``; ``step(x_t [B, 1, dim],
    state) -> (y_t, state)`` decodes one token; ``init_state(batch)`` gives an empty state.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        chunk: int,
        *,
        qk_groups: int | None = None,
        rope_base: float = 10000.0,
        norm_eps: float = 1e-6,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        dim, heads, self.chunk = (
            _positive_int("dim", dim),
            _positive_int("heads", heads),
            _positive_int("chunk", chunk),
        )
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim={dim} must split into heads={heads} heads of even width")
        groups = heads if qk_groups is None else _positive_int("qk_groups", qk_groups)
        if heads % groups:
            raise ValueError(f"qk_groups={groups} must divide heads={heads}")
        _check_backend(backend)
        self.dim, self.heads, self.groups, self.head_dim = dim, heads, groups, dim // heads
        self.rope_base, self.backend = float(rope_base), backend
        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.in_proj = nn.Linear(dim, 3 * dim + 2 * groups * self.head_dim, bias=False)
        self.gate_bias = nn.Parameter(torch.empty(dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.reset_gate_bias()

    def reset_gate_bias(self) -> None:
        """``b = log U(1, C - 1)``: initial forget gates ``sigmoid(b)`` spread over ``[1/2, 1 - 1/C]``."""
        with torch.no_grad():
            if self.chunk > 2:
                self.gate_bias.uniform_(1.0, self.chunk - 1.0).log_()
            else:
                self.gate_bias.zero_()

    def _mixer_inputs(self, x: Tensor):
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B, L, {self.dim}], got {shape}")
        b, length, _ = x.shape
        d, gd = self.dim, self.groups * self.head_dim
        z, xv, g, q, k = self.in_proj(self.norm(x)).split([d, d, d, gd, gd], dim=-1)
        reps = self.heads // self.groups
        # heads share the groups' queries and keys tiled (head i uses group i % groups), as the code does
        q, k = q.repeat(1, 1, reps), k.repeat(1, 1, reps)
        g = torch.sigmoid((g + self.gate_bias).to(_compute_dtype(x.dtype)))  # gates in fp32 (as the code)

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, length, self.heads, self.head_dim).transpose(1, 2)

        return torch.sigmoid(z), heads(q), heads(k), heads(xv), heads(g)

    def _output(self, x: Tensor, z: Tensor, o: Tensor) -> Tensor:
        b, length, _ = x.shape
        o = o.transpose(1, 2).reshape(b, length, self.dim).to(x.dtype)
        return x + self.out_proj(z * o)

    def forward(self, x: Tensor) -> Tensor:
        z, q, k, v, g = self._mixer_inputs(x)
        o = rat_attention(q, k, v, g, self.chunk, rope_base=self.rope_base, backend=self.backend)
        return self._output(x, z, o)

    def prefill(self, x: Tensor) -> tuple[Tensor, RATState]:
        """Parallel pass over a prompt that also returns the decoding state after it."""
        z, q, k, v, g = self._mixer_inputs(x)
        o, state = rat_attention(
            q, k, v, g, self.chunk, rope_base=self.rope_base, backend=self.backend, return_state=True
        )
        return self._output(x, z, o), state

    def init_state(self, batch: int, device=None, dtype: torch.dtype = torch.float32) -> RATState:
        return RATState.zeros(batch, self.heads, self.head_dim, device=device, dtype=_compute_dtype(dtype))

    def step(self, x: Tensor, state: RATState | None = None) -> tuple[Tensor, RATState]:
        """Decode one token ``x [B, 1, dim]`` from ``state`` (``None``: the start of a sequence)."""
        if isinstance(x, Tensor) and x.dim() == 3 and x.shape[1] != 1:
            raise ValueError(f"step takes one token, x of shape [B, 1, {self.dim}], got {tuple(x.shape)}")
        z, q, k, v, g = self._mixer_inputs(x)
        o, state = rat_attention_step(q, k, v, g, state, self.chunk, rope_base=self.rope_base)
        return self._output(x, z, o), state

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, chunk={self.chunk}, qk_groups={self.groups}"
