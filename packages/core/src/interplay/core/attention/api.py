"""``attend``: one attention call over several backends.

    out = attend(q, k, v, mask=sliding_window(128), bias=alibi, backend="auto")

Layout ``[B, H, L, D]`` (as SDPA and FlexAttention); keys and values may have fewer heads than
queries (grouped-query attention, ``Hkv`` divides ``H``) and another length than the queries.

Backends:

* ``math`` — :func:`~interplay.core.attention.reference.attention_reference`: readable, exact,
  differentiable; materialises the scores.
* ``sdpa`` — ``torch.nn.functional.scaled_dot_product_attention`` with the mask (and bias)
  materialised as a dense ``[B|1, H|1, Lq, Lk]`` tensor; plain causal masks use SDPA's own causal
  kernel instead.
* ``flex`` — compiled FlexAttention: masks become a cached ``BlockMask`` (built without an
  ``Lq x Lk`` tensor), biases a ``score_mod``; memory and time scale with the visible blocks only.
  No dropout; no backward on CPU in torch 2.13.
* ``auto`` — CUDA: flex for structured masks or biases, SDPA otherwise. CPU with gradients:
  SDPA (FlexAttention has no CPU backward). CPU inference: compiled flex for structured masks on
  long sequences (where it is faster), SDPA otherwise. ``return_lse`` on CPU uses math.

A combination a backend cannot express raises :class:`AttentionBackendError` naming both.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from interplay.core.attention.bias import AttentionBias, as_bias
from interplay.core.attention.masks import MaskSpec, _Simple, block_mask
from interplay.core.attention.reference import attention_reference

BACKENDS = ("auto", "math", "sdpa", "flex")

# CPU inference switches to compiled flex from this many (query, key) pairs on (measured crossover)
FLEX_CPU_MIN_PAIRS = 1024 * 1024
# ... and only when at most this fraction of the score tiles is visible
FLEX_CPU_MAX_DENSITY = 0.5
# compiled specialisations of flex_attention kept by Dynamo (one per mask, bias and shape)
FLEX_RECOMPILE_LIMIT = 64


class AttentionBackendError(ValueError):
    """The requested backend cannot compute this combination of inputs."""


_state = threading.local()


def _flex_compiled() -> bool:
    return getattr(_state, "compile_flex", True)


@contextlib.contextmanager
def flex_compile(enabled: bool) -> Iterator[None]:
    """Run the flex backend compiled (default) or eagerly (debugging; eager flex materialises scores)."""
    previous = _flex_compiled()
    _state.compile_flex = enabled
    try:
        yield
    finally:
        _state.compile_flex = previous


_COMPILED_FLEX = None


def compiled_flex_attention():
    """The process-wide compiled FlexAttention callable (compiled once, specialised per mask/shape)."""
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        import torch._dynamo.config as dynamo_config
        from torch.nn.attention.flex_attention import flex_attention

        # Every (mask_mod, score_mod, shape) is one specialisation of flex_attention's frame. Past
        # Dynamo's default limit of 8 it silently runs flex eagerly, which materialises the scores
        # (S = 16k then needs gigabytes): allow as many specialisations as the mask caches hold.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, FLEX_RECOMPILE_LIMIT)
        dynamo_config.accumulated_recompile_limit = max(
            dynamo_config.accumulated_recompile_limit, 4 * FLEX_RECOMPILE_LIMIT
        )
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


def _check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attend expects {name} of shape [B, H, L, D], got {tuple(t.shape)}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must share heads and length")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"key/value heads ({k.shape[1]}) must divide query heads ({q.shape[1]})")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def _dense_mask(mask: MaskSpec | Tensor | None, q: Tensor, k: Tensor) -> Tensor | None:
    if mask is None:
        return None
    b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if isinstance(mask, MaskSpec):
        return mask.dense(b, h, lq, lk, q.device)
    if mask.dtype != torch.bool:
        raise TypeError(f"a mask tensor must be boolean (True = may attend), got {mask.dtype}")
    try:
        torch.broadcast_shapes(mask.shape, (b, h, lq, lk))
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to {(b, h, lq, lk)}"
        ) from None
    return mask


def _is_plain_causal(mask: MaskSpec | Tensor | None) -> bool:
    return isinstance(mask, _Simple) and mask.name == "causal"


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def choose_backend(
    q: Tensor, k: Tensor, mask, bias: AttentionBias | None, dropout_p: float, return_lse: bool, grad: bool
) -> str:
    """The backend ``auto`` picks for these inputs (see the module docstring)."""
    structured = isinstance(mask, MaskSpec) and not _is_plain_causal(mask)
    dense_tensor_mask = isinstance(mask, Tensor)
    if q.device.type == "cuda":
        if dropout_p > 0 or dense_tensor_mask:
            return "sdpa" if not return_lse else "math"
        if return_lse or structured or bias is not None:
            return "flex"
        return "sdpa"
    if return_lse:
        return "math"
    if grad or dropout_p > 0 or dense_tensor_mask or not structured:
        return "sdpa"
    if q.shape[2] * k.shape[2] >= FLEX_CPU_MIN_PAIRS and block_density(mask, q, k) <= FLEX_CPU_MAX_DENSITY:
        return "flex"
    return "sdpa"


def block_density(mask: MaskSpec, q: Tensor, k: Tensor) -> float:
    """Fraction of (query block, key block) tiles the mask leaves visible (from the cached BlockMask).

    Flex skips empty tiles; when nearly every tile is visible (e.g. random links spread over all
    blocks) it does the dense work plus per-element mask calls and SDPA is faster.
    """
    bm = block_mask(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
    full = bm.full_kv_num_blocks
    visible = bm.kv_num_blocks.sum() + (full.sum() if full is not None else 0)
    total = bm.kv_num_blocks.numel() * bm.kv_indices.shape[-1]  # B * H * query blocks * key blocks
    return float(visible) / total


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskSpec | Tensor | None = None,
    bias: AttentionBias | Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention ``softmax(q k^T * scale + bias, mask) v``.

    Args:
        q: ``[B, H, Lq, D]``; k, v: ``[B, Hkv, Lk, D]`` with ``Hkv`` dividing ``H``.
        mask: a :class:`MaskSpec` (compiled per backend) or a boolean tensor broadcastable to
            ``[B, H, Lq, Lk]`` (``True`` = may attend). Rows with no visible key return zeros.
        bias: an :class:`AttentionBias` or an additive tensor broadcastable to ``[B, H, Lq, Lk]``.
        scale: score scale, default ``D ** -0.5``.
        dropout_p: dropout on the attention weights (pass 0 in eval).
        backend: ``auto``, ``math``, ``sdpa`` or ``flex``.
        return_lse: also return the log-sum-exp of each row's scores ``[B, H, Lq]``.
    """
    _check_inputs(q, k, v)
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    bias = as_bias(bias)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if backend == "auto":
        backend = choose_backend(q, k, mask, bias, dropout_p, return_lse, _needs_grad(q, k, v))
    if backend == "math":
        return _math(q, k, v, mask, bias, scale, dropout_p, return_lse)
    if backend == "sdpa":
        if return_lse:
            raise AttentionBackendError("backend 'sdpa' cannot return the log-sum-exp (use 'math' or 'flex')")
        return _sdpa(q, k, v, mask, bias, scale, dropout_p)
    return _flex(q, k, v, mask, bias, scale, dropout_p, return_lse)


def _math(q, k, v, mask, bias, scale, dropout_p, return_lse):
    lq, lk = q.shape[2], k.shape[2]
    dense_bias = bias.dense(lq, lk, q.device, q.dtype) if bias is not None else None
    return attention_reference(
        q,
        k,
        v,
        mask=_dense_mask(mask, q, k),
        bias=dense_bias,
        scale=scale,
        dropout_p=dropout_p,
        return_lse=return_lse,
    )


def _sdpa(q, k, v, mask, bias, scale, dropout_p):
    lq, lk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if _is_plain_causal(mask) and bias is None and lq == lk:
        return _fused_sdpa(q, k, v, is_causal=True, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)
    dense = _dense_mask(mask, q, k)
    row_visible = None
    attn_mask = None
    if dense is not None:
        row_visible = dense.any(dim=-1, keepdim=True)
        # rows with no visible key attend everything and are zeroed after: SDPA would give NaN
        attn_mask = dense | ~row_visible
    if bias is not None:
        additive = bias.dense(lq, lk, q.device, q.dtype)
        if attn_mask is not None:
            additive = additive.masked_fill(~attn_mask, float("-inf"))
        attn_mask = additive
    out = _fused_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)
    if row_visible is not None and not bool(row_visible.all()):
        out = out.masked_fill(~row_visible, 0.0)
    return out


def _fused_sdpa(q: Tensor, k: Tensor, v: Tensor, *, scale: float, **kwargs) -> Tensor:
    """``F.scaled_dot_product_attention`` that keeps CPU on its fused (flash) kernel for inputs with a
    strided head dimension or a value head size unlike the query / key one (HaloNet, MLA): that
    kernel needs both, and SDPA otherwise falls back to its math path (2-3x slower, scores
    materialised, extra passes for -inf rows). Copying to unit stride is cheap; zero-padding the
    narrower side is exact (zeros add nothing to ``q k^T``; padded value channels are cut off) and
    ``scale`` is always passed explicitly, so the padding does not change it."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, scale=scale, **kwargs)
    # the fused kernel also needs unit stride along the head dimension (unfolded windows lack it)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    dqk, dv = q.shape[-1], v.shape[-1]
    # pad only while the fused kernel may run: under sdpa_kernel(MATH) (FLOP counting) keep the
    # model's own head sizes, so that counted MACs are the model's, not the padded ones
    if dqk == dv or not torch.backends.cuda.flash_sdp_enabled():
        return F.scaled_dot_product_attention(q, k, v, scale=scale, **kwargs)
    if dqk < dv:
        q, k = F.pad(q, (0, dv - dqk)), F.pad(k, (0, dv - dqk))
        return F.scaled_dot_product_attention(q, k, v, scale=scale, **kwargs)
    return F.scaled_dot_product_attention(q, k, F.pad(v, (0, dqk - dv)), scale=scale, **kwargs)[..., :dv]


def _flex(q, k, v, mask, bias, scale, dropout_p, return_lse):
    from torch.nn.attention.flex_attention import flex_attention

    if dropout_p > 0:
        raise AttentionBackendError("backend 'flex' cannot apply attention dropout (use 'sdpa' or 'math')")
    if isinstance(mask, Tensor):
        raise AttentionBackendError(
            "backend 'flex' needs a MaskSpec, not a dense boolean mask tensor (use 'sdpa' or 'math')"
        )
    if q.device.type == "cpu" and _needs_grad(q, k, v, getattr(bias, "table", None)):
        raise AttentionBackendError(
            "backend 'flex' has no backward pass on CPU in torch 2.13 (use 'sdpa' or 'math' for training)"
        )
    compiled = _flex_compiled()
    if return_lse and compiled and q.device.type == "cpu":
        raise AttentionBackendError(
            "compiled backend 'flex' cannot return the log-sum-exp on CPU (use 'math')"
        )
    b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    bm = block_mask(mask, b, h, lq, lk, q.device) if mask is not None else None
    score_mod = bias.score_mod(lq, lk, q.device) if bias is not None else None
    fn = compiled_flex_attention() if compiled else flex_attention
    kwargs = dict(score_mod=score_mod, block_mask=bm, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    with warnings.catch_warnings():
        # eager flex (flex_compile(False)) warns that it materialises the scores: that is its purpose
        warnings.filterwarnings("ignore", ".*flex_attention called without torch.compile.*")
        if return_lse:
            from torch.nn.attention.flex_attention import AuxRequest

            out, aux = fn(q, k, v, return_aux=AuxRequest(lse=True), **kwargs)
            return out, aux.lse
        return fn(q, k, v, **kwargs)
