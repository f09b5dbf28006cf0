"""CTR baselines (DNN, DCN-v2, AutoInt) against hand-written formulas, plus every registered CTR model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import interplay.recsys.models.baselines  # noqa: F401  (registers dnn, dcnv2, autoint)
import interplay.recsys.models.hiformer  # noqa: F401  (registers hiformer)
from interplay.recsys.layout import FeatureLayout, FieldInfo, random_batch
from interplay.recsys.models.baselines import CrossNetwork, DCNv2, InteractingLayer
from interplay.recsys.registry import REGISTRY

# the CTR models these files register, with the variants worth sweeping
MODELS = ["hiformer", "dnn", "dcnv2", "autoint"]
VARIANTS = [
    ("hiformer", {}),
    ("hiformer", {"rank_k": 8, "rank_v": 8, "prune_last": True, "task_tokens": 2}),
    ("dnn", {}),
    ("dnn", {"batch_norm": True, "dropout": 0.1}),
    ("dcnv2", {}),
    ("dcnv2", {"structure": "stacked", "rank": 4}),
    ("dcnv2", {"rank": 4, "experts": 3}),
    ("autoint", {}),
    ("autoint", {"dnn": True, "scaled": True}),
]


def make_layout(n_categorical: int, n_numeric: int, vocab: int = 20) -> FeatureLayout:
    categorical = tuple(FieldInfo(f"c{i}", "categorical", vocab) for i in range(n_categorical))
    numeric = tuple(FieldInfo(f"n{i}", "numeric") for i in range(n_numeric))
    return FeatureLayout(categorical, numeric)


LAYOUTS = {"mixed": make_layout(4, 3), "no-numeric": make_layout(5, 0), "no-categorical": make_layout(0, 4)}


def test_cross_layer_full_rank_equals_formula():
    torch.manual_seed(0)
    D, B = 6, 3
    net = CrossNetwork(D, layers=2).double()
    with torch.no_grad():
        net.bias.normal_()
    x0 = torch.randn(B, D, dtype=torch.float64)
    W, b = net.weight, net.bias
    for n in range(B):
        x1 = x0[n] * (torch.mv(W[0], x0[n]) + b[0]) + x0[n]  # Eq. (1), l = 0
        x2 = x0[n] * (torch.mv(W[1], x1) + b[1]) + x1
        torch.testing.assert_close(net.layer(0, x0, x0)[n], x1)
        torch.testing.assert_close(net(x0)[n], x2)


def test_cross_layer_low_rank_and_mixture_equal_formulas():
    torch.manual_seed(1)
    D, B, r, K = 7, 4, 3, 2
    x0, x = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    low = CrossNetwork(D, layers=1, rank=r).double()
    with torch.no_grad():
        low.bias.normal_()
    U, V, b = low.u[0, 0], low.v[0, 0], low.bias[0]  # stored u is U^T: W = U V^T
    for n in range(B):
        expected = x0[n] * (torch.mv(U.T, torch.mv(V.T, x[n])) + b) + x[n]  # Eq. (2)
        torch.testing.assert_close(low.layer(0, x0, x)[n], expected)
    mix = CrossNetwork(D, layers=1, rank=r, experts=K).double()
    with torch.no_grad():
        mix.bias.normal_()
    for n in range(B):
        gates = torch.softmax(torch.stack([x[n] @ mix.gate[0][:, i] for i in range(K)]), dim=0)
        experts = []
        for i in range(K):  # Eq. (4): E_i = x0 ⊙ (U g(C g(V^T x)) + b), g = tanh
            h = torch.tanh(torch.mv(mix.v[0, i].T, x[n]))
            h = torch.tanh(torch.mv(mix.c[0, i].T, h))
            experts.append(x0[n] * (torch.mv(mix.u[0, i].T, h) + mix.bias[0]))
        expected = sum(g * e for g, e in zip(gates, experts)) + x[n]  # Eq. (3)
        torch.testing.assert_close(mix.layer(0, x0, x)[n], expected)


@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("backend", ["auto", "math"])
def test_autoint_interacting_layer_equals_softmax_reference(scaled, backend):
    torch.manual_seed(2)
    B, F_, d, H, dh = 3, 5, 6, 2, 4
    layer = InteractingLayer(d, H, dh, scaled=scaled, backend=backend).double()
    x = torch.randn(B, F_, d, dtype=torch.float64)
    heads = []
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        q = x @ layer.query.weight[rows].T
        k = x @ layer.key.weight[rows].T
        v = x @ layer.value.weight[rows].T
        scores = q @ k.transpose(1, 2)  # Eq. (5): <W_Q e_m, W_K e_k>
        if scaled:
            scores = scores / dh**0.5
        heads.append(torch.softmax(scores, dim=-1) @ v)  # Eq. (6)
    expected = F.relu(torch.cat(heads, dim=-1) + x @ layer.residual.weight.T)  # Eq. (7)-(8)
    torch.testing.assert_close(layer(x), expected)


def test_dcnv2_structures_differ_and_validate():
    layout = make_layout(3, 2)
    batch = random_batch(layout, 4)
    assert DCNv2(layout, structure="stacked")(batch).shape == (4,)
    with pytest.raises(ValueError, match="structure"):
        DCNv2(layout, structure="sideways")
    with pytest.raises(ValueError, match="rank"):
        CrossNetwork(8, experts=2)


def test_models_are_registered():
    for name in MODELS:
        assert name in REGISTRY.models
        assert REGISTRY.models.get(name).description


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("name, kwargs", VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)])
def test_registered_models_logits_and_gradients(name, kwargs, layout_name):
    torch.manual_seed(0)
    layout = LAYOUTS[layout_name]
    model = REGISTRY.models.create(name, layout=layout, dim=8, **kwargs)
    batch = random_batch(layout, 6)
    logits = model(batch)
    assert logits.shape == (6,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, batch["label"]).backward()
    for pname, p in model.named_parameters():
        if p.numel() == 0:  # the empty numeric table of a layout without numeric fields
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, (name, kwargs, pname)
    model.eval()
    with torch.inference_mode():
        assert model(random_batch(layout, 1)).shape == (1,)


@pytest.mark.parametrize("name", MODELS)
def test_empty_layout_is_rejected(name):
    with pytest.raises(ValueError, match="at least one"):
        REGISTRY.models.create(name, layout=FeatureLayout())


@pytest.mark.parametrize("name", MODELS)
def test_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    layout = make_layout(6, 3, vocab=50)
    model = REGISTRY.models.create(name, layout=layout, dim=8)
    batch = random_batch(layout, 32, seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch), batch["label"])
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (name, losses[0], losses[-1])
