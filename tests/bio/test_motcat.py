"""MOTCat and its baselines (SNN, ABMIL, MCAT, elastic-net Cox): shapes, survival head, gradients,
the OT plan against POT, mini-batch OT, determinism, layer equivalences and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from interplay.bio.models import ABMIL, MCAT, SNN, CoxOmicsBaseline, MOTCat
from interplay.bio.models.motcat import (
    BilinearFusion,
    GatedAttentionPooling,
    PostNormEncoderLayer,
    micro_batch_chunks,
    survival_outputs,
)
from interplay.bio.registry import REGISTRY
from interplay.core.attention.transport import ot_coattention, sinkhorn, sinkhorn_pot
from interplay.core.errors import ConfigError, DataError

OMIC_SIZES = [5, 9, 3, 12, 7, 4]  # six groups of different sizes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny shapes: a second intra-op thread only adds synchronisation (seconds per step when the
    # shared CI cores are busy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _item(n_patches: int, *, seed: int = 0, case_id: str = "TCGA-XX-0001") -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        # patch features are non-negative (ResNet-50 / CTransPath bag features after ReLU)
        "path": torch.rand(n_patches, 1024, generator=generator),
        "omics": [torch.randn(size, generator=generator) for size in OMIC_SIZES],
        "label": torch.tensor(1),
        "time": torch.tensor(12.0),
        "censorship": torch.tensor(0.0),
        "case_id": case_id,
    }


def _small(name: str, **kwargs) -> nn.Module:
    if name == "snn":
        return REGISTRY.models.create("snn", omic_sizes=OMIC_SIZES, **kwargs)
    if name == "abmil":
        return REGISTRY.models.create("abmil", **kwargs)
    return REGISTRY.models.create(name, omic_sizes=OMIC_SIZES, **kwargs)


MODELS = [
    ("motcat", {}),
    ("motcat", {"fusion": "bilinear"}),
    ("motcat", {"ot_micro_batch": 4, "eval_micro_batch": 5}),
    ("mcat", {}),
    ("abmil", {}),
    ("snn", {}),
]


def test_registry_lists_the_survival_models():
    assert {"motcat", "mcat", "abmil", "snn"} <= set(REGISTRY.models.names())
    with pytest.raises(ConfigError, match="ot_regg"):
        REGISTRY.models.create("motcat", omic_sizes=OMIC_SIZES, ot_regg=0.1)
    with pytest.raises(ConfigError, match="omic_sizes"):
        REGISTRY.models.create("motcat")


# ------------------------------------------------------------------------------- survival head


def test_survival_outputs_hand_computed():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), -math.log(3.0), 0.0, 20.0]])
    out = survival_outputs(logits)
    torch.testing.assert_close(out["hazards"][0], torch.full((4,), 0.5))
    torch.testing.assert_close(out["survival"][0], torch.tensor([0.5, 0.25, 0.125, 0.0625]))
    torch.testing.assert_close(out["risk"][0], torch.tensor(-0.9375))
    # sigmoid(log 3) = 3/4, sigmoid(-log 3) = 1/4: S = 1/4, 1/4 * 3/4, then halved, then ~0
    expected = torch.tensor([0.25, 0.1875, 0.09375, 0.09375 * (1 - torch.sigmoid(torch.tensor(20.0)))])
    torch.testing.assert_close(out["survival"][1], expected)
    torch.testing.assert_close(out["risk"][1], -expected.sum())


@pytest.mark.parametrize("name, kwargs", MODELS)
@pytest.mark.parametrize("n_patches", [1, 7, 300])
def test_output_shapes_and_survival_curve(name, kwargs, n_patches):
    model = _small(name, **kwargs).eval()
    with torch.no_grad():
        out = model(_item(n_patches))
    m = len(OMIC_SIZES)
    for key in ("logits", "hazards", "survival"):
        assert out[key].shape == (1, 4), key
    assert out["risk"].shape == (1,)
    if name == "motcat":
        assert out["plan"].shape == (n_patches, m)
    if name in ("motcat", "mcat"):
        assert out["path_attention"].shape == (1, m) and out["omic_attention"].shape == (1, m)
        for key in ("path_attention", "omic_attention"):
            torch.testing.assert_close(out[key].sum(-1), torch.ones(1))
    if name == "abmil":
        assert out["path_attention"].shape == (1, n_patches)
        torch.testing.assert_close(out["path_attention"].sum(-1), torch.ones(1))
    hazards, survival = out["hazards"], out["survival"]
    assert ((hazards > 0) & (hazards < 1)).all()
    assert ((survival > 0) & (survival <= 1)).all()
    assert (survival[:, 1:] <= survival[:, :-1]).all()  # non-increasing in time
    torch.testing.assert_close(survival, torch.cumprod(1 - hazards, dim=-1))
    torch.testing.assert_close(out["risk"], -survival.sum(-1))


def test_collated_batch_of_one_and_keyword_inputs_agree():
    model = _small("motcat").eval()
    item = _item(7)
    collated = {
        "path": item["path"].unsqueeze(0),
        "omics": [group.unsqueeze(0) for group in item["omics"]],
        "case_id": [item["case_id"]],
    }
    as_float64 = {"path": item["path"].double(), "omics": [group.double() for group in item["omics"]]}
    with torch.no_grad():
        plain, batched = model(item), model(collated)
        keywords = model(path=item["path"], omics=item["omics"])
        from_float64 = model(as_float64)  # a float64 omics table meets float32 weights
    for key in ("hazards", "risk", "plan"):
        torch.testing.assert_close(batched[key], plain[key])
        torch.testing.assert_close(keywords[key], plain[key])
        torch.testing.assert_close(from_float64[key], plain[key])


def test_snn_takes_a_flat_vector_a_batch_or_groups():
    model = SNN(omic_input_dim=sum(OMIC_SIZES)).eval()
    groups = _item(1)["omics"]
    flat = torch.cat(groups)
    with torch.no_grad():
        from_groups = model(omics=groups)
        from_flat = model(omics=flat)
        batch = model(omics=torch.stack([flat, 2 * flat, -flat]))
    torch.testing.assert_close(from_groups["risk"], from_flat["risk"])
    assert batch["hazards"].shape == (3, 4) and batch["risk"].shape == (3,)
    torch.testing.assert_close(batch["risk"][:1], from_flat["risk"])
    # LeCun-normal initialisation (MCAT's init_max_weights): weight std ~ 1/sqrt(fan_in), zero bias
    first = model.encoder[0][0]
    assert abs(first.weight.std().item() * math.sqrt(first.in_features) - 1.0) < 0.1
    assert first.bias.abs().max() == 0


# ----------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_gradients_reach_every_trainable_parameter(name, kwargs):
    model = _small(name, **kwargs).train()
    out = model(_item(40))
    # a dummy loss touching every output bin (the NLL uses hazards and survival)
    loss = (out["hazards"] * torch.arange(1.0, 5.0)).sum() + out["risk"].sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient: {missing}"
    assert not zero, f"zero gradient: {zero}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------------------ the OT plan


def _motcat_cost(path_tokens: torch.Tensor, omic_tokens: torch.Tensor) -> torch.Tensor:
    """MOTCat's OT_Attn_assem cost: min-shifted features, cdist^2 / max (float64, as its POT call)."""
    p = path_tokens - path_tokens.min(-1, keepdim=True).values
    g = omic_tokens - omic_tokens.min(-1, keepdim=True).values
    cost = torch.cdist(p.double(), g.double()) ** 2
    return cost / cost.max()


def test_model_plan_has_no_gradient_and_matches_pot_unbalanced_sinkhorn():
    ot = pytest.importorskip("ot")
    model = _small("motcat", ot_reg=0.05, ot_tau=0.5).eval()
    item = _item(30)
    path_tokens, omic_tokens, _ = model.encode(item)
    assert path_tokens.requires_grad
    coattended, extra = model.coattend(path_tokens, omic_tokens)
    plan = extra["plan"]
    assert not plan.requires_grad and plan.grad_fn is None
    torch.testing.assert_close(coattended, plan.T @ path_tokens)  # Eq. 5: P^T H_p
    cost = _motcat_cost(path_tokens.detach(), omic_tokens.detach())
    reference = sinkhorn_pot(None, None, cost, reg=0.05, reg_m=0.5, n_iters=1000, tol=1e-12)
    # the unbalanced plan's marginals are NOT the uniform ones: they are what POT converges to
    assert (reference.sum(0) - 1 / 6).abs().max() > 1e-3
    torch.testing.assert_close(plan.double().sum(-1), reference.sum(-1), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(plan.double().sum(-2), reference.sum(-2), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(plan.double(), reference, atol=1e-7, rtol=1e-4)
    # ... and what the official code computes (POT numpy, float64, its default stopping rule)
    with pytest.warns(UserWarning):
        official = ot.unbalanced.sinkhorn_knopp_unbalanced(
            ot.unif(30), ot.unif(6), cost.numpy(), 0.05, 0.5, reg_type="entropy"
        )
    np.testing.assert_allclose(plan.double().numpy(), official, atol=1e-7, rtol=1e-4)


def test_gradients_reach_the_patches_only_through_the_aggregation():
    model = _small("motcat").eval()
    path_tokens, omic_tokens, _ = model.encode(_item(12))
    path_tokens = path_tokens.detach().requires_grad_(True)
    omic_tokens = omic_tokens.detach().requires_grad_(True)
    coattended, extra = model.coattend(path_tokens, omic_tokens)
    coattended.sum().backward()
    # d(sum P^T H)/dH = P 1 (row masses); the genomic tokens get nothing through the detached cost
    torch.testing.assert_close(path_tokens.grad, extra["plan"].sum(-1, keepdim=True).expand_as(path_tokens))
    assert omic_tokens.grad is None or omic_tokens.grad.abs().max() == 0


def test_no_grad_solver_equals_the_log_domain_iterates():
    # core's solver takes the absorbed-kernel scaling path without autograd and the log-sum-exp
    # path with it; both must produce the same iterates (to float64 round-off), for every variant
    generator = torch.Generator().manual_seed(3)
    for reg in (0.5, 0.05, 0.005):
        for reg_m, reg_type in ((None, "entropy"), (0.5, "entropy"), (0.5, "kl"), (float("inf"), "entropy")):
            for tol in (None, 1e-9):
                cost = torch.rand(3, 40, 6, generator=generator, dtype=torch.float64) * 3
                kwargs = dict(reg=reg, reg_m=reg_m, reg_type=reg_type, tol=tol, n_iters=120)
                with torch.no_grad():
                    fast = sinkhorn(None, None, cost, **kwargs)
                graph = sinkhorn(None, None, cost.clone().requires_grad_(True), **kwargs)
                assert graph.requires_grad and not fast.requires_grad
                torch.testing.assert_close(fast, graph.detach(), atol=1e-14, rtol=1e-10)


def test_coattention_cost_without_copies_matches_shifted_cdist():
    generator = torch.Generator().manual_seed(4)
    patches = torch.randn(2, 50, 16, generator=generator, dtype=torch.float64) * 3 + 1
    genes = torch.randn(6, 16, generator=generator, dtype=torch.float64)
    for shift in (True, False):
        coattended, plan = ot_coattention(patches, genes, shift_by_min=shift)
        p, g = patches, genes
        if shift:
            p, g = p - p.amin(-1, keepdim=True), g - g.amin(-1, keepdim=True)
        cost = torch.cdist(p, g) ** 2
        cost = cost / cost.amax(dim=(-2, -1), keepdim=True)
        expected = sinkhorn(None, None, cost, reg=0.05, reg_m=0.5)
        torch.testing.assert_close(plan, expected, atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(coattended, expected.transpose(-2, -1) @ patches)


# ---------------------------------------------------------------------------- mini-batch OT


def test_micro_batch_chunks_cover_the_bag_once():
    for n, m in ((10, 3), (9, 3), (5, 5), (5, 100), (1, 1)):
        chunks = micro_batch_chunks(n, m, shuffle=True)
        assert len(chunks) == math.ceil(n / m)
        assert (
            max(len(c) for c in chunks) <= m
            and max(len(c) for c in chunks) - min(len(c) for c in chunks) <= 1
        )
        assert sorted(torch.cat(chunks).tolist()) == list(range(n))
    ordered = micro_batch_chunks(7, 3, shuffle=False)
    assert [c.tolist() for c in ordered] == [[0, 1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize("micro_batch", [7, 8, 1000])
def test_micro_batch_at_least_the_bag_equals_the_full_ot_path(micro_batch):
    full = _small("motcat").train()
    chunked = _small("motcat", ot_micro_batch=micro_batch).train()
    chunked.load_state_dict(full.state_dict())
    item = _item(7)
    torch.manual_seed(5)
    expected = full(item)
    torch.manual_seed(5)
    got = chunked(item)
    for key in ("hazards", "risk", "plan"):
        torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0)


def test_micro_batch_ot_averages_the_per_chunk_coattended_tokens():
    model = _small("motcat", ot_micro_batch=4).train()
    path_tokens, omic_tokens, _ = model.encode(_item(11))
    torch.manual_seed(9)
    coattended, extra = model.coattend(path_tokens, omic_tokens)
    torch.manual_seed(9)
    chunks = micro_batch_chunks(11, 4, shuffle=True)  # the same permutation: 3 chunks of 4, 4, 3
    assert sorted(len(c) for c in chunks) == [3, 4, 4]
    per_chunk = [ot_coattention(path_tokens[c], omic_tokens, reg=0.05, shift_by_min=True)[0] for c in chunks]
    torch.testing.assert_close(coattended, torch.stack(per_chunk).mean(0))
    # the assembled plan keeps coattended = plan^T H_p; each chunk's block is its own plan / 3
    plan = extra["plan"]
    torch.testing.assert_close(coattended, plan.T @ path_tokens)
    _, first_plan = ot_coattention(path_tokens[chunks[0]], omic_tokens, reg=0.05, shift_by_min=True)
    torch.testing.assert_close(plan[chunks[0]], first_plan / 3)
    # different from transporting the whole bag at once
    whole, _ = ot_coattention(path_tokens, omic_tokens, reg=0.05, shift_by_min=True)
    assert (whole - coattended).abs().max() > 1e-4


def test_eval_is_deterministic_and_train_is_not():
    item = _item(30)
    for name, kwargs in MODELS:
        model = _small(name, **kwargs).eval()
        with torch.no_grad():
            first, second = model(item), model(item)
        for key in first:
            torch.testing.assert_close(first[key], second[key], atol=0, rtol=0)
        if name != "snn":  # AlphaDropout on 41 inputs can keep the same risk; the others cannot
            model.train()
            with torch.no_grad():
                assert not torch.equal(model(item)["risk"], model(item)["risk"]), name


# ------------------------------------------------------------------------ layer equivalences


def test_post_norm_layer_equals_torch_transformer_encoder_layer():
    ours = PostNormEncoderLayer(dim=32, heads=4, ff_dim=64, dropout=0.25).eval()
    reference = nn.TransformerEncoderLayer(
        32, 4, 64, dropout=0.25, activation="relu", batch_first=True
    ).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(
            torch.cat([ours.attn.q_proj.weight, ours.attn.kv_proj.weight])
        )
        reference.self_attn.in_proj_bias.copy_(torch.cat([ours.attn.q_proj.bias, ours.attn.kv_proj.bias]))
        reference.self_attn.out_proj.load_state_dict(ours.attn.out_proj.state_dict())
        reference.linear1.load_state_dict(ours.ffn.net[0].state_dict())
        reference.linear2.load_state_dict(ours.ffn.net[3].state_dict())
        reference.norm1.load_state_dict(ours.norm1.state_dict())
        reference.norm2.load_state_dict(ours.norm2.state_dict())
        x = torch.randn(2, 6, 32)
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_gated_attention_pooling_is_a_softmax_average():
    pooling = GatedAttentionPooling(8, 5, dropout=0.0)
    tokens = torch.randn(1, 4, 8)
    pooled, weights = pooling(tokens)
    scores = pooling.attention_c(
        torch.tanh(pooling.attention_a[0](tokens)) * torch.sigmoid(pooling.attention_b[0](tokens))
    )
    torch.testing.assert_close(weights, torch.softmax(scores[..., 0], -1))
    torch.testing.assert_close(pooled, (weights[..., None] * tokens).sum(1))


def test_mcat_coattention_is_softmax_of_genomic_queries_over_patches():
    model = _small("mcat").eval()
    item = _item(9)
    with torch.no_grad():
        out = model(item, return_coattention=True)
        path_tokens, omic_tokens, _ = model.encode(item)
        attn = model.coattention
        q = attn.q_proj(omic_tokens)
        k, v = attn.kv_proj(path_tokens).chunk(2, dim=-1)
        weights = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)
        coattended, extra = model.coattend(path_tokens, omic_tokens)
    assert out["coattention"].shape == (1, 6, 9)
    torch.testing.assert_close(out["coattention"][0], weights)
    torch.testing.assert_close(out["coattention"].sum(-1), torch.ones(1, 6))
    torch.testing.assert_close(coattended, attn.out_proj(weights @ v), atol=1e-5, rtol=1e-5)
    assert "coattention" not in extra and "coattention" not in model(item)


def test_bilinear_fusion_outer_product_shape_and_constant_column():
    fusion = BilinearFusion(dim=16, scale=4, out_dim=8, dropout=0.0)
    assert fusion.encoder1[0].in_features == (16 // 4 + 1) ** 2
    out = fusion(torch.randn(1, 16), torch.randn(1, 16))
    assert out.shape == (1, 8) and (out >= 0).all()


# --------------------------------------------------------------------------------- user errors


def test_input_errors_name_the_case_and_the_field():
    model = _small("motcat").eval()
    item = _item(5)
    with pytest.raises(DataError, match="case TCGA-XX-0001: 'path' is an empty bag"):
        model({**item, "path": torch.zeros(0, 1024)})
    bad = item["path"].clone()
    bad[3, 7] = math.nan
    with pytest.raises(DataError, match="'path' contains NaN"):
        model({**item, "path": bad})
    with pytest.raises(DataError, match=r"'path' must have shape \[N, 1024\]"):
        model({**item, "path": torch.rand(5, 512)})
    with pytest.raises(DataError, match="has no 'path'"):
        model({**item, "path": None})
    with pytest.raises(DataError, match="'omics' has 5 groups"):
        model({**item, "omics": item["omics"][:5]})
    with pytest.raises(DataError, match=r"'omics\[1\]' must be a vector of 9 features"):
        model({**item, "omics": [item["omics"][0], torch.zeros(8), *item["omics"][2:]]})
    groups = [g.clone() for g in item["omics"]]
    groups[2][0] = math.inf
    with pytest.raises(DataError, match=r"'omics\[2\]' contains inf"):
        model({**item, "omics": groups})
    with pytest.raises(DataError, match="batch size 1"):
        model(path=torch.rand(2, 5, 1024), omics=item["omics"])
    with pytest.raises(DataError, match="'path' is an empty bag"):
        ABMIL()(path=torch.zeros(0, 1024))
    with pytest.raises(DataError, match="41 features"):
        SNN(omic_input_dim=41)(omics=torch.zeros(40))


def test_config_errors():
    with pytest.raises(ConfigError, match="fusion must be one of"):
        MOTCat(OMIC_SIZES, fusion="sum")
    with pytest.raises(ConfigError, match="omic_sizes must be positive"):
        MOTCat([5, 0, 3])
    with pytest.raises(ConfigError, match="ot_micro_batch"):
        MOTCat(OMIC_SIZES, ot_micro_batch=0)
    with pytest.raises(ConfigError, match="reg must be"):
        MOTCat(OMIC_SIZES, ot_reg=0.0)
    with pytest.raises(ConfigError, match="ot_backend"):
        MOTCat(OMIC_SIZES, ot_backend="sinkhorn")
    with pytest.raises(ConfigError, match="omic_input_dim"):
        SNN()
    with pytest.raises(ConfigError, match="coattention_heads"):
        MCAT(OMIC_SIZES, coattention_heads=3)


# ------------------------------------------------------------------------------- Cox baseline


def _c_index(times, events, risk) -> float:
    try:
        from interplay.bio.survival import concordance_index
    except ImportError:  # the metrics module is written alongside; sksurv is the reference anyway
        from sksurv.metrics import concordance_index_censored

        return float(concordance_index_censored(np.asarray(events, bool), times, risk)[0])
    return concordance_index(times, events, risk, split="test")


def _linear_hazard_cohort(n: int, seed: int):
    """Exponential survival with hazard exp(x b) (5 of 30 features matter) and random censoring."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 30))
    beta = np.zeros(30)
    beta[:5] = [1.0, -0.8, 0.6, 0.5, -0.5]
    event_time = rng.exponential(1.0 / np.exp(x @ beta))
    censor_time = rng.exponential(2.0, size=n)
    times = np.minimum(event_time, censor_time)
    events = (event_time <= censor_time).astype(int)
    table = pd.DataFrame(x, columns=[f"G{i}_rnaseq" for i in range(30)])
    return table, times, events


def test_cox_baseline_beats_random_on_a_linear_hazard_cohort():
    train, train_times, train_events = _linear_hazard_cohort(300, seed=0)
    test, test_times, test_events = _linear_hazard_cohort(200, seed=1)
    for l1_ratio in (0.5, 0.9):
        model = CoxOmicsBaseline(l1_ratio=l1_ratio, n_alphas=30).fit(train, train_times, train_events)
        risk = model.predict_risk(test)
        assert risk.shape == (200,)
        assert _c_index(test_times, test_events, risk) > 0.6
        assert model.validation_cindex_ > 0.6 and model.alpha_ > 0
        # the informative genes carry the largest standardised coefficients
        assert set(np.argsort(-np.abs(model.coefficients))[:3]) <= set(range(5))
    # survival curves: in [0, 1], non-increasing in time, ordered by risk (proportional hazards)
    grid = np.quantile(train_times, [0.1, 0.5, 0.9])
    curves = model.predict_survival(test, grid)
    assert curves.shape == (200, 3) and ((curves >= 0) & (curves <= 1)).all()
    assert (np.diff(curves, axis=1) <= 1e-12).all()
    order = np.argsort(risk)
    assert (np.diff(curves[order, 1]) <= 1e-12).all()
    # an explicit validation set selects alpha on it; random risks stay near 0.5
    valid, valid_times, valid_events = _linear_hazard_cohort(150, seed=2)
    model = CoxOmicsBaseline(n_alphas=30).fit(
        train, train_times, train_events, validation=(valid, valid_times, valid_events)
    )
    assert _c_index(test_times, test_events, model.predict_risk(test)) > 0.6
    random_risk = np.random.default_rng(3).normal(size=200)
    assert abs(_c_index(test_times, test_events, random_risk) - 0.5) < 0.1


def test_cox_baseline_errors_name_the_field():
    train, times, events = _linear_hazard_cohort(60, seed=4)
    with pytest.raises(DataError, match="no uncensored events"):
        CoxOmicsBaseline().fit(train, times, np.zeros(60))
    holey = train.copy()
    holey.iloc[3, 7] = np.nan
    with pytest.raises(DataError, match="G7_rnaseq"):
        CoxOmicsBaseline().fit(holey, times, events)
    with pytest.raises(ConfigError, match="before fit"):
        CoxOmicsBaseline().predict_risk(train)
    model = CoxOmicsBaseline(n_alphas=10).fit(train, times, events)
    with pytest.raises(DataError, match="missing omics columns G29_rnaseq"):
        model.predict_risk(train.drop(columns=["G29_rnaseq"]))
    with pytest.raises(ConfigError, match="l1_ratio"):
        CoxOmicsBaseline(l1_ratio=0.0)
