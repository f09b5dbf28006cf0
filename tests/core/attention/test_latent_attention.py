"""MLA (DeepSeek-V2): module vs per-head reference, absorbed decode vs expanded, cache arithmetic."""

from __future__ import annotations

import pytest
import torch

from interplay.core.attention.latent import (
    MLACache,
    MultiHeadLatentAttention,
    kv_cache_bytes_per_token,
    latent_attention_reference,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    """rms(fast - ref) / rms(ref); a reference that vanishes analytically (the query / key gradients
    when each query sees a single key) is compared against an RMS of 0.01 instead, since float32
    kernels leave ~1e-8 of rounding there."""
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-2)).item()


def module(seed=0, d_cq=24, d_v=None, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    m = MultiHeadLatentAttention(48, 4, 20, d_cq, 60, 8, d_v=d_v, **kw).to(dtype)
    with torch.no_grad():  # non-trivial norm weights, so the test sees them
        m.kv_norm.weight.uniform_(0.5, 1.5)
        if m.q_norm is not None:
            m.q_norm.weight.uniform_(0.5, 1.5)
    return m


def inputs(b, length, seed=1, dtype=torch.float32):
    return torch.randn(b, length, 48, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("length", [1, 63, 200])
@pytest.mark.parametrize("d_cq", [24, None])
def test_forward_and_backward_match_reference(length, d_cq):
    m = module(d_cq=d_cq, d_v=12)
    x = inputs(2, length).requires_grad_()
    out = m(x)
    ref = latent_attention_reference(m, x)
    assert out.shape == (2, length, 48)
    assert rel_rms(out, ref) < 1e-5
    g = torch.randn_like(out)
    params = [p for p in m.parameters()]
    fast = torch.autograd.grad(out, [x, *params], g)
    slow = torch.autograd.grad(ref, [x, *params], g)
    for a, b in zip(fast, slow):
        assert rel_rms(a, b) < 1e-5


def test_non_causal_matches_reference():
    m = module()
    x = inputs(1, 30)
    assert rel_rms(m(x, is_causal=False), latent_attention_reference(m, x, is_causal=False)) < 1e-5


def test_absorbed_equals_expanded_full_sequence_and_decode():
    m = module(d_v=16)
    x = inputs(2, 41)
    with torch.no_grad():
        expanded = m(x, absorb=False)
        absorbed = m(x, absorb=True)
        torch.testing.assert_close(absorbed, expanded, atol=1e-5, rtol=1e-5)
        # decode token by token: absorbed (default with a cache) vs expanded, both vs the full pass
        cache_a, cache_e = MLACache(), MLACache()
        steps_a, steps_e = [], []
        prompt = 9
        steps_a.append(m(x[:, :prompt], cache=cache_a))
        steps_e.append(m(x[:, :prompt], cache=cache_e, absorb=False))
        for t in range(prompt, 41):
            steps_a.append(m(x[:, t : t + 1], cache=cache_a))
            steps_e.append(m(x[:, t : t + 1], cache=cache_e, absorb=False))
        dec_a, dec_e = torch.cat(steps_a, dim=1), torch.cat(steps_e, dim=1)
    torch.testing.assert_close(dec_a, dec_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec_a, expanded, atol=1e-5, rtol=1e-5)
    # the cache holds d_c + d_rope values per token, nothing per head
    assert cache_a.length == 41 and cache_a.values_per_token == 20 + 8
    assert cache_a.c_kv.shape == (2, 41, 20) and cache_a.k_rope.shape == (2, 41, 8)
    assert cache_a.nbytes() == 2 * 41 * 28 * 4


def test_absorbed_decode_float64_is_exact():
    m = module(dtype=torch.float64)
    x = inputs(1, 12, dtype=torch.float64)
    with torch.no_grad():
        full = m(x, absorb=False)
        cache = MLACache()
        dec = torch.cat([m(x[:, t : t + 1], cache=cache) for t in range(12)], dim=1)
    torch.testing.assert_close(dec, full, atol=1e-12, rtol=1e-10)


def test_rope_is_decoupled_and_relative():
    """Shifting every position by the same offset leaves the output unchanged (RoPE sees offsets)."""
    m = module()
    x = inputs(1, 10)
    with torch.no_grad():
        pos = torch.arange(10)
        a, b = m.project(x, pos), m.project(x, pos + 37)
        sa = a["q_rope"] @ a["k_rope"][:, None].transpose(-2, -1)
        sb = b["q_rope"] @ b["k_rope"][:, None].transpose(-2, -1)
        torch.testing.assert_close(sa, sb, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a["c_kv"], b["c_kv"])  # the latent carries no position
        assert not torch.allclose(a["k_rope"], b["k_rope"])


def test_cache_bytes_arithmetic():
    # DeepSeek-V2: 128 heads x 128, d_c 512, d_rope 64 (Table 1: MLA = 4.5 d_h values per token)
    with torch.device("meta"):
        m = MultiHeadLatentAttention(5120, 128, 512, 1536, 128, 64)
    assert m.cache_bytes_per_token() == 576 * 2 == 4.5 * 128 * 2
    assert m.cache_bytes_per_token(torch.float32) == 576 * 4
    table = m.cache_bytes_table(gqa_groups=8)
    assert table == {"MHA": 2 * 128 * 128 * 2, "GQA (8 groups)": 2 * 8 * 128 * 2, "MLA": 1152}
    assert table["MHA"] / table["MLA"] == pytest.approx(56.89, abs=0.01)
    assert kv_cache_bytes_per_token(8, 64, torch.float16) == 2048
    small = module()
    assert small.cache_bytes_per_token(torch.float32) == (20 + 8) * 4


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="d_rope must be even"):
        MultiHeadLatentAttention(16, 2, 8, 8, 8, 3)
    with pytest.raises(ValueError, match="d_c must be a positive integer"):
        MultiHeadLatentAttention(16, 2, 0, 8, 8, 4)
    with pytest.raises(ValueError, match="d_cq"):
        MultiHeadLatentAttention(16, 2, 8, -1, 8, 4)
    with pytest.raises(ValueError, match="head_dim"):
        kv_cache_bytes_per_token(2, 0)
    m = module()
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, 48\]"):
        m(torch.randn(2, 5, 47))
    with pytest.raises(ValueError, match=r"x must have shape"):
        m(torch.randn(5, 48))
    with pytest.raises(TypeError, match="cache must be an MLACache"):
        m(inputs(1, 2), cache={})
    cache = MLACache()
    m(inputs(1, 2), cache=cache)
    with pytest.raises(ValueError, match="does not match the cached latents"):
        m(inputs(2, 1), cache=cache)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mla_on_gpu(dtype):
    m = module().cuda()
    x = inputs(2, 300).cuda()
    ref = latent_attention_reference(m, x)
    m = m.to(dtype)
    out = m(x.to(dtype))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert rel_rms(out, ref) < tol
    with torch.no_grad():
        cache = MLACache()
        m(x[:, :200].to(dtype), cache=cache)
        dec = torch.cat([m(x[:, t : t + 1].to(dtype), cache=cache) for t in range(200, 300)], dim=1)
    assert rel_rms(dec, ref[:, 200:]) < tol
