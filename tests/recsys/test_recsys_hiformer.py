"""Hiformer: heterogeneous attention, composite / low-rank projections and pruning against loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from interplay.recsys.layout import FeatureLayout, FieldInfo, random_batch
from interplay.recsys.models.hiformer import (
    HeterogeneousAttention,
    Hiformer,
    HiformerLayer,
    hiformer_layer_parameters,
)
from interplay.recsys.registry import REGISTRY


def make_layout(n_categorical: int, n_numeric: int, vocab: int = 20, sequence: bool = False) -> FeatureLayout:
    categorical = tuple(FieldInfo(f"c{i}", "categorical", vocab) for i in range(n_categorical))
    numeric = tuple(FieldInfo(f"n{i}", "numeric") for i in range(n_numeric))
    if sequence:
        seq = FieldInfo("history", "sequence", vocab, shares_with="c0")
        return FeatureLayout(categorical, numeric, sequence=seq, max_sequence_length=5)
    return FeatureLayout(categorical, numeric)


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (zero biases and unit LayerNorms would hide indexing bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


def heads_slice(h: int, width: int) -> slice:
    return slice(h * width, (h + 1) * width)


def attention_loop(queries, keys, values, d_k):
    """Per-query softmax over keys, one query / head at a time: lists of vectors in, vector out."""
    scores = torch.stack([queries @ k / math.sqrt(d_k) for k in keys])
    weights = torch.softmax(scores, dim=0)
    return sum(w * v for w, v in zip(weights, values))


@pytest.mark.parametrize("backend", ["auto", "math"])
def test_heterogeneous_attention_matches_per_feature_loop(backend):
    torch.manual_seed(0)
    L, d, H, d_k, d_v, B = 5, 6, 2, 3, 4, 3
    layer = HeterogeneousAttention(L, d, H, d_k, d_v, backend=backend).double()
    randomise(layer)
    x = torch.randn(B, L, d, dtype=torch.float64)
    out = layer(x)
    Wq, Wk, Wv = layer.query.weight, layer.key.weight, layer.value.weight
    Wo, bo = layer.out.weight, layer.out.bias
    expected = torch.empty(B, L, d, dtype=torch.float64)
    for b in range(B):
        for i in range(L):
            heads = []
            for h in range(H):
                q = x[b, i] @ Wq[i][:, heads_slice(h, d_k)]  # per-token Q_i
                keys = [x[b, j] @ Wk[j][:, heads_slice(h, d_k)] for j in range(L)]  # per-token K_j
                values = [x[b, j] @ Wv[j][:, heads_slice(h, d_v)] for j in range(L)]
                heads.append(attention_loop(q, keys, values, d_k))
            expected[b, i] = torch.cat(heads) @ Wo[i] + bo[i]
    torch.testing.assert_close(out, expected)
    # only the first tokens asking queries gives the first rows
    torch.testing.assert_close(layer(x, query_tokens=2), expected[:, :2])


def hiformer_layer_loop(layer: HiformerLayer, x: torch.Tensor) -> torch.Tensor:
    """HiformerLayer written out token by token, block by block (Sec. 4.3)."""
    B, L, d = x.shape
    H, d_k, d_v = layer.heads, layer.d_k, layer.d_v
    K_hat, V_hat = layer.key.matrix(), layer.value.matrix()
    Wq, Wo, bo = layer.query.weight, layer.out.weight, layer.out.bias
    n_q = layer.n_queries
    out = torch.empty(B, n_q, d, dtype=x.dtype)
    for b in range(B):
        # composite projections: key j sums the (m, j) blocks of K̂ over all tokens m
        keys = [
            sum(x[b, m] @ K_hat[m * d : (m + 1) * d, j * H * d_k : (j + 1) * H * d_k] for m in range(L))
            for j in range(L)
        ]
        values = [
            sum(x[b, m] @ V_hat[m * d : (m + 1) * d, j * H * d_v : (j + 1) * H * d_v] for m in range(L))
            for j in range(L)
        ]
        for i in range(n_q):
            heads = []
            for h in range(H):
                q = x[b, i] @ Wq[i][:, heads_slice(h, d_k)]
                ks = [k[heads_slice(h, d_k)] for k in keys]
                vs = [v[heads_slice(h, d_v)] for v in values]
                heads.append(attention_loop(q, ks, vs, d_k))
            attended = torch.cat(heads) @ Wo[i] + bo[i]
            h1 = F.layer_norm(x[b, i] + attended, (d,), layer.norm1.weight, layer.norm1.bias)
            hidden = torch.relu(h1 @ layer.ffn_in.weight[i] + layer.ffn_in.bias[i])
            ffn = hidden @ layer.ffn_out.weight[i] + layer.ffn_out.bias[i]
            out[b, i] = F.layer_norm(h1 + ffn, (d,), layer.norm2.weight, layer.norm2.bias)
    return out


@pytest.mark.parametrize("rank", [None, 5])
def test_hiformer_layer_matches_loop(rank):
    torch.manual_seed(1)
    L, d, H, d_k, d_v, B = 4, 6, 2, 3, 5, 2
    layer = HiformerLayer(L, d, H, d_k, d_v, rank_k=rank, rank_v=rank, ffn_dim=7).double()
    randomise(layer)
    x = torch.randn(B, L, d, dtype=torch.float64)
    torch.testing.assert_close(layer(x), hiformer_layer_loop(layer, x))


def test_full_rank_factorisation_equals_composite_layer():
    torch.manual_seed(2)
    L, d, H, d_k, d_v, B = 4, 5, 2, 3, 4, 3
    full = HiformerLayer(L, d, H, d_k, d_v).double()
    randomise(full)
    low = HiformerLayer(L, d, H, d_k, d_v, rank_k=L * d, rank_v=L * d).double()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith(("key.", "value."))}
    eye = torch.eye(L * d, dtype=torch.float64)
    state |= {
        "key.left": eye,
        "key.right": full.key.weight.detach().T.clone(),
        "value.left": eye,
        "value.right": full.value.weight.detach().T.clone(),
    }
    low.load_state_dict(state)
    torch.testing.assert_close(low.key.matrix(), full.key.weight.detach())
    x = torch.randn(B, L, d, dtype=torch.float64)
    torch.testing.assert_close(low(x), full(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rank", [None, 6])
def test_pruned_layer_equals_task_rows_of_unpruned(rank):
    torch.manual_seed(3)
    L, d, t, B = 7, 8, 2, 4
    layer = HiformerLayer(L, d, 2, 4, 4, rank_k=rank, rank_v=rank).double()
    randomise(layer)
    x = torch.randn(B, L, d, dtype=torch.float64)
    pruned = layer.prune(t)
    assert pruned.prune_to == t and pruned.query.weight.shape[0] == t
    out = pruned(x)
    assert out.shape == (B, t, d)
    torch.testing.assert_close(out, layer(x)[:, :t])
    # the same through the model: pruning the last layer leaves the logits unchanged
    layout = make_layout(5, 6)
    model = Hiformer(layout, dim=8, task_tokens=t).double().eval()
    batch = random_batch(layout, B)
    batch["numeric"] = batch["numeric"].double()
    expected = model(batch)
    model.layers[-1] = model.layers[-1].prune(t)
    torch.testing.assert_close(model(batch), expected)


def test_gradients_reach_all_parameters():
    layout = make_layout(4, 5)
    batch = random_batch(layout, 6)
    for kwargs in (
        {},
        {"rank_k": 8, "rank_v": 4, "prune_last": True, "task_tokens": 2},
        {"shared_ffn": True},
    ):
        model = Hiformer(layout, dim=8, layers=2, **kwargs)
        model(batch).sum().backward()
        for name, p in model.named_parameters():
            if p.numel() == 0:  # FeatureEmbedding's empty numeric table (Hiformer projects numerics)
                continue
            assert p.grad is not None and p.grad.abs().sum() > 0, (kwargs, name)


@pytest.mark.parametrize(
    "n_categorical, n_numeric, dense_tokens, expected_dense",
    [(26, 13, None, 4), (6, 0, None, 0), (0, 5, None, 2), (3, 1, None, 1), (3, 4, 4, 4), (1, 0, None, 0)],
)
def test_shapes_across_layouts(n_categorical, n_numeric, dense_tokens, expected_dense):
    layout = make_layout(n_categorical, n_numeric)
    model = Hiformer(layout, dim=8, task_tokens=2, dense_tokens=dense_tokens, prune_last=True)
    assert model.dense_tokens == expected_dense
    assert model.n_tokens == 2 + n_categorical + expected_dense
    batch = random_batch(layout, 5)
    assert model.tokens(batch).shape == (5, model.n_tokens, 8)
    assert model.forward_features(batch).shape == (5, 2, 8)
    logits = model(batch)
    assert logits.shape == (5,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_sequence_layout_and_registry():
    layout = make_layout(3, 2, sequence=True)
    model = REGISTRY.models.create("hiformer", layout=layout, dim=8, rank_k=4, rank_v=4)
    assert isinstance(model, Hiformer)
    assert model(random_batch(layout, 3)).shape == (3,)
    assert "hiformer" in REGISTRY.models


def test_bad_configurations_fail_clearly():
    with pytest.raises(ValueError, match="no numeric fields"):
        Hiformer(make_layout(3, 0), dense_tokens=2)
    with pytest.raises(ValueError, match="at least one"):
        Hiformer(make_layout(0, 0))
    with pytest.raises(ValueError, match="prune_to"):
        HiformerLayer(4, 8, prune_to=5)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "rank_k, rank_v, prune_to", [(None, None, None), (64, 64, None), (64, 32, 1), (None, None, 1)]
)
def test_parameter_counts_match_formulas(rank_k, rank_v, prune_to):
    L, d, H, d_k, d_v = 31, 16, 2, 8, 8
    layer = HiformerLayer(L, d, H, d_k, d_v, rank_k=rank_k, rank_v=rank_v, prune_to=prune_to)
    assert count(layer) == hiformer_layer_parameters(L, d, H, d_k, d_v, rank_k, rank_v, prune_to)
    # the composite projections alone: L d x L H d_k full, r (L d + L H d_k) factorised
    expected_key = L * d * L * H * d_k if rank_k is None else rank_k * (L * d + L * H * d_k)
    assert count(layer.key) == expected_key


def test_model_parameter_count_criteo_layout():
    layout = make_layout(26, 13, vocab=1000)
    for kwargs in ({}, {"rank_k": 64, "rank_v": 64}, {"rank_k": 64, "rank_v": 64, "prune_last": True}):
        model = Hiformer(layout, **kwargs)
        L, d, t = model.n_tokens, 16, 1
        assert L == 1 + 26 + 4
        layers = hiformer_layer_parameters(
            L, d, rank_k=kwargs.get("rank_k"), rank_v=kwargs.get("rank_v")
        ) + hiformer_layer_parameters(
            L,
            d,
            rank_k=kwargs.get("rank_k"),
            rank_v=kwargs.get("rank_v"),
            prune_to=t if kwargs.get("prune_last") else None,
        )
        embeddings = 26 * 1000 * d + (13 * 4 * d + 4 * d) + t * d
        input_norm = 2 * d
        head = (t * d * 64 + 64) + (64 + 1)
        assert count(model) == embeddings + input_norm + layers + head
