"""Triton kernels for causal chunked linear attention against the PyTorch reference, forward and backward.

On CPU the kernels run in Triton's interpreter: each test sets ``TRITON_INTERPRET=1`` for itself only
(monkeypatch), because ``triton.jit`` picks interpreter or compiler when it wraps a function and the
kernels module therefore builds its kernels per mode on first use; setting the variable for the
whole session at collection would also turn other modules' CUDA kernels into interpreted ones.
Shapes stay tiny (the interpreter is slow); chunks of 16 rows so that T = 17 and 63 span several
chunks. The CUDA tests (``@pytest.mark.gpu``) take longer sequences and half precision.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from interplay.core.attention.api import AttentionBackendError  # noqa: E402
from interplay.core.attention.kernels import triton_available  # noqa: E402
from interplay.core.attention.kernels.linear_chunked import chunk_linear_attention_triton  # noqa: E402
from interplay.core.attention.linear import (  # noqa: E402
    causal_linear_attention,
    causal_linear_attention_reference,
    chunk_linear_attention_reference,
)


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def make(b, h, t, dk, dv, device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((b, h, t, dk), (b, h, t, dk), (b, h, t, dv))
    return [torch.randn(s, generator=gen).to(device=device, dtype=dtype).requires_grad_(True) for s in shapes]


def forward_backward(fn, q, k, v, seed=1):
    out = fn(q, k, v)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    return (out, *torch.autograd.grad(out, (q, k, v), do))


def check_against_reference(fast_fn, ref_fn, q, k, v, bound):
    """Fast path in the inputs' dtype vs the reference in float64 on the same values."""
    fast = forward_backward(fast_fn, q, k, v)
    q64, k64, v64 = (x.detach().double().requires_grad_(True) for x in (q, k, v))
    ref = forward_backward(ref_fn, q64, k64, v64)
    for name, a, b in zip(("o", "dq", "dk", "dv"), fast, ref):
        assert a.dtype == q.dtype and a.shape == b.shape
        assert torch.isfinite(a).all(), name
        assert rel_rms(a, b) < bound, (name, rel_rms(a, b))


# -- CPU, Triton interpreter -------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 17, 63])
@pytest.mark.parametrize(("dk", "dv"), [(16, 16), (24, 16), (16, 24)])
def test_kernels_match_reference_in_interpreter(interpret, t, dk, dv):
    q, k, v = make(1, 2, t, dk, dv, seed=t + dk)
    check_against_reference(
        lambda a, b, c: chunk_linear_attention_triton(a, b, c, scale=0.7, chunk_size=16),
        lambda a, b, c: chunk_linear_attention_reference(a, b, c, scale=0.7),
        q,
        k,
        v,
        bound=1e-5,
    )


def test_head_dims_over_one_tile_in_interpreter(interpret):
    """K = 72, V = 70: two 64-wide tiles each (the loops over K and V blocks), masked tails."""
    q, k, v = make(1, 1, 20, 72, 70, seed=3)
    check_against_reference(
        lambda a, b, c: chunk_linear_attention_triton(a, b, c, chunk_size=16),
        chunk_linear_attention_reference,
        q,
        k,
        v,
        bound=1e-5,
    )


@pytest.mark.parametrize(("feature_map", "normalize"), [("elu", True), ("relu", False)])
def test_dispatcher_triton_backend_in_interpreter(interpret, feature_map, normalize):
    q, k, v = make(2, 1, 33, 24, 16, seed=5)
    kw = dict(feature_map=feature_map, normalize=normalize)
    check_against_reference(
        lambda a, b, c: causal_linear_attention(a, b, c, backend="triton", **kw),
        lambda a, b, c: causal_linear_attention_reference(a, b, c, **kw),
        q,
        k,
        v,
        bound=1e-5,
    )


def test_triton_and_torch_backends_agree_in_interpreter(interpret):
    q, k, v = make(1, 2, 40, 16, 16, seed=6)
    with torch.no_grad():
        a = causal_linear_attention(q, k, v, backend="triton", chunk_size=32)
        b = causal_linear_attention(q, k, v, backend="torch", chunk_size=32)
    assert rel_rms(a, b) < 1e-6


def test_chunk_size_must_be_a_power_of_two(interpret):
    q, k, v = make(1, 1, 8, 16, 16)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_linear_attention_triton(q, k, v, chunk_size=24)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_linear_attention_triton(q, k, v, chunk_size=8)


def test_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = make(1, 1, 8, 16, 16)
    with pytest.raises(AttentionBackendError, match="TRITON_INTERPRET=1"):
        chunk_linear_attention_triton(q, k, v)


def test_float64_is_refused_by_the_triton_backend(interpret):
    q, k, v = make(1, 1, 8, 16, 16, dtype=torch.float64)
    with pytest.raises(AttentionBackendError, match="float64"):
        causal_linear_attention(q, k, v, backend="triton")


# -- CUDA ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("t", [1, 63, 500, 1000])
@pytest.mark.parametrize(("dk", "dv"), [(60, 60), (64, 64), (128, 96)])
def test_kernels_match_reference_on_gpu(monkeypatch, t, dk, dv):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = make(2, 3, t, dk, dv, device="cuda", seed=t + dk)
    check_against_reference(
        lambda a, b, c: chunk_linear_attention_triton(a, b, c, scale=dk**-0.5),
        lambda a, b, c: chunk_linear_attention_reference(a, b, c, scale=dk**-0.5),
        q,
        k,
        v,
        bound=1e-5,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_half_precision_on_gpu(monkeypatch, dtype):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = make(2, 4, 1000, 64, 64, device="cuda", dtype=dtype, seed=7)
    check_against_reference(
        lambda a, b, c: chunk_linear_attention_triton(a, b, c, scale=64**-0.5),
        lambda a, b, c: chunk_linear_attention_reference(a, b, c, scale=64**-0.5),
        q,
        k,
        v,
        bound=2e-2,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("feature_map", ["elu", "nala"])
def test_auto_backend_uses_triton_on_gpu(monkeypatch, feature_map):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert triton_available()
    import interplay.core.attention.kernels.linear_chunked as kernels

    calls = []
    original = kernels.chunk_linear_attention_triton

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels, "chunk_linear_attention_triton", spy)
    q, k, v = make(1, 4, 777, 64, 64, device="cuda", seed=8)
    check_against_reference(
        lambda a, b, c: causal_linear_attention(a, b, c, feature_map=feature_map, backend="auto"),
        lambda a, b, c: causal_linear_attention_reference(a, b, c, feature_map=feature_map),
        q,
        k,
        v,
        bound=1e-4,
    )
    assert calls, "backend='auto' did not run the Triton kernels on CUDA"
