"""Dynamic (data-dependent) block-sparse attention: MoBA, VMoBA and DHSA.

All three pick, for every query, a few key blocks from the data and attend to those keys only.
Layout ``[B, H, L, D]``; keys and values may have ``Hkv`` heads dividing ``H`` (grouped-query
attention). Each family has a dense reference (``*_reference``: the token-level mask expanded from
the selection, through :func:`~interplay.core.attention.reference.attention_reference`) and two fast
paths that compute the same attention:

* ``gather`` (CPU, any device): the selection becomes (query, key block) pairs; each key block
  attends the queries that chose it (one padded batch per key block; pairs that see the whole block
  go without a mask, only pairs cut by causality or the DHSA budget carry one), and the partial
  results are merged per query by their log-sum-exp, as MoBA's varlen FlashAttention implementation
  does. On CPU each batch is one call of ATen's fused flash-attention kernel, and the backward feeds
  the kernel's backward the *merged* output and log-sum-exp (a custom autograd function); elsewhere
  the same computation is composed of differentiable torch ops. Time ``O(pairs * block * D)`` =
  ``O(L * top_k * block * D)``, memory ``O(L * top_k * D)`` plus one block batch of scores; never an
  ``L x L`` tensor.
* ``flex`` (CUDA): a data-dependent FlexAttention ``BlockMask`` built from the selection
  (``BlockMask.from_kv_blocks``: a score tile is visited when one of its queries chose a key block
  overlapping it) whose ``mask_mod`` looks the selection up per token (plus causality inside the own
  block). The mask_mod closure captures tensors only, so a new selection of the same shape reuses the
  compiled kernel (no recompilation). CPU inference can run it too (``backend="flex"``); FlexAttention
  has no CPU backward in torch 2.13.

``backend="auto"`` picks ``flex`` on CUDA and ``gather`` elsewhere; ``dense`` materialises the token
mask and calls SDPA (small inputs, debugging). Selections are discrete: no gradient flows through the
gates (as in the papers' code).

**MoBA** -- Lu et al., "MoBA: Mixture of Block Attention for Long-Context LLMs" (arXiv:2502.13189,
2025), Sec. 2.2, Eqs. (2)-(5): keys split into blocks ``I_i`` of ``C`` tokens; the gate of query
``q`` for block ``i`` is ``s_i = <q, mean_pool(K[I_i])>`` (fp32, unscaled); ``g_i = 1`` for the
top-k ``s_i``; attention ``softmax(q K[I]^T * scale) V[I]`` over ``I = U_{g_i = 1} I_i``. Causality
(Sec. 2.2, "causality"): blocks that start after the query are excluded (``s_i = -inf``) and the
query's own block is always selected (``s_i = +inf``, so ``top_k`` counts it) and masked causally.

**VMoBA** -- Wu et al., "VMoBA: Mixture-of-Block Attention for Video Diffusion Models"
(arXiv:2506.23858, 2025): non-causal MoBA over a ``(T, H, W)`` token grid (tokens in row-major
``t, h, w`` order). Layer-wise recurrent partition: layer ``l`` uses 1-D blocks (chunks of frames),
2-D blocks (spatial tiles spanning all frames) or 3-D blocks (cubes), cycling 1D-2D-3D with the
layer index (:func:`vmoba_partition_for_layer`). Edge blocks of a grid that the block size does not
divide are smaller (the released code requires divisibility). Gates as in MoBA (own block always
kept). Selection, with ``scope`` the set the rule ranks over: ``"query"`` (each head and query, the
released ``query_head``), ``"head"`` (all queries and blocks of a head: ``head_global``) or
``"global"`` (all heads, queries and blocks of a sample: ``overall``):

* top-k: ``top_k`` blocks per query, or ``top_k * L`` (``* H``) (query, block) entries per scope;
* threshold ``tau`` (global block selection by cumulative similarity): min-max normalise the gates
  over the scope, ``n = (s - min) / (max - min)``; keep the own blocks; add the other entries in
  descending ``n`` until ``(sum_own n + sum_added n) / sum_all n >= tau`` (paper default 0.25).
  The released code always adds at least one entry even when the own blocks already reach ``tau``;
  here none is added then (the rule as stated), and each sample is its own scope (the released
  ``overall`` mode ranks over the whole packed batch).

**DHSA** -- Xiong et al., "Long-Context Modeling with Dynamic Hierarchical Sparse Attention for
On-Device LLMs" (arXiv:2510.24606, 2025), Sec. 3: the sequence is cut into chunks ``C_c``; chunk
representations use length-normalised aggregation ``q_c = sqrt(|C_c|) * mean_{t in C_c} q_t`` (same
for keys); chunk similarity ``S_c = Q_c K_c^T`` is upsampled to tokens ``S_t[i, j] = S_c[c(i),
c(j)]``; each query keeps its ``N_b`` (``budget``) highest-scoring keys ``j <= i``. Ties (every key of
a chunk shares its score) go to the later key, so a chunk cut by the budget keeps its most recent
keys. The paper predicts variable chunk boundaries with a learned boundary predictor; here chunks
are fixed (``chunk_size``) or given (``chunk_lengths``). ``mode="reference_code"`` reproduces the
released code instead: fixed blocks, plain means, and per query block the top
``k = max(1, floor((1 - sparsity) * Lk / block))`` key blocks under block causality (own block not
forced), causal inside.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from interplay.core.attention.api import AttentionBackendError, _flex_compiled, compiled_flex_attention
from interplay.core.attention.reference import attention_reference, repeat_kv

__all__ = [
    "SPARSE_BACKENDS",
    "VMOBA_PARTITIONS",
    "dhsa_attention",
    "dhsa_mask",
    "dhsa_reference",
    "moba_attention",
    "moba_reference",
    "moba_selection",
    "vmoba_attention",
    "vmoba_block_ids",
    "vmoba_partition_for_layer",
    "vmoba_reference",
    "vmoba_selection",
]

SPARSE_BACKENDS = ("auto", "gather", "flex", "dense")
VMOBA_PARTITIONS = ("1d", "2d", "3d")
VMOBA_SCOPES = ("query", "head", "global")
DHSA_MODES = ("paper", "reference_code")
# FlexAttention score tile (queries x keys) of the data-dependent BlockMask
FLEX_TILE = 128
# VMoBA's threshold rule: guard against a zero range / zero total (as the released code)
_EPS = 1e-6


# -- input checks --------------------------------------------------------------------------------------
def _check_qkv(fn: str, q: Tensor, k: Tensor, v: Tensor, same_length: bool) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{fn} expects {name} of shape [B, H, L, D], got {shape}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"{fn}: batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"{fn}: k {tuple(k.shape)} and v {tuple(v.shape)} must share batch, heads and length"
        )
    if q.shape[1] % k.shape[1]:
        raise ValueError(
            f"{fn}: key/value heads of k ({k.shape[1]}) must divide the query heads of q ({q.shape[1]})"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{fn}: head dims of q ({q.shape[-1]}) and k ({k.shape[-1]}) differ")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{fn}: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError(f"{fn}: empty sequence (q length {q.shape[2]}, k length {k.shape[2]})")
    if same_length and q.shape[2] != k.shape[2]:
        raise ValueError(
            f"{fn} is self-attention: q length ({q.shape[2]}) must equal k length ({k.shape[2]})"
        )
    if not same_length and q.shape[2] > k.shape[2]:
        raise ValueError(f"{fn}: q length ({q.shape[2]}) exceeds k length ({k.shape[2]})")


def _positive_int(fn: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_backend(fn: str, backend: str) -> None:
    if backend not in SPARSE_BACKENDS:
        raise ValueError(f"{fn}: unknown backend '{backend}' (choose from {', '.join(SPARSE_BACKENDS)})")


def _resolve_backend(backend: str, q: Tensor, k: Tensor, v: Tensor) -> str:
    if backend == "auto":
        return "flex" if q.device.type == "cuda" else "gather"
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if backend == "flex" and q.device.type == "cpu" and needs_grad:
        raise AttentionBackendError(
            "backend 'flex' has no backward pass on CPU in torch 2.13 (use 'gather' for training)"
        )
    return backend


def _block_means(x: Tensor, block_tokens: Tensor, block_valid: Tensor, scaled: bool = False) -> Tensor:
    """Mean (or ``sqrt(n) * mean``) of ``x [B, H, L, D]`` over each block's tokens: fp32 ``[B, H, nb, D]``."""
    nb, width = block_tokens.shape
    xf = x.float().index_select(2, block_tokens.reshape(-1)).unflatten(2, (nb, width))
    sums = (xf * block_valid[:, :, None]).sum(dim=3)
    counts = block_valid.sum(dim=1).clamp(min=1).to(torch.float32)[:, None]
    return sums / (counts.sqrt() if scaled else counts)


def _contiguous_blocks(lengths: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Blocks of consecutive tokens with the given lengths: (block_tokens ``[nb, Cmax]``, block_valid
    ``[nb, Cmax]``, token_block ``[L]``). Padded slots point at token 0 and are invalid."""
    sizes = torch.tensor(list(lengths), dtype=torch.long, device=device)
    starts = torch.cumsum(sizes, 0) - sizes
    width = int(sizes.max())
    slot = torch.arange(width, device=device)
    valid = slot[None, :] < sizes[:, None]
    tokens = torch.where(
        valid, starts[:, None] + slot[None, :], torch.zeros((), dtype=torch.long, device=device)
    )
    token_block = torch.repeat_interleave(torch.arange(len(sizes), device=device), sizes)
    return tokens, valid, token_block


def _fixed_lengths(length: int, block: int) -> list[int]:
    n = -(-length // block)
    return [block] * (n - 1) + [length - block * (n - 1)]


# -- the gather engine ---------------------------------------------------------------------------------
# use ATen's fused CPU flash-attention kernel (forward returns the log-sum-exp; its backward accepts
# the merged output and log-sum-exp) for the gather path: ~9x faster than composed matmul / softmax
# ops on a [8, 4096, 512] block batch here
FUSED_CPU = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


class _PairBatch:
    """The queries that selected key block ``j``, padded to ``m`` per (batch, head) row.

    ``query [BH, m]`` query indices, ``valid [BH, m]`` real pairs, ``bias [BH, 1, m, size]`` additive
    mask (0 / -inf) over the block's keys, or ``None`` when every row sees every key of the block.
    """

    __slots__ = ("block", "query", "valid", "bias")

    def __init__(self, block: int, query: Tensor, valid: Tensor, bias: Tensor | None) -> None:
        self.block, self.query, self.valid, self.bias = block, query, valid, bias


def _pair_batches(
    selection: Tensor,
    block_tokens: Tensor,
    block_sizes: list[int],
    q_pos: Tensor | None,
    partial: tuple[Tensor, Tensor] | None,
    dtype: torch.dtype,
    masked: bool,
) -> list[_PairBatch]:
    """One padded batch per key block of the (query, block) pairs in ``selection``; ``masked``
    batches carry the additive mask of causality / the budget cut, the others see every key."""
    b, h, lq, nb = selection.shape
    bh = b * h
    device = selection.device
    chosen = selection.reshape(bh, lq, nb).transpose(1, 2)  # [BH, nb, Lq]
    counts = chosen.sum(dim=-1)  # [BH, nb]
    pair_query = chosen.nonzero()[:, 2]  # (bh, block, query) in lexicographic order
    starts = (torch.cumsum(counts.reshape(-1), 0) - counts.reshape(-1)).reshape(bh, nb)
    row = torch.arange(bh, device=device)[:, None]
    if partial is not None:
        partial_block, partial_lo = partial[0].reshape(bh, lq), partial[1].reshape(bh, lq)
    batches = []
    for j, most in enumerate(counts.max(dim=0).values.tolist()):
        if most == 0:
            continue
        slot = torch.arange(most, device=device)
        valid = slot[None, :] < counts[:, j, None]  # [BH, m]
        query = pair_query[torch.where(valid, starts[:, j, None] + slot[None, :], 0)]
        bias = None
        if masked:
            # masked pairs come from causal use, where a block is a range of consecutive keys
            keys = block_tokens[j, : block_sizes[j]][None, None, :]
            first, last = int(keys[0, 0, 0]), int(keys[0, 0, -1])
            allowed = torch.ones(bh, most, keys.shape[-1], dtype=torch.bool, device=device)
            lo = torch.full_like(query, first)
            hi = torch.full_like(query, last)
            if q_pos is not None:
                hi = torch.clamp(q_pos[query], max=last)
                allowed = keys <= hi[..., None]
            if partial is not None:
                lo = torch.where(partial_block[row, query] == j, partial_lo[row, query], first)
                allowed = allowed & (keys >= lo[..., None])
            # padding rows and (defensively) rows without a visible key see everything, are dropped
            visible = lo <= hi
            if not bool(visible.all()):
                valid = valid & visible
                allowed = allowed | ~visible[..., None]
            neg_inf = torch.full((), float("-inf"), dtype=dtype, device=device)
            bias = torch.where(allowed, torch.zeros((), dtype=dtype, device=device), neg_inf)[:, None]
        batches.append(_PairBatch(j, query, valid, bias))
    return batches


def _split_masked(
    selection: Tensor, block_tokens: Tensor, block_sizes: list[int], q_pos, partial
) -> tuple[Tensor, Tensor]:
    """(pairs that see their whole block, pairs that need a mask): a pair needs one when the query
    precedes the block's last key (causal) or the block is the query's budget-cut block (DHSA)."""
    if q_pos is None and partial is None:
        return selection, torch.zeros_like(selection)
    needs = torch.zeros_like(selection)
    if q_pos is not None:
        sizes = torch.tensor(block_sizes, device=selection.device)
        last_key = block_tokens.gather(1, (sizes - 1)[:, None]).squeeze(1)  # [nb]
        needs = needs | (q_pos[:, None] < last_key[None, :])
    if partial is not None:
        block = torch.arange(selection.shape[-1], device=selection.device)
        needs = needs | (partial[0][..., None] == block)
    return selection & ~needs, selection & needs


def _rows(x: Tensor, query: Tensor) -> Tensor:
    """``x [BH, L, ...]`` rows ``query [BH, m]`` -> ``[BH, m, ...]``."""
    index = query.reshape(*query.shape, *([1] * (x.dim() - 2))).expand(*query.shape, *x.shape[2:])
    return x.gather(1, index)


def _merge(
    n_rows: int, d: int, parts: list, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Merge per-pair results into per-row output ``[n, D]`` and LSE ``[n]``.

    ``parts``: per key block (owner rows ``[P]``, lse ``[P]``, outputs ``[P, D]``), padded pairs
    owned by the dummy row ``n`` with lse ``-inf``. The outputs are accumulated block by block
    (no concatenation of the big tensors)."""
    owners = torch.cat([p[0] for p in parts])
    lses = torch.cat([p[1] for p in parts]).detach()
    peak = torch.full((n_rows + 1,), float("-inf"), dtype=dtype, device=device)
    peak = peak.scatter_reduce(0, owners, lses, reduce="amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    denom = torch.zeros(n_rows + 1, dtype=dtype, device=device)
    out = torch.zeros(n_rows + 1, d, dtype=dtype, device=device)
    for owner, lse, o in parts:
        weight = torch.exp(lse - peak[owner])  # the padded pairs weigh exp(-inf) = 0
        # index_put_(accumulate) rather than index_add_: several times faster on CPU
        denom.index_put_((owner,), weight, accumulate=True)
        out.index_put_((owner,), o * weight[:, None], accumulate=True)
    denom, out, peak = denom[:n_rows], out[:n_rows], peak[:n_rows]
    has_pair = denom > 0
    safe = torch.where(has_pair, denom, torch.ones_like(denom))
    lse = torch.where(has_pair, peak + torch.log(safe), torch.full_like(peak, float("-inf")))
    return out / safe[:, None], lse


def _padded_part(batch: _PairBatch, o: Tensor, lse: Tensor, lq: int) -> tuple[Tensor, Tensor, Tensor]:
    """(owner rows, lse, outputs) of a batch, flattened; padding rows -> dummy row ``BH * lq``."""
    bh = batch.query.shape[0]
    row = torch.arange(bh, device=o.device)[:, None]
    owner = torch.where(batch.valid, row * lq + batch.query, bh * lq)
    lse = lse.masked_fill(~batch.valid, float("-inf"))
    return owner.reshape(-1), lse.reshape(-1), o.reshape(-1, o.shape[-1])


class _FusedPairAttention(torch.autograd.Function):
    """Forward: one fused flash-attention call per key block (queries that chose it vs its keys),
    merged by log-sum-exp. Backward: the fused flash backward per key block, fed the *merged* output
    and log-sum-exp, gives each block's exact share of dq, dk, dv (as VMoBA's varlen code does)."""

    @staticmethod
    def forward(ctx, q_flat, kb, vb, batches, block_sizes, scale):
        bh, lq, d = q_flat.shape
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        parts = []
        for batch in batches:
            j = batch.block
            size = block_sizes[j]
            o, lse = flash(
                _rows(q_flat, batch.query)[:, None],
                kb[:, j : j + 1, :size],
                vb[:, j : j + 1, :size],
                0.0,
                False,
                attn_mask=batch.bias,
                scale=scale,
            )
            parts.append(_padded_part(batch, o[:, 0], lse[:, 0], lq))
        if not parts:
            out, lse = torch.zeros_like(q_flat), torch.full((bh, lq), float("-inf"), dtype=q_flat.dtype)
        else:
            out, lse = _merge(bh * lq, d, parts, q_flat.dtype, q_flat.device)
            out, lse = out.reshape(bh, lq, d), lse.reshape(bh, lq)
        ctx.save_for_backward(q_flat, kb, vb, out, lse)
        ctx.batches, ctx.block_sizes, ctx.scale = batches, block_sizes, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q_flat, kb, vb, out, lse = ctx.saved_tensors
        lq = q_flat.shape[1]
        backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        grad_out = grad_out.contiguous()
        dq, dkb, dvb = torch.zeros_like(q_flat), torch.zeros_like(kb), torch.zeros_like(vb)
        for batch in ctx.batches:
            j, query, valid = batch.block, batch.query, batch.valid
            # padding rows: zero upstream gradient and an infinite LSE (probabilities 0) contribute 0
            rows_lse = torch.where(valid, _rows(lse, query), float("inf"))
            rows_grad = _rows(grad_out, query) * valid[..., None]
            size = ctx.block_sizes[j]
            dq_j, dk_j, dv_j = backward(
                rows_grad[:, None],
                _rows(q_flat, query)[:, None],
                kb[:, j : j + 1, :size],
                vb[:, j : j + 1, :size],
                _rows(out, query)[:, None],
                rows_lse[:, None],
                0.0,
                False,
                attn_mask=batch.bias,
                scale=ctx.scale,
            )
            owner = (torch.arange(query.shape[0], device=query.device)[:, None] * lq + query)[valid]
            dq.view(-1, dq.shape[-1]).index_put_((owner,), dq_j[:, 0][valid], accumulate=True)
            dkb[:, j, :size] += dk_j[:, 0]
            dvb[:, j, :size] += dv_j[:, 0]
        return dq, dkb, dvb, None, None, None


def _composed_pair_attention(q_flat, kb, vb, batches, block_sizes, scale):
    """The same computation from differentiable torch ops (any device)."""
    bh, lq, d = q_flat.shape
    parts = []
    for batch in batches:
        j = batch.block
        size = block_sizes[j]
        scores = torch.bmm(_rows(q_flat, batch.query), kb[:, j, :size].transpose(1, 2)) * scale
        if batch.bias is not None:
            scores = scores + batch.bias[:, 0]
        lse = torch.logsumexp(scores, dim=-1)
        o = torch.bmm(torch.exp(scores - lse[..., None]), vb[:, j, :size])
        parts.append(_padded_part(batch, o, lse, lq))
    if not parts:
        return torch.zeros_like(q_flat)
    return _merge(bh * lq, d, parts, q_flat.dtype, q_flat.device)[0].reshape(bh, lq, d)


def _gather_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    selection: Tensor,
    block_tokens: Tensor,
    block_valid: Tensor,
    scale: float,
    q_pos: Tensor | None = None,
    partial: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Attention of each query over the keys of its selected blocks, exact, without ``Lq x Lk``.

    Args:
        q: ``[B, H, Lq, D]``; k, v: ``[B, H, Lk, D]`` (heads already repeated).
        selection: ``[B, H, Lq, nb]`` boolean, block ``j`` selected by query ``t``.
        block_tokens, block_valid: ``[nb, Cmax]`` key indices of each block (padded slots invalid).
        q_pos: causal positions of the queries ``[Lq]`` (a key ``j`` is visible when ``j <= q_pos``);
            ``None`` for non-causal attention.
        partial: (``block [B, H, Lq]``, ``lo [B, H, Lq]``): in block ``block`` only keys ``>= lo``
            are visible (DHSA's budget cut); ``block = nb`` for none.

    Every (query, block) pair is computed once: its log-sum-exp ``lse_p`` and normalised output
    ``o_p``; the query's output is ``sum_p exp(lse_p - LSE) o_p`` with ``LSE = logsumexp_p lse_p``,
    i.e. one softmax over the union of its blocks. A query with no pair returns zeros.
    """
    b, h, lq, d = q.shape
    nb, width = block_tokens.shape
    out_dtype = q.dtype
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q_flat = q.to(compute).reshape(b * h, lq, d)
    kb = k.to(compute).index_select(2, block_tokens.reshape(-1)).reshape(b * h, nb, width, d)
    vb = v.to(compute).index_select(2, block_tokens.reshape(-1)).reshape(b * h, nb, width, d)
    # blocks list their valid tokens first: slicing a block to its size drops its padding
    sizes = block_valid.sum(dim=1).tolist()
    clean, masked = _split_masked(selection, block_tokens, sizes, q_pos, partial)
    batches = _pair_batches(clean, block_tokens, sizes, None, None, compute, masked=False)
    if bool(masked.any()):
        batches += _pair_batches(masked, block_tokens, sizes, q_pos, partial, compute, masked=True)
    if FUSED_CPU and q.device.type == "cpu":
        out = _FusedPairAttention.apply(q_flat, kb, vb, batches, sizes, scale)
    else:
        out = _composed_pair_attention(q_flat, kb, vb, batches, sizes, scale)
    return out.reshape(b, h, lq, d).to(out_dtype)


# -- the FlexAttention path ----------------------------------------------------------------------------
def _kv_blocks(active: Tensor) -> tuple[Tensor, Tensor]:
    num = active.sum(dim=-1).to(torch.int32)
    order = torch.sort((~active).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return num, order


def _flex_block_mask(
    selection: Tensor,
    token_block: Tensor,
    lk: int,
    q_pos: Tensor | None = None,
    partial: tuple[Tensor, Tensor] | None = None,
    tile: int = FLEX_TILE,
):
    """Data-dependent ``BlockMask``: tile ``(query tile, key tile)`` is visited when a query of the
    tile selected a block with a key in the key tile (and, causally, that key tile starts no later
    than the tile's last query); the ``mask_mod`` applies the exact per-token rule.

    ``token_block [Lk]`` is each key's block (keys in block-contiguous order keep the tiles sparse).
    """
    from torch.nn.attention.flex_attention import BlockMask

    b, h, lq, nb = selection.shape
    device = selection.device
    n_qt, n_kt = -(-lq // tile), -(-lk // tile)
    # padded rows/keys map to a never-selected block column ``nb`` (mask_mod may see padded indices)
    sel_pad = torch.zeros(b, h, n_qt * tile, nb + 1, dtype=torch.bool, device=device)
    sel_pad[:, :, :lq, :nb] = selection
    block_pad = torch.full((n_kt * tile,), nb, dtype=torch.long, device=device)
    block_pad[:lk] = token_block
    q_tiles = sel_pad[..., :nb].reshape(b, h, n_qt, tile, nb).any(dim=3)
    overlap = torch.zeros(nb, n_kt, dtype=torch.float32, device=device)
    overlap[token_block, torch.arange(lk, device=device) // tile] = 1.0
    active = (q_tiles.to(torch.float32) @ overlap) > 0  # [B, H, n_qt, n_kt]
    pos_pad = None
    if q_pos is not None:
        pos_pad = torch.full((n_qt * tile,), -1, dtype=torch.long, device=device)
        pos_pad[:lq] = q_pos
        last = pos_pad.reshape(n_qt, tile).amax(dim=1)
        active &= (torch.arange(n_kt, device=device) * tile)[None, :] <= last[:, None]
    part_block = part_lo = None
    if partial is not None:
        part_block = torch.full((b, h, n_qt * tile), nb, dtype=torch.long, device=device)
        part_lo = torch.zeros((b, h, n_qt * tile), dtype=torch.long, device=device)
        part_block[:, :, :lq], part_lo[:, :, :lq] = partial

    def mask_mod(bi, hi, qi, kv):
        blk = block_pad[kv]
        ok = sel_pad[bi, hi, qi, blk]
        if pos_pad is not None:
            ok = ok & (kv <= pos_pad[qi])
        if part_block is not None:
            ok = ok & ((blk != part_block[bi, hi, qi]) | (kv >= part_lo[bi, hi, qi]))
        return ok

    return BlockMask.from_kv_blocks(
        *_kv_blocks(active), BLOCK_SIZE=tile, mask_mod=mask_mod, seq_lengths=(lq, lk)
    )


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, block_mask, scale: float) -> Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu" and not torch.is_grad_enabled():
        # flex refuses CPU inputs that require grad even under no_grad (no CPU backward)
        q, k, v = q.detach(), k.detach(), v.detach()
    fn = compiled_flex_attention() if _flex_compiled() else flex_attention
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*flex_attention called without torch.compile.*")
        return fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def _dense(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float) -> Tensor:
    from interplay.core.attention.api import attend

    return attend(q, k, v, mask=mask, scale=scale, backend="sdpa")


# -- MoBA ----------------------------------------------------------------------------------------------
def _moba_args(block_size, top_k) -> tuple[int, int]:
    return _positive_int("moba", "block_size", block_size), _positive_int("moba", "top_k", top_k)


def moba_selection(q: Tensor, k: Tensor, block_size: int, top_k: int) -> Tensor:
    """MoBA's gate: which key blocks each query attends, boolean ``[B, H, Lq, n_blocks]``.

    ``n_blocks = ceil(Lk / block_size)`` (the last block may be shorter; its mean is over its keys).
    Query ``t`` sits at position ``t + Lk - Lq`` (queries are the last ``Lq`` positions). Its own block
    is always selected, blocks after it never; the remaining ``top_k - 1`` are the past blocks with
    the largest ``q_t . mean(K_block)`` (fp32, unscaled).
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(
            f"moba_selection expects q and k of shape [B, H, L, D], got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if q.shape[2] > k.shape[2]:
        raise ValueError(f"moba_selection: q length ({q.shape[2]}) exceeds k length ({k.shape[2]})")
    if q.shape[1] % k.shape[1] or q.shape[-1] != k.shape[-1] or q.shape[0] != k.shape[0]:
        raise ValueError(f"moba_selection: q {tuple(q.shape)} and k {tuple(k.shape)} do not match")
    block_size, top_k = _moba_args(block_size, top_k)
    lq, lk = q.shape[2], k.shape[2]
    tokens, valid, _ = _contiguous_blocks(_fixed_lengths(lk, block_size), q.device)
    nb = tokens.shape[0]
    with torch.no_grad():
        means = _block_means(repeat_kv(k, q.shape[1]), tokens, valid)
        gate = q.float() @ means.transpose(-1, -2)  # [B, H, Lq, nb]
        own = torch.div(torch.arange(lq, device=q.device) + (lk - lq), block_size, rounding_mode="floor")
        block = torch.arange(nb, device=q.device)
        gate = gate.masked_fill(block[None, :] > own[:, None], float("-inf"))
        gate = gate.masked_fill(block[None, :] == own[:, None], float("inf"))
        values, index = gate.topk(min(top_k, nb), dim=-1)
        chosen = torch.zeros(gate.shape, dtype=torch.bool, device=q.device)
        chosen.scatter_(-1, index, values > float("-inf"))
    return chosen


def _moba_token_mask(selection: Tensor, lq: int, lk: int, block_size: int) -> Tensor:
    device = selection.device
    key_block = torch.arange(lk, device=device) // block_size
    pos = torch.arange(lq, device=device) + (lk - lq)
    causal = torch.arange(lk, device=device)[None, :] <= pos[:, None]
    return selection[..., key_block] & causal


def moba_reference(
    q: Tensor, k: Tensor, v: Tensor, block_size: int, top_k: int, scale: float | None = None
) -> Tensor:
    """Dense MoBA: ``attention_reference`` with the token mask expanded from :func:`moba_selection`
    (a key is visible when its block is selected and it is not after the query)."""
    _check_qkv("moba_reference", q, k, v, same_length=False)
    selection = moba_selection(q, k, block_size, top_k)
    mask = _moba_token_mask(selection, q.shape[2], k.shape[2], int(block_size))
    return attention_reference(q, k, v, mask=mask, scale=scale)


def moba_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_size: int,
    top_k: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """MoBA (causal): each query attends the keys of its ``top_k`` gated key blocks (own block included).

    Args:
        q: ``[B, H, Lq, D]``; k, v: ``[B, Hkv, Lk, D]`` with ``Hkv`` dividing ``H`` and ``Lq <= Lk``
            (queries are the last ``Lq`` positions, as when decoding against a cache).
        block_size: keys per block ``C``; ``Lk`` need not be a multiple.
        top_k: blocks per query, the own block included.
        scale: score scale, default ``D ** -0.5``.
        backend: ``auto`` (flex on CUDA, gather elsewhere), ``gather``, ``flex`` or ``dense``.

    Returns ``[B, H, Lq, D]``, equal to :func:`moba_reference` up to rounding.
    """
    _check_qkv("moba_attention", q, k, v, same_length=False)
    _check_backend("moba_attention", backend)
    block_size, top_k = _moba_args(block_size, top_k)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    backend = _resolve_backend(backend, q, k, v)
    lq, lk = q.shape[2], k.shape[2]
    selection = moba_selection(q, k, block_size, top_k)
    q_pos = torch.arange(lq, device=q.device) + (lk - lq)
    if backend == "dense":
        return _dense(q, k, v, _moba_token_mask(selection, lq, lk, block_size), scale)
    tokens, valid, token_block = _contiguous_blocks(_fixed_lengths(lk, block_size), q.device)
    if backend == "flex":
        block_mask = _flex_block_mask(selection, token_block, lk, q_pos=q_pos)
        return _flex_attention(q, k, v, block_mask, scale)
    heads = q.shape[1]
    return _gather_attention(
        q, repeat_kv(k, heads), repeat_kv(v, heads), selection, tokens, valid, scale, q_pos=q_pos
    )


# -- VMoBA ---------------------------------------------------------------------------------------------
def vmoba_partition_for_layer(layer_idx: int) -> str:
    """VMoBA's layer-wise recurrent partition: ``"1d"``, ``"2d"``, ``"3d"``, ``"1d"``, ... by layer."""
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0:
        raise ValueError(
            f"vmoba_partition_for_layer: layer_idx must be a non-negative integer, got {layer_idx!r}"
        )
    return VMOBA_PARTITIONS[layer_idx % 3]


def _vmoba_grid_block(grid, partition: str, block) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    fn = "vmoba"
    if partition not in VMOBA_PARTITIONS:
        raise ValueError(f"{fn}: unknown partition {partition!r} (choose from {', '.join(VMOBA_PARTITIONS)})")
    try:
        grid = tuple(int(g) for g in grid)
    except TypeError:
        raise ValueError(f"{fn}: grid must be (T, H, W), got {grid!r}") from None
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"{fn}: grid must be three positive sizes (T, H, W), got {grid!r}")
    dims = {"1d": 1, "2d": 2, "3d": 3}[partition]
    if block is None:
        raise ValueError(f"{fn}: partition {partition!r} needs block (a tuple of {dims} sizes)")
    sizes = (block,) if isinstance(block, int) else tuple(block)
    if len(sizes) != dims or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"{fn}: partition {partition!r} needs block of {dims} positive sizes, got {block!r}")
    full = {"1d": (sizes[0], grid[1], grid[2]), "2d": (grid[0], *sizes), "3d": sizes}[partition]
    return grid, tuple(min(s, g) for s, g in zip(full, grid))


def vmoba_block_ids(grid: Sequence[int], partition: str, block: int | Sequence[int]) -> Tensor:
    """Block index of every token of a ``(T, H, W)`` grid (row-major ``t, h, w``), ``[T * H * W]``.

    ``"1d"``: ``block = (frames,)`` -> ``t // bt``; ``"2d"``: ``block = (bh, bw)`` spatial tiles over
    all frames -> ``(h // bh) * nW + w // bw``; ``"3d"``: ``block = (bt, bh, bw)`` cubes ->
    ``((t // bt) * nH + h // bh) * nW + w // bw``, with ``nH = ceil(H / bh)``, ``nW = ceil(W / bw)``.
    """
    (t_len, h_len, w_len), (bt, bh, bw) = _vmoba_grid_block(grid, partition, block)
    n_h, n_w = -(-h_len // bh), -(-w_len // bw)
    t = torch.arange(t_len).view(-1, 1, 1) // bt
    h = torch.arange(h_len).view(1, -1, 1) // bh
    w = torch.arange(w_len).view(1, 1, -1) // bw
    return ((t * n_h + h) * n_w + w).reshape(-1)


def _vmoba_blocks(block_ids: Tensor, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(block_tokens ``[nb, Cmax]``, block_valid, order): ``order`` lists tokens block by block."""
    block_ids = block_ids.to(device)
    nb = int(block_ids.max()) + 1
    order = torch.sort(block_ids, stable=True).indices
    sizes = torch.bincount(block_ids, minlength=nb)
    starts = torch.cumsum(sizes, 0) - sizes
    width = int(sizes.max())
    slot = torch.arange(width, device=device)
    valid = slot[None, :] < sizes[:, None]
    tokens = order[torch.where(valid, starts[:, None] + slot[None, :], 0)]
    return tokens, valid, order


def _threshold_select(norm: Tensor, own: Tensor, tau: float) -> Tensor:
    """Rows of ``norm [G, N]`` (min-max normalised gates of one scope each): own entries plus the
    other entries in descending order until ``(own mass + added mass) / (total + eps) >= tau``."""
    total = norm.sum(dim=-1, keepdim=True) + _EPS
    own_mass = (norm * own).sum(dim=-1, keepdim=True)
    others = norm.masked_fill(own, float("-inf"))  # own entries sort last
    ranked, order = torch.sort(others, dim=-1, descending=True, stable=True)
    gained = torch.cumsum(ranked.clamp(min=0.0), dim=-1)  # own entries (-inf) add nothing
    reached = (own_mass + gained) / total >= tau
    n_others = (~own).sum(dim=-1, keepdim=True)
    first = torch.where(
        reached.any(dim=-1, keepdim=True), reached.to(torch.int8).argmax(dim=-1, keepdim=True) + 1, n_others
    )
    n_add = torch.where(own_mass / total >= tau, torch.zeros_like(first), torch.minimum(first, n_others))
    take_sorted = torch.arange(norm.shape[-1], device=norm.device)[None, :] < n_add
    take = torch.zeros_like(own).scatter(-1, order, take_sorted)
    return own | take


def _select_from_gates(
    gate: Tensor, own: Tensor, top_k: int | None, threshold: float | None, scope: str
) -> Tensor:
    """VMoBA's block selection from gates ``[B, H, L, nb]`` and own-block flags of the same shape."""
    b, h, length, nb = gate.shape
    # entries of one scope side by side: [groups, entries]
    if scope == "query":
        flat, flat_own = gate.reshape(-1, nb), own.reshape(-1, nb)
    elif scope == "head":
        flat, flat_own = gate.reshape(b * h, length * nb), own.reshape(b * h, length * nb)
    else:
        flat, flat_own = gate.reshape(b, h * length * nb), own.reshape(b, h * length * nb)
    if top_k is not None:
        per_row = {"query": 1, "head": length, "global": h * length}[scope] * top_k
        ranked = flat.masked_fill(flat_own, float("inf"))
        index = ranked.topk(min(per_row, ranked.shape[-1]), dim=-1).indices
        chosen = torch.zeros_like(flat_own).scatter(-1, index, True)
    else:
        low = flat.amin(dim=-1, keepdim=True)
        span = flat.amax(dim=-1, keepdim=True) - low
        norm = (flat - low) / torch.where(span <= _EPS, torch.ones_like(span), span)
        chosen = _threshold_select(norm, flat_own, threshold)
    return chosen.reshape(b, h, length, nb)


def _vmoba_args(q, k, grid, partition, block, top_k, threshold, scope):
    fn = "vmoba"
    grid, _ = _vmoba_grid_block(grid, partition, block)
    n = grid[0] * grid[1] * grid[2]
    if q.shape[2] != n or k.shape[2] != n:
        raise ValueError(
            f"{fn}: grid {grid} has {n} tokens but q has length {q.shape[2]} and k length {k.shape[2]}"
        )
    if scope not in VMOBA_SCOPES:
        raise ValueError(f"{fn}: unknown scope {scope!r} (choose from {', '.join(VMOBA_SCOPES)})")
    if top_k is not None and threshold is not None:
        raise ValueError(f"{fn}: give top_k or threshold, not both (got {top_k!r} and {threshold!r})")
    if top_k is None and threshold is None:
        threshold = 0.25  # the paper's default selection
    if top_k is not None:
        top_k = _positive_int(fn, "top_k", top_k)
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"{fn}: threshold must be in (0, 1], got {threshold!r}")
    return top_k, (None if threshold is None else float(threshold))


def vmoba_selection(
    q: Tensor,
    k: Tensor,
    grid: Sequence[int],
    partition: str = "1d",
    block: int | Sequence[int] | None = None,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    scope: str = "query",
) -> Tensor:
    """VMoBA's block selection, boolean ``[B, H, L, n_blocks]`` (blocks numbered as
    :func:`vmoba_block_ids`). Gates ``q_t . mean(K_block)`` (fp32, unscaled); own block always kept.
    ``top_k`` or ``threshold`` (default: threshold 0.25) ranked over ``scope`` (see the module doc)."""
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(
            f"vmoba_selection expects q and k of shape [B, H, L, D], got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    top_k, threshold = _vmoba_args(q, k, grid, partition, block, top_k, threshold, scope)
    block_ids = vmoba_block_ids(grid, partition, block).to(q.device)
    tokens, valid, _ = _vmoba_blocks(block_ids, q.device)
    with torch.no_grad():
        means = _block_means(repeat_kv(k, q.shape[1]), tokens, valid)
        gate = q.float() @ means.transpose(-1, -2)
        own = (torch.arange(tokens.shape[0], device=q.device)[None, :] == block_ids[:, None]).expand_as(gate)
        return _select_from_gates(gate, own, top_k, threshold, scope)


def vmoba_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    grid: Sequence[int],
    partition: str = "1d",
    block: int | Sequence[int] | None = None,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    scope: str = "query",
    scale: float | None = None,
) -> Tensor:
    """Dense VMoBA: ``attention_reference`` where token ``t`` sees key ``j`` iff ``j``'s block is selected."""
    _check_qkv("vmoba_reference", q, k, v, same_length=True)
    selection = vmoba_selection(q, k, grid, partition, block, top_k=top_k, threshold=threshold, scope=scope)
    block_ids = vmoba_block_ids(grid, partition, block).to(q.device)
    return attention_reference(q, k, v, mask=selection[..., block_ids], scale=scale)


def vmoba_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    grid: Sequence[int],
    partition: str = "1d",
    block: int | Sequence[int] | None = None,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    scope: str = "query",
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """VMoBA (non-causal) over the tokens of a ``(T, H, W)`` grid.

    Args:
        q, k, v: ``[B, H, L, D]`` with ``L = T * H * W`` in row-major ``(t, h, w)`` order; k and v may
            have fewer heads (grouped-query attention).
        grid: ``(T, H, W)``.
        partition: ``"1d"`` (chunks of frames), ``"2d"`` (spatial tiles over all frames) or ``"3d"``
            (cubes); :func:`vmoba_partition_for_layer` gives the paper's layer cycle.
        block: block extent: ``(frames,)``, ``(bh, bw)`` or ``(bt, bh, bw)``; edge blocks may be smaller.
        top_k: blocks per query (own block included; times ``L`` or ``H * L`` for wider scopes).
        threshold: cumulative normalised gate mass ``tau`` (default 0.25 when ``top_k`` is not given).
        scope: ``"query"``, ``"head"`` or ``"global"`` (what a selection rule ranks over).
        scale: score scale, default ``D ** -0.5``.
        backend: ``auto``, ``gather``, ``flex`` or ``dense``.
    """
    _check_qkv("vmoba_attention", q, k, v, same_length=True)
    _check_backend("vmoba_attention", backend)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    backend = _resolve_backend(backend, q, k, v)
    selection = vmoba_selection(q, k, grid, partition, block, top_k=top_k, threshold=threshold, scope=scope)
    block_ids = vmoba_block_ids(grid, partition, block).to(q.device)
    if backend == "dense":
        return _dense(q, k, v, selection[..., block_ids], scale)
    tokens, valid, order = _vmoba_blocks(block_ids, q.device)
    if backend == "flex":
        # block-contiguous token order keeps the visited tiles few; undone on the output
        block_mask = _flex_block_mask(selection[:, :, order], block_ids[order], q.shape[2])
        out = _flex_attention(q[:, :, order], k[:, :, order], v[:, :, order], block_mask, scale)
        return out[:, :, torch.argsort(order)]
    heads = q.shape[1]
    return _gather_attention(q, repeat_kv(k, heads), repeat_kv(v, heads), selection, tokens, valid, scale)


# -- DHSA ----------------------------------------------------------------------------------------------
def _dhsa_args(
    q, k, chunk_size, chunk_lengths, budget, mode, sparsity
) -> tuple[list[int], int | None, float | None]:
    fn = "dhsa"
    length = q.shape[2]
    if mode not in DHSA_MODES:
        raise ValueError(f"{fn}: unknown mode {mode!r} (choose from {', '.join(DHSA_MODES)})")
    if q.shape[2] != k.shape[2]:
        raise ValueError(
            f"{fn} is self-attention: q length ({q.shape[2]}) must equal k length ({k.shape[2]})"
        )
    if mode == "paper":
        if (chunk_size is None) == (chunk_lengths is None):
            raise ValueError(f"{fn}: give exactly one of chunk_size and chunk_lengths")
        if chunk_lengths is not None:
            lengths = list(chunk_lengths)
            if not lengths or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in lengths):
                raise ValueError(f"{fn}: chunk_lengths must be positive integers, got {chunk_lengths!r}")
            if sum(lengths) != length:
                raise ValueError(
                    f"{fn}: chunk_lengths sum to {sum(lengths)}, but the sequence has {length} tokens"
                )
        else:
            lengths = _fixed_lengths(length, _positive_int(fn, "chunk_size", chunk_size))
        if budget is None:
            raise ValueError(f"{fn}: mode 'paper' needs budget (keys kept per query, N_b)")
        return lengths, _positive_int(fn, "budget", budget), None
    if chunk_lengths is not None:
        raise ValueError(f"{fn}: mode 'reference_code' uses fixed blocks (chunk_size), not chunk_lengths")
    lengths = _fixed_lengths(length, _positive_int(fn, "chunk_size", chunk_size))
    if (
        sparsity is None
        or isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not 0.0 <= sparsity < 1.0
    ):
        raise ValueError(f"{fn}: mode 'reference_code' needs sparsity in [0, 1), got {sparsity!r}")
    return lengths, None, float(sparsity)


def _dhsa_chunk_scores(q: Tensor, k: Tensor, lengths: list[int], scaled: bool) -> Tensor:
    """``S_c = Q_c K_c^T`` (fp32) ``[B, H, nc, nc]`` from (``sqrt(n) *``) mean chunk representations."""
    tokens, valid, _ = _contiguous_blocks(lengths, q.device)
    q_c = _block_means(q, tokens, valid, scaled=scaled)
    k_c = _block_means(repeat_kv(k, q.shape[1]), tokens, valid, scaled=scaled)
    return q_c @ k_c.transpose(-1, -2)


def _reference_code_blocks(q: Tensor, k: Tensor, lengths: list[int], sparsity: float, block: int) -> Tensor:
    """Released-code selection: top-k key blocks per query block under block causality ``[B, H, nb, nb]``."""
    nb = len(lengths)
    scores = _dhsa_chunk_scores(q, k, lengths, scaled=False)
    index = torch.arange(nb, device=q.device)
    scores = scores.masked_fill(index[None, :] > index[:, None], float("-inf"))
    top = max(1, math.floor((1.0 - sparsity) * k.shape[2] / block))
    values, index = scores.topk(min(top, nb), dim=-1)
    return torch.zeros(scores.shape, dtype=torch.bool, device=q.device).scatter(
        -1, index, values > float("-inf")
    )


def dhsa_mask(
    q: Tensor,
    k: Tensor,
    *,
    chunk_size: int | None = None,
    chunk_lengths: Sequence[int] | None = None,
    budget: int | None = None,
    mode: str = "paper",
    sparsity: float | None = None,
) -> Tensor:
    """DHSA's token-level mask ``[B, H, L, L]`` by its plain definition (materialises ``L x L``).

    ``mode="paper"``: upsample ``S_c`` to ``S_t``, rank each query's keys ``j <= i`` by ``(S_t[i, j],
    j)`` descending and keep the first ``budget``. ``mode="reference_code"``: the selected blocks of
    the query's block, causal inside.
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(
            f"dhsa_mask expects q and k of shape [B, H, L, D], got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    lengths, budget, sparsity = _dhsa_args(q, k, chunk_size, chunk_lengths, budget, mode, sparsity)
    length = q.shape[2]
    device = q.device
    chunk_of = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )
    causal = torch.arange(length, device=device)[None, :] <= torch.arange(length, device=device)[:, None]
    with torch.no_grad():
        if mode == "reference_code":
            blocks = _reference_code_blocks(q, k, lengths, sparsity, chunk_size)
            return blocks[:, :, chunk_of][..., chunk_of] & causal
        s_t = _dhsa_chunk_scores(q, k, lengths, scaled=True)[:, :, chunk_of][..., chunk_of]
        s_t = s_t.masked_fill(~causal, float("-inf"))
        # stable sort of the reversed keys: among equal scores the later key comes first
        order = torch.sort(s_t.flip(-1), dim=-1, descending=True, stable=True).indices[..., :budget]
        keep = torch.zeros(s_t.shape, dtype=torch.bool, device=device)
        keep.scatter_(-1, length - 1 - order, True)
        return keep & causal


def _dhsa_plan(q: Tensor, k: Tensor, lengths: list[int], budget: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Paper-mode selection at chunk granularity: (chunks ``[B, H, L, nc]``, (partial chunk, lo)).

    Each query takes whole chunks in its ranking (score descending, later chunk first on ties) until
    the budget is spent; the chunk where it runs out contributes its most recent keys ``>= lo``.
    """
    device = q.device
    nc, length = len(lengths), q.shape[2]
    sizes = torch.tensor(lengths, device=device)
    starts = torch.cumsum(sizes, 0) - sizes
    chunk_of = torch.repeat_interleave(torch.arange(nc, device=device), sizes)
    chunk = torch.arange(nc, device=device)
    with torch.no_grad():
        scores = _dhsa_chunk_scores(q, k, lengths, scaled=True)
        scores = scores.masked_fill(chunk[None, :] > chunk[:, None], float("-inf"))
        ranking = nc - 1 - torch.sort(scores.flip(-1), dim=-1, descending=True, stable=True).indices
        ranking = ranking[:, :, chunk_of]  # [B, H, L, nc] each query's chunk ranking
        pos = torch.arange(length, device=device)
        # visible keys of chunk c for query i, and where they end
        end = torch.where(chunk[None, :] == chunk_of[:, None], pos[:, None] + 1, (starts + sizes)[None, :])
        visible = torch.where(chunk[None, :] <= chunk_of[:, None], end - starts[None, :], 0)  # [L, nc]
        ranked_visible = visible.expand_as(ranking).gather(-1, ranking)
        before = torch.cumsum(ranked_visible, dim=-1) - ranked_visible
        taken = torch.minimum((budget - before).clamp(min=0), ranked_visible)
        taken = torch.zeros_like(taken).scatter(-1, ranking, taken)  # back to chunk order
        chosen = taken > 0
        cut = chosen & (taken < visible)
        partial_block = torch.where(cut.any(dim=-1), cut.to(torch.int8).argmax(dim=-1), nc)
        idx = partial_block.clamp(max=nc - 1)[..., None]
        lo = (end.expand_as(taken).gather(-1, idx) - taken.gather(-1, idx)).squeeze(-1)
    return chosen, (partial_block, lo)


def _dhsa_selection(q, k, lengths, budget, mode, sparsity, chunk_size):
    """(chunk selection ``[B, H, L, nc]``, partial or None) for the fast paths."""
    if mode == "paper":
        return _dhsa_plan(q, k, lengths, budget)
    chunk_of = torch.repeat_interleave(
        torch.arange(len(lengths), device=q.device), torch.tensor(lengths, device=q.device)
    )
    with torch.no_grad():
        return _reference_code_blocks(q, k, lengths, sparsity, chunk_size)[:, :, chunk_of], None


def dhsa_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    chunk_size: int | None = None,
    chunk_lengths: Sequence[int] | None = None,
    budget: int | None = None,
    mode: str = "paper",
    sparsity: float | None = None,
    scale: float | None = None,
) -> Tensor:
    """Dense DHSA: ``attention_reference`` with :func:`dhsa_mask`."""
    _check_qkv("dhsa_reference", q, k, v, same_length=True)
    mask = dhsa_mask(
        q, k, chunk_size=chunk_size, chunk_lengths=chunk_lengths, budget=budget, mode=mode, sparsity=sparsity
    )
    return attention_reference(q, k, v, mask=mask, scale=scale)


def dhsa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    chunk_size: int | None = None,
    chunk_lengths: Sequence[int] | None = None,
    budget: int | None = None,
    mode: str = "paper",
    sparsity: float | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """DHSA (causal self-attention, prefill).

    Args:
        q, k, v: ``[B, H, L, D]``; k and v may have fewer heads (grouped-query attention).
        chunk_size: fixed chunk length (the last chunk may be shorter), or
        chunk_lengths: the chunk lengths (summing to ``L``), e.g. from a boundary predictor.
        budget: ``N_b``, keys kept per query (``mode="paper"``).
        mode: ``"paper"`` or ``"reference_code"`` (fixed blocks of ``chunk_size``, plain means,
            top-``max(1, floor((1 - sparsity) L / chunk_size))`` key blocks per query block).
        sparsity: fraction of key blocks dropped (``mode="reference_code"``), in ``[0, 1)``.
        scale: score scale, default ``D ** -0.5``.
        backend: ``auto``, ``gather``, ``flex`` or ``dense``.

    Returns ``[B, H, L, D]``, equal to :func:`dhsa_reference` up to rounding.
    """
    _check_qkv("dhsa_attention", q, k, v, same_length=True)
    _check_backend("dhsa_attention", backend)
    lengths, budget, sparsity = _dhsa_args(q, k, chunk_size, chunk_lengths, budget, mode, sparsity)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    backend = _resolve_backend(backend, q, k, v)
    if backend == "dense":
        mask = dhsa_mask(
            q,
            k,
            chunk_size=chunk_size,
            chunk_lengths=chunk_lengths,
            budget=budget,
            mode=mode,
            sparsity=sparsity,
        )
        return _dense(q, k, v, mask, scale)
    selection, partial = _dhsa_selection(q, k, lengths, budget, mode, sparsity, chunk_size)
    tokens, valid, token_block = _contiguous_blocks(lengths, q.device)
    q_pos = torch.arange(q.shape[2], device=q.device)
    if backend == "flex":
        block_mask = _flex_block_mask(selection, token_block, k.shape[2], q_pos=q_pos, partial=partial)
        return _flex_attention(q, k, v, block_mask, scale)
    heads = q.shape[1]
    return _gather_attention(
        q,
        repeat_kv(k, heads),
        repeat_kv(v, heads),
        selection,
        tokens,
        valid,
        scale,
        q_pos=q_pos,
        partial=partial,
    )


def _plan_token_mask(selection: Tensor, partial, lengths: list[int], causal: bool = True) -> Tensor:
    """Expand a chunk-level plan to the token mask ``[B, H, L, L]`` (tests and inspection)."""
    device = selection.device
    length = sum(lengths)
    chunk_of = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device)
    )
    key = torch.arange(length, device=device)
    mask = selection[..., chunk_of]
    if causal:
        mask = mask & (key[None, :] <= key[:, None])
    if partial is not None:
        block, lo = partial
        mask = mask & ((chunk_of != block[..., None]) | (key >= lo[..., None]))
    return mask
