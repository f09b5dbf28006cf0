"""Linear attention (PyTorch paths): feature maps, non-causal, causal chunked, decoding, L2ViT, NaLaFormer.

Every fast path is checked against the quadratic references of interplay.core.attention.linear, and
the references themselves against loops written straight from the papers' equations (float64).
Bound: rms(ref - fast) / rms(ref), as flash-linear-attention tests its kernels.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from interplay.core.attention.api import AttentionBackendError
from interplay.core.attention.linear import (
    L2ViTLinearAttention,
    LinearAttentionState,
    causal_linear_attention,
    causal_linear_attention_reference,
    chunk_linear_attention,
    chunk_linear_attention_reference,
    elu_feature_map,
    l2vit_linear_attention,
    linear_attention,
    linear_attention_reference,
    linear_attention_step,
    nala_feature_map,
    nala_linear_attention,
    relu_feature_map,
)

D = 60  # non-power-of-two head dim, as the attention contract asks


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_grads_close(fast, ref, bound=1e-4):
    """Gradients against float64 reference gradients: relative RMS, with a floor of 1e-6 of the largest
    gradient for one that cancels to ~0 (a single key: the normalised output is v for any q, k)."""
    rms = [b.double().pow(2).mean().sqrt().item() for b in ref]
    for a, b, size in zip(fast, ref, rms):
        assert torch.isfinite(a).all()
        err = (a.double() - b.double()).pow(2).mean().sqrt().item()
        assert err <= bound * size + 1e-6 * max(rms), (err, size)


def make(b, h, lq, d, dv=None, lk=None, dtype=torch.float32, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    lk = lq if lk is None else lk
    dv = d if dv is None else dv
    shapes = ((b, h, lq, d), (b, h, lk, d), (b, h, lk, dv))
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_(requires_grad) for s in shapes]


def grads(out, inputs, seed=1):
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(out.shape, generator=gen).to(out.dtype)  # same values for fp32 and fp64 outputs
    return torch.autograd.grad(out, inputs, do)


def loop_linear_attention(q, k, v, phi_q, phi_k, *, causal, normalize, scale, eps=1e-6, clamp=None):
    """Eq. (1) one query at a time, float64: o_i = scale * sum_j (phi_q_i . phi_k_j) v_j / den_i."""
    b, h, lq, _ = q.shape
    out = torch.zeros(b, h, lq, v.shape[-1], dtype=torch.float64)
    fq, fk, v = phi_q(q.double()), phi_k(k.double()), v.double()
    for bi in range(b):
        for hi in range(h):
            for i in range(lq):
                last = i + 1 if causal else k.shape[2]
                weights = fk[bi, hi, :last] @ fq[bi, hi, i]  # [last]
                num = weights @ v[bi, hi, :last]
                s = scale[hi] if isinstance(scale, (list, tuple)) else scale
                if not normalize:
                    out[bi, hi, i] = s * num
                elif clamp is not None:
                    out[bi, hi, i] = s * num / max(weights.sum().item(), clamp)
                else:
                    out[bi, hi, i] = s * num / (weights.sum() + eps)
    return out


# -- feature maps -----------------------------------------------------------------------------------


def test_elementwise_feature_maps():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    torch.testing.assert_close(elu_feature_map(x), torch.where(x > 0, x + 1, torch.exp(x)))
    torch.testing.assert_close(relu_feature_map(x), x.clamp_min(0))
    assert bool((elu_feature_map(x) > 0).all())


def released_nala(q, k):
    """NaLaFormer's released NormAwareLinearAttn feature code, transcribed (float64)."""
    k = k**3
    q1, k1, q2, k2 = torch.relu(q), torch.relu(k), torch.relu(-q), torch.relu(-k)
    q_norm = q.norm(dim=-1, p=2, keepdim=True)
    power = 3 * (0.5 + torch.tanh(q_norm))
    q1, q2 = (q1 / q_norm) ** power, (q2 / q_norm) ** power
    return torch.cat([q1, q2], dim=-1), torch.cat([k1, k2], dim=-1)


def cosine_nala(q, k, alpha=20.0):
    """The paper's cosine-based variant (cosine_inhibit), transcribed (float64)."""
    q_norm, k_norm = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
    dq = torch.tanh(q / q_norm * alpha) * math.pi / 4
    dk = torch.tanh(k / k_norm * alpha) * math.pi / 4
    kk = torch.abs(k) ** 3
    power = 3 / 2 * (0.5 + torch.tanh(q_norm))
    qt = ((q / q_norm) ** 2) ** power
    return (
        torch.cat([qt * torch.cos(dq), qt * torch.sin(dq)], dim=-1),
        torch.cat([kk * torch.cos(dk), kk * torch.sin(dk)], dim=-1),
    )


@pytest.mark.parametrize(("mode", "truth"), [("split", released_nala), ("cosine", cosine_nala)])
def test_nala_feature_map_matches_released_code(mode, truth):
    q, k, _ = make(2, 3, 17, 8, dtype=torch.float64, seed=3)
    q = q * torch.linspace(0.05, 3.0, 17, dtype=torch.float64)[:, None]  # a spread of query norms
    phi_q, phi_k = nala_feature_map(q, k, mode=mode)
    want_q, want_k = truth(q, k)
    assert phi_q.shape == (2, 3, 17, 16) and phi_k.shape == (2, 3, 17, 16)
    torch.testing.assert_close(phi_q, want_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(phi_k, want_k, rtol=1e-12, atol=1e-12)
    # non-negative kernel for every (query, key) pair, signed inputs included
    assert bool(((phi_q @ phi_k.transpose(-2, -1)) >= -1e-12).all())


def test_nala_power_grows_with_query_norm():
    """Larger ||q|| -> larger p -> a spikier (lower-entropy) attention row over the same keys."""
    gen = torch.Generator().manual_seed(0)
    direction = F.normalize(torch.randn(1, 1, 1, 16, generator=gen, dtype=torch.float64), dim=-1)
    k = torch.randn(1, 1, 64, 16, generator=gen, dtype=torch.float64)

    def entropy(norm):
        phi_q, phi_k = nala_feature_map(direction * norm, k)
        p = (phi_q @ phi_k.transpose(-2, -1)).squeeze()
        p = p / p.sum()
        return -(p * p.clamp_min(1e-300).log()).sum().item()

    entropies = [entropy(n) for n in (0.1, 0.5, 1.0, 3.0)]
    assert entropies == sorted(entropies, reverse=True) and entropies[0] - entropies[-1] > 0.05


def test_nala_zero_query_is_finite():
    q = torch.zeros(1, 1, 3, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 3, 8, dtype=torch.float64, requires_grad=True)
    for mode in ("split", "cosine"):
        phi_q, phi_k = nala_feature_map(q, k, mode=mode)
        (gq, gk) = torch.autograd.grad((phi_q.sum() + phi_k.sum()), (q, k))
        assert torch.isfinite(phi_q).all() and torch.isfinite(gq).all() and torch.isfinite(gk).all()


# -- non-causal -------------------------------------------------------------------------------------

MAPS = {
    "elu": elu_feature_map,
    "relu": relu_feature_map,
    "identity": lambda x: x,
}


# (feature map, normalize); identity features have no positive normaliser
MAP_CASES = [("elu", True), ("elu", False), ("relu", True), ("relu", False), ("identity", False)]


@pytest.mark.parametrize(("feature_map", "normalize"), MAP_CASES)
def test_references_match_equation_loops(feature_map, normalize):
    q, k, v = make(1, 2, 9, 5, dv=3, lk=7, dtype=torch.float64, seed=7)
    phi = MAPS[feature_map]
    want = loop_linear_attention(q, k, v, phi, phi, causal=False, normalize=normalize, scale=0.7)
    got = linear_attention_reference(q, k, v, feature_map=feature_map, normalize=normalize, scale=0.7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    qc, kc, vc = make(1, 2, 9, 5, dv=3, dtype=torch.float64, seed=8)
    want = loop_linear_attention(qc, kc, vc, phi, phi, causal=True, normalize=normalize, scale=0.7)
    got = causal_linear_attention_reference(
        qc, kc, vc, feature_map=feature_map, normalize=normalize, scale=0.7
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("feature_map", ["elu", "relu", "nala"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("lq", "lk"), [(1, 1), (63, 63), (200, 200), (37, 113)])
def test_linear_attention_matches_reference(feature_map, normalize, lq, lk):
    q, k, v = make(2, 2, lq, D, dv=24, lk=lk, seed=lq + lk, requires_grad=True)
    kw = dict(feature_map=feature_map, normalize=normalize)
    ref = linear_attention_reference(*(t.double() for t in (q, k, v)), **kw)
    out = linear_attention(q, k, v, **kw)
    assert out.shape == (2, 2, lq, 24) and out.dtype == torch.float32
    assert rel_rms(out, ref) < 1e-5
    assert_grads_close(grads(out, (q, k, v)), grads(ref, (q, k, v)))


def test_key_padding_mask_and_lengths_drop_padded_keys():
    q, k, v = make(3, 2, 11, D, lk=20, dtype=torch.float64, seed=4)
    lengths = [20, 7, 1]
    mask = torch.arange(20)[None, :] < torch.tensor(lengths)[:, None]
    for fn in (linear_attention, linear_attention_reference):
        by_len = fn(q, k, v, key_padding=lengths)
        by_mask = fn(q, k, v, key_padding=mask)
        torch.testing.assert_close(by_len, by_mask)
        for b, n in enumerate(lengths):  # same as attending the real keys only
            alone = fn(q[b : b + 1], k[b : b + 1, :, :n], v[b : b + 1, :, :n])
            torch.testing.assert_close(by_len[b : b + 1], alone, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", ["linear", "l2vit", "nala"])
def test_fully_padded_rows_give_zeros_and_finite_gradients(fn):
    q, k, v = make(2, 2, 5, 8, lk=6, seed=5, requires_grad=True)
    lengths = torch.tensor([0, 4])
    if fn == "linear":
        out = linear_attention(q, k, v, key_padding=lengths)
    elif fn == "l2vit":
        out = l2vit_linear_attention(q, k, v, torch.ones(2), key_padding=lengths)
    else:
        out = nala_linear_attention(q, k, v, key_padding=lengths)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert out[1].abs().sum() > 0
    for g in grads(out, (q, k, v)):
        assert torch.isfinite(g).all()


def test_half_precision_computes_in_float32():
    q, k, v = make(1, 2, 40, D, seed=6)
    for fn in (linear_attention, causal_linear_attention):
        want = fn(q, k, v)
        got = fn(q.bfloat16(), k.bfloat16(), v.bfloat16())
        assert got.dtype == torch.bfloat16
        assert rel_rms(got, want) < 2e-2


# -- causal chunked ---------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 63, 200])
@pytest.mark.parametrize("chunk_size", [1, 16, 64, 256])
def test_chunk_linear_attention_matches_reference(t, chunk_size):
    q, k, v = make(2, 2, t, D, dv=33, seed=t, requires_grad=True)
    out = chunk_linear_attention(q, k, v, scale=0.3, chunk_size=chunk_size)
    ref = chunk_linear_attention_reference(*(x.double() for x in (q, k, v)), scale=0.3)
    assert rel_rms(out, ref) < 1e-5
    assert_grads_close(grads(out, (q, k, v)), grads(ref, (q, k, v)))


def test_chunk_linear_attention_gradcheck():
    q, k, v = make(1, 1, 7, 3, dv=2, dtype=torch.float64, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: chunk_linear_attention(a, b, c, chunk_size=4), (q, k, v))


@pytest.mark.parametrize(("feature_map", "normalize"), [*MAP_CASES, ("nala", True), ("nala", False)])
@pytest.mark.parametrize("t", [1, 63, 200])
def test_causal_linear_attention_matches_reference(feature_map, normalize, t):
    q, k, v = make(2, 2, t, D, seed=t + 1, requires_grad=True)
    kw = dict(feature_map=feature_map, normalize=normalize)
    out = causal_linear_attention(q, k, v, backend="torch", chunk_size=16, **kw)
    ref = causal_linear_attention_reference(*(x.double() for x in (q, k, v)), **kw)
    assert rel_rms(out, ref) < 1e-5
    assert_grads_close(grads(out, (q, k, v)), grads(ref, (q, k, v)))


def test_causal_rows_ignore_the_future():
    q, k, v = make(1, 2, 30, 8, dtype=torch.float64, seed=9)
    out = causal_linear_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 20:] += 5.0
    v2[:, :, 20:] -= 3.0
    out2 = causal_linear_attention(q, k2, v2)
    torch.testing.assert_close(out[:, :, :20], out2[:, :, :20])
    assert not torch.allclose(out[:, :, 20:], out2[:, :, 20:])


def test_auto_backend_on_cpu_is_torch(monkeypatch):
    import interplay.core.attention.linear as linear

    monkeypatch.setattr(linear, "_triton_available", lambda: pytest.fail("auto must not try Triton on CPU"))
    q, k, v = make(1, 2, 10, 8, seed=0)
    torch.testing.assert_close(
        causal_linear_attention(q, k, v, backend="auto"), causal_linear_attention(q, k, v, backend="torch")
    )


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = make(1, 1, 4, 16, seed=0)
    with pytest.raises(AttentionBackendError, match="TRITON_INTERPRET"):
        causal_linear_attention(q, k, v, backend="triton")


# -- decoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_map", ["elu", "nala"])
@pytest.mark.parametrize("normalize", [True, False])
def test_token_by_token_decoding_equals_causal_form(feature_map, normalize):
    q, k, v = make(2, 3, 41, 12, dv=10, dtype=torch.float64, seed=11)
    kw = dict(feature_map=feature_map, normalize=normalize)
    full = causal_linear_attention(q, k, v, **kw)
    prompt, state = linear_attention_step(q[:, :, :17], k[:, :, :17], v[:, :, :17], **kw)
    outs, sizes = [prompt], set()
    for t in range(17, 41):
        o, state = linear_attention_step(
            q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state, **kw
        )
        outs.append(o)
        sizes.add((tuple(state.S.shape), tuple(state.z.shape)))
    torch.testing.assert_close(torch.cat(outs, dim=2), full, rtol=1e-10, atol=1e-12)
    feature_dim = 24 if feature_map == "nala" else 12
    assert sizes == {((2, 3, feature_dim, 10), (2, 3, feature_dim))}  # constant-size state
    assert state.length == 41


def test_decoding_from_scratch_in_float32_keeps_fp32_state():
    q, k, v = make(1, 2, 6, 8, seed=12)
    state = None
    outs = []
    for t in range(6):
        o, state = linear_attention_step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(o)
    assert state.S.dtype == torch.float32 and isinstance(state, LinearAttentionState)
    assert rel_rms(torch.cat(outs, 2), causal_linear_attention_reference(q, k, v)) < 1e-6


def test_step_rejects_a_state_of_another_shape():
    q, k, v = make(1, 2, 1, 8, seed=0)
    _, state = linear_attention_step(q, k, v)
    with pytest.raises(ValueError, match="state"):
        linear_attention_step(q, k, v[..., :4], state)


# -- L2ViT -------------------------------------------------------------------------------------------


def test_l2vit_matches_equation_with_clamp_active():
    q, k, v = make(2, 3, 50, 16, dtype=torch.float64, seed=13)
    q = q * torch.linspace(0.01, 1.5, 50, dtype=torch.float64)[:, None]  # denominators below and above 100
    tau = torch.tensor([0.25, 0.5, 2.0], dtype=torch.float64)
    want = loop_linear_attention(
        q, k, v, F.relu, F.relu, causal=False, normalize=True, scale=tau.tolist(), clamp=100.0
    )
    den = F.relu(q) @ F.relu(k).sum(-2).unsqueeze(-1)
    assert bool((den < 100).any()) and bool((den > 100).any())
    torch.testing.assert_close(l2vit_linear_attention(q, k, v, tau), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        l2vit_linear_attention(q, k, v, tau.view(3, 1, 1)), want, rtol=1e-12, atol=1e-12
    )


def test_l2vit_module_holds_tau_per_head():
    module = L2ViTLinearAttention(heads=4, head_dim=D)
    assert module.tau.shape == (4,)
    torch.testing.assert_close(module.tau.detach(), torch.full((4,), D**-0.5))
    q, k, v = make(2, 4, 63, D, seed=14)
    out = module(q, k, v)
    torch.testing.assert_close(out, l2vit_linear_attention(q, k, v, module.tau.detach()))
    out.square().sum().backward()
    assert module.tau.grad is not None and bool((module.tau.grad != 0).all())
    with pytest.raises(ValueError, match="heads=4"):
        module(*make(1, 3, 5, D))


# -- NaLaFormer --------------------------------------------------------------------------------------


def released_nala_attention(q, k, v, rotate=None):
    """The released forward after the features (z, kv with N^-1/2 twice), transcribed."""
    phi_q, phi_k = released_nala(q, k)
    n = q.shape[2]
    num_q, num_k = (rotate(phi_q), rotate(phi_k)) if rotate is not None else (phi_q, phi_k)
    z = 1 / (phi_q @ phi_k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (num_k.transpose(-2, -1) * (n**-0.5)) @ (v * (n**-0.5))
    return num_q @ kv * z


def test_nala_attention_matches_released_forward():
    q, k, v = make(2, 3, 49, 16, dtype=torch.float64, seed=15)
    torch.testing.assert_close(nala_linear_attention(q, k, v), released_nala_attention(q, k, v))
    # a rotation on the numerator features only (the vision model's 2-D RoPE)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))

    def rotate(x):
        return x[..., perm] * 0.5

    torch.testing.assert_close(
        nala_linear_attention(q, k, v, rotary=rotate), released_nala_attention(q, k, v, rotate)
    )
    # without rotary it is normalised linear attention with the NaLa map (eps on the mean)
    ref = linear_attention_reference(q, k, v, feature_map="nala", eps=1e-6 * 49)
    torch.testing.assert_close(nala_linear_attention(q, k, v), ref)


def test_nala_attention_gradients_float32():
    q, k, v = make(1, 2, 63, D, seed=16, requires_grad=True)
    out = nala_linear_attention(q, k, v)
    ref = released_nala_attention(*(x.double() for x in (q, k, v)))
    assert rel_rms(out, ref) < 1e-5
    assert_grads_close(grads(out, (q, k, v)), grads(ref, (q, k, v)))


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda q, k, v: linear_attention(q[0], k, v), "q must have shape"),
        (lambda q, k, v: linear_attention(q, k, v[:, :, :3]), "k and v must share the length"),
        (lambda q, k, v: linear_attention(q, k[..., :4], v), "q and k must share the head dim"),
        (lambda q, k, v: linear_attention(q, k[:, :1], v[:, :1]), "share \\[B, H\\]"),
        (lambda q, k, v: linear_attention(q, k.double(), v), "dtype"),
        (lambda q, k, v: linear_attention(q, k, v, feature_map="softmax"), "feature_map"),
        (
            lambda q, k, v: linear_attention(q, k, v, key_padding=torch.ones(2, 3, dtype=torch.bool)),
            "key_padding",
        ),
        (lambda q, k, v: linear_attention(q, k, v, key_padding=[9, 1]), "key_padding"),
        (lambda q, k, v: linear_attention(q, k, v, scale=torch.ones(5)), "scale"),
        (lambda q, k, v: linear_attention(q, k, v, denominator_min=0.0), "denominator_min"),
        (lambda q, k, v: causal_linear_attention(q, k[:, :, :5], v[:, :, :5]), "one length"),
        (lambda q, k, v: causal_linear_attention(q, k, v, backend="cuda"), "backend"),
        (lambda q, k, v: causal_linear_attention(q, k, v, chunk_size=0), "chunk_size"),
        (lambda q, k, v: l2vit_linear_attention(q, k, v, torch.ones(3)), "tau"),
        (lambda q, k, v: nala_linear_attention(q, k, v, mode="relu"), "mode"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    q, k, v = make(2, 2, 8, 8, seed=0)
    with pytest.raises(ValueError, match=match):
        call(q, k, v)


def test_l2vit_module_rejects_bad_sizes():
    with pytest.raises(ValueError, match="heads"):
        L2ViTLinearAttention(heads=0, head_dim=8)
