"""Survival losses and metrics: hand-computed cases and scikit-survival / lifelines references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc
from sksurv.metrics import integrated_brier_score as sksurv_ibs
from sksurv.util import Surv

from interplay.bio.survival import (
    concordance_index,
    cox_partial_likelihood_loss,
    evaluation_times,
    integrated_brier_score,
    kaplan_meier_plot,
    nll_survival_loss,
    risk_from_hazards,
    risk_threshold,
    survival_at,
    survival_from_hazards,
    time_dependent_auc,
)
from interplay.core.errors import ConfigError, DataError

# Three patients, 4 bins (worked by hand):
#   P1 h = [0.1, 0.2, 0.5, 0.5], bin 1, death:    S_padded = [1, .9, .72, .36, .18]
#      uncensored = -(log S_padded[1] + log h[1]) = -(log 0.9 + log 0.2) = -log 0.18
#   P2 h = [0.5] * 4, bin 2, censored:           censored = -log S_padded[3] = -log 0.125 = 3 log 2
#   P3 h = [0.25, 0.5, 0.2, 0.9], bin 0, death:   uncensored = -(log 1 + log 0.25) = 2 log 2
HAZARDS = torch.tensor(
    [[0.1, 0.2, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.25, 0.5, 0.2, 0.9]], dtype=torch.float64
)
LABELS = torch.tensor([1, 2, 0])
CENSORSHIP = torch.tensor([0.0, 1.0, 0.0])
UNCENSORED = [-math.log(0.18), 0.0, 2 * math.log(2)]
CENSORED = [0.0, 3 * math.log(2), 0.0]


def test_nll_loss_hand_case_and_alpha_mix():
    loss = nll_survival_loss(HAZARDS, LABELS, CENSORSHIP)
    assert loss.item() == pytest.approx(sum(u + c for u, c in zip(UNCENSORED, CENSORED)) / 3, rel=1e-12)
    alpha = 0.4  # MCAT: (1 - alpha) * (censored + uncensored) + alpha * uncensored
    mixed = nll_survival_loss(HAZARDS, LABELS, CENSORSHIP, alpha=alpha, reduction="none")
    expected = [(1 - alpha) * (u + c) + alpha * u for u, c in zip(UNCENSORED, CENSORED)]
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=1e-12)
    assert nll_survival_loss(HAZARDS, LABELS, CENSORSHIP, reduction="sum").item() == pytest.approx(
        3 * loss.item()
    )


def test_nll_loss_from_logits_equals_hazard_form_and_has_gradients():
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels, censorship = torch.tensor([0, 1, 2, 3, 3, 1]), torch.tensor([0.0, 1, 0, 1, 0, 0])
    from_hazards = nll_survival_loss(torch.sigmoid(logits), labels, censorship, alpha=0.15)
    from_logits = nll_survival_loss(logits, labels, censorship, alpha=0.15, from_logits=True)
    # (numpy comparisons: torch.testing's first call costs seconds of imports)
    np.testing.assert_allclose(from_logits.item(), from_hazards.item(), rtol=1e-12)
    (grad_h,) = torch.autograd.grad(from_hazards, logits)
    (grad_l,) = torch.autograd.grad(from_logits, logits)
    np.testing.assert_allclose(grad_l.numpy(), grad_h.numpy(), rtol=1e-10, atol=1e-12)
    # a censored patient in the last bin only asks to survive every bin: no gradient through bin > y
    assert torch.isfinite(nll_survival_loss(torch.full((1, 4), 60.0), [3], [1.0], from_logits=True))


def test_nll_loss_rejects_bad_labels_and_lengths():
    with pytest.raises(DataError, match=r"labels must be bins 0\.\.3"):
        nll_survival_loss(HAZARDS, torch.tensor([1, 4, 0]), CENSORSHIP)
    with pytest.raises(DataError, match="3 predictions but 2 labels"):
        nll_survival_loss(HAZARDS, torch.tensor([1, 0]), CENSORSHIP)


def test_survival_and_mcat_risk_from_hazards():
    survival = survival_from_hazards(HAZARDS[:1])
    np.testing.assert_allclose(survival.numpy(), [[0.9, 0.72, 0.36, 0.18]], rtol=1e-12)
    assert risk_from_hazards(HAZARDS[:1]).item() == pytest.approx(-(0.9 + 0.72 + 0.36 + 0.18))
    np.testing.assert_allclose(risk_from_hazards(HAZARDS.numpy()), risk_from_hazards(HAZARDS).numpy())


def test_cox_loss_hand_case_with_breslow_ties():
    risk = torch.tensor([0.1, 0.4, -0.3, 0.2], dtype=torch.float64)
    times, events = [1.0, 3.0, 3.0, 4.0], [1, 1, 1, 0]
    everyone = math.log(sum(math.exp(r) for r in [0.1, 0.4, -0.3, 0.2]))
    from_three = math.log(sum(math.exp(r) for r in [0.4, -0.3, 0.2]))  # both tied deaths share it
    expected = -((0.1 - everyone) + (0.4 - from_three) + (-0.3 - from_three)) / 3
    assert cox_partial_likelihood_loss(risk, times, events).item() == pytest.approx(expected, rel=1e-12)
    shuffled = [2, 0, 3, 1]  # order of patients does not matter
    loss = cox_partial_likelihood_loss(
        risk[shuffled], [times[i] for i in shuffled], [events[i] for i in shuffled]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    no_events = cox_partial_likelihood_loss(risk.clone().requires_grad_(), times, [0, 0, 0, 0])
    assert no_events.item() == 0.0 and no_events.requires_grad


def test_cox_loss_is_stationary_at_scikit_survival_breslow_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    times = np.round(rng.exponential(np.exp(-x @ [0.8, -0.5, 0.0])) * 4) + 1  # many ties
    events = rng.random(120) < 0.7
    model = CoxPHSurvivalAnalysis(ties="breslow", alpha=0.0).fit(x, Surv.from_arrays(events, times))
    beta = torch.tensor(model.coef_, requires_grad=True)
    loss = cox_partial_likelihood_loss(torch.from_numpy(x) @ beta, times, events)
    (grad,) = torch.autograd.grad(loss, beta)
    assert grad.abs().max().item() < 1e-5
    moved = cox_partial_likelihood_loss(torch.from_numpy(x) @ (beta.detach() + 0.1), times, events)
    assert moved.item() > loss.item()


def test_concordance_hand_cases_and_scikit_survival_with_ties():
    times, events = [1.0, 2.0, 3.0], [1, 1, 0]
    assert concordance_index(times, events, [3.0, 2.0, 1.0]) == 1.0
    assert concordance_index(times, events, [1.0, 2.0, 3.0]) == 0.0
    # pairs (0,1) tied risk -> 1/2, (0,2) and (1,2) concordant
    assert concordance_index(times, events, [2.0, 2.0, 1.0]) == pytest.approx(2.5 / 3)
    rng = np.random.default_rng(1)
    times = np.round(rng.exponential(10, 300))  # tied times
    events = rng.random(300) < 0.5
    risk = np.round(rng.normal(size=300), 1) - 0.05 * times  # tied risks, some signal
    ours = concordance_index(times, events, torch.from_numpy(risk))
    assert ours == pytest.approx(concordance_index_censored(events, times, risk)[0], abs=0)


def test_concordance_errors_name_the_split():
    with pytest.raises(DataError, match=r"fold 3 val: no uncensored patient"):
        concordance_index([1.0, 2.0], [0, 0], [0.1, 0.2], split="fold 3 val")
    with pytest.raises(DataError, match=r"test: lengths differ: times 3, events 3, risk 2"):
        concordance_index([1.0, 2.0, 3.0], [1, 0, 1], [0.1, 0.2], split="test")
    with pytest.raises(DataError, match="NaN"):
        concordance_index([1.0, 2.0], [1, 1], [0.1, float("nan")])


def _cohorts(seed: int = 2):
    rng = np.random.default_rng(seed)
    risk_train, risk_test = rng.normal(size=200), rng.normal(size=80)
    train_t = rng.exponential(20 * np.exp(-risk_train)) + 0.1
    test_t = rng.exponential(20 * np.exp(-risk_test)) + 0.1
    return train_t, rng.random(200) < 0.6, test_t, rng.random(80) < 0.6, risk_test


def test_time_dependent_auc_equals_scikit_survival_in_range():
    train_t, train_e, test_t, test_e, risk = _cohorts()
    test_t = np.minimum(test_t, train_t.max() * 0.9)  # inside the training follow-up
    grid = np.quantile(test_t[test_e], [0.2, 0.4, 0.6, 0.8])
    times, auc, mean_auc = time_dependent_auc(train_t, train_e, test_t, test_e, risk, grid)
    ref_auc, ref_mean = cumulative_dynamic_auc(
        Surv.from_arrays(train_e, train_t), Surv.from_arrays(test_e, test_t), risk, grid
    )
    np.testing.assert_allclose(times, grid)
    np.testing.assert_allclose(auc, ref_auc)
    assert mean_auc == pytest.approx(ref_mean)
    assert auc.min() > 0.6  # the risk drives the times


def test_time_dependent_auc_drops_unevaluable_times_and_truncates_late_follow_up():
    train_t, train_e, test_t, test_e, risk = _cohorts(3)
    limit = min(test_t.max(), train_t.max())
    inside = np.quantile(test_t[test_e], [0.3, 0.6])
    times, auc, _ = time_dependent_auc(
        train_t, train_e, test_t, test_e, risk, np.r_[inside, -1.0, limit, limit + 5]
    )
    np.testing.assert_allclose(times, inside)  # out-of-range times dropped
    # test patients followed past the last training time: where they end does not matter
    test_late = test_t.copy()
    late = np.argsort(test_t)[-3:]
    test_late[late] = train_t.max() + np.array([1.0, 50.0, 500.0])
    cut = np.quantile(test_t[test_e], [0.3, 0.6, 0.9])
    cut = cut[cut < train_t.max()]
    a = time_dependent_auc(train_t, train_e, test_late, test_e, risk, cut)[1]
    test_late[late] += 1000.0
    b = time_dependent_auc(train_t, train_e, test_late, test_e, risk, cut)[1]
    np.testing.assert_allclose(a, b)
    with pytest.raises(DataError, match=r"none of the evaluation times"):
        time_dependent_auc(train_t, train_e, test_t, test_e, risk, [-5.0, 1e6])
    grid = evaluation_times(train_t, test_t, test_e, n_times=5)
    assert grid.size == 5 and grid.min() >= test_t.min() and grid.max() < limit


def test_survival_at_is_the_step_function_of_the_bins():
    edges = [0.0, 1.0, 2.0, 3.0]
    curves = survival_at([0.5, 1.0, 1.5, 2.0, 2.99, 3.0, 10.0], edges, [[0.9, 0.5, 0.2], [1.0, 0.8, 0.0]])
    np.testing.assert_allclose(curves[0], [1.0, 0.9, 0.9, 0.5, 0.5, 0.2, 0.2])
    np.testing.assert_allclose(curves[1], [1.0, 1.0, 1.0, 0.8, 0.8, 0.0, 0.0])
    with pytest.raises(DataError, match=r"survival_bins must be \[patients, 3\]"):
        survival_at([1.0], edges, [[0.5, 0.4]])


def test_integrated_brier_score_equals_scikit_survival_and_rewards_good_curves():
    train_t, train_e, test_t, test_e, risk = _cohorts(4)
    test_t = np.minimum(test_t, train_t.max() * 0.9)
    grid = np.linspace(np.quantile(test_t, 0.1), np.quantile(test_t, 0.9), 12)
    # exponential model with the true rate: S(t) = exp(-t exp(risk) / 20)
    good = np.exp(-grid[None, :] * np.exp(risk)[:, None] / 20)
    ours = integrated_brier_score(train_t, train_e, test_t, test_e, good, grid)
    reference = sksurv_ibs(Surv.from_arrays(train_e, train_t), Surv.from_arrays(test_e, test_t), good, grid)
    assert ours == pytest.approx(reference)
    flat = np.full_like(good, 0.5)
    assert ours < integrated_brier_score(train_t, train_e, test_t, test_e, flat, grid)
    # columns at unevaluable times are dropped, not failed on
    wide = np.r_[grid, test_t.max() + 1]
    padded = np.c_[good, np.zeros(len(test_t))]
    assert integrated_brier_score(train_t, train_e, test_t, test_e, padded, wide) == pytest.approx(ours)
    with pytest.raises(DataError, match=r"survival_probs must be \[patients, times\]"):
        integrated_brier_score(train_t, train_e, test_t, test_e, good[:, :3], grid)


def test_kaplan_meier_plot_separates_risk_groups(tmp_path):
    rng = np.random.default_rng(5)
    high = rng.random(200) < 0.5
    times = rng.exponential(np.where(high, 8.0, 40.0))  # high-risk patients die earlier
    censor = rng.exponential(60.0, 200)
    events = times <= censor
    observed = np.minimum(times, censor)
    risk = high + rng.normal(0, 0.3, 200)
    result = kaplan_meier_plot(observed, events, risk, tmp_path / "km.png", title="synthetic")
    assert result["p_value"] < 1e-6
    assert result["n_low"] + result["n_high"] == 200 and result["n_high"] == 100
    assert (tmp_path / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a threshold fitted on training risks; no signal gives a large p-value
    threshold = risk_threshold(rng.normal(size=50))
    noise = kaplan_meier_plot(observed, events, rng.normal(size=200), tmp_path / "noise.png", split=threshold)
    assert noise["p_value"] > 1e-3 and noise["threshold"] == threshold
    with pytest.raises(DataError, match="leaves the high-risk group empty"):
        kaplan_meier_plot(observed, events, risk, tmp_path / "x.png", split=100.0)
    with pytest.raises(ConfigError, match=r"should end in \.png"):
        kaplan_meier_plot(observed, events, risk, tmp_path / "x.pdf")
    assert not (tmp_path / "x.png").exists()
