"""Regression metrics (interplay.bio.regression_metrics): hand cases, ties, scipy and sklearn references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import r2_score as sklearn_r2

from interplay.bio.regression_metrics import (
    RegressionMetrics,
    pearson,
    r2_score,
    rankdata,
    regression_metrics,
    rmse,
    spearman,
)
from interplay.core.errors import DataError


def test_rmse_by_hand():
    # errors 1, -1, 2, 0 -> squared 1, 1, 4, 0 -> mean 1.5
    assert rmse([2, 1, 5, 4], [1, 2, 3, 4]) == pytest.approx(math.sqrt(1.5))


def test_r2_by_hand():
    # y = [1, 2, 3, 4]: mean 2.5, SS_tot = 2.25 + .25 + .25 + 2.25 = 5; SS_res = 1 + 1 + 4 + 0 = 6
    assert r2_score([2, 1, 5, 4], [1, 2, 3, 4]) == pytest.approx(1 - 6 / 5)
    assert r2_score([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    # predicting the mean gives exactly 0
    assert r2_score([2.5] * 4, [1, 2, 3, 4]) == pytest.approx(0.0)


def test_pearson_by_hand():
    # x = [1, 2, 3], y = [1, 3, 2]: centred x = [-1, 0, 1], y = [-1, 1, 0]; cov 1; |x| = |y| = sqrt 2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson([1, 2, 3], [-2, -4, -6]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant predictions: undefined


def test_rankdata_ties_take_the_average_rank():
    # sorted: 10 (rank 1), 20, 20 (ranks 2, 3 -> 2.5), 30 (4), 40, 40, 40 (5, 6, 7 -> 6)
    values = [20, 40, 10, 40, 30, 20, 40]
    assert rankdata(values).tolist() == [2.5, 6.0, 1.0, 6.0, 4.0, 2.5, 6.0]
    np.testing.assert_array_equal(rankdata(values), stats.rankdata(values))


def test_spearman_by_hand_with_ties():
    # predictions [1, 2, 2, 3] rank [1, 2.5, 2.5, 4]; targets [1, 3, 2, 4] rank [1, 3, 2, 4]
    # centred: a = [-1.5, 0, 0, 1.5], b = [-1.5, .5, -.5, 1.5]; a.b = 4.5; |a|^2 = 4.5; |b|^2 = 5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    # a monotone transform does not change Spearman
    assert spearman(np.exp([0.1, 0.5, 0.2, 2.0]), [1, 3, 2, 4]) == pytest.approx(1.0)


def test_against_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    target = rng.normal(size=200).round(1)  # rounding creates ties
    prediction = (target + rng.normal(scale=0.7, size=200)).round(1)
    assert spearman(prediction, target) == pytest.approx(stats.spearmanr(prediction, target).statistic)
    assert pearson(prediction, target) == pytest.approx(stats.pearsonr(prediction, target).statistic)
    assert r2_score(prediction, target) == pytest.approx(sklearn_r2(target, prediction))
    assert rmse(prediction, target) == pytest.approx(np.sqrt(np.mean((prediction - target) ** 2)))


def test_bad_inputs_raise_data_errors():
    with pytest.raises(DataError, match="differ in length"):
        rmse([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="NaN"):
        pearson([1, float("nan")], [1, 2])
    with pytest.raises(DataError, match="at least one"):
        spearman([], [])


def test_torchmetrics_form_undoes_the_scaling():
    # scaled values v map to v * 10 + 5; the metric must equal the functions on the original scale
    scaled_pred = torch.tensor([0.1, 0.5, 0.4, 0.9, 0.3])
    scaled_true = torch.tensor([0.0, 0.6, 0.5, 1.0, 0.2])
    metric = RegressionMetrics(scale=10.0, offset=5.0)
    metric.update(scaled_pred[:2], scaled_true[:2])
    metric.update(scaled_pred[2:], scaled_true[2:])  # gathered over batches
    out = metric.compute()
    expected = regression_metrics(scaled_pred.double() * 10 + 5, scaled_true.double() * 10 + 5)
    assert set(out) == {"rmse", "r2", "pearson", "spearman"}
    for name, value in expected.items():
        assert float(out[name]) == pytest.approx(value, rel=1e-5)
    # RMSE scales with the unit, correlations do not
    assert float(out["rmse"]) == pytest.approx(10 * rmse(scaled_pred, scaled_true), rel=1e-5)
