"""Triton kernels for causal chunked linear attention, forward and backward.

Computes, for features ``q, k`` of shape ``[B, H, T, K]`` (already passed through a feature map)
and values ``v`` of shape ``[B, H, T, V]``, the un-normalised causal linear attention

    o_t = scale * sum_{s <= t} (q_t . k_s) v_s

in the chunked form of flash-linear-attention (Yang et al. 2024, "Gated Linear Attention
Transformers with Hardware-Efficient Training", Sec. 3.3; Katharopoulos et al. 2020, "Transformers
are RNNs", Eq. 16-18 for the recurrence). With chunks of ``C`` rows, ``Q_i, K_i, V_i``:

    S_0 = 0,   S_i = S_{i-1} + K_i^T V_i                               (state, fp32)     (1)
    O_i = scale * (Q_i S_{i-1} + ((Q_i K_i^T) ⊙ M) V_i),   M = lower-triangular causal   (2)

Backward (with ``dS_i = sum_{j > i} Q_j^T dO_j``, the same recurrence run from the end):

    dQ_i = scale * (dO_i S_{i-1}^T + ((dO_i V_i^T) ⊙ M) K_i)                              (3)
    dK_i = scale * (V_i dS_i^T + ((dO_i V_i^T) ⊙ M)^T Q_i)                                (4)
    dV_i = scale * (K_i dS_i + ((Q_i K_i^T) ⊙ M)^T dO_i)                                  (5)

Kernels: ``_chunk_state_kernel`` runs (1) (or the reverse recurrence for ``dS``) sequentially over
chunks, parallel over ``(K block, V block, batch * head)``, and stores the state *entering* each
chunk in fp32; ``_chunk_output_kernel`` evaluates (2) and ``_chunk_dqdk_kernel`` /
``_chunk_dv_kernel`` evaluate (3)-(5), each parallel over ``(block, chunk, batch * head)``. The
backward recomputes the states instead of keeping them from the forward (memory ``O(T K V / C)``
only while a pass runs).

Triton 3.9: plain pointer arithmetic (no block pointers); every operand is upcast to fp32 before
``tl.dot`` (``ieee`` precision for fp32 inputs, ``tf32`` for half inputs on CUDA); head dims that
are not powers of two (24, 60) are padded to the block size by masked loads; ``T`` need not be a
multiple of the chunk. Tensors on CPU run in Triton's interpreter, which needs
``TRITON_INTERPRET=1`` (a test-only path: slow, a single autotune config); CUDA tensors run the
compiled kernels. Kernels are built per mode on first use, so one process can run both. The kernel
bodies call only Triton builtins (``tl.full``, not ``tl.zeros``): the ``@triton.jit`` helpers of
``triton.language.standard`` are compiled-or-interpreted once, when ``triton`` is imported, and a
compiled helper cannot be called from an interpreted kernel.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch
from torch import Tensor

from interplay.core.attention.api import AttentionBackendError

# Chunk length ``C`` on CUDA (fla's default) and under the interpreter (small, so that short test
# sequences still span several chunks).
CHUNK_SIZE_CUDA = 64
CHUNK_SIZE_INTERPRETER = 16
# Largest head-dim tile; larger head dims are split into several tiles.
MAX_BLOCK = 64

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None
    tl = None


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def use_interpreter(x: Tensor) -> bool:
    """Whether kernels on ``x`` run in Triton's interpreter (CPU tensors, or ``TRITON_INTERPRET=1``)."""
    return x.device.type != "cuda" or _interpret_requested()


def check_triton_device(x: Tensor) -> None:
    """Raise :class:`AttentionBackendError` when the Triton kernels cannot run on ``x``."""
    if triton is None:
        raise AttentionBackendError("backend 'triton' needs the triton package (pip install triton)")
    if x.device.type == "cuda":
        return
    if x.device.type != "cpu":
        raise AttentionBackendError(
            f"backend 'triton' runs on CUDA (or CPU in the interpreter), not {x.device}"
        )
    if not _interpret_requested():
        raise AttentionBackendError(
            "backend 'triton' on CPU runs Triton's interpreter, which is for tests only: set "
            "TRITON_INTERPRET=1 to allow it, or use backend 'torch'"
        )


# -- kernels (plain functions, wrapped per mode by _kernels) -------------------------------------------


def _chunk_state_kernel(
    a_ptr,
    b_ptr,
    h_ptr,
    T,
    NT,
    DA: tl.constexpr,
    DB: tl.constexpr,
    BT: tl.constexpr,
    BA: tl.constexpr,
    BB: tl.constexpr,
    REVERSE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """h[i] = sum_{j < i} A_j^T B_j (forward) or sum_{j > i} A_j^T B_j (REVERSE), fp32 [DA, DB] per chunk."""
    i_a = tl.program_id(0)
    i_b = tl.program_id(1)
    i_bh = tl.program_id(2).to(tl.int64)
    offs_t = tl.arange(0, BT)
    offs_a = i_a * BA + tl.arange(0, BA)
    offs_b = i_b * BB + tl.arange(0, BB)
    mask_a = offs_a < DA
    mask_b = offs_b < DB
    a_base = a_ptr + i_bh * T * DA
    b_base = b_ptr + i_bh * T * DB
    h_base = h_ptr + i_bh * NT * DA * DB
    h_offs = offs_a[:, None] * DB + offs_b[None, :]
    h_mask = mask_a[:, None] & mask_b[None, :]
    state = tl.full([BA, BB], 0.0, dtype=tl.float32)
    for step in range(NT):
        i_t = NT - 1 - step if REVERSE else step
        tl.store(h_base + i_t * DA * DB + h_offs, state, mask=h_mask)
        rows = i_t * BT + offs_t
        mask_t = rows < T
        tile_a = tl.load(
            a_base + rows[:, None] * DA + offs_a[None, :], mask=mask_t[:, None] & mask_a[None, :], other=0.0
        ).to(tl.float32)
        tile_b = tl.load(
            b_base + rows[:, None] * DB + offs_b[None, :], mask=mask_t[:, None] & mask_b[None, :], other=0.0
        ).to(tl.float32)
        state += tl.dot(tl.trans(tile_a), tile_b, input_precision=PRECISION)


def _chunk_output_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    h_ptr,
    o_ptr,
    scale,
    T,
    NT,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Eq. (2): O_i = scale * (Q_i S_{i-1} + ((Q_i K_i^T) ⊙ M) V_i) for one (V block, chunk, head)."""
    i_v = tl.program_id(0)
    i_t = tl.program_id(1)
    i_bh = tl.program_id(2).to(tl.int64)
    offs_t = tl.arange(0, BT)
    rows = i_t * BT + offs_t
    mask_t = rows < T
    offs_v = i_v * BV + tl.arange(0, BV)
    mask_v = offs_v < V
    qk_base = i_bh * T * K
    h_base = h_ptr + (i_bh * NT + i_t) * K * V
    out = tl.full([BT, BV], 0.0, dtype=tl.float32)
    scores = tl.full([BT, BT], 0.0, dtype=tl.float32)
    for i_k in range(NK):
        offs_k = i_k * BK + tl.arange(0, BK)
        mask_k = offs_k < K
        tile_mask = mask_t[:, None] & mask_k[None, :]
        tile_q = tl.load(q_ptr + qk_base + rows[:, None] * K + offs_k[None, :], mask=tile_mask, other=0.0)
        tile_k = tl.load(k_ptr + qk_base + rows[:, None] * K + offs_k[None, :], mask=tile_mask, other=0.0)
        tile_q = tile_q.to(tl.float32)
        tile_k = tile_k.to(tl.float32)
        state = tl.load(
            h_base + offs_k[:, None] * V + offs_v[None, :], mask=mask_k[:, None] & mask_v[None, :], other=0.0
        )
        out += tl.dot(tile_q, state, input_precision=PRECISION)
        scores += tl.dot(tile_q, tl.trans(tile_k), input_precision=PRECISION)
    scores = tl.where(offs_t[:, None] >= offs_t[None, :], scores, 0.0)
    v_offs = i_bh * T * V + rows[:, None] * V + offs_v[None, :]
    v_mask = mask_t[:, None] & mask_v[None, :]
    tile_v = tl.load(v_ptr + v_offs, mask=v_mask, other=0.0).to(tl.float32)
    out += tl.dot(scores, tile_v, input_precision=PRECISION)
    out = out * scale
    tl.store(o_ptr + v_offs, out.to(o_ptr.dtype.element_ty), mask=v_mask)


def _chunk_dqdk_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    h_ptr,
    dh_ptr,
    dq_ptr,
    dk_ptr,
    scale,
    T,
    NT,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Eqs. (3)-(4) for one (K block, chunk, head)."""
    i_k = tl.program_id(0)
    i_t = tl.program_id(1)
    i_bh = tl.program_id(2).to(tl.int64)
    offs_t = tl.arange(0, BT)
    rows = i_t * BT + offs_t
    mask_t = rows < T
    offs_k = i_k * BK + tl.arange(0, BK)
    mask_k = offs_k < K
    h_offset = (i_bh * NT + i_t) * K * V
    vo_base = i_bh * T * V
    dq = tl.full([BT, BK], 0.0, dtype=tl.float32)
    dk = tl.full([BT, BK], 0.0, dtype=tl.float32)
    grad_scores = tl.full([BT, BT], 0.0, dtype=tl.float32)  # [t, s] = do_t . v_s
    for i_v in range(NV):
        offs_v = i_v * BV + tl.arange(0, BV)
        mask_v = offs_v < V
        tile_mask = mask_t[:, None] & mask_v[None, :]
        tile_offs = vo_base + rows[:, None] * V + offs_v[None, :]
        tile_do = tl.load(do_ptr + tile_offs, mask=tile_mask, other=0.0).to(tl.float32)
        tile_v = tl.load(v_ptr + tile_offs, mask=tile_mask, other=0.0).to(tl.float32)
        state_offs = h_offset + offs_k[:, None] * V + offs_v[None, :]
        state_mask = mask_k[:, None] & mask_v[None, :]
        state = tl.load(h_ptr + state_offs, mask=state_mask, other=0.0)
        dstate = tl.load(dh_ptr + state_offs, mask=state_mask, other=0.0)
        dq += tl.dot(tile_do, tl.trans(state), input_precision=PRECISION)
        dk += tl.dot(tile_v, tl.trans(dstate), input_precision=PRECISION)
        grad_scores += tl.dot(tile_do, tl.trans(tile_v), input_precision=PRECISION)
    grad_scores = tl.where(offs_t[:, None] >= offs_t[None, :], grad_scores, 0.0)
    qk_offs = i_bh * T * K + rows[:, None] * K + offs_k[None, :]
    qk_mask = mask_t[:, None] & mask_k[None, :]
    tile_q = tl.load(q_ptr + qk_offs, mask=qk_mask, other=0.0).to(tl.float32)
    tile_k = tl.load(k_ptr + qk_offs, mask=qk_mask, other=0.0).to(tl.float32)
    dq += tl.dot(grad_scores, tile_k, input_precision=PRECISION)
    dk += tl.dot(tl.trans(grad_scores), tile_q, input_precision=PRECISION)
    tl.store(dq_ptr + qk_offs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=qk_mask)
    tl.store(dk_ptr + qk_offs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=qk_mask)


def _chunk_dv_kernel(
    q_ptr,
    k_ptr,
    do_ptr,
    dh_ptr,
    dv_ptr,
    scale,
    T,
    NT,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NK: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Eq. (5) for one (V block, chunk, head)."""
    i_v = tl.program_id(0)
    i_t = tl.program_id(1)
    i_bh = tl.program_id(2).to(tl.int64)
    offs_t = tl.arange(0, BT)
    rows = i_t * BT + offs_t
    mask_t = rows < T
    offs_v = i_v * BV + tl.arange(0, BV)
    mask_v = offs_v < V
    qk_base = i_bh * T * K
    dh_base = dh_ptr + (i_bh * NT + i_t) * K * V
    dv = tl.full([BT, BV], 0.0, dtype=tl.float32)
    scores = tl.full([BT, BT], 0.0, dtype=tl.float32)  # [t, s] = q_t . k_s
    for i_k in range(NK):
        offs_k = i_k * BK + tl.arange(0, BK)
        mask_k = offs_k < K
        tile_mask = mask_t[:, None] & mask_k[None, :]
        tile_q = tl.load(q_ptr + qk_base + rows[:, None] * K + offs_k[None, :], mask=tile_mask, other=0.0)
        tile_k = tl.load(k_ptr + qk_base + rows[:, None] * K + offs_k[None, :], mask=tile_mask, other=0.0)
        tile_q = tile_q.to(tl.float32)
        tile_k = tile_k.to(tl.float32)
        dstate = tl.load(
            dh_base + offs_k[:, None] * V + offs_v[None, :], mask=mask_k[:, None] & mask_v[None, :], other=0.0
        )
        dv += tl.dot(tile_k, dstate, input_precision=PRECISION)
        scores += tl.dot(tile_q, tl.trans(tile_k), input_precision=PRECISION)
    scores = tl.where(offs_t[:, None] >= offs_t[None, :], scores, 0.0)
    v_offs = i_bh * T * V + rows[:, None] * V + offs_v[None, :]
    v_mask = mask_t[:, None] & mask_v[None, :]
    tile_do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0).to(tl.float32)
    dv += tl.dot(tl.trans(scores), tile_do, input_precision=PRECISION)
    tl.store(dv_ptr + v_offs, (dv * scale).to(dv_ptr.dtype.element_ty), mask=v_mask)


@functools.cache
def _kernels(interpret: bool) -> SimpleNamespace:
    """The four kernels, interpreted (CPU) or compiled (CUDA), autotuned over warps and stages.

    Built on first use rather than decorated at import: ``triton.jit`` decides between the
    interpreter and the compiler when it wraps a function, from ``TRITON_INTERPRET`` at that moment,
    so a module-level decoration would freeze whatever the environment was at import.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    wrap = InterpretedFunction if interpret else JITFunction
    if interpret:
        configs = [triton.Config({}, num_warps=4, num_stages=1)]
    else:
        configs = [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]

    def tuned(fn, key):
        return triton.autotune(configs=configs, key=key)(wrap(fn))

    return SimpleNamespace(
        state=tuned(_chunk_state_kernel, ["DA", "DB", "BT", "BA", "BB", "REVERSE", "PRECISION"]),
        output=tuned(_chunk_output_kernel, ["K", "V", "BT", "BK", "BV", "PRECISION"]),
        dqdk=tuned(_chunk_dqdk_kernel, ["K", "V", "BT", "BK", "BV", "PRECISION"]),
        dv=tuned(_chunk_dv_kernel, ["K", "V", "BT", "BK", "BV", "PRECISION"]),
    )


def _block(dim: int) -> int:
    """Head-dim tile: the next power of two, at least 16 (``tl.dot``'s minimum), at most MAX_BLOCK."""
    return min(MAX_BLOCK, max(16, triton.next_power_of_2(dim)))


def _precision(dtype: torch.dtype, interpret: bool) -> str:
    return "ieee" if interpret or dtype == torch.float32 else "tf32"


def _states(a: Tensor, b: Tensor, chunk: int, reverse: bool, interpret: bool) -> Tensor:
    """Per-chunk fp32 states ``[B, H, NT, Da, Db]``: sums of ``A_j^T B_j`` before (after) each chunk."""
    bsz, heads, length, da = a.shape
    db = b.shape[-1]
    nt = triton.cdiv(length, chunk)
    block_a, block_b = _block(da), _block(db)
    h = torch.empty(bsz, heads, nt, da, db, device=a.device, dtype=torch.float32)
    grid = (triton.cdiv(da, block_a), triton.cdiv(db, block_b), bsz * heads)
    _kernels(interpret).state[grid](
        a,
        b,
        h,
        length,
        nt,
        DA=da,
        DB=db,
        BT=chunk,
        BA=block_a,
        BB=block_b,
        REVERSE=reverse,
        PRECISION=_precision(a.dtype, interpret),
    )
    return h


def chunk_linear_attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float, chunk: int) -> Tensor:
    """Eq. (1)-(2) on contiguous ``[B, H, T, K|V]`` tensors; returns ``o`` in ``v``'s dtype."""
    interpret = use_interpreter(q)
    bsz, heads, length, dk = q.shape
    dv = v.shape[-1]
    h = _states(k, v, chunk, reverse=False, interpret=interpret)
    o = torch.empty_like(v)
    block_k, block_v = _block(dk), _block(dv)
    grid = (triton.cdiv(dv, block_v), h.shape[2], bsz * heads)
    _kernels(interpret).output[grid](
        q,
        k,
        v,
        h,
        o,
        scale,
        length,
        h.shape[2],
        K=dk,
        V=dv,
        BT=chunk,
        BK=block_k,
        BV=block_v,
        NK=triton.cdiv(dk, block_k),
        PRECISION=_precision(q.dtype, interpret),
    )
    return o


def chunk_linear_attention_backward(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, scale: float, chunk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Eqs. (3)-(5): ``(dq, dk, dv)`` on contiguous tensors (the states are recomputed)."""
    interpret = use_interpreter(q)
    bsz, heads, length, dk = q.shape
    dv = v.shape[-1]
    h = _states(k, v, chunk, reverse=False, interpret=interpret)
    dh = _states(q, do, chunk, reverse=True, interpret=interpret)
    nt = h.shape[2]
    block_k, block_v = _block(dk), _block(dv)
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    kernels = _kernels(interpret)
    precision = _precision(q.dtype, interpret)
    kernels.dqdk[(triton.cdiv(dk, block_k), nt, bsz * heads)](
        q,
        k,
        v,
        do,
        h,
        dh,
        grad_q,
        grad_k,
        scale,
        length,
        nt,
        K=dk,
        V=dv,
        BT=chunk,
        BK=block_k,
        BV=block_v,
        NV=triton.cdiv(dv, block_v),
        PRECISION=precision,
    )
    kernels.dv[(triton.cdiv(dv, block_v), nt, bsz * heads)](
        q,
        k,
        do,
        dh,
        grad_v,
        scale,
        length,
        nt,
        K=dk,
        V=dv,
        BT=chunk,
        BK=block_k,
        BV=block_v,
        NK=triton.cdiv(dk, block_k),
        PRECISION=precision,
    )
    return grad_q, grad_k, grad_v


class ChunkLinearAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward Eqs. (1)-(2), backward Eqs. (3)-(5), all in Triton."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float, chunk: int) -> Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.chunk = scale, chunk
        return chunk_linear_attention_forward(q, k, v, scale, chunk)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = chunk_linear_attention_backward(q, k, v, grad_out.contiguous(), ctx.scale, ctx.chunk)
        return dq, dk, dv, None, None


def default_chunk_size(x: Tensor) -> int:
    """``C`` used when none is given: 64 on CUDA, 16 in the interpreter."""
    return CHUNK_SIZE_INTERPRETER if use_interpreter(x) else CHUNK_SIZE_CUDA


def chunk_linear_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float = 1.0, chunk_size: int | None = None
) -> Tensor:
    """Un-normalised causal linear attention ``o_t = scale * sum_{s<=t} (q_t . k_s) v_s`` in Triton.

    ``q, k``: ``[B, H, T, K]`` features (non-negative or not: no feature map is applied here);
    ``v``: ``[B, H, T, V]``; equal dtypes (fp32, bf16 or fp16). ``chunk_size``: a power of two
    >= 16 (default 64 on CUDA, 16 in the interpreter). Differentiable in ``q, k, v``. The caller
    validates shapes (see :func:`interplay.core.attention.linear.causal_linear_attention`).
    """
    check_triton_device(q)
    chunk = default_chunk_size(q) if chunk_size is None else int(chunk_size)
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16 for backend 'triton', got {chunk_size}")
    return ChunkLinearAttentionFunction.apply(q, k, v, float(scale), chunk)


__all__ = [
    "CHUNK_SIZE_CUDA",
    "CHUNK_SIZE_INTERPRETER",
    "ChunkLinearAttentionFunction",
    "check_triton_device",
    "chunk_linear_attention_triton",
    "default_chunk_size",
    "use_interpreter",
]
