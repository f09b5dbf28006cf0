"""KGAT and its baselines against hand-written references; PyG / DGL parity; the topk task end to end.

References are computed here, independently of the model code: TransR on a hand-computed case,
attention and propagation on a small graph with dense matrices and Python loops over the edges.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import interplay.recsys.ranking  # noqa: F401  (registers the topk task)
from interplay.core.config import from_dict
from interplay.core.errors import ConfigError, DataError
from interplay.core.train import ExperimentConfig, evaluate, train
from interplay.recsys.data.kg import KGData, KGDataModule
from interplay.recsys.models.kg_baselines import BPRMF, CKE, LightGCN
from interplay.recsys.models.kgat import KGAT, transr_distance, transr_loss
from interplay.recsys.registry import REGISTRY

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*IterableDataset.*__len__.*"),
    pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:DeprecationWarning"),
]


def tiny_data() -> KGData:
    """3 users, 4 items, 2 attribute entities (ids 4, 5), 2 KG relations; some heads share tails."""
    train = np.array([[0, 0], [0, 1], [1, 1], [1, 2], [1, 3], [2, 0], [2, 3]])
    triples = np.array([[0, 0, 4], [1, 0, 4], [2, 0, 5], [3, 1, 5], [0, 1, 5], [4, 1, 5]])
    return KGData(3, 4, 6, 2, train, np.zeros((0, 2), np.int64), np.array([[0, 2], [2, 1]]), triples)


def tiny_model(aggregator="bi", backend="pyg", **kwargs) -> KGAT:
    torch.manual_seed(0)
    model = KGAT(
        tiny_data().collaborative_graph(),
        embed_dim=5,
        relation_dim=3,
        layers=[4, 3],
        aggregator=aggregator,
        message_dropout=0.0,
        backend=backend,
        **kwargs,
    ).double()
    with torch.no_grad():
        model.embedding.normal_()  # O(1) values so that every term matters
        model.relation_embedding.normal_()
        model.projection.normal_()
    return model


# -- TransR ---------------------------------------------------------------------------------------------


def test_transr_on_a_hand_computed_case():
    head, tail, negative = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    relation = torch.tensor([[0.5, -1.0]])
    projection = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]])  # row vectors: W_r e = e @ projection
    # W h = (1, 2), W t = (0, 1), W t' = (1, 3)
    # g(h, r, t)  = ||(1, 2) + (0.5, -1) - (0, 1)||^2 = 1.5^2 + 0^2 = 2.25
    # g(h, r, t') = ||(1, 2) + (0.5, -1) - (1, 3)||^2 = 0.5^2 + 2^2 = 4.25
    assert transr_distance(head, relation, tail, projection).item() == pytest.approx(2.25)
    assert transr_distance(head, relation, negative, projection).item() == pytest.approx(4.25)
    loss, parts = transr_loss(head, relation, tail, negative, projection, l2=0.1)
    assert parts["transr"].item() == pytest.approx(math.log1p(math.exp(2.25 - 4.25)))
    # 0.1 * (|Wh|^2 + |r|^2 + |Wt|^2 + |Wt'|^2) / 2 / batch = 0.1 * (5 + 1.25 + 1 + 10) / 2
    assert parts["reg"].item() == pytest.approx(0.8625)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)) + 0.8625)


# -- attention and propagation against a dense reference ------------------------------------------------


def reference_attention(model: KGAT) -> torch.Tensor:
    """pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r), softmax over each head's triples, edge by edge."""
    e, w, rel = model.embedding.detach(), model.projection.detach(), model.relation_embedding.detach()
    heads, tails, relations = model.heads.tolist(), model.tails.tolist(), model.relations.tolist()
    scores = [
        float((e[t] @ w[r]) @ torch.tanh(e[h] @ w[r] + rel[r])) for h, r, t in zip(heads, relations, tails)
    ]
    out = []
    for k, h in enumerate(heads):
        same = [math.exp(scores[j]) for j, other in enumerate(heads) if other == h]
        out.append(math.exp(scores[k]) / sum(same))
    return torch.tensor(out, dtype=torch.float64)


def reference_propagation(model: KGAT, attention: torch.Tensor) -> torch.Tensor:
    n = model.n_nodes
    dense = torch.zeros(n, n, dtype=torch.float64)
    for h, t, a in zip(model.heads.tolist(), model.tails.tolist(), attention.tolist()):
        dense[h, t] += a
    ego = model.embedding.detach()
    outputs = [ego]
    for layer in model.layers:
        side = dense @ ego
        w1, b1 = layer.linear.weight.detach(), layer.linear.bias.detach()
        if layer.aggregator == "bi":  # Eq. 8
            w2, b2 = layer.linear_product.weight.detach(), layer.linear_product.bias.detach()
            ego = F.leaky_relu((ego + side) @ w1.T + b1, 0.2) + F.leaky_relu((ego * side) @ w2.T + b2, 0.2)
        elif layer.aggregator == "gcn":  # Eq. 6
            ego = F.leaky_relu((ego + side) @ w1.T + b1, 0.2)
        else:  # Eq. 7
            ego = F.leaky_relu(torch.cat([ego, side], 1) @ w1.T + b1, 0.2)
        outputs.append(ego / ego.norm(dim=1, keepdim=True))
    return torch.cat(outputs, 1)


@pytest.mark.parametrize("backend", ["pyg", "dgl"])
def test_attention_matches_the_formula_and_sums_to_one_per_head(backend):
    model = tiny_model(backend=backend)
    attention = model.compute_attention().detach()
    torch.testing.assert_close(attention, reference_attention(model))
    sums = torch.zeros(model.n_nodes, dtype=torch.float64).index_add_(0, model.heads, attention)
    has_edges = torch.bincount(model.heads, minlength=model.n_nodes) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum()), dtype=torch.float64))


@pytest.mark.parametrize("backend", ["pyg", "dgl"])
@pytest.mark.parametrize("aggregator", ["bi", "gcn", "graphsage"])
def test_propagation_equals_a_dense_small_graph_reference(aggregator, backend):
    model = tiny_model(aggregator, backend).eval()
    model.refresh_attention()
    expected = reference_propagation(model, reference_attention(model))
    torch.testing.assert_close(model.propagate().detach(), expected)
    index = torch.tensor([2, 0, 3 + 1, 3 + 1, 3 + 3, 8])  # duplicates and unsorted rows
    torch.testing.assert_close(model.propagate(index=index).detach(), expected[index])


def test_initial_attention_is_the_per_relation_random_walk_normalisation():
    model = tiny_model()
    heads, relations = model.heads.tolist(), model.relations.tolist()
    expected = [
        1.0 / sum(1 for h2, r2 in zip(heads, relations) if (h2, r2) == (h, r))
        for h, r in zip(heads, relations)
    ]
    torch.testing.assert_close(model.attention, torch.tensor(expected, dtype=torch.float64))


def test_refreshed_attention_drives_propagation_and_never_reproduces_the_reference_code():
    model = tiny_model().eval()
    before = model.propagate().detach()
    model.refresh_attention()
    assert not torch.allclose(model.attention, model.initial_attention())
    torch.testing.assert_close(model.propagate().detach(), reference_propagation(model, model.attention))
    assert not torch.allclose(model.propagate().detach(), before)
    frozen = tiny_model(attention_refresh="never").eval()
    frozen.refresh_attention()
    torch.testing.assert_close(frozen.attention, frozen.initial_attention())
    torch.testing.assert_close(frozen.propagate().detach(), before)


# -- PyG / DGL parity -----------------------------------------------------------------------------------


def batch_for(model):
    return {
        "users": torch.tensor([0, 1, 2]),
        "pos_items": torch.tensor([0, 2, 3]),
        "neg_items": torch.tensor([2, 0, 1]),
        "heads": torch.tensor([3, 5, 0]),
        "relations": torch.tensor([1, 2, 0]),
        "pos_tails": torch.tensor([4, 8, 3]),
        "neg_tails": torch.tensor([1, 2, 6]),
    }


def test_pyg_and_dgl_give_the_same_values_and_gradients():
    pyg, dgl = tiny_model(backend="pyg"), tiny_model(backend="dgl")
    dgl.load_state_dict(pyg.state_dict())
    projection = torch.randn(pyg.n_nodes, pyg.output_dim, dtype=torch.float64)
    grads, values = [], []
    for model in (pyg, dgl):
        model.zero_grad()
        # attention recomputed with gradients, then propagation under it: both backends' paths
        nodes = model.propagate(attention=model.compute_attention())
        loss = (nodes * projection).sum() + model.cf_loss(batch_for(model))[0]
        loss.backward()
        values.append((nodes.detach(), loss.detach()))
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    torch.testing.assert_close(values[0][0], values[1][0])
    torch.testing.assert_close(values[0][1], values[1][1])
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert grads[0][name].abs().max() > 0, name
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


# -- losses and options ---------------------------------------------------------------------------------


def test_kg_loss_is_transr_on_the_shared_embeddings_with_sparse_or_dense_gradients():
    for sparse in (True, False):
        model = tiny_model(sparse_kg_gradients=sparse)
        batch = batch_for(model)
        loss, _ = model.kg_loss(batch)
        e, r = model.embedding, batch["relations"]
        expected, _ = transr_loss(
            e[batch["heads"]], model.relation_embedding[r], e[batch["pos_tails"]], e[batch["neg_tails"]],
            model.projection[r], model.kg_l2,
        )  # fmt: skip
        torch.testing.assert_close(loss, expected)
        loss.backward()
        assert model.embedding.grad.is_sparse == sparse
        assert model.sparse_kg_parameters() == ([model.embedding] if sparse else [])


def test_cf_loss_is_bpr_on_the_final_representations():
    model = tiny_model()
    batch = batch_for(model)
    nodes = model.propagate().detach()
    u, p, n = nodes[batch["users"]], nodes[3 + batch["pos_items"]], nodes[3 + batch["neg_items"]]
    bpr = F.softplus(-((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = model.cf_l2 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 2 / 3
    loss, parts = model.cf_loss(batch)
    torch.testing.assert_close(parts["bpr"], bpr)
    torch.testing.assert_close(loss.detach(), bpr + reg)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"backend": "tensorflow"}, "model.params.backend"),
        ({"aggregator": "mean"}, "model.params.aggregator"),
        ({"attention_refresh": "always"}, "model.params.attention_refresh"),
        ({"message_dropout": [0.1, 0.1, 0.1]}, "model.params.message_dropout"),
    ],
)
def test_bad_parameters_name_their_key(params, key):
    with pytest.raises(ConfigError, match=key):
        KGAT(tiny_data().collaborative_graph(), layers=[4, 3], **params)


def test_pretrained_embeddings_are_loaded_and_checked(tmp_path):
    graph = tiny_data().collaborative_graph()
    users, items = np.random.rand(3, 5).astype(np.float32), np.random.rand(4, 5).astype(np.float32)
    np.savez(tmp_path / "mf.npz", user_embed=users, item_embed=items)
    model = KGAT(graph, embed_dim=5, layers=[4], pretrain=tmp_path / "mf.npz")
    torch.testing.assert_close(model.embedding[:3].detach(), torch.from_numpy(users))
    torch.testing.assert_close(model.embedding[3:7].detach(), torch.from_numpy(items))
    np.savez(tmp_path / "bad.npz", user_embed=users, item_embed=items[:2])
    with pytest.raises(DataError, match=r"bad.npz: item_embed has shape \(2, 5\)"):
        KGAT(graph, embed_dim=5, layers=[4], pretrain=tmp_path / "bad.npz")


# -- baselines -------------------------------------------------------------------------------------------


def test_bprmf_loss_by_hand():
    torch.manual_seed(1)
    model = BPRMF(3, 4, embed_dim=6, l2=0.01)
    batch = batch_for(model)
    u = model.user_embedding[batch["users"]]
    p, n = model.item_embedding[batch["pos_items"]], model.item_embedding[batch["neg_items"]]
    expected = (
        F.softplus(-((u * p).sum(1) - (u * n).sum(1))).mean()
        + 0.01 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 2 / 3
    )
    torch.testing.assert_close(model.cf_loss(batch)[0], expected)


@pytest.mark.parametrize("backend", ["pyg", "dgl"])
def test_lightgcn_equals_dense_symmetric_propagation(backend):
    data = tiny_data()
    torch.manual_seed(2)
    model = LightGCN(data.collaborative_graph(), embed_dim=4, layers=2, backend=backend)
    n = data.n_users + data.n_items
    adjacency = torch.zeros(n, n)
    for u, i in data.train:
        adjacency[u, 3 + i] = adjacency[3 + i, u] = 1.0
    degree = adjacency.sum(1)
    norm = adjacency / torch.sqrt(degree[:, None] * degree[None, :])
    e0 = model.embedding.detach()
    expected = (e0 + norm @ e0 + norm @ (norm @ e0)) / 3
    users, items = model.final_embeddings()
    torch.testing.assert_close(torch.cat([users, items]).detach(), expected)


def test_cke_item_representation_and_joint_loss():
    data = tiny_data()
    torch.manual_seed(3)
    model = CKE(data.n_users, data.n_items, data.n_entities, data.n_relations, embed_dim=4, relation_dim=3)
    _, items = model.final_embeddings()
    torch.testing.assert_close(items, model.item_embedding + model.entity_embedding[:4])
    batch = {**batch_for(model), "heads": torch.tensor([0, 2]), "relations": torch.tensor([0, 1]),
             "pos_tails": torch.tensor([4, 5]), "neg_tails": torch.tensor([1, 3])}  # fmt: skip
    loss, parts = model.cf_loss(batch)
    assert "transr" in parts and torch.isfinite(loss)
    loss.backward()
    assert model.projection.grad.abs().sum() > 0 and model.user_embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["kgat", "bprmf", "cke", "lightgcn"])
def test_every_registered_kg_model_trains_a_step(name):
    module = KGDataModule(tiny_data(), batch_size=4)
    factory = REGISTRY.models.get(name).factory
    import inspect

    accepted = inspect.signature(factory).parameters
    model = REGISTRY.models.create(name, **{k: v for k, v in module.info.items() if k in accepted})
    module.training_mode = model.training_mode
    batch = next(iter(module.train_dataloader()))
    loss, _ = model.cf_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    users, items = model.final_embeddings()
    assert users.shape[0] == 3 and items.shape[0] == 4 and users.shape[1] == items.shape[1]


# -- the topk task through the engine --------------------------------------------------------------------


def experiment(tmp_path, model: str, params: dict) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "domain": "recsys",
            "model": {"name": model, "params": params},
            "data": {
                "name": "synthetic-kg",
                "root": str(tmp_path / "data"),
                "batch_size": 64,
                "params": {"n_users": 40, "n_items": 60, "n_attributes": 12, "interactions_per_user": 8},
            },
            "task": {"name": "topk", "params": {"ks": [5, 20], "kgat_compat": True}},
            "optimizer": {"name": "adam", "lr": 0.01},
            "trainer": {
                "max_epochs": 2,
                "accelerator": "cpu",
                "monitor": "val/recall@20",
                "monitor_mode": "max",
                "progress_bar": False,
                "tensorboard": False,
            },
            "run_root": str(tmp_path / "runs"),
        },
    )


def test_topk_task_trains_kgat_alternately_and_restores_its_attention(tmp_path):
    from interplay.recsys.cli import _load

    _load()
    cfg = experiment(tmp_path, "kgat", {"embed_dim": 8, "relation_dim": 8, "layers": [8, 4]})
    result = train(cfg, REGISTRY)
    test = result.metrics["test"]
    assert {"test/recall@20", "test/ndcg@5", "test/ndcg_kgat@20", "test/precision@5", "test/hit@20"} <= set(
        test
    )
    rows = (Path(result.run_dir) / "metrics.csv").read_text()
    assert "train/kg_loss" in rows and "val/recall@20" in rows
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)
    attention = checkpoint["state_dict"]["model.attention"]
    from interplay.core.train import build_experiment

    task, _ = build_experiment(cfg, REGISTRY)
    assert not torch.allclose(attention, task.model.initial_attention())  # refreshed after the KG phase
    again = evaluate(result.best_checkpoint, REGISTRY)
    for name, value in test.items():
        assert again[name] == pytest.approx(value, abs=1e-6), name
    assert json.loads((Path(result.run_dir) / "metrics.json").read_text())["monitor"] == "val/recall@20"


def test_topk_task_trains_a_cf_only_baseline(tmp_path):
    result = train(experiment(tmp_path, "bprmf", {"embed_dim": 8}), REGISTRY)
    assert 0.0 <= result.metrics["test"]["test/recall@20"] <= 1.0
    assert "train/kg_loss" not in (Path(result.run_dir) / "metrics.csv").read_text()


def test_column_blocked_sparse_product_is_exact_and_differentiates_through_the_transpose():
    from interplay.recsys.models.kgat import SparsePropagation, blocked_spmm

    torch.manual_seed(0)
    n, edges = 50, 300
    edge_index = torch.randint(0, n, (2, edges))
    weights = torch.rand(edges)
    x = torch.randn(n, 37, dtype=torch.float64)
    dense = torch.zeros(n, n, dtype=torch.float64).index_put_(
        (edge_index[1], edge_index[0]), weights.double(), accumulate=True
    )
    matrix = dense.to_sparse_csr()
    # a budget of 8 columns' bytes forces 5 blocks, the last one 5 columns wide
    torch.testing.assert_close(blocked_spmm(matrix, x, budget=8 * n * 8), dense @ x)
    # through the propagation's autograd function (forward A x, backward A^T g) with blocks
    import interplay.recsys.models.kgat as kgat_module

    old = kgat_module.GATHER_BUDGET
    kgat_module.GATHER_BUDGET = 8 * n * 4
    try:
        propagation = SparsePropagation(edge_index, n)
        x32 = torch.randn(n, 21, requires_grad=True)
        out = propagation(x32, weights)
        grad = torch.randn_like(out)
        out.backward(grad)
        calls = []
        real_mm = torch.sparse.mm
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.sparse, "mm", lambda *a: calls.append(a[1].shape) or real_mm(*a))
            propagation(x32, weights)
        assert [shape[1] for shape in calls] == [8, 8, 5]  # the forward ran in column blocks
        torch.testing.assert_close(out, dense.float() @ x32.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x32.grad, dense.float().T @ grad, rtol=1e-5, atol=1e-5)
    finally:
        kgat_module.GATHER_BUDGET = old
