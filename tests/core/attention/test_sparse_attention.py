"""MoBA, VMoBA and DHSA: selections against loop definitions, the gather and flex paths against the
dense references (outputs and gradients, relative RMS error), odd lengths, D = 60, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from interplay.core.attention import causal, sparse
from interplay.core.attention.api import AttentionBackendError, attend, flex_compile
from interplay.core.attention.sparse import (
    dhsa_attention,
    dhsa_mask,
    dhsa_reference,
    moba_attention,
    moba_reference,
    moba_selection,
    vmoba_attention,
    vmoba_block_ids,
    vmoba_partition_for_layer,
    vmoba_reference,
    vmoba_selection,
)

TOL = 1e-5  # relative RMS error in fp32 (flash-linear-attention style bound, tighter than its 1e-3)


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast, ref = fast.detach().float(), ref.detach().float()
    err = (fast - ref).pow(2).mean().sqrt()
    # floor for an all-zero reference (L = 1: the softmax of one key has no gradient; the fused kernel
    # leaves ~1e-8 of rounding there)
    return float(err / ref.pow(2).mean().sqrt().clamp(min=1e-2))


def qkv(b=2, h=4, hkv=2, lq=63, lk=None, d=60, seed=0, grad=True, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    lk = lq if lk is None else lk
    shapes = ((b, h, lq, d), (b, hkv, lk, d), (b, hkv, lk, d))
    return tuple(torch.randn(s, generator=gen, dtype=dtype).requires_grad_(grad) for s in shapes)


def check_forward_backward(fast_fn, ref_fn, q, k, v, tol=TOL):
    ref = ref_fn(q, k, v)
    out = fast_fn(q, k, v)
    assert out.shape == ref.shape and out.dtype == q.dtype
    assert rel_rms(out, ref) < tol
    weights = torch.linspace(-1, 1, out.shape[-1])
    g_ref = torch.autograd.grad((ref * weights).sum(), (q, k, v))
    g_out = torch.autograd.grad((out * weights).sum(), (q, k, v))
    for name, a, b in zip("qkv", g_out, g_ref):
        assert torch.isfinite(a).all(), name
        assert rel_rms(a, b) < tol, (name, rel_rms(a, b))


def eager_flex(fn, *args, **kwargs):
    with torch.no_grad(), flex_compile(False):
        return fn(*args, backend="flex", **kwargs)


# -- MoBA ------------------------------------------------------------------------------------------------
def moba_selection_loop(q, k, block, top_k):
    """MoBA's gate by its definition, one query at a time."""
    b_, h_, lq, _ = q.shape
    lk = k.shape[2]
    groups = q.shape[1] // k.shape[1]
    n_blocks = math.ceil(lk / block)
    out = torch.zeros(b_, h_, lq, n_blocks, dtype=torch.bool)
    for b in range(b_):
        for h in range(h_):
            keys = k[b, h // groups].double()
            means = [keys[j * block : (j + 1) * block].mean(0) for j in range(n_blocks)]
            for t in range(lq):
                own = (t + lk - lq) // block
                gates = {j: float(q[b, h, t].double() @ means[j]) for j in range(own)}
                best = sorted(gates, key=gates.get, reverse=True)[: top_k - 1]
                for j in [own, *best]:
                    out[b, h, t, j] = True
    return out


@pytest.mark.parametrize(("lq", "lk"), [(1, 1), (63, 63), (130, 130), (5, 77)])
def test_moba_selection_matches_loop(lq, lk):
    q, k, _ = qkv(b=2, h=2, hkv=1, lq=lq, lk=lk, d=8, grad=False)
    assert torch.equal(moba_selection(q, k, 16, 3), moba_selection_loop(q, k, 16, 3))


@pytest.mark.parametrize("top_k", [1, 3, 20])
def test_moba_selection_own_block_no_future(top_k):
    q, k, _ = qkv(lq=257, d=16, grad=False)
    sel = moba_selection(q, k, 32, top_k)
    own = torch.arange(257) // 32
    block = torch.arange(sel.shape[-1])
    assert sel[..., block[None, :] == own[:, None]].all()  # own block always in
    assert not sel[..., block[None, :] > own[:, None]].any()  # never a future block
    assert torch.equal(sel.sum(-1), torch.clamp(own + 1, max=top_k).expand(2, 4, -1))


@pytest.mark.parametrize("length", [1, 63, 200])
def test_moba_gather_matches_reference(length):
    q, k, v = qkv(lq=length)
    check_forward_backward(
        lambda *t: moba_attention(*t, 16, 3, backend="gather"), lambda *t: moba_reference(*t, 16, 3), q, k, v
    )


@pytest.mark.parametrize("family", ["moba", "vmoba", "dhsa"])
def test_composed_ops_path_matches_fused_cpu_kernel(family, monkeypatch):
    # the gather path off the CPU composes torch ops; check it here against the reference too
    q, k, v = qkv(lq=90)
    fast, ref = {
        "moba": (lambda *t: moba_attention(*t, 16, 3), lambda *t: moba_reference(*t, 16, 3)),
        "vmoba": (
            lambda *t: vmoba_attention(*t, GRID, "3d", (2, 2, 4)),
            lambda *t: vmoba_reference(*t, GRID, "3d", (2, 2, 4)),
        ),
        "dhsa": (
            lambda *t: dhsa_attention(*t, **dhsa_kwargs("given_chunks", 90)),
            lambda *t: dhsa_reference(*t, **dhsa_kwargs("given_chunks", 90)),
        ),
    }[family]
    monkeypatch.setattr(sparse, "FUSED_CPU", False)
    check_forward_backward(fast, ref, q, k, v)


def test_fused_cpu_backward_gradcheck():
    q, k, v = (t.double().detach().requires_grad_() for t in qkv(b=1, h=2, hkv=1, lq=11, d=4, seed=3))
    assert torch.autograd.gradcheck(lambda *t: moba_attention(*t, 3, 2), (q, k, v), fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda *t: dhsa_attention(*t, chunk_size=3, budget=5), (q, k, v), fast_mode=True
    )


def test_moba_decode_queries_are_the_last_positions():
    q, k, v = qkv(lq=5, lk=77)
    check_forward_backward(lambda *t: moba_attention(*t, 8, 2), lambda *t: moba_reference(*t, 8, 2), q, k, v)


def test_moba_with_every_block_selected_is_causal_attention():
    q, k, v = qkv(lq=70, grad=False)
    out = moba_attention(q, k, v, 16, 5)  # 5 blocks cover all 70 keys
    ref = attend(q, k, v, mask=causal(), backend="math")
    assert rel_rms(out, ref) < TOL
    assert rel_rms(moba_attention(q, k, v, 16, 2), ref) > 1e-2  # and top-2 is not


def test_moba_dense_and_flex_backends_match_reference():
    q, k, v = qkv(lq=150, grad=False)
    ref = moba_reference(q, k, v, 32, 2)
    assert rel_rms(moba_attention(q, k, v, 32, 2, backend="dense"), ref) < TOL
    assert rel_rms(eager_flex(moba_attention, q, k, v, 32, 2), ref) < TOL
    q5 = q[:, :, -5:]
    assert rel_rms(eager_flex(moba_attention, q5, k, v, 32, 2), moba_reference(q5, k, v, 32, 2)) < TOL


def token_tiles(mask: torch.Tensor, tile: int) -> torch.Tensor:
    b, h, lq, lk = mask.shape
    n_q, n_k = -(-lq // tile), -(-lk // tile)
    padded = torch.zeros(b, h, n_q * tile, n_k * tile, dtype=torch.bool)
    padded[:, :, :lq, :lk] = mask
    return padded.reshape(b, h, n_q, tile, n_k, tile).any(dim=(3, 5))


def test_moba_block_mask_visits_exactly_the_needed_tiles():
    q, k, _ = qkv(lq=100, d=16, grad=False)
    sel = moba_selection(q, k, 8, 2)
    mask = sel[..., torch.arange(100) // 8] & torch.ones(100, 100, dtype=torch.bool).tril()
    bm = sparse._flex_block_mask(sel, torch.arange(100) // 8, 100, q_pos=torch.arange(100), tile=16)
    tiles = bm.to_dense().bool()[..., : -(-100 // 16)]
    assert torch.equal(tiles, token_tiles(mask, 16))  # visited tiles = tiles with a visible pair
    causal_tiles = token_tiles(torch.ones(1, 1, 100, 100, dtype=torch.bool).tril(), 16)
    assert tiles.sum(dim=(-1, -2)).max() < causal_tiles.sum()  # and fewer than causal attention visits


def test_moba_bfloat16_computes_in_fp32():
    q, k, v = (t.bfloat16() for t in qkv(lq=90, grad=False))
    ref = moba_reference(q.float(), k.float(), v.float(), 16, 3)  # same gates: same rounded inputs
    out = moba_attention(q, k, v, 16, 3)
    assert out.dtype == torch.bfloat16 and rel_rms(out, ref) < 5e-3  # bf16 output rounding only


def test_moba_bad_input():
    q, k, v = qkv(lq=10, grad=False)
    with pytest.raises(ValueError, match="q of shape"):
        moba_attention(q[0], k, v, 4, 2)
    with pytest.raises(ValueError, match="v of shape"):
        moba_attention(q, k, v[0], 4, 2)
    with pytest.raises(ValueError, match="block_size"):
        moba_attention(q, k, v, 0, 2)
    with pytest.raises(ValueError, match="top_k"):
        moba_attention(q, k, v, 4, 0)
    with pytest.raises(ValueError, match="exceeds k length"):
        moba_attention(torch.randn(2, 4, 11, 60), k, v, 4, 2)
    with pytest.raises(ValueError, match="must divide"):
        moba_attention(torch.randn(2, 3, 10, 60), k, v, 4, 2)
    with pytest.raises(ValueError, match="unknown backend"):
        moba_attention(q, k, v, 4, 2, backend="triton")
    qg = q.clone().requires_grad_()
    with pytest.raises(AttentionBackendError, match="no backward pass on CPU"):
        moba_attention(qg, k, v, 4, 2, backend="flex")


# -- VMoBA -----------------------------------------------------------------------------------------------
GRID = (3, 5, 6)
PARTITIONS = {"1d": (2,), "2d": (2, 4), "3d": (2, 2, 4)}


@pytest.mark.parametrize(("partition", "block"), [("1d", (2,)), ("2d", (2, 3)), ("3d", (2, 2, 3))])
def test_vmoba_block_ids_match_loop(partition, block):
    t_len, h_len, w_len = 3, 5, 7
    ids = vmoba_block_ids((t_len, h_len, w_len), partition, block)
    n_h, n_w = math.ceil(h_len / block[-2]) if partition != "1d" else 1, math.ceil(w_len / block[-1])
    expected = []
    for t in range(t_len):
        for h in range(h_len):
            for w in range(w_len):
                if partition == "1d":
                    expected.append(t // block[0])
                elif partition == "2d":
                    expected.append((h // block[0]) * n_w + w // block[1])
                else:
                    expected.append(((t // block[0]) * n_h + h // block[1]) * n_w + w // block[2])
    assert ids.tolist() == expected
    # every block is a contiguous box of the grid: 1d 2 (+1 partial), 2d 3 x 3, 3d 2 x 3 x 3 blocks
    assert int(ids.max()) + 1 == {"1d": 2, "2d": 9, "3d": 18}[partition]


def test_vmoba_partition_cycles_with_layer():
    assert [vmoba_partition_for_layer(i) for i in range(7)] == ["1d", "2d", "3d", "1d", "2d", "3d", "1d"]
    with pytest.raises(ValueError, match="layer_idx"):
        vmoba_partition_for_layer(-1)


def gate_case(gates: torch.Tensor):
    """q, k whose gates are ``gates [B, H, n, n]``: one-token blocks (grid (n, 1, 1), 1-D blocks of one
    frame) with one-hot keys, so ``q_t . mean(K_j) = gates[t, j]``; token ``t``'s own block is ``t``."""
    b, h, n, _ = gates.shape
    k = torch.eye(n).expand(b, h, n, n).contiguous()
    return gates.clone(), k, (n, 1, 1)


def test_vmoba_threshold_rule_by_hand():
    gates = torch.tensor(
        [
            [0.0, 1.0, 0.5, 0.2],  # own 0 has mass 0: add 1.0 -> 1.0 / 1.7 >= 0.25
            [0.1, 0.9, 0.0, 0.3],  # own mass 1.0 / 1.444 >= 0.25 already: nothing added
            [1.0, 0.8, 0.0, 0.6],  # own 0: 1.0 / 2.4 >= 0.25 after the first
            [0.0, 0.1, 0.2, 0.3],  # own 1.0 (normalised) of 2.0: kept alone
        ]
    )[None, None]
    q, k, grid = gate_case(gates)
    sel = vmoba_selection(q, k, grid, "1d", (1,), threshold=0.25)[0, 0]
    expected = [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
    assert sel.int().tolist() == expected
    # tau = 0.7: row 0 needs 1.19 of 1.7 -> 1.0 + 0.5; row 1 (0.69 alone) adds 0.33; row 2 needs
    # 1.68 of 2.4 -> 1.0 + 0.8; row 3 (0.5 alone) adds 0.67
    sel = vmoba_selection(q, k, grid, "1d", (1,), threshold=0.7)[0, 0]
    assert sel.int().tolist() == [[1, 1, 1, 0], [0, 1, 0, 1], [1, 1, 1, 0], [0, 0, 1, 1]]


def test_vmoba_threshold_head_and_global_scopes_by_hand():
    # two queries / blocks, two heads; scope "head" normalises over a head's 4 (query, block) entries
    gates = torch.tensor([[[0.0, 1.0], [0.2, 0.6]], [[0.0, 0.4], [1.0, 0.0]]])[None]
    q, k, grid = gate_case(gates)
    # head 0: own mass 0.6 of 1.8 (0.33): nothing more at tau 0.25; tau 0.5 adds (0, 1) = 1.0 only
    # head 1: own mass 0 of 1.4: tau 0.25 adds (1, 0) = 1.0; tau 0.5 needs 0.7 -> (1, 0) suffices
    sel = vmoba_selection(q, k, grid, "1d", (1,), threshold=0.25, scope="head")[0]
    assert sel.int().tolist() == [[[1, 0], [0, 1]], [[1, 0], [1, 1]]]
    sel = vmoba_selection(q, k, grid, "1d", (1,), threshold=0.5, scope="head")[0]
    assert sel.int().tolist() == [[[1, 1], [0, 1]], [[1, 0], [1, 1]]]
    # global: one scope over 8 entries, min 0 max 1; own mass 0.6 of 3.2; tau 0.45 needs 1.44:
    # add 1.0 (head 0, query 0, block 1) -> 1.6 reached; the equal 1.0 of head 1 comes later in
    # (head, query, block) order and stays out
    sel = vmoba_selection(q, k, grid, "1d", (1,), threshold=0.45, scope="global")[0]
    assert sel.int().tolist() == [[[1, 1], [0, 1]], [[1, 0], [0, 1]]]


def test_vmoba_top_k_scopes_by_hand():
    gates = torch.tensor([[[0.0, 5.0, 1.0], [4.0, 0.0, 3.0], [2.0, 9.0, 0.0]]])[None]  # 1 head, 3 queries
    q, k, grid = gate_case(gates)
    sel = vmoba_selection(q, k, grid, "1d", (1,), top_k=2)[0, 0]  # own + best other per query
    assert sel.int().tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    # per head: 3 own + the 3 best of the 6 others (9, 5, 4), wherever their queries are
    sel = vmoba_selection(q, k, grid, "1d", (1,), top_k=2, scope="head")[0, 0]
    assert sel.int().tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    sel = vmoba_selection(q, k, grid, "1d", (1,), top_k=1, scope="head")[0, 0]
    assert sel.int().tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    gates[0, 0, 1] = torch.tensor([4.0, 0.0, 4.5])
    sel = vmoba_selection(*gate_case(gates)[:2], grid, "1d", (1,), top_k=2, scope="head")[0, 0]
    assert sel.int().tolist() == [[1, 1, 0], [0, 1, 1], [0, 1, 1]]


def test_vmoba_selection_counts():
    q, k, _ = qkv(lq=90, d=16, grad=False)
    own = vmoba_block_ids(GRID, "3d", (2, 2, 4))
    for scope in ("query", "head", "global"):
        sel = vmoba_selection(q, k, GRID, "3d", (2, 2, 4), top_k=3, scope=scope)
        assert sel[..., torch.arange(sel.shape[-1])[None, :] == own[:, None]].all()
        per = {"query": sel.sum(-1), "head": sel.sum((-1, -2)), "global": sel.sum((-1, -2, -3))}[scope]
        assert (per == {"query": 3, "head": 3 * 90, "global": 3 * 90 * 4}[scope]).all()
    sel = vmoba_selection(q, k, GRID, "3d", (2, 2, 4), threshold=0.25)
    assert sel[..., torch.arange(sel.shape[-1])[None, :] == own[:, None]].all()
    assert 1 < sel.sum(-1).float().mean() < sel.shape[-1]


SELECTIONS = {
    "top2": dict(top_k=2),
    "tau": dict(threshold=0.25),
    "tau_head": dict(threshold=0.5, scope="head"),
}


@pytest.mark.parametrize("partition", list(PARTITIONS))
@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_vmoba_gather_matches_reference(partition, selection):
    q, k, v = qkv(lq=90)
    args = (GRID, partition, PARTITIONS[partition])
    kw = SELECTIONS[selection]
    check_forward_backward(
        lambda *t: vmoba_attention(*t, *args, backend="gather", **kw),
        lambda *t: vmoba_reference(*t, *args, **kw),
        q,
        k,
        v,
    )


@pytest.mark.parametrize("partition", ["2d", "3d"])
def test_vmoba_flex_and_dense_match_reference(partition):
    q, k, v = qkv(lq=90, grad=False)
    args = (GRID, partition, PARTITIONS[partition])
    ref = vmoba_reference(q, k, v, *args, top_k=3, scope="global")
    assert rel_rms(eager_flex(vmoba_attention, q, k, v, *args, top_k=3, scope="global"), ref) < TOL
    assert rel_rms(vmoba_attention(q, k, v, *args, top_k=3, scope="global", backend="dense"), ref) < TOL


def test_vmoba_one_token_grid():
    q, k, v = qkv(lq=1)
    check_forward_backward(
        lambda *t: vmoba_attention(*t, (1, 1, 1), "3d", (2, 2, 2)),
        lambda *t: vmoba_reference(*t, (1, 1, 1), "3d", (2, 2, 2)),
        q,
        k,
        v,
    )


def test_vmoba_bad_input():
    q, k, v = qkv(lq=90, grad=False)
    with pytest.raises(ValueError, match="grid"):
        vmoba_attention(q, k, v, (3, 5, 5), "1d", (1,))
    with pytest.raises(ValueError, match="grid"):
        vmoba_attention(q, k, v, (90, 1), "1d", (1,))
    with pytest.raises(ValueError, match="block"):
        vmoba_attention(q, k, v, GRID, "2d", (2,))
    with pytest.raises(ValueError, match="block"):
        vmoba_attention(q, k, v, GRID, "1d")
    with pytest.raises(ValueError, match="partition"):
        vmoba_attention(q, k, v, GRID, "4d", (1,))
    with pytest.raises(ValueError, match="not both"):
        vmoba_attention(q, k, v, GRID, "1d", (1,), top_k=2, threshold=0.3)
    with pytest.raises(ValueError, match="threshold"):
        vmoba_attention(q, k, v, GRID, "1d", (1,), threshold=1.5)
    with pytest.raises(ValueError, match="scope"):
        vmoba_attention(q, k, v, GRID, "1d", (1,), scope="batch")
    with pytest.raises(ValueError, match="q length"):
        vmoba_attention(q[:, :, :10], k, v, GRID, "1d", (1,))
    with pytest.raises(ValueError, match="k of shape"):
        vmoba_attention(q, k[0], v, GRID, "1d", (1,))


# -- DHSA ------------------------------------------------------------------------------------------------
def dhsa_mask_loop(q, k, lengths, budget):
    """DHSA's mask by its definition: sqrt(n)-scaled chunk means, S_t upsampled, per-query top budget
    of the keys j <= i, ties to the later key."""
    b_, h_, length, _ = q.shape
    groups = q.shape[1] // k.shape[1]
    starts = [sum(lengths[:c]) for c in range(len(lengths))]
    chunk_of = [c for c, n in enumerate(lengths) for _ in range(n)]
    out = torch.zeros(b_, h_, length, length, dtype=torch.bool)
    for b in range(b_):
        for h in range(h_):
            qc = [q[b, h, s : s + n].double().mean(0) * math.sqrt(n) for s, n in zip(starts, lengths)]
            kc = [
                k[b, h // groups, s : s + n].double().mean(0) * math.sqrt(n) for s, n in zip(starts, lengths)
            ]
            for i in range(length):
                score = {j: float(qc[chunk_of[i]] @ kc[chunk_of[j]]) for j in range(i + 1)}
                for j in sorted(score, key=lambda j: (score[j], j), reverse=True)[:budget]:
                    out[b, h, i, j] = True
    return out


@pytest.mark.parametrize(
    ("length", "lengths", "budget"),
    [(1, [1], 4), (37, None, 10), (37, [3, 10, 1, 7, 16], 12), (90, None, 25), (40, None, 100)],
)
def test_dhsa_mask_matches_loop(length, lengths, budget):
    q, k, _ = qkv(b=1, h=2, hkv=1, lq=length, d=8, grad=False)
    kw = dict(chunk_lengths=lengths) if lengths else dict(chunk_size=8)
    chunks = lengths or sparse._fixed_lengths(length, 8)
    mask = dhsa_mask(q, k, budget=budget, **kw)
    assert torch.equal(mask, dhsa_mask_loop(q, k, chunks, budget))
    assert torch.equal(mask.sum(-1), torch.clamp(torch.arange(1, length + 1), max=budget).expand(1, 2, -1))
    # the chunk-level plan the fast paths use selects the same keys
    plan = sparse._dhsa_plan(q, k, chunks, budget)
    assert torch.equal(sparse._plan_token_mask(*plan, chunks), mask)


def test_dhsa_budget_cut_keeps_the_most_recent_keys():
    # chunks [0..3], [4..7]; second-chunk queries prefer their own chunk (S_c[1, 1] = 4 > S_c[1, 0] = 0)
    q = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)[None, None]
    k = q.clone()
    mask = dhsa_mask(q, k, chunk_size=4, budget=6)[0, 0]
    assert torch.nonzero(mask[7]).flatten().tolist() == [2, 3, 4, 5, 6, 7]  # own chunk + 2 latest of chunk 0
    assert mask[5].tolist() == [True] * 6 + [False] * 2  # 2 own + 4 = budget
    # now chunk 0 ranks first for them: its 4 keys, then the own chunk's 2 most recent visible keys
    q2 = torch.tensor([[1.0, 0.0]] * 4 + [[1.0, 0.0]] * 4)[None, None]
    mask = dhsa_mask(q2, k, chunk_size=4, budget=6)[0, 0]
    assert torch.nonzero(mask[7]).flatten().tolist() == [0, 1, 2, 3, 6, 7]
    for m in (mask, dhsa_mask(q, k, chunk_size=4, budget=6)[0, 0]):
        assert not torch.triu(m, diagonal=1).any()


def reference_code_loop(q, k, block, sparsity):
    b_, h_, length, _ = q.shape
    n = math.ceil(length / block)
    top = max(1, math.floor((1 - sparsity) * length / block))
    out = torch.zeros(b_, h_, length, length, dtype=torch.bool)
    for b in range(b_):
        for h in range(h_):
            qm = [q[b, h, i * block : (i + 1) * block].double().mean(0) for i in range(n)]
            km = [k[b, h, i * block : (i + 1) * block].double().mean(0) for i in range(n)]
            for qb in range(n):
                score = {kb: float(qm[qb] @ km[kb]) for kb in range(qb + 1)}
                for kb in sorted(score, key=score.get, reverse=True)[:top]:
                    for i in range(qb * block, min((qb + 1) * block, length)):
                        for j in range(kb * block, min((kb + 1) * block, i + 1)):
                            out[b, h, i, j] = True
    return out


@pytest.mark.parametrize(("length", "sparsity"), [(1, 0.5), (61, 0.7), (61, 0.0), (100, 0.95)])
def test_dhsa_reference_code_mode_matches_loop(length, sparsity):
    q, k, _ = qkv(b=1, h=2, hkv=2, lq=length, d=8, grad=False)
    mask = dhsa_mask(q, k, chunk_size=8, mode="reference_code", sparsity=sparsity)
    assert torch.equal(mask, reference_code_loop(q, k, 8, sparsity))


DHSA_CASES = {
    "fixed": dict(chunk_size=16, budget=40),
    "given_chunks": dict(budget=20),  # chunk_lengths filled in per length
    "reference_code": dict(mode="reference_code", chunk_size=16, sparsity=0.7),
}


def dhsa_kwargs(case, length):
    kw = dict(DHSA_CASES[case])
    if case == "given_chunks":
        lengths, rest = [], length
        for n in [5, 13, 1, 9, 30] * 20:  # irregular chunks, the last one cut to fit
            lengths.append(min(n, rest))
            rest -= lengths[-1]
            if not rest:
                break
        kw["chunk_lengths"] = lengths
    return kw


@pytest.mark.parametrize("length", [1, 63, 200])
@pytest.mark.parametrize("case", list(DHSA_CASES))
def test_dhsa_gather_matches_reference(case, length):
    q, k, v = qkv(lq=length)
    kw = dhsa_kwargs(case, length)
    check_forward_backward(
        lambda *t: dhsa_attention(*t, backend="gather", **kw), lambda *t: dhsa_reference(*t, **kw), q, k, v
    )


@pytest.mark.parametrize("case", list(DHSA_CASES))
def test_dhsa_flex_and_dense_match_reference(case):
    q, k, v = qkv(lq=150, grad=False)
    kw = dhsa_kwargs(case, 150)
    ref = dhsa_reference(q, k, v, **kw)
    assert rel_rms(eager_flex(dhsa_attention, q, k, v, **kw), ref) < TOL
    assert rel_rms(dhsa_attention(q, k, v, backend="dense", **kw), ref) < TOL


def test_dhsa_with_budget_covering_everything_is_causal_attention():
    q, k, v = qkv(lq=70, grad=False)
    ref = attend(q, k, v, mask=causal(), backend="math")
    assert rel_rms(dhsa_attention(q, k, v, chunk_size=8, budget=70), ref) < TOL
    # released formula: k = floor((1 - sparsity) * L / block) = 8 of the 9 blocks of 70 tokens, so
    # sparsity 0 is causal attention only when the block size divides L
    q, k, v = (t[:, :, :64] for t in (q, k, v))
    ref = attend(q, k, v, mask=causal(), backend="math")
    assert rel_rms(dhsa_attention(q, k, v, chunk_size=8, mode="reference_code", sparsity=0.0), ref) < TOL


def test_dhsa_bad_input():
    q, k, v = qkv(lq=20, grad=False)
    with pytest.raises(ValueError, match="chunk_lengths sum to 19"):
        dhsa_attention(q, k, v, chunk_lengths=[10, 9], budget=4)
    with pytest.raises(ValueError, match="chunk_lengths"):
        dhsa_attention(q, k, v, chunk_lengths=[10, 0, 10], budget=4)
    with pytest.raises(ValueError, match="exactly one of chunk_size and chunk_lengths"):
        dhsa_attention(q, k, v, chunk_size=4, chunk_lengths=[20], budget=4)
    with pytest.raises(ValueError, match="budget"):
        dhsa_attention(q, k, v, chunk_size=4)
    with pytest.raises(ValueError, match="budget"):
        dhsa_attention(q, k, v, chunk_size=4, budget=0)
    with pytest.raises(ValueError, match="sparsity"):
        dhsa_attention(q, k, v, chunk_size=4, mode="reference_code", sparsity=1.0)
    with pytest.raises(ValueError, match="mode"):
        dhsa_attention(q, k, v, chunk_size=4, budget=4, mode="learned")
    with pytest.raises(ValueError, match="q length"):
        dhsa_attention(q[:, :, :5], k, v, chunk_size=4, budget=4)
    with pytest.raises(ValueError, match="q of shape"):
        dhsa_attention(q[0], k, v, chunk_size=4, budget=4)


# -- GPU: compiled FlexAttention with the data-dependent BlockMask, forward and backward ---------------
GPU_CASES = {
    "moba": (lambda *t, **kw: moba_attention(*t, 128, 3, **kw), lambda *t: moba_reference(*t, 128, 3)),
    "moba_small_blocks": (
        lambda *t, **kw: moba_attention(*t, 48, 4, **kw),
        lambda *t: moba_reference(*t, 48, 4),
    ),
    "vmoba_3d": (
        lambda *t, **kw: vmoba_attention(*t, (10, 10, 10), "3d", (4, 4, 4), **kw),
        lambda *t: vmoba_reference(*t, (10, 10, 10), "3d", (4, 4, 4)),
    ),
    "vmoba_2d_global": (
        lambda *t, **kw: vmoba_attention(*t, (10, 10, 10), "2d", (5, 5), top_k=2, scope="global", **kw),
        lambda *t: vmoba_reference(*t, (10, 10, 10), "2d", (5, 5), top_k=2, scope="global"),
    ),
    "dhsa": (
        lambda *t, **kw: dhsa_attention(*t, chunk_size=64, budget=300, **kw),
        lambda *t: dhsa_reference(*t, chunk_size=64, budget=300),
    ),
    "dhsa_reference_code": (
        lambda *t, **kw: dhsa_attention(*t, chunk_size=64, mode="reference_code", sparsity=0.8, **kw),
        lambda *t: dhsa_reference(*t, chunk_size=64, mode="reference_code", sparsity=0.8),
    ),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flex_on_gpu_forward_backward(name, dtype):
    fast, ref_fn = GPU_CASES[name]
    q, k, v = (t.cuda().to(dtype).detach().requires_grad_() for t in qkv(b=1, lq=1000, d=64, grad=False))
    ref = ref_fn(q.float(), k.float(), v.float())
    out = fast(q, k, v)  # auto = flex on CUDA
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert rel_rms(out, ref) < tol
    g_out = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        assert rel_rms(a, b) < 5 * tol
    if dtype == torch.float32:  # the gather path agrees on the GPU too
        assert rel_rms(fast(q, k, v, backend="gather"), ref) < tol


@pytest.mark.gpu
def test_flex_on_gpu_new_selection_does_not_recompile():
    from torch._dynamo.utils import counters

    q, k, v = (t.cuda() for t in qkv(b=1, lq=1000, d=64, grad=False))
    moba_attention(q, k, v, 128, 3)
    before = counters["stats"]["unique_graphs"]
    for seed in range(3):
        q2, k2, v2 = (t.cuda() for t in qkv(b=1, lq=1000, d=64, seed=seed + 1, grad=False))
        out = moba_attention(q2, k2, v2, 128, 3)
        assert rel_rms(out, moba_reference(q2, k2, v2, 128, 3)) < 1e-4
    assert counters["stats"]["unique_graphs"] == before
