"""Additive attention biases (``attention/bias.py``) and RoPE (``attention/rope.py``).

Every bias is checked against an explicit loop written here in float64, through ``dense()`` and
through its ``score_mod`` evaluated on broadcast index grids; one case per bias class also runs eager
FlexAttention with the ``score_mod`` against SDPA with the dense bias as ``attn_mask``.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from interplay.core.attention.bias import (
    ALiBi,
    DenseBias,
    DynamicPositionBias,
    LeViTAttentionBias,
    RelativePositionBias1D,
    RelativePositionBias2D,
    TableBias,
    alibi_slopes,
    levit_attention_bias_index,
    relative_position_index_2d,
)
from interplay.core.attention.rope import RotaryEmbedding, apply_rope, apply_rope_2d, rope_frequencies

CPU = torch.device("cpu")
HEAD_DIM = 60
_TOLERANCES = {torch.float64: (1e-7, 1e-7), torch.float32: (1.3e-6, 1e-5), torch.bfloat16: (1.6e-2, 1e-5)}


def assert_close(actual, expected, rtol: float | None = None, atol: float | None = None) -> None:
    """``torch.testing.assert_close`` without its one-off import of torch.distributed (~1 s)."""
    assert actual.shape == expected.shape, f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"dtypes differ: {actual.dtype} vs {expected.dtype}"
    default_rtol, default_atol = _TOLERANCES.get(actual.dtype, (1e-5, 1e-8))
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        worst = (actual - expected).abs().max().item()
        raise AssertionError(f"tensors differ: max abs difference {worst:.3g} (rtol {rtol}, atol {atol})")


def score_mod_grid(bias, batch: int, heads: int, lq: int, lk: int) -> torch.Tensor:
    """The score_mod evaluated on broadcast (b, h, q, kv) index grids with zero scores (float64)."""
    fn = bias.score_mod(lq, lk, CPU)
    score = torch.zeros(batch, heads, lq, lk, dtype=torch.float64)
    return fn(
        score,
        torch.arange(batch).view(batch, 1, 1, 1),
        torch.arange(heads).view(1, heads, 1, 1),
        torch.arange(lq).view(1, 1, lq, 1),
        torch.arange(lk).view(1, 1, 1, lk),
    )


def check_bias(bias, expected: torch.Tensor) -> None:
    """``expected [H, Lq, Lk]`` (float64) against ``dense()`` and the score_mod on index grids."""
    heads, lq, lk = expected.shape
    dense = bias.dense(lq, lk, CPU, torch.float64)
    assert dense.shape == (1, heads, lq, lk)
    assert_close(dense[0], expected, rtol=1e-6, atol=1e-6)
    grid = score_mod_grid(bias, 2, heads, lq, lk)
    assert_close(grid, dense.expand(2, heads, lq, lk), rtol=1e-6, atol=1e-6)


def check_flex_against_sdpa(bias, heads: int, lq: int, lk: int) -> None:
    """Eager FlexAttention with the bias's score_mod == SDPA with its dense tensor as ``attn_mask``."""
    g = torch.Generator().manual_seed(lq * 1000 + lk)
    q, k, v = (torch.randn(2, heads, n, HEAD_DIM, generator=g) for n in (lq, lk, lk))
    dense = bias.dense(lq, lk, CPU, torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is unfused
        out_flex = flex_attention(q, k, v, score_mod=bias.score_mod(lq, lk, CPU))
        out_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    assert_close(out_flex, out_sdpa, rtol=1e-4, atol=1e-5)
    if lk > 1:  # the bias must matter, or the comparison proves nothing
        assert not torch.allclose(out_sdpa, F.scaled_dot_product_attention(q, k, v), atol=1e-3)


def randomise_(module: torch.nn.Module) -> torch.nn.Module:
    """Make every parameter large enough that a wrong bias visibly changes attention."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


SHAPES_1D = [(1, 1), (63, 63), (5, 17), (17, 5)]


# ------------------------------------------------------------------------------------------------
# 1-D relative position bias


def t5_bucket_loop(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    bucket, n = 0, num_buckets
    if bidirectional:
        n //= 2
        bucket += n if relative > 0 else 0
        relative = abs(relative)
    else:
        relative = max(-relative, 0)
    max_exact = n // 2
    if relative < max_exact:
        return bucket + relative
    large = max_exact + int(
        math.log(relative / max_exact) / math.log(max_distance / max_exact) * (n - max_exact)
    )
    return bucket + min(large, n - 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_distance=8),
        # max_distance 100 keeps T5's bucket edges off integer distances, where the module's float32
        # log and the loop's float64 log could round to different buckets
        dict(max_distance=100, num_buckets=32),
        dict(max_distance=100, num_buckets=16, bidirectional=False),
    ],
    ids=["clipped", "t5-bidirectional", "t5-causal"],
)
@pytest.mark.parametrize("lq,lk", SHAPES_1D + [(20, 150)])
def test_relative_position_bias_1d(kwargs, lq, lk):
    heads = 3
    module = randomise_(RelativePositionBias1D(heads, **kwargs))
    table = module.table.tolist()
    expected = [[[0.0] * lk for _ in range(lq)] for _ in range(heads)]
    for h, i, j in itertools.product(range(heads), range(lq), range(lk)):
        relative = j - (i + lk - lq)
        if "num_buckets" in kwargs:
            entry = t5_bucket_loop(
                relative, kwargs.get("bidirectional", True), kwargs["num_buckets"], kwargs["max_distance"]
            )
        else:
            m = kwargs["max_distance"]
            entry = max(-m, min(m, relative)) + m
        expected[h][i][j] = table[h][entry]
    expected = torch.tensor(expected, dtype=torch.float64)
    check_bias(module(lq, lk), expected)


def test_relative_position_bias_1d_table_size_and_init():
    assert RelativePositionBias1D(4, max_distance=5).table.shape == (4, 11)
    assert RelativePositionBias1D(4, max_distance=50, num_buckets=32).table.shape == (4, 32)
    table = RelativePositionBias1D(8, max_distance=512).table
    assert 0.015 < table.std().item() < 0.025 and table.abs().max().item() <= 2.0


# ------------------------------------------------------------------------------------------------
# Swin 2-D relative position bias


def test_swin_index_2x2_by_hand():
    # tokens (0,0), (0,1), (1,0), (1,1); entry (dy + 1) * 3 + (dx + 1)
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index_2d(2, 2), expected)
    assert relative_position_index_2d(2, 2).dtype == torch.long


@pytest.mark.parametrize("window", [(1, 1), (2, 2), (3, 5), (7, 7)])
def test_relative_position_bias_2d(window):
    wh, ww = window
    heads = 3
    module = randomise_(RelativePositionBias2D(heads, window))
    assert module.relative_position_bias_table.shape == ((2 * wh - 1) * (2 * ww - 1), heads)
    table = module.relative_position_bias_table.tolist()
    n = wh * ww
    expected = [[[0.0] * n for _ in range(n)] for _ in range(heads)]
    for h, i, j in itertools.product(range(heads), range(n), range(n)):
        (yi, xi), (yj, xj) = divmod(i, ww), divmod(j, ww)
        entry = (yi - yj + wh - 1) * (2 * ww - 1) + (xi - xj + ww - 1)
        expected[h][i][j] = table[entry][h]
    expected = torch.tensor(expected, dtype=torch.float64)
    check_bias(module(), expected)
    assert torch.equal(module(n, n).index, module().index)  # (lq, lk) as MultiHeadAttention passes them


# ------------------------------------------------------------------------------------------------
# CrossFormer dynamic position bias


def dpb_loop(module: DynamicPositionBias, dy: int, dx: int) -> torch.Tensor:
    def block(seq, x):
        norm, _, linear = seq
        x = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return F.linear(torch.relu(x), linear.weight, linear.bias)

    x = module.pos_proj.weight @ torch.tensor([dy, dx], dtype=torch.float64) + module.pos_proj.bias
    for seq in (module.pos1, module.pos2):
        x = x + block(seq, x) if module.residual else block(seq, x)
    return block(module.pos3, x)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("group", [(1, 1), (3, 3), (2, 5)])
def test_dynamic_position_bias(residual, group):
    gh, gw = group
    heads = 3
    module = randomise_(DynamicPositionBias(64, heads, residual=residual)).double()
    assert module.hidden_dim == 4
    bias = module(gh, gw)
    assert bias.table.shape == (heads, (2 * gh - 1) * (2 * gw - 1))
    n = gh * gw
    expected = torch.empty(heads, n, n, dtype=torch.float64)
    with torch.no_grad():
        for i, j in itertools.product(range(n), range(n)):
            (yi, xi), (yj, xj) = divmod(i, gw), divmod(j, gw)
            expected[:, i, j] = dpb_loop(module, yi - yj, xi - xj)
        check_bias(bias, expected)


def test_dynamic_position_bias_shapes_residual_and_square_default():
    module = DynamicPositionBias(96, 4)
    assert module(7).dense(49, 49, CPU, torch.float32).shape == (1, 4, 49, 49)
    assert module(7, 3).index.shape == (21, 21)
    assert DynamicPositionBias(96, 4, hidden_dim=8).hidden_dim == 8
    torch.manual_seed(0)
    plain, residual = DynamicPositionBias(64, 2), DynamicPositionBias(64, 2, residual=True)
    residual.load_state_dict(plain.state_dict())  # same parameters, different wiring
    assert not torch.allclose(plain(3).table, residual(3).table)


# ------------------------------------------------------------------------------------------------
# LeViT attention bias


def test_levit_index_3x3_by_hand():
    expected = torch.tensor(
        [
            [0, 1, 2, 3, 4, 5, 6, 7, 8],
            [1, 0, 1, 4, 3, 4, 7, 6, 7],
            [2, 1, 0, 5, 4, 3, 8, 7, 6],
            [3, 4, 5, 0, 1, 2, 3, 4, 5],
            [4, 3, 4, 1, 0, 1, 4, 3, 4],
            [5, 4, 3, 2, 1, 0, 5, 4, 3],
            [6, 7, 8, 3, 4, 5, 0, 1, 2],
            [7, 6, 7, 4, 3, 4, 1, 0, 1],
            [8, 7, 6, 5, 4, 3, 2, 1, 0],
        ]
    )
    index, num_offsets = levit_attention_bias_index(3)
    assert torch.equal(index, expected) and num_offsets == 9


def levit_index_loop(resolution: tuple[int, int], stride: int) -> tuple[torch.Tensor, int]:
    """LeViT's own construction: offsets numbered in order of first appearance."""
    rh, rw = resolution
    keys = list(itertools.product(range(rh), range(rw)))
    queries = list(itertools.product(range((rh - 1) // stride + 1), range((rw - 1) // stride + 1)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in queries:
        for p2 in keys:
            offset = (abs(p1[0] * stride - p2[0]), abs(p1[1] * stride - p2[1]))
            offsets.setdefault(offset, len(offsets))
            idxs.append(offsets[offset])
    return torch.tensor(idxs).view(len(queries), len(keys)), len(offsets)


@pytest.mark.parametrize(
    "resolution,stride", [((3, 3), 1), ((4, 4), 2), ((3, 4), 2), ((7, 7), 1), ((5, 6), 3)]
)
def test_levit_attention_bias(resolution, stride):
    heads = 2
    loop_index, loop_offsets = levit_index_loop(resolution, stride)
    module = randomise_(LeViTAttentionBias(heads, resolution, stride=stride))
    assert module.attention_biases.shape == (heads, loop_offsets)
    assert torch.equal(module.attention_bias_idxs, loop_index)
    table, index = module.attention_biases.tolist(), loop_index.tolist()
    expected = [[[table[h][entry] for entry in row] for row in index] for h in range(heads)]
    expected = torch.tensor(expected, dtype=torch.float64)
    check_bias(module(), expected)


# ------------------------------------------------------------------------------------------------
# ALiBi


def test_alibi_low_precision_dense_rounds_once():
    alibi = ALiBi(12)  # slopes 2^-0.5, 2^-1.5, ...: products not exact in bf16
    exact = alibi.dense(1, 1001, CPU, torch.float64)
    assert torch.equal(alibi.dense(1, 1001, CPU, torch.bfloat16), exact.bfloat16())


def test_alibi_slopes():
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence
    assert alibi_slopes(6) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    twelve = alibi_slopes(12)
    assert twelve[:8] == alibi_slopes(8)
    assert twelve[8:] == pytest.approx([2.0 ** -(0.5 * (2 * i + 1)) for i in range(4)])
    assert alibi_slopes(1) == [2.0**-8]


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize(
    "heads,lq,lk", [(8, 1, 1), (8, 63, 63), (6, 1, 1), (6, 9, 9), (6, 5, 17), (6, 17, 5)]
)
def test_alibi(symmetric, heads, lq, lk):
    slopes = alibi_slopes(heads)
    expected = [[[0.0] * lk for _ in range(lq)] for _ in range(heads)]
    for h, i, j in itertools.product(range(heads), range(lq), range(lk)):
        distance = i + lk - lq - j
        expected[h][i][j] = -slopes[h] * (abs(distance) if symmetric else distance)
    expected = torch.tensor(expected, dtype=torch.float64)
    check_bias(ALiBi(heads, symmetric=symmetric), expected)


# ------------------------------------------------------------------------------------------------
# FlexAttention (eager) with each score_mod against SDPA with the dense bias. Eager flex traces every
# new score_mod closure with Dynamo (~0.3 s each, plus ~3 s to import Dynamo once), so one case per
# bias class here (the 1-D table at L = 1, 63 and Lq != Lk); every case above also checks its
# score_mod on broadcast index grids.


FLEX_CASES = {
    "relpos1d-L1": (lambda: RelativePositionBias1D(3, max_distance=8), (1, 1)),
    "relpos1d-L63": (lambda: RelativePositionBias1D(3, max_distance=8), (63, 63)),
    "relpos1d-5x17": (lambda: RelativePositionBias1D(3, max_distance=8), (5, 17)),
    "swin-3x5": (lambda: RelativePositionBias2D(3, (3, 5)), ()),
    "dpb-2x5": (lambda: DynamicPositionBias(64, 3, residual=True), (2, 5)),
    "levit-subsample": (lambda: LeViTAttentionBias(3, (4, 5), stride=2), ()),
    "alibi-causal-5x17": (lambda: ALiBi(3), (5, 17)),
    "alibi-symmetric-17x5": (lambda: ALiBi(3, symmetric=True), (17, 5)),
}


@pytest.mark.parametrize("name", list(FLEX_CASES))
def test_flex_score_mod_matches_sdpa_with_dense_bias(name):
    factory, args = FLEX_CASES[name]
    torch.manual_seed(0)
    made = factory()
    if isinstance(made, ALiBi):
        bias, (lq, lk) = made, args
    else:
        bias = randomise_(made)(*args)
        lq, lk = bias.index.shape
    check_flex_against_sdpa(bias, 3, lq, lk)


GPU_CASES = {
    "relpos1d-t5": (lambda: RelativePositionBias1D(3, max_distance=40, num_buckets=16), (100, 130)),
    "swin": (lambda: RelativePositionBias2D(3, 7), ()),
    "dpb": (lambda: DynamicPositionBias(64, 3), (7, 7)),
    "levit-subsample": (lambda: LeViTAttentionBias(3, 7, stride=2), ()),
    "alibi": (lambda: ALiBi(3), (100, 130)),
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_compiled_flex_forward_backward_on_gpu(name):
    """Compiled flex with the score_mod == SDPA with the dense bias, outputs and gradients (tables too)."""
    factory, args = GPU_CASES[name]
    torch.manual_seed(0)
    made = factory()
    module = None if isinstance(made, ALiBi) else randomise_(made).cuda()
    compiled = torch.compile(flex_attention, dynamic=False)  # as attend() compiles it
    results = []
    for use_flex in (True, False):
        bias = made if module is None else module(*args)
        lq, lk = args if module is None else bias.index.shape
        g = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (
            torch.randn(2, 3, n, 64, device="cuda", generator=g, requires_grad=True) for n in (lq, lk, lk)
        )
        if use_flex:
            out = compiled(q, k, v, score_mod=bias.score_mod(lq, lk, q.device))
        else:
            mask = bias.dense(lq, lk, q.device, torch.float32)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        params = [] if module is None else list(module.parameters())
        grads = torch.autograd.grad(out.square().sum(), [q, k, v, *params])
        results.append((out.detach(), grads))
    (out_flex, grads_flex), (out_sdpa, grads_sdpa) = results
    assert_close(out_flex, out_sdpa, rtol=1e-3, atol=1e-3)
    for got, want in zip(grads_flex, grads_sdpa):
        assert_close(got, want, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# base classes


def test_table_bias_with_one_row_broadcasts_over_heads():
    bias = TableBias(torch.randn(1, 5), torch.randint(0, 5, (4, 6)))
    dense = bias.dense(4, 6, CPU, torch.float64)
    assert_close(score_mod_grid(bias, 1, 3, 4, 6), dense.expand(1, 3, 4, 6))


def test_dense_bias_accepts_low_rank_tensors():
    row = torch.randn(6)
    dense = DenseBias(row).dense(4, 6, CPU, torch.float64)
    assert_close(dense.expand(4, 6), row.double().expand(4, 6))
    assert_close(score_mod_grid(DenseBias(row), 1, 2, 4, 6), dense.expand(1, 2, 4, 6))
    with pytest.raises(ValueError, match="does not fit"):
        DenseBias(torch.randn(5)).dense(4, 6, CPU, torch.float32)


# ------------------------------------------------------------------------------------------------
# gradients


LEARNED = {
    "relpos1d": (lambda: RelativePositionBias1D(2, max_distance=4), (9, 9)),
    "relpos1d-t5": (lambda: RelativePositionBias1D(2, max_distance=20, num_buckets=8), (9, 12)),
    "swin": (lambda: RelativePositionBias2D(2, (3, 3)), ()),
    "dpb": (lambda: DynamicPositionBias(64, 2), (3, 3)),
    "dpb-residual": (lambda: DynamicPositionBias(64, 2, residual=True), (3, 2)),
    "levit": (lambda: LeViTAttentionBias(2, 3), ()),
    "levit-subsample": (lambda: LeViTAttentionBias(2, 4, stride=2), ()),
}


@pytest.mark.parametrize("name", list(LEARNED))
def test_gradients_reach_every_learned_table(name):
    factory, args = LEARNED[name]
    torch.manual_seed(0)
    module = factory()
    bias = module(*args)
    lq, lk = bias.index.shape
    q, k, v = (
        torch.randn(2, 2, lq, HEAD_DIM),
        torch.randn(2, 2, lk, HEAD_DIM),
        torch.randn(2, 2, lk, HEAD_DIM),
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM) + bias.dense(lq, lk, CPU, torch.float32)
    out = scores.softmax(-1) @ v
    out.square().sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_attend_consumes_learned_biases(backend):
    api = pytest.importorskip("interplay.core.attention.api")
    torch.manual_seed(0)
    module = randomise_(RelativePositionBias2D(2, (2, 3)))
    q, k, v = (torch.randn(1, 2, 6, HEAD_DIM) for _ in range(3))
    bias = module()
    out = api.attend(q, k, v, bias=bias, backend=backend)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.dense(6, 6, CPU, torch.float32))
    assert_close(out, expected, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert module.relative_position_bias_table.grad is not None


# ------------------------------------------------------------------------------------------------
# RoPE


def rotation_matrix(
    position: float, dim: int, base: float = 10000.0, interleaved: bool = False
) -> torch.Tensor:
    """RoFormer's block-diagonal ``R^d_{Theta, m}`` (Eq. 15), channel pairs in either layout."""
    r = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(dim // 2):
        angle = position * base ** (-2 * i / dim)
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + dim // 2)
        r[a, a], r[a, b] = math.cos(angle), -math.sin(angle)
        r[b, a], r[b, b] = math.sin(angle), math.cos(angle)
    return r


def test_rope_frequencies():
    freqs = rope_frequencies(8, base=100.0)
    assert_close(freqs, torch.tensor([1.0, 100**-0.25, 100**-0.5, 100**-0.75]))


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rope_matches_rotation_matrices(interleaved):
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    positions = torch.tensor([0, 1, 4, 7, 1000])
    out = apply_rope(x, positions, base=10000.0, interleaved=interleaved)
    for i, p in enumerate(positions.tolist()):
        expected = x[:, :, i] @ rotation_matrix(p, 8, interleaved=interleaved).T
        assert_close(out[:, :, i], expected)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_relative_property_and_norm(interleaved):
    q, k = torch.randn(HEAD_DIM, dtype=torch.float64), torch.randn(HEAD_DIM, dtype=torch.float64)
    m = torch.tensor([0, 3, 17, 250, 4096])
    for offset in (0, 1, 5, 100):
        rq = apply_rope(q.expand(1, 1, len(m), HEAD_DIM), m, interleaved=interleaved)
        rk = apply_rope(k.expand(1, 1, len(m), HEAD_DIM), m - offset, interleaved=interleaved)
        dots = (rq * rk).sum(-1).flatten()
        assert_close(dots, dots[:1].expand_as(dots), rtol=1e-9, atol=1e-9)
        assert_close(dots[0], q @ rotation_matrix(-offset, HEAD_DIM, interleaved=interleaved) @ k)
    x = torch.randn(2, 3, 7, HEAD_DIM, dtype=torch.float64)
    assert_close(apply_rope(x, torch.arange(7) * 13).norm(dim=-1), x.norm(dim=-1))


def test_rope_interleaved_is_a_permutation_of_rotate_half():
    x = torch.randn(2, 3, 9, HEAD_DIM, dtype=torch.float64)
    half = HEAD_DIM // 2
    # interleaved channel 2i <-> rotate-half channel i, 2i + 1 <-> i + D/2
    perm = torch.stack((torch.arange(half), torch.arange(half) + half), dim=-1).flatten()
    positions = torch.arange(9) * 3
    assert_close(apply_rope(x[..., perm], positions, interleaved=True), apply_rope(x, positions)[..., perm])


def test_rope_per_batch_positions_and_dtype():
    x = torch.randn(2, 3, 4, 8)
    positions = torch.tensor([[0, 1, 2, 3], [10, 20, 30, 40]])
    out = apply_rope(x, positions)
    for b in range(2):
        assert_close(out[b], apply_rope(x[b], positions[b]))
    assert apply_rope(x.bfloat16(), positions).dtype == torch.bfloat16
    assert_close(apply_rope(x), apply_rope(x, torch.arange(4)))


def test_rope_2d_matches_explicit_axial_construction():
    height, width, dim = 3, 4, 16
    x = torch.randn(2, 2, height * width, dim, dtype=torch.float64)
    rows = torch.arange(height * width) // width
    cols = torch.arange(height * width) % width
    out = apply_rope_2d(x, rows, cols)
    for t in range(height * width):
        r = torch.block_diag(
            rotation_matrix(rows[t].item(), dim // 2), rotation_matrix(cols[t].item(), dim // 2)
        )
        assert_close(out[:, :, t], x[:, :, t] @ r.T)
    # relative property per axis: scores depend on (row offset, col offset) only
    q, k = torch.randn(dim, dtype=torch.float64), torch.randn(dim, dtype=torch.float64)
    rq = apply_rope_2d(q.expand(1, 1, 2, dim), torch.tensor([0, 5]), torch.tensor([1, 9]))
    rk = apply_rope_2d(k.expand(1, 1, 2, dim), torch.tensor([2, 7]), torch.tensor([0, 8]))
    dots = (rq * rk).sum(-1).flatten()
    assert_close(dots[0], dots[1])


def test_rotary_embedding_module_and_cache():
    rope = RotaryEmbedding(HEAD_DIM, base=500.0)
    x = torch.randn(2, 3, 6, HEAD_DIM)
    assert_close(rope(x), apply_rope(x, base=500.0))
    assert_close(rope(x, offset=10), apply_rope(x, torch.arange(10, 16), base=500.0))
    positions = torch.tensor([[5, 4, 3, 2, 1, 0], [0, 0, 1, 1, 2, 2]])
    assert_close(rope(x, positions), apply_rope(x, positions, base=500.0))
    cos, _ = rope.cos_sin(16, CPU, torch.float32)
    shorter, _ = rope.cos_sin(4, CPU, torch.float32)
    assert shorter.data_ptr() == cos.data_ptr()  # a shorter length reads the cached table
    assert rope.cos_sin(40, CPU, torch.float32)[0].shape == (40, HEAD_DIM // 2)
    assert rope(x.double()).dtype == torch.float64 and len(rope._cache) == 2
    interleaved = RotaryEmbedding(HEAD_DIM, interleaved=True)
    assert_close(interleaved(x, offset=3), apply_rope(x, torch.arange(3, 9), interleaved=True))


# ------------------------------------------------------------------------------------------------
# argument errors


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: RelativePositionBias1D(0), "heads"),
        (lambda: RelativePositionBias1D(2, max_distance=0), "max_distance"),
        (lambda: RelativePositionBias1D(2, max_distance=2.5), "max_distance"),
        (lambda: RelativePositionBias1D(2, num_buckets=2), "num_buckets"),
        (lambda: RelativePositionBias1D(2, bidirectional=False), "bidirectional"),
        (lambda: RelativePositionBias1D(2, max_distance=4, num_buckets=32), "max_distance"),
        (lambda: RelativePositionBias1D(2)(0, 4), "lq"),
        (lambda: RelativePositionBias1D(2)(4, -1), "lk"),
        (lambda: RelativePositionBias2D(2, (2,)), "window_size"),
        (lambda: RelativePositionBias2D(2, 0), "window_size"),
        (lambda: RelativePositionBias2D(0, 7), "heads"),
        (lambda: relative_position_index_2d(0, 2), "window_h"),
        (lambda: DynamicPositionBias(8, 2), "dim"),
        (lambda: DynamicPositionBias(64, 0), "heads"),
        (lambda: DynamicPositionBias(64, 2, hidden_dim=0), "hidden_dim"),
        (lambda: DynamicPositionBias(64, 2)(0), "group_h"),
        (lambda: DynamicPositionBias(64, 2)(3, 0), "group_w"),
        (lambda: LeViTAttentionBias(2, 0), "resolution"),
        (lambda: LeViTAttentionBias(2, (3, 3, 3)), "resolution"),
        (lambda: LeViTAttentionBias(2, 4, stride=0), "stride"),
        (lambda: ALiBi(0), "heads"),
        (lambda: ALiBi(4).dense(0, 3, CPU, torch.float32), "lq"),
        (lambda: ALiBi(4).score_mod(3, 0, CPU), "lk"),
        (lambda: alibi_slopes(-1), "heads"),
        (lambda: RelativePositionBias2D(2, 2)().dense(3, 3, CPU, torch.float32), "does not fit"),
        (lambda: RelativePositionBias2D(2, 2)().score_mod(4, 3, CPU), "does not fit"),
        (lambda: DenseBias(torch.randn(2, 3)).score_mod(2, 4, CPU), "does not fit"),
        (lambda: RelativePositionBias2D(2, (2, 3))(5, 6), "lq"),
        (lambda: LeViTAttentionBias(2, 4, stride=2)(4, 15), "lk"),
        (lambda: rope_frequencies(7), "dim"),
        (lambda: rope_frequencies(8, base=0.0), "base"),
        (lambda: apply_rope(torch.randn(1, 1, 4, 7)), "head dim"),
        (lambda: apply_rope(torch.randn(1, 1, 4, 8), torch.arange(5)), "positions"),
        (lambda: apply_rope(torch.randn(2, 1, 4, 8), torch.zeros(3, 4)), "positions"),
        (lambda: apply_rope(torch.randn(1, 1, 4, 8), torch.zeros(1, 1, 4)), "positions"),
        (lambda: apply_rope_2d(torch.randn(1, 1, 4, 6), torch.arange(4), torch.arange(4)), "head dim"),
        (lambda: RotaryEmbedding(7), "dim"),
        (lambda: RotaryEmbedding(8)(torch.randn(1, 1, 4, 6)), "dim"),
        (lambda: RotaryEmbedding(8)(torch.randn(1, 1, 4, 8), offset=-1), "offset"),
        (lambda: RotaryEmbedding(8)(torch.randn(1, 1, 4, 8), torch.arange(4), offset=2), "offset"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
