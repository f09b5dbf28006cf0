"""Treatment-effect metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from interplay.tabular.causal.data import CausalInputError
from interplay.tabular.causal.metrics import (
    adrf_amse,
    ate_error,
    average_dose_response,
    binary_effect_metrics,
    effect_r2,
    multi_treatment_metrics,
    pehe,
    sqrt_pehe,
    summarize_replications,
)


def test_pehe_and_ate_error_by_hand():
    tau = [1.0, 2.0, 3.0, 4.0]
    tau_hat = [1.0, 3.0, 1.0, 4.0]  # errors 0, 1, -2, 0
    assert pehe(tau, tau_hat) == pytest.approx((0 + 1 + 4 + 0) / 4)
    assert sqrt_pehe(tau, tau_hat) == pytest.approx(math.sqrt(1.25))
    # mean(tau_hat) = 2.25, mean(tau) = 2.5
    assert ate_error(tau, tau_hat) == pytest.approx(0.25)
    # errors that cancel on average: PEHE is large, the ATE error zero
    assert ate_error([0, 0], [1, -1]) == 0.0
    assert sqrt_pehe([0, 0], [1, -1]) == pytest.approx(1.0)


def test_binary_metrics_use_potential_outcome_differences():
    mu0, mu1 = np.array([0.0, 1.0, 2.0]), np.array([4.0, 4.0, 4.0])  # tau = 4, 3, 2
    mu0_hat, mu1_hat = np.array([10.0, 11.0, 12.0]), np.array([14.0, 14.0, 15.0])  # tau_hat = 4, 3, 3
    out = binary_effect_metrics(mu0, mu1, mu0_hat, mu1_hat, suffix="_out")
    assert out["pehe_out"] == pytest.approx(1.0 / 3.0)  # a constant shift of both outcomes does not count
    assert out["sqrt_pehe_out"] == pytest.approx(math.sqrt(1.0 / 3.0))
    assert out["ate_error_out"] == pytest.approx(1.0 / 3.0)


def test_multi_treatment_metrics_average_the_contrasts_against_control():
    potential = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    estimate = np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 4.0]])
    # contrast 1: errors +1, -1 -> PEHE 1, ATE error 0; contrast 2: errors 0, +2 -> PEHE 2, ATE error 1
    out = multi_treatment_metrics(potential, estimate)
    assert out["pehe"] == pytest.approx(1.5)
    assert out["sqrt_pehe"] == pytest.approx(math.sqrt(1.5))
    assert out["ate_error"] == pytest.approx(0.5)
    # with two treatments it is the binary metric
    binary = multi_treatment_metrics(potential[:, :2], estimate[:, :2])
    assert binary["sqrt_pehe"] == pytest.approx(sqrt_pehe([1, 1], [2, 0]))


def test_adrf_amse_and_average_dose_response():
    x = np.array([[1.0], [3.0]])

    def outcome(x, t):  # mu(x, t) = x * t: the average over x = 2 * t
        return x[:, 0] * t

    curve = average_dose_response(outcome, x, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve, [0.0, 1.0, 2.0])
    assert adrf_amse([0.0, 1.0, 2.0], [1.0, 1.0, 0.0]) == pytest.approx((1 + 0 + 4) / 3)


def test_effect_r2_and_summaries():
    assert effect_r2([1.0, 3.0], [1.0, 3.0]) == pytest.approx(1.0)
    assert effect_r2([1.0, 3.0], [2.0, 2.0]) == pytest.approx(0.0)  # the mean effect explains nothing
    stats = summarize_replications([1.0, 2.0, 10.0], "sqrt_pehe_out")
    assert stats["sqrt_pehe_out"] == pytest.approx(13.0 / 3.0)
    assert stats["sqrt_pehe_out_median"] == 2.0
    assert stats["sqrt_pehe_out_max"] == 10.0


def test_bad_metric_inputs_raise_clear_errors():
    with pytest.raises(CausalInputError, match="one length"):
        pehe([1.0, 2.0], [1.0])
    with pytest.raises(CausalInputError, match="variance is 0"):
        effect_r2([2.0, 2.0], [1.0, 3.0])
    with pytest.raises(CausalInputError, match=r"\[n, K >= 2\]"):
        multi_treatment_metrics(np.zeros((3, 1)), np.zeros((3, 1)))
