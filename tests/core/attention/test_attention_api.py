"""attend() and the mask library: every mask against a loop definition, every backend against math."""

from __future__ import annotations

import pytest
import torch

from interplay.core.attention import (
    AttentionBackendError,
    attend,
    block_sparse,
    causal,
    choose_backend,
    chunk_local,
    concentric_causal,
    concentric_position_ids,
    dilated_2d,
    flex_compile,
    halo,
    key_padding,
    masks,
    sinks,
    sliding_window,
    window_2d,
)

torch.manual_seed(0)


# -- loop definitions of every pattern (independent of the library's vectorised predicates) ----------
def loop_mask(rule, lq, lk):
    off = lk - lq
    return torch.tensor([[bool(rule(i + off, j)) for j in range(lk)] for i in range(lq)])


def grid_mask(rule, h, w):
    n = h * w
    return torch.tensor([[bool(rule(i // w, i % w, j // w, j % w)) for j in range(n)] for i in range(n)])


ONE_D = {
    "causal": (causal(), lambda i, j: j <= i),
    "sliding_window": (sliding_window(4), lambda i, j: 0 <= i - j < 4),
    "sliding_window_bidir": (sliding_window(2, causal=False), lambda i, j: abs(i - j) <= 2),
    "sinks": (sinks(2, 3), lambda i, j: j <= i and (j < 2 or i - j < 3)),
    "chunk_local": (chunk_local(4), lambda i, j: j <= i and i // 4 == j // 4),
}


@pytest.mark.parametrize("name", list(ONE_D))
@pytest.mark.parametrize(("lq", "lk"), [(11, 11), (1, 9), (5, 12)])
def test_1d_masks_match_loop_definition(name, lq, lk):
    spec, rule = ONE_D[name]
    assert torch.equal(spec.dense(1, 1, lq, lk)[0, 0], loop_mask(rule, lq, lk))


def test_key_padding_and_combinations():
    spec = key_padding([3, 0, 5])
    dense = spec.dense(3, 2, 4, 5)
    assert dense.shape == (3, 1, 4, 5)
    for b, n in enumerate([3, 0, 5]):
        assert torch.equal(dense[b, 0], torch.arange(5).expand(4, 5) < n)
    both = (causal() & key_padding([2, 5, 5])).dense(3, 1, 5, 5)
    assert torch.equal(both[0, 0], loop_mask(lambda i, j: j <= i and j < 2, 5, 5))
    either = (sliding_window(1) | sinks(1, 1)).dense(1, 1, 6, 6)[0, 0]
    assert torch.equal(either, loop_mask(lambda i, j: j == i or (j == 0), 6, 6))
    assert (causal() & sliding_window(3)) == (causal() & sliding_window(3))
    assert hash(causal() & sliding_window(3)) == hash(causal() & sliding_window(3))
    with pytest.raises(ValueError, match="2 lengths for a batch of 3"):
        key_padding([1, 2]).dense(3, 1, 4, 4)
    with pytest.raises(ValueError, match="exceeds the key length"):
        key_padding([9]).dense(1, 1, 4, 4)


def test_block_sparse_pattern():
    n = 12
    dense = block_sparse(n_global=2, window=1, n_random=2, seed=5).dense(1, 1, n, n)[0, 0]
    band = loop_mask(lambda i, j: abs(i - j) <= 1 or i < 2 or j < 2, n, n)
    assert (dense | ~band).all() and (dense & band).eq(band).all()  # the band and globals are all there
    extra = dense & ~band
    assert extra[:2].sum() == 0 and (extra.sum(dim=1)[2:] <= 2).all() and extra.sum() > 0
    again = block_sparse(2, 1, 2, seed=5).dense(1, 1, n, n)[0, 0]
    other = block_sparse(2, 1, 2, seed=6).dense(1, 1, n, n)[0, 0]
    assert torch.equal(dense, again) and not torch.equal(dense, other)


GRID = {
    "window_2d": (window_2d((4, 6), 2), lambda r, c, r2, c2: r // 2 == r2 // 2 and c // 2 == c2 // 2),
    "window_2d_shift": (
        window_2d((4, 6), 2, shift=1),
        lambda r, c, r2, c2: (r + 1) // 2 == (r2 + 1) // 2 and (c + 1) // 2 == (c2 + 1) // 2,
    ),
    "dilated_2d": (dilated_2d((4, 6), interval=2), lambda r, c, r2, c2: r % 2 == r2 % 2 and c % 2 == c2 % 2),
    "halo": (
        halo((4, 6), block=2, halo=1),
        lambda r, c, r2, c2: (
            (r // 2 * 2 - 1 <= r2 < r // 2 * 2 + 3) and (c // 2 * 2 - 1 <= c2 < c // 2 * 2 + 3)
        ),
    ),
}


@pytest.mark.parametrize("name", list(GRID))
def test_2d_masks_match_loop_definition(name):
    spec, rule = GRID[name]
    assert torch.equal(spec.dense(1, 1, 24, 24)[0, 0], grid_mask(rule, 4, 6))
    with pytest.raises(ValueError, match="grid needs Lq = Lk = 24"):
        spec.dense(1, 1, 23, 23)


def test_halo_keys_at_the_border_are_masked_not_padded():
    dense = halo(6, block=2, halo=1).dense(1, 1, 36, 36)[0, 0]
    # the top-left block sees a 3 x 3 neighbourhood (9 keys), an inner block the full 4 x 4 (16 keys)
    assert dense[0].sum() == 9 and dense[2 * 6 + 2].sum() == 16


def test_dilated_2d_group_argument():
    assert dilated_2d(8, group=4) == dilated_2d(8, interval=2)


def test_concentric_causal():
    g, n_before = 4, 2
    spec = concentric_causal(g, n_before)
    lk = n_before + g * g + 2
    dense = spec.dense(1, 1, lk, lk)[0, 0]
    ring = [min(r, c, g - 1 - r, g - 1 - c) for r in range(g) for c in range(g)]

    def rule(i, j):
        img_i, img_j = n_before <= i < n_before + g * g, n_before <= j < n_before + g * g
        if img_i and img_j:
            return ring[j - n_before] <= ring[i - n_before]
        return j <= i

    assert torch.equal(dense, loop_mask(rule, lk, lk))
    ids = concentric_position_ids(24, 3, 2)
    assert ids[:3].tolist() == [0, 1, 2] and ids[3:-2].min() == 3 and ids[3:-2].max() == 3 + 11
    assert ids[-2:].tolist() == [15, 16]  # the image uses 12 positions, text continues after them


# -- backends -------------------------------------------------------------------------------------------
CASES = {
    "none": None,
    "causal": causal(),
    "sliding_window": sliding_window(16),
    "sinks": sinks(4, 16),
    "chunk_local": chunk_local(16),
    "block_sparse": block_sparse(4, 8, 3, 0),
    "padding": key_padding([0, 40]),
    "causal_padding": causal() & key_padding([10, 63]),
}


def qkv(b=2, h=4, hkv=2, lq=63, lk=63, d=60, dtype=torch.float32, grad=False):
    q = torch.randn(b, h, lq, d, dtype=dtype, requires_grad=grad)
    k = torch.randn(b, hkv, lk, d, dtype=dtype, requires_grad=grad)
    v = torch.randn(b, hkv, lk, d, dtype=dtype, requires_grad=grad)
    return q, k, v


@pytest.mark.parametrize("name", list(CASES))
def test_sdpa_and_flex_match_math_forward(name):
    spec = CASES[name]
    q, k, v = qkv()
    ref = attend(q, k, v, mask=spec, backend="math")
    torch.testing.assert_close(attend(q, k, v, mask=spec, backend="sdpa"), ref, atol=2e-6, rtol=1e-5)
    with flex_compile(False):
        torch.testing.assert_close(attend(q, k, v, mask=spec, backend="flex"), ref, atol=2e-6, rtol=1e-5)
    assert not ref.isnan().any()


@pytest.mark.parametrize("name", ["causal", "sliding_window", "padding", "causal_padding", "block_sparse"])
def test_sdpa_matches_math_backward(name):
    spec = CASES[name]
    q, k, v = qkv(grad=True)
    grads = []
    for backend in ("math", "sdpa"):
        out = attend(q, k, v, mask=spec, backend=backend)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1])).sum(), (q, k, v)))
    for g_math, g_sdpa in zip(*grads):
        assert torch.isfinite(g_math).all()
        torch.testing.assert_close(g_sdpa, g_math, atol=1e-5, rtol=1e-4)


def test_math_reference_gradcheck_with_fully_masked_row():
    q, k, v = (t.double().detach().requires_grad_() for t in qkv(b=1, h=2, hkv=1, lq=3, lk=4, d=5))
    mask = key_padding([0]) | causal()  # row 0 sees key 0 only through causal; make one row empty:
    dense = mask.dense(1, 2, 3, 4).clone()
    dense[..., 1, :] = False
    assert torch.autograd.gradcheck(lambda a, b, c: attend(a, b, c, mask=dense, backend="math"), (q, k, v))


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_fully_masked_rows_are_zero_without_nan(backend):
    q, k, v = qkv(grad=True)
    out = attend(q, k, v, mask=key_padding([0, 5]), backend=backend)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert torch.equal(k.grad[0], torch.zeros_like(k.grad[0]))


@pytest.mark.parametrize("length", [1, 1000])
def test_lengths_1_and_1000(length):
    q, k, v = qkv(b=1, h=2, hkv=1, lq=length, lk=length, d=60)
    for spec in (causal(), sliding_window(64), sinks(4, 64)):
        ref = attend(q, k, v, mask=spec, backend="math")
        torch.testing.assert_close(attend(q, k, v, mask=spec, backend="sdpa"), ref, atol=1e-5, rtol=1e-4)


def test_bf16_backends_close_to_fp32_reference():
    q, k, v = qkv()
    ref = attend(q, k, v, mask=sliding_window(16), backend="math")
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    for backend in ("math", "sdpa"):
        out = attend(qb, kb, vb, mask=sliding_window(16), backend=backend)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    with flex_compile(False):
        out = attend(qb, kb, vb, mask=sliding_window(16), backend="flex")
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_gqa_and_cross_lengths():
    q, k, v = qkv(lq=7, lk=20)
    spec = causal()
    ref = attend(q, k, v, mask=spec, backend="math")
    explicit = attend(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), mask=spec, backend="math")
    torch.testing.assert_close(ref, explicit)
    torch.testing.assert_close(attend(q, k, v, mask=spec, backend="sdpa"), ref, atol=2e-6, rtol=1e-5)
    # bottom-right alignment: the last query sees every key
    last = attend(q[:, :, -1:], k, v, backend="math")
    torch.testing.assert_close(ref[:, :, -1:], last, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("dqk, dv", [(8, 24), (24, 8)])
def test_sdpa_with_a_different_value_head_size_matches_math(dqk, dv):
    """CPU SDPA pads the narrower side to stay on its fused kernel: values and gradients unchanged."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 9, dqk, generator=gen, requires_grad=True)
    k = torch.randn(2, 2, 13, dqk, generator=gen, requires_grad=True)
    v = torch.randn(2, 2, 13, dv, generator=gen, requires_grad=True)
    bias = torch.randn(4, 9, 13, generator=gen)
    for kw in ({"mask": causal()}, {"bias": bias}, {}):
        ref = attend(q, k, v, backend="math", **kw)
        out = attend(q, k, v, backend="sdpa", **kw)
        assert out.shape == (2, 4, 9, dv)
        torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
        for g, r in zip(grads, ref_grads):
            assert g.shape == r.shape
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_lse_matches_between_math_and_flex():
    q, k, v = qkv()
    spec = key_padding([0, 30]) & causal()
    out_m, lse_m = attend(q, k, v, mask=spec, backend="math", return_lse=True)
    with flex_compile(False):
        out_f, lse_f = attend(q, k, v, mask=spec, backend="flex", return_lse=True)
    torch.testing.assert_close(out_f, out_m, atol=2e-6, rtol=1e-5)
    assert torch.isinf(lse_m[0]).all() and torch.isinf(lse_f[0]).all()
    torch.testing.assert_close(lse_f[1], lse_m[1], atol=1e-5, rtol=1e-5)
    expected = torch.logsumexp(
        (q[1] @ k[1].repeat_interleave(2, 0).transpose(-1, -2)) / 60**0.5
        + torch.where(spec.dense(2, 4, 63, 63)[1], 0.0, float("-inf")),
        dim=-1,
    )
    torch.testing.assert_close(lse_m[1], expected, atol=1e-5, rtol=1e-5)


def test_backend_errors_name_both_sides():
    q, k, v = qkv()
    with pytest.raises(AttentionBackendError, match="'sdpa' cannot return the log-sum-exp"):
        attend(q, k, v, backend="sdpa", return_lse=True)
    with pytest.raises(AttentionBackendError, match="'flex' cannot apply attention dropout"):
        attend(q, k, v, backend="flex", dropout_p=0.1)
    with pytest.raises(AttentionBackendError, match="'flex' needs a MaskSpec"):
        attend(q, k, v, backend="flex", mask=torch.ones(63, 63, dtype=torch.bool))
    qg, kg, vg = qkv(grad=True)
    with pytest.raises(AttentionBackendError, match="no backward pass on CPU"):
        attend(qg, kg, vg, backend="flex", mask=causal())
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        attend(q, k, v, backend="fast")
    with pytest.raises(ValueError, match=r"key/value heads \(3\) must divide query heads \(4\)"):
        attend(q, torch.randn(2, 3, 63, 60), torch.randn(2, 3, 63, 60))
    with pytest.raises(ValueError, match="expects q of shape"):
        attend(q[0], k, v)
    with pytest.raises(TypeError, match="must be boolean"):
        attend(q, k, v, mask=torch.ones(63, 63))


def test_auto_backend_choice():
    q, k, v = qkv(lq=2048, lk=2048, b=1)
    assert choose_backend(q, k, sliding_window(128), None, 0.0, False, grad=False) == "flex"
    # random links touch every tile: flex would do dense work plus mask calls
    assert choose_backend(q, k, block_sparse(6, 64, 3), None, 0.0, False, grad=False) == "sdpa"
    assert choose_backend(q, k, sliding_window(128), None, 0.0, False, grad=True) == "sdpa"
    assert choose_backend(q, k, causal(), None, 0.0, False, grad=False) == "sdpa"
    assert choose_backend(q, k, sliding_window(128), None, 0.1, False, grad=False) == "sdpa"
    assert choose_backend(q, k, None, None, 0.0, True, grad=False) == "math"
    small_q, small_k, _ = qkv(lq=63, lk=63)
    assert choose_backend(small_q, small_k, sliding_window(8), None, 0.0, False, grad=False) == "sdpa"


# -- BlockMask compilation and compiled flex --------------------------------------------------------------
@pytest.mark.parametrize("name", ["sliding_window", "block_sparse", "padding", "sinks"])
def test_block_mask_matches_dense_blocks(name):
    spec = CASES[name]
    bm = masks.block_mask(spec, 2, 4, 63, 63, block_size=16)
    dense = spec.dense(2, 4, 63, 63)
    padded = torch.nn.functional.pad(dense, (0, 1, 0, 1))
    tiles = padded.reshape(dense.shape[0], dense.shape[1], 4, 16, 4, 16).permute(0, 1, 2, 4, 3, 5)
    visible_blocks = tiles.any(-1).any(-1)
    listed = bm.to_dense().bool()[:, :, :4, :4]
    assert torch.equal(listed.expand_as(visible_blocks), visible_blocks)


def test_compiled_flex_matches_math_and_reuses_cache():
    from torch._dynamo.utils import counters

    q, k, v = qkv(b=1, lq=256, lk=256, d=64)
    spec = sliding_window(32) & key_padding([200])
    out = attend(q, k, v, mask=spec, backend="flex")
    torch.testing.assert_close(out, attend(q, k, v, mask=spec, backend="math"), atol=1e-5, rtol=1e-4)
    built, graphs = masks.BLOCK_STATS["built"], counters["stats"]["unique_graphs"]
    again = attend(q + 1, k, v, mask=sliding_window(32) & key_padding([200]), backend="flex")
    assert masks.BLOCK_STATS["built"] == built  # same spec, same lengths: cached BlockMask
    assert counters["stats"]["unique_graphs"] == graphs  # and no recompilation
    assert again.shape == out.shape


def test_compiled_flex_2d_window_and_head_dim_60():
    q, k, v = qkv(b=1, h=2, hkv=2, lq=64, lk=64, d=60)
    spec = window_2d(8, 4)
    out = attend(q, k, v, mask=spec, backend="flex")
    torch.testing.assert_close(out, attend(q, k, v, mask=spec, backend="math"), atol=1e-5, rtol=1e-4)


GRID_CASES = {
    "window_2d": (window_2d(8, 4), 64),
    "window_2d_shift": (window_2d(8, 4, shift=2), 64),
    "dilated_2d": (dilated_2d(8, interval=2), 64),
    "halo": (halo(8, block=4, halo=1), 64),
    "concentric_causal": (concentric_causal(6, 3), 3 + 36 + 4),
}


@pytest.mark.parametrize("name", list(GRID_CASES))
def test_2d_masks_on_every_backend(name):
    spec, length = GRID_CASES[name]
    q, k, v = qkv(lq=length, lk=length, grad=True)
    ref = attend(q, k, v, mask=spec, backend="math")
    out = attend(q, k, v, mask=spec, backend="sdpa")
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    g_out = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, atol=3e-5, rtol=1e-4)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    with flex_compile(False):
        torch.testing.assert_close(
            attend(qd, kd, vd, mask=spec, backend="flex"), ref.detach(), atol=2e-6, rtol=1e-5
        )


@pytest.mark.parametrize("length", [1, 1000])
@pytest.mark.parametrize("name", ["sliding_window", "sinks", "chunk_local", "block_sparse"])
def test_flex_lengths_1_and_1000(name, length):
    spec = CASES[name]
    q, k, v = qkv(b=1, h=2, hkv=1, lq=length, lk=length, d=60)
    ref = attend(q, k, v, mask=spec, backend="math")
    with flex_compile(False):
        torch.testing.assert_close(attend(q, k, v, mask=spec, backend="flex"), ref, atol=1e-5, rtol=1e-4)


# -- biases through attend() ---------------------------------------------------------------------------------
def _biases(lq, lk):
    from interplay.core.attention import ALiBi, DenseBias, RelativePositionBias1D

    torch.manual_seed(3)
    rel = RelativePositionBias1D(4, max_distance=16)
    return {
        "alibi": ALiBi(4),
        "relative_1d": rel(lq, lk),
        "dense": DenseBias(torch.randn(1, 4, lq, lk)),
    }


@pytest.mark.parametrize("name", ["alibi", "relative_1d", "dense"])
@pytest.mark.parametrize(("lq", "lk"), [(63, 63), (1, 40), (9, 30)])
def test_biases_on_every_backend(name, lq, lk):
    bias = _biases(lq, lk)[name]
    q, k, v = qkv(lq=lq, lk=lk)
    dense = bias.dense(lq, lk, q.device, q.dtype)
    scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / 60**0.5 + dense
    causal_dense = causal().dense(2, 4, lq, lk)
    manual = torch.softmax(scores.masked_fill(~causal_dense, float("-inf")), -1) @ v.repeat_interleave(2, 1)
    ref = attend(q, k, v, mask=causal(), bias=bias, backend="math")
    torch.testing.assert_close(ref, manual.detach(), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(
        attend(q, k, v, mask=causal(), bias=bias, backend="sdpa"), ref, atol=2e-6, rtol=1e-5
    )
    with torch.no_grad(), flex_compile(False):
        out = attend(q, k, v, mask=causal(), bias=bias, backend="flex")
    torch.testing.assert_close(out, ref.detach(), atol=2e-6, rtol=1e-5)


def test_learned_bias_gets_gradients_through_sdpa():
    from interplay.core.attention import RelativePositionBias1D

    rel = RelativePositionBias1D(4, max_distance=8)
    q, k, v = qkv(lq=20, lk=20)
    out = attend(q, k, v, bias=rel(20, 20), mask=sliding_window(6), backend="sdpa")
    out.square().sum().backward()
    assert rel.table.grad is not None and rel.table.grad.abs().sum() > 0


def test_compiled_flex_with_alibi_matches_math():
    from interplay.core.attention import ALiBi

    q, k, v = qkv(b=1, lq=128, lk=128, d=64)
    bias = ALiBi(4)
    out = attend(q, k, v, mask=sliding_window(32), bias=bias, backend="flex")
    torch.testing.assert_close(
        out, attend(q, k, v, mask=sliding_window(32), bias=bias, backend="math"), atol=1e-5, rtol=1e-4
    )


def test_compiled_flex_allows_many_specialisations():
    import torch._dynamo.config as dynamo_config

    from interplay.core.attention.api import FLEX_RECOMPILE_LIMIT, compiled_flex_attention

    compiled_flex_attention()
    # more masks x shapes than Dynamo's default limit of 8 must stay compiled (not fall back to eager)
    assert dynamo_config.recompile_limit >= FLEX_RECOMPILE_LIMIT >= 32


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["causal", "sliding_window", "sinks", "block_sparse", "causal_padding"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_flex_on_gpu_forward_backward(name, dtype):
    spec = CASES[name]
    q, k, v = (t.cuda().detach().requires_grad_() for t in qkv(lq=1000, lk=1000, d=64, dtype=dtype))
    ref = attend(q.float(), k.float(), v.float(), mask=spec, backend="math")
    out = attend(q, k, v, mask=spec, backend="flex")
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    g_out = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a.float(), b.float(), atol=10 * tol, rtol=10 * tol)
    assert choose_backend(q, k, spec, None, 0.0, False, grad=True) in ("flex", "sdpa")
