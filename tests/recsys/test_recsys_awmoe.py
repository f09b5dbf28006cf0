"""Sequence-aware CTR models: DIN's activation unit and pooling, the plain MoE, and AW-MoE's gate
network, behaviour masking and contrastive loss (hand-computed cases), plus a sweep over the three
registered models and a quick learning check on a "target in history" task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from interplay.recsys.layout import FeatureLayout, FieldInfo, random_batch
from interplay.recsys.models.awmoe import AWMoE, info_nce, mask_behaviours
from interplay.recsys.models.din import DIN, ActivationUnit
from interplay.recsys.models.moe import MoE
from interplay.recsys.registry import REGISTRY

MODELS = ("awmoe", "din", "moe")


LAYOUT = FeatureLayout(
    categorical=(
        FieldInfo("user", "categorical", 20),
        FieldInfo("item", "categorical", 30),
        FieldInfo("category", "categorical", 5),
    ),
    numeric=(FieldInfo("price", "numeric"),),
    sequence=FieldInfo("history", "sequence", 30, shares_with="item"),
    max_sequence_length=6,
)


def hand_activation(unit: ActivationUnit, items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``w2 . prelu(W1 [b, t, b - t, b * t] + b1) + b2`` for every position (PReLU unit, one hidden layer)."""
    linear1, prelu, linear2 = unit.mlp.layers
    t = target.unsqueeze(1).expand_as(items)
    x = torch.cat([items, t, items - t, items * t], dim=-1)
    h = x @ linear1.weight.T + linear1.bias
    h = torch.where(h >= 0, h, prelu.weight * h)
    return (h @ linear2.weight.T + linear2.bias).squeeze(-1)


def test_activation_unit_equals_hand_formula():
    torch.manual_seed(0)
    unit = ActivationUnit(3, hidden=(4,))
    with torch.no_grad():
        unit.mlp.layers[1].weight.uniform_(0.1, 0.5)  # a non-default PReLU slope per channel
    items, target = torch.randn(2, 3, 3), torch.randn(2, 3)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    scores = unit(items, target, mask)
    expected = hand_activation(unit, items, target) * mask
    torch.testing.assert_close(scores, expected)
    assert (scores[~mask] == 0).all()
    unit.pack_real_items = True  # the Dice path scores only the real items: same numbers
    torch.testing.assert_close(unit(items, target, mask), expected)


def test_din_ignores_padding_and_pools_without_softmax():
    torch.manual_seed(0)
    model = DIN(LAYOUT).eval()
    batch = random_batch(LAYOUT, 16, seed=1)
    batch["sequence_length"][0] = 0
    batch["sequence"][0] = 0
    reference = model(batch)
    padded = ~(torch.arange(6)[None, :] < batch["sequence_length"][:, None])
    noisy = dict(batch, sequence=batch["sequence"].masked_fill(padded, 7))  # junk ids beyond the length
    longer = dict(batch, sequence=F.pad(batch["sequence"], (0, 3)))  # more padding columns
    torch.testing.assert_close(model(noisy), reference)
    torch.testing.assert_close(model(longer), reference)

    # weighted *sum* pooling: repeating the one behaviour doubles v_U (a softmax would leave it unchanged)
    first = {k: v[:1] for k, v in batch.items()}
    one = dict(first, sequence=torch.tensor([[5, 0, 0]]), sequence_length=torch.tensor([1]))
    two = dict(one, sequence=torch.tensor([[5, 5, 0]]), sequence_length=torch.tensor([2]))
    with torch.no_grad():
        single, double = model.user_interest(one), model.user_interest(two)
        items, mask = model.embedding.embed_sequence(batch)
        target = model.embedding.target(batch)
        scores = model.activation_unit(items, target, mask)
    assert single.abs().sum() > 0
    torch.testing.assert_close(double, 2 * single)
    torch.testing.assert_close(model.user_interest(batch), (scores.unsqueeze(-1) * items).sum(1))
    assert not torch.allclose(scores[mask.any(1)].sum(-1), torch.ones(int(mask.any(1).sum())))


def test_awmoe_gate_is_attention_weighted_sum_of_expert_vectors():
    torch.manual_seed(0)
    layout = FeatureLayout(
        categorical=(FieldInfo("item", "categorical", 6),),
        sequence=FieldInfo("history", "sequence", 6, shares_with="item"),
        max_sequence_length=3,
    )
    model = AWMoE(layout, dim=2, experts=3, attention_hidden=(4,)).eval()
    batch = {
        "categorical": torch.tensor([[2], [4]]),
        "numeric": torch.zeros(2, 0),
        "sequence": torch.tensor([[1, 3, 0], [5, 0, 0]]),
        "sequence_length": torch.tensor([2, 1]),
    }
    table = model.embedding.tables[0].weight
    items, target = table[batch["sequence"]], table[batch["categorical"][:, 0]]
    mask = batch["sequence"] != 0
    a = hand_activation(model.activation_unit, items, target)  # [B, L]
    g = items @ model.gate_unit.weight.T + model.gate_unit.bias  # [B, L, K]
    z = torch.stack(
        [a[0, 0] * g[0, 0] + a[0, 1] * g[0, 1], a[1, 0] * g[1, 0]]  # only the real behaviours
    )
    torch.testing.assert_close(model.gate_vector(items * mask[..., None], target, mask), z)
    torch.testing.assert_close(model.gate_weights(batch), torch.softmax(z, dim=-1))
    raw = AWMoE(layout, dim=2, experts=3, attention_hidden=(4,), gate_normalization="none")
    raw.load_state_dict(model.state_dict())
    torch.testing.assert_close(raw.gate_weights(batch), z)


def test_masking_drops_about_p_of_real_items_and_never_padding():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 51, (400,), generator=gen)
    mask = torch.arange(50)[None, :] < lengths[:, None]
    keep = mask_behaviours(mask, 0.3, generator=gen)
    assert not (keep & ~mask).any()  # padding is never turned into an item
    dropped = (mask & ~keep).sum() / mask.sum()
    assert abs(dropped.item() - 0.3) < 0.02
    assert torch.equal(mask_behaviours(mask, 0.0), mask)
    assert not mask_behaviours(mask, 1.0).any()
    with pytest.raises(ValueError, match="probability"):
        mask_behaviours(mask, 1.5)


def test_info_nce_matches_hand_computation_and_prefers_agreeing_views():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    tau = 0.5

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v, strict=True)) / math.hypot(*u) / math.hypot(*v)

    s = [[cos(u, v) / tau for v in z2.tolist()] for u in z1.tolist()]
    rows = [-s[i][i] + math.log(sum(math.exp(x) for x in s[i])) for i in range(3)]
    cols = [-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(3))) for j in range(3)]
    expected = 0.5 * (sum(rows) / 3 + sum(cols) / 3)
    assert info_nce(z1, z2, tau).item() == pytest.approx(expected, rel=1e-5)

    # agreeing views beat every mismatched pairing of the same vectors (InfoNCE is not minimal at
    # z2 = z1 over all z2: pushing the negatives further apart lowers it more)
    agree = info_nce(z1, z1, tau)
    for perm in ([0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]):
        assert agree < info_nce(z1, z1[perm], tau)
    one_hot = torch.eye(3)  # orthogonal agreeing views: log(1 + (n - 1) e^{-1/tau}) in both directions
    assert info_nce(one_hot, one_hot, tau).item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / tau)))


def test_contrastive_gradient_reaches_gate_network_only():
    torch.manual_seed(0)
    model = AWMoE(LAYOUT).train()
    batch = random_batch(LAYOUT, 32, seed=2)
    logits, aux = model.training_step_outputs(batch)
    assert logits.shape == (32,) and set(aux) == {"contrastive"} and aux["contrastive"].dim() == 0
    aux["contrastive"].backward()
    assert model.gate_unit.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.activation_unit.parameters())
    assert all(p.grad is None for p in model.experts.parameters())  # CL acts on the gate network

    # both positive-pair choices reach the gate; two masked views differ from (full, masked)
    torch.manual_seed(3)
    full_view = AWMoE(LAYOUT).train()
    state = full_view.state_dict()
    masked_views = AWMoE(LAYOUT, contrast_with="masked").train()
    masked_views.load_state_dict(state)
    _, items, mask, target = full_view._inputs(batch)
    z_full = full_view.gate_vector(items, target, mask)
    torch.manual_seed(4)
    with_full = full_view.contrastive_loss(items, target, mask)
    torch.manual_seed(4)
    expected = info_nce(z_full, full_view.gate_vector(items, target, mask_behaviours(mask, 0.3)), 0.1)
    torch.testing.assert_close(with_full, expected)
    torch.manual_seed(4)
    assert not torch.allclose(masked_views.contrastive_loss(items, target, mask), with_full)
    with pytest.raises(ValueError, match="contrast_with"):
        AWMoE(LAYOUT, contrast_with="original")

    off = AWMoE(LAYOUT, use_contrastive=False).train()
    logits, aux = off.training_step_outputs(batch)
    assert aux == {} and logits.shape == (32,)
    # in eval the task calls forward(): deterministic, no masking
    model.eval()
    torch.testing.assert_close(model(batch), model(batch))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("activation", ["prelu", "dice"])
def test_registered_models_give_finite_logits_and_gradients(name, activation):
    torch.manual_seed(0)
    model = REGISTRY.models.create(name, layout=LAYOUT, activation=activation).train()
    batch = random_batch(LAYOUT, 16, seed=3)
    batch["sequence"][:4] = 0  # users without any behaviour
    batch["sequence_length"][:4] = 0
    if hasattr(model, "training_step_outputs"):
        logits, aux = model.training_step_outputs(batch)
    else:
        logits, aux = model(batch), {}
    assert logits.shape == (16,) and torch.isfinite(logits).all()
    loss = F.binary_cross_entropy_with_logits(logits, batch["label"]) + sum(aux.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.embedding.tables[1].weight.grad.abs().sum() > 0

    model.eval()
    empty = dict(batch, sequence=torch.zeros_like(batch["sequence"]), sequence_length=torch.zeros(16).long())
    with torch.no_grad():
        assert torch.isfinite(model(empty)).all()
        assert torch.isfinite(model({k: v[:1] for k, v in batch.items()})).all()  # batch of one


def test_training_on_only_empty_sequences_has_no_nan():
    for name in MODELS:
        model = REGISTRY.models.create(name, layout=LAYOUT, activation="dice").train()
        batch = random_batch(LAYOUT, 8, seed=4)
        batch["sequence"].zero_()
        batch["sequence_length"].zero_()
        out = (
            model.training_step_outputs(batch) if hasattr(model, "training_step_outputs") else (model(batch),)
        )
        assert torch.isfinite(out[0]).all()
        if len(out) > 1:
            assert all(torch.isfinite(v) for v in out[1].values())


def test_moe_without_sequence_and_sequence_models_require_one():
    layout = FeatureLayout(
        categorical=(FieldInfo("a", "categorical", 4),), numeric=(FieldInfo("x", "numeric"),)
    )
    model = MoE(layout, experts=3)
    batch = random_batch(layout, 5)
    assert model(batch).shape == (5,)
    torch.testing.assert_close(model.gate_weights(batch).sum(-1), torch.ones(5))
    for cls in (DIN, AWMoE):
        with pytest.raises(ValueError, match="behaviour sequence"):
            cls(layout)


def synthetic_membership(n: int, gen: torch.Generator, vocab: int = 40, length: int = 8) -> dict:
    """Label 1 iff the target item id appears in the user's history (half the targets drawn from it)."""
    lengths = torch.randint(1, length + 1, (n,), generator=gen)
    ids = torch.randint(1, vocab, (n, length), generator=gen)
    ids = ids.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], 0)
    pick = (torch.rand(n, generator=gen) * lengths).long()
    from_history = ids[torch.arange(n), pick]
    target = torch.where(
        torch.rand(n, generator=gen) < 0.5, from_history, torch.randint(1, vocab, (n,), generator=gen)
    )
    label = (ids == target[:, None]).any(1).float()
    user = torch.randint(0, 20, (n,), generator=gen)
    category = torch.randint(0, 5, (n,), generator=gen)
    return {
        "categorical": torch.stack([user, target, category], dim=1),
        "numeric": torch.randn(n, 1, generator=gen),
        "sequence": ids,
        "sequence_length": lengths,
        "label": label,
    }


MEMBERSHIP_LAYOUT = FeatureLayout(
    categorical=(
        FieldInfo("user", "categorical", 20),
        FieldInfo("item", "categorical", 40),
        FieldInfo("category", "categorical", 5),
    ),
    numeric=(FieldInfo("price", "numeric"),),
    sequence=FieldInfo("history", "sequence", 40, shares_with="item"),
    max_sequence_length=8,
)


@pytest.mark.parametrize("name", ["din", "awmoe"])
def test_learns_target_in_history(name):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    sizes = {"hidden": (32,)} if name == "din" else {"expert_hidden": (32,)}
    model = REGISTRY.models.create(name, layout=MEMBERSHIP_LAYOUT, dim=8, **sizes)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(150):
        batch = synthetic_membership(256, gen)
        logits, aux = model.training_step_outputs(batch) if name == "awmoe" else (model(batch), {})
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"]) + sum(aux.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test = synthetic_membership(2000, gen)
    model.eval()
    with torch.no_grad():
        scores = model(test)
    auc = roc_auc_score(test["label"].numpy(), scores.numpy())
    assert auc > 0.8, f"{name} reached AUC {auc:.3f}"
