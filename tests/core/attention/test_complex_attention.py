"""ComplexFormer CMHA: the real factorisation vs the direct polar formula, RoPE as a special case."""

from __future__ import annotations

import pytest
import torch

from interplay.core.attention import attend, causal, flex_compile, key_padding, sliding_window
from interplay.core.attention.complex import (
    ComplexMultiHeadAttention,
    complex_attention,
    complex_attention_reference,
    polar_features,
)
from interplay.core.attention.rope import apply_rope

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def make(b, h, lq, d, lk=None, seed=0, dtype=torch.float32, grad=False):
    gen = torch.Generator().manual_seed(seed)
    lk = lq if lk is None else lk
    q = torch.randn(b, h, lq, d, generator=gen, dtype=dtype)
    k = torch.randn(b, h, lk, d, generator=gen, dtype=dtype)
    v = torch.randn(b, h, lk, d, generator=gen, dtype=dtype)
    delta = torch.randn(h, d // 2, generator=gen, dtype=dtype) * 1.5
    offset = torch.randn(h, d // 2, generator=gen, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v, delta, offset)]


def test_reference_is_the_polar_formula():
    """One score by hand: sum_i r_q r_k cos(delta (phi_q - phi_k) + b + (m - n) g_i)."""
    q, k, v, delta, offset = make(1, 1, 3, 4, seed=1, dtype=torch.float64)
    m, n = 2, 0
    g = torch.tensor([1.0, 10000.0 ** (-2 / 4)], dtype=torch.float64)
    zq = torch.complex(q[0, 0, m, :2], q[0, 0, m, 2:])
    zk = torch.complex(k[0, 0, n, :2], k[0, 0, n, 2:])
    angle = delta[0] * (zq.angle() - zk.angle()) + offset[0] + (m - n) * g
    score = (zq.abs() * zk.abs() * torch.cos(angle)).sum() / 2.0
    scores = []
    for j in range(3):
        zj = torch.complex(k[0, 0, j, :2], k[0, 0, j, 2:])
        a = delta[0] * (zq.angle() - zj.angle()) + offset[0] + (m - j) * g
        scores.append((zq.abs() * zj.abs() * torch.cos(a)).sum() / 2.0)
    assert torch.isclose(torch.stack(scores)[n], score)
    expected = torch.softmax(torch.stack(scores), 0) @ v[0, 0]
    ref = complex_attention_reference(q, k, v, delta, offset)
    torch.testing.assert_close(ref[0, 0, m], expected)


@pytest.mark.parametrize(("lq", "lk", "d"), [(1, 1, 60), (63, 63, 60), (200, 200, 8), (5, 40, 6)])
@pytest.mark.parametrize("mask_kind", ["none", "causal"])
def test_factorised_matches_polar_reference_forward_backward(lq, lk, d, mask_kind):
    q, k, v, delta, offset = make(2, 2, lq, d, lk=lk, seed=2, grad=True)
    spec = causal() if mask_kind == "causal" else None
    out = complex_attention(q, k, v, delta, offset, mask=spec)
    dense = spec.dense(2, 2, lq, lk) if spec is not None else None
    ref = complex_attention_reference(*(t.double() for t in (q, k, v, delta, offset)), mask=dense)
    assert rel_rms(out, ref) < 1e-5
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    inputs = (q, k, v, delta, offset)
    fast = torch.autograd.grad(out, inputs, do, materialize_grads=True)
    slow = torch.autograd.grad(ref, inputs, do.double(), materialize_grads=True)
    for a, b in zip(fast, slow):
        assert torch.isfinite(a).all()
        # one key (L = 1): the output is v whatever the scores, so q/k/delta/offset get zero gradient
        assert rel_rms(a, b) < 1e-4 or b.abs().max() < 1e-12


def test_unit_delta_zero_offset_is_rope_attention():
    q, k, v, _, _ = make(2, 3, 50, 60, seed=4)
    ones, zeros = torch.ones(3, 30), torch.zeros(3, 30)
    out = complex_attention(q, k, v, ones, zeros, mask=causal())
    rope = attend(apply_rope(q), apply_rope(k), v, mask=causal())
    assert rel_rms(out, rope) < 1e-5
    # the features themselves are the RoPE-rotated vectors (up to the 1e-9 inside r)
    pos = torch.arange(50)
    torch.testing.assert_close(polar_features(q, ones, zeros, pos), apply_rope(q, pos), atol=1e-5, rtol=1e-5)
    # any other delta or offset differs
    assert rel_rms(complex_attention(q, k, v, ones * 0.5, zeros, mask=causal()), rope) > 1e-2
    assert rel_rms(complex_attention(q, k, v, ones, zeros + 0.3, mask=causal()), rope) > 1e-2


def test_scores_depend_on_relative_positions_only():
    q, k, v, delta, offset = make(1, 2, 10, 8, seed=5)
    a = complex_attention(q, k, v, delta, offset, q_positions=torch.arange(10), k_positions=torch.arange(10))
    b = complex_attention(
        q, k, v, delta, offset, q_positions=torch.arange(10) + 77, k_positions=torch.arange(10) + 77
    )
    assert rel_rms(a, b) < 1e-5


def test_masks_backends_and_fully_masked_rows():
    q, k, v, delta, offset = make(2, 2, 40, 8, seed=6)
    spec = sliding_window(5) & key_padding([0, 30])  # batch 0 has no visible key at all
    ref = complex_attention_reference(q, k, v, delta, offset, mask=spec.dense(2, 2, 40, 40))
    for backend in ("math", "sdpa"):
        out = complex_attention(q, k, v, delta, offset, mask=spec, backend=backend)
        assert rel_rms(out, ref) < 1e-5 and torch.equal(out[0], torch.zeros_like(out[0]))
    with torch.no_grad(), flex_compile(False):
        flex = complex_attention(q, k, v, delta, offset, mask=spec, backend="flex")
    assert rel_rms(flex, ref) < 1e-5
    # gradients stay finite with empty rows and with a query exactly at the origin
    q2, k2, v2, delta2, offset2 = (t.clone().requires_grad_() for t in (q, k, v, delta, offset))
    with torch.no_grad():
        q2[1, 0, 3] = 0.0
    out = complex_attention(q2, k2, v2, delta2, offset2, mask=spec)
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q2, k2, v2, delta2, offset2))


def test_decoding_positions_align_bottom_right():
    q, k, v, delta, offset = make(1, 2, 12, 8, seed=7)
    full = complex_attention(q, k, v, delta, offset, mask=causal())
    last = complex_attention(q[:, :, -3:], k, v, delta, offset, mask=causal())
    assert rel_rms(last, full[:, :, -3:]) < 1e-5


def test_module_matches_reference_and_rope_init():
    torch.manual_seed(0)
    layer = ComplexMultiHeadAttention(48, 4)
    x = torch.randn(2, 30, 48)
    out = layer(x, is_causal=True)
    with torch.no_grad():
        b, length = 2, 30

        def heads(t):
            return t.view(b, length, 4, 12).transpose(1, 2)

        q, k, v = heads(layer.w_q(x)), heads(layer.w_k(x)), heads(layer.w_v(x))
        mask = causal().dense(b, 4, length, length)
        ref = complex_attention_reference(q, k, v, layer.delta, layer.phase_bias, mask=mask)
        expected = layer.w_o(ref.transpose(1, 2).reshape(b, length, 48))
    assert rel_rms(out, expected) < 1e-5
    out.square().mean().backward()
    assert layer.delta.grad is not None and layer.phase_bias.grad.abs().sum() > 0
    # key padding + attention mask tensors, like MultiHeadAttention
    pad = torch.ones(2, 30, dtype=torch.bool)
    pad[1, 20:] = False
    masked = layer(x, is_causal=True, key_padding_mask=pad)
    assert torch.allclose(masked[0], out[0], atol=1e-6) and not torch.allclose(masked[1], out[1])
    rope_layer = ComplexMultiHeadAttention(48, 4, delta_init="rope")
    assert torch.equal(rope_layer.delta, torch.ones(4, 6)) and torch.equal(
        rope_layer.phase_bias, torch.zeros(4, 6)
    )


def test_errors_name_the_argument():
    q, k, v, delta, offset = make(1, 2, 5, 8)
    with pytest.raises(ValueError, match=r"delta must have shape \[H, D/2\] = \[2, 4\]"):
        complex_attention(q, k, v, delta[:1], offset)
    with pytest.raises(ValueError, match="offset must have shape"):
        complex_attention(q, k, v, delta, offset[:, :3])
    with pytest.raises(ValueError, match=r"k must have shape \[B, H, L, D\]"):
        complex_attention(q, k[0], v, delta, offset)
    with pytest.raises(ValueError, match="no grouped heads"):
        complex_attention(q, k[:, :1], v[:, :1], delta, offset)
    with pytest.raises(ValueError, match="even head dim"):
        complex_attention(q[..., :7], k[..., :7], v, delta, offset)
    with pytest.raises(ValueError, match=r"q_positions must have shape \[5\]"):
        complex_attention(q, k, v, delta, offset, q_positions=torch.arange(4))
    with pytest.raises(ValueError, match="heads of even width"):
        ComplexMultiHeadAttention(12, 4)
    with pytest.raises(ValueError, match="delta_init"):
        ComplexMultiHeadAttention(16, 2, delta_init="zero")
    layer = ComplexMultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, 16\]"):
        layer(torch.randn(2, 3, 15))
    with pytest.raises(ValueError, match="key_padding_mask"):
        layer(torch.randn(2, 3, 16), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cmha_flex_on_gpu(dtype):
    q, k, v, delta, offset = (t.cuda() for t in make(1, 4, 1000, 64, seed=8))
    spec = sliding_window(128)
    ref = complex_attention(q, k, v, delta, offset, mask=spec, backend="math")
    args = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out = complex_attention(*args, delta, offset, mask=spec)  # auto = flex on CUDA
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert rel_rms(out, ref) < tol
    out.float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in args)
