"""RAT: associative scan vs loop, parallel form vs loop reference (forward and backward), decoding."""

from __future__ import annotations

import math

import pytest
import torch

from interplay.core.attention import AttentionBackendError, flex_compile
from interplay.core.attention.recurrent import (
    RATBlock,
    RATState,
    chunk_scan,
    chunk_scan_reference,
    earlier_chunks,
    rat_attention,
    rat_attention_reference,
    rat_attention_step,
)
from interplay.core.attention.rope import apply_rope

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def make(b, h, length, d, seed=0, dtype=torch.float32, grad=False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, length, d, generator=gen, dtype=dtype) for _ in range(3))
    g = torch.sigmoid(torch.randn(b, h, length, d, generator=gen, dtype=dtype) + 1.0)
    return [t.requires_grad_(grad) for t in (q, k, v, g)]


@pytest.mark.parametrize(("length", "chunk"), [(1, 4), (63, 16), (200, 7), (33, 1), (40, 64)])
def test_chunk_scan_matches_loop(length, chunk):
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, length, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 3, length, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(chunk_scan(a, b, chunk), chunk_scan_reference(a, b, chunk))


def test_chunk_scan_broadcast_gate():
    """One gate for a stacked pair of sequences (RAT's values and keys)."""
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(3, 37, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 3, 37, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(chunk_scan(a, b, 8), chunk_scan_reference(a.expand_as(b), b, 8))
    with pytest.raises(ValueError, match="a must broadcast to b"):
        chunk_scan(a[:, :5], b, 8)


def test_chunk_scan_stable_with_tiny_gates():
    a = torch.full((1, 64, 2), 1e-30)
    b = torch.ones(1, 64, 2)
    out = chunk_scan(a, b, 64)
    assert torch.isfinite(out).all() and torch.allclose(out, torch.ones_like(out))


def test_reference_is_softmax_over_earlier_chunk_ends_and_own_state():
    """Token 5, chunk length 2 (so chunk index 2): keys = ends of chunks 0, 1 (tokens 1, 3) + own state."""
    q, k, v, g = make(1, 1, 6, 4, seed=2, dtype=torch.float64)
    chunk, t = 2, 5

    def states(u):
        h, out = torch.zeros(4, dtype=torch.float64), []
        for s in range(6):
            h = (torch.zeros_like(h) if s % chunk == 0 else h) * g[0, 0, s] + (1 - g[0, 0, s]) * u[0, 0, s]
            out.append(h)
        return torch.stack(out)

    xs, ks = states(v), states(k)
    keys = torch.stack(
        [apply_rope(ks[1:2], torch.tensor([0]))[0], apply_rope(ks[3:4], torch.tensor([1]))[0], ks[5]]
    )
    query = apply_rope(q[0, 0, t : t + 1], torch.tensor([2]))[0]
    weights = torch.softmax(
        torch.stack([keys[0] @ query, keys[1] @ query, ks[5] @ q[0, 0, t]]) / math.sqrt(4), dim=0
    )
    expected = weights[0] * xs[1] + weights[1] * xs[3] + weights[2] * xs[5]
    ref = rat_attention_reference(q, k, v, g, chunk)
    torch.testing.assert_close(ref[0, 0, t], expected)
    torch.testing.assert_close(ref[0, 0, 0], xs[0])  # the first chunk sees only its own state


@pytest.mark.parametrize(
    ("length", "chunk", "d"), [(1, 16, 60), (63, 16, 60), (200, 16, 8), (37, 5, 6), (16, 16, 4)]
)
def test_parallel_matches_reference_forward_backward(length, chunk, d):
    q, k, v, g = make(2, 2, length, d, seed=3, grad=True)
    out = rat_attention(q, k, v, g, chunk)
    ref = rat_attention_reference(*(t.double() for t in (q, k, v, g)), chunk)
    assert out.shape == (2, 2, length, d) and out.dtype == torch.float32
    assert rel_rms(out, ref) < 1e-5
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    # inside the first chunk the output is the own state whatever q is: q's gradient is zero there
    fast = torch.autograd.grad(out, (q, k, v, g), do, materialize_grads=True)
    slow = torch.autograd.grad(ref, (q, k, v, g), do.double(), materialize_grads=True)
    for a, b in zip(fast, slow):
        assert torch.isfinite(a).all()
        assert rel_rms(a, b) < 1e-4 or (b.abs().max() == 0 and a.abs().max() == 0)


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_blockwise_inter_chunk_attention(monkeypatch, backend):
    """Query blocks (bounded memory on long sequences) give the same result as one block."""
    import interplay.core.attention.recurrent as rat

    q, k, v, g = make(1, 2, 150, 8, seed=5)
    with torch.no_grad():
        whole = rat_attention(q, k, v, g, 8, backend=backend)
        monkeypatch.setattr(rat, "QUERY_BLOCK_ROWS", 20)
        torch.testing.assert_close(rat_attention(q, k, v, g, 8, backend=backend), whole)


@pytest.mark.parametrize(("length", "chunk", "d"), [(1, 16, 60), (63, 16, 60), (200, 16, 8), (16, 16, 4)])
def test_fused_cpu_inference_matches_reference(length, chunk, d):
    """auto on CPU without gradients = torch's fused flash kernel with LSE; with gradients = math."""
    q, k, v, g = make(2, 2, length, d, seed=9)
    ref = rat_attention_reference(*(t.double() for t in (q, k, v, g)), chunk)
    with torch.no_grad():
        assert rel_rms(rat_attention(q, k, v, g, chunk), ref) < 1e-5
        assert rel_rms(rat_attention(q, k, v, g, chunk, backend="flash"), ref) < 1e-5
    with pytest.raises(AttentionBackendError, match="without gradients"):
        rat_attention(q.requires_grad_(), k, v, g, chunk, backend="flash")


def test_flex_path_matches_math_on_cpu():
    """Eager FlexAttention on CPU (no grad): the block-causal mask spec and its LSE, incl. empty rows."""
    q, k, v, g = make(1, 2, 70, 8, seed=6)
    with torch.no_grad(), flex_compile(False):
        flex = rat_attention(q, k, v, g, 8, backend="flex")
    assert rel_rms(flex, rat_attention(q, k, v, g, 8, backend="math")) < 1e-5
    dense = earlier_chunks(4).dense(1, 1, 10, 3)[0, 0]
    assert torch.equal(dense, torch.tensor([[j < t // 4 for j in range(3)] for t in range(10)]))


def test_decoding_step_by_step_equals_parallel():
    length, chunk = 45, 8
    q, k, v, g = make(2, 3, length, 6, seed=7)
    parallel = rat_attention(q, k, v, g, chunk)
    state, outs, sizes = None, [], set()
    for t in range(length):
        sl = slice(t, t + 1)
        o, state = rat_attention_step(q[:, :, sl], k[:, :, sl], v[:, :, sl], g[:, :, sl], state, chunk)
        outs.append(o)
        sizes.add((state.h_x.shape, state.h_k.shape))
        assert state.keys.shape[2] == (t + 1) // chunk  # one cached key per finished chunk
    assert len(sizes) == 1  # the recurrent state has constant size
    assert rel_rms(torch.cat(outs, dim=2), parallel) < 1e-5
    # a parallel prefill hands over the same state
    for prompt in (16, 21):
        _, st = rat_attention(*(t[:, :, :prompt] for t in (q, k, v, g)), chunk, return_state=True)
        rest = []
        for t in range(prompt, length):
            sl = slice(t, t + 1)
            o, st = rat_attention_step(q[:, :, sl], k[:, :, sl], v[:, :, sl], g[:, :, sl], st, chunk)
            rest.append(o)
        assert rel_rms(torch.cat(rest, dim=2), parallel[:, :, prompt:]) < 1e-5


def test_block_forward_and_decoding():
    torch.manual_seed(0)
    block = RATBlock(48, 4, 8, qk_groups=2)
    x = torch.randn(2, 50, 48)
    y = block(x)
    assert y.shape == x.shape
    state = block.init_state(2)
    steps = []
    with torch.no_grad():
        for t in range(50):
            out, state = block.step(x[:, t : t + 1], state)
            steps.append(out)
        assert rel_rms(torch.cat(steps, dim=1), y) < 1e-5
        y_pre, st = block.prefill(x[:, :19])
        torch.testing.assert_close(y_pre, y[:, :19])
        tail = []
        for t in range(19, 50):
            out, st = block.step(x[:, t : t + 1], st)
            tail.append(out)
        assert rel_rms(torch.cat(tail, dim=1), y[:, 19:]) < 1e-5
    # gates start inside [1/2, 1 - 1/C] (b = log U(1, C - 1))
    gates = torch.sigmoid(block.gate_bias)
    assert gates.min() >= 0.5 and gates.max() <= 1 - 1 / 8
    # heads share the 2 query/key groups tiled: head i uses group i % 2
    assert block.in_proj.out_features == 3 * 48 + 2 * 2 * 12
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


def test_block_matches_reference_with_its_projections():
    torch.manual_seed(1)
    block = RATBlock(24, 2, 4)
    x = torch.randn(1, 23, 24)
    z, q, k, v, g = block._mixer_inputs(x)
    o = rat_attention_reference(q, k, v, g, 4)
    expected = x + block.out_proj(z * o.transpose(1, 2).reshape(1, 23, 24))
    assert rel_rms(block(x), expected) < 1e-5


def test_errors_name_the_argument():
    q, k, v, g = make(1, 2, 5, 4)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        rat_attention(q, k, v, g, 0)
    with pytest.raises(ValueError, match=r"g must have shape \[B, H, L, D\]"):
        rat_attention(q, k, v, g[0], 2)
    with pytest.raises(ValueError, match="must share one shape"):
        rat_attention(q, k, v[..., :2], g, 2)
    with pytest.raises(ValueError, match="even head dim"):
        rat_attention(*(t[..., :3] for t in (q, k, v, g)), 2)
    with pytest.raises(ValueError, match="unknown RAT backend"):
        rat_attention(q, k, v, g, 2, backend="sdpa")
    with pytest.raises(ValueError, match="one token"):
        rat_attention_step(q, k, v, g, None, 2)
    with pytest.raises(ValueError, match="state does not match"):
        rat_attention_step(*(t[:, :, :1] for t in (q, k, v, g)), RATState.zeros(1, 3, 4), 2)
    with pytest.raises(ValueError, match="qk_groups=3 must divide heads=4"):
        RATBlock(32, 4, 8, qk_groups=3)
    with pytest.raises(ValueError, match="heads of even width"):
        RATBlock(12, 4, 8)
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, 32\]"):
        RATBlock(32, 4, 8)(torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match="step takes one token"):
        RATBlock(32, 4, 8).step(torch.randn(1, 3, 32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rat_flex_on_gpu_forward_backward(dtype):
    q, k, v, g = (t.cuda().to(dtype).detach().requires_grad_() for t in make(1, 4, 1000, 64, seed=8))
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v, g)]
    ref = rat_attention(*ref_in, 16, backend="math")
    out = rat_attention(q, k, v, g, 16)  # auto = flex on CUDA, LSE through the BlockMask
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert rel_rms(out, ref) < tol
    do = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out.float(), (q, k, v, g), do), torch.autograd.grad(ref, ref_in, do)):
        assert rel_rms(a, b) < 5 * tol
