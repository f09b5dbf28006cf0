"""Treatment-effect metrics (Hill, 2011; Shalit et al., 2017; Nie et al., 2021).

* PEHE, the precision in estimation of heterogeneous effects:
  ``PEHE = mean_i ((mu1(x_i) - mu0(x_i)) - (mu1_hat(x_i) - mu0_hat(x_i)))^2``; papers report
  ``sqrt(PEHE)``. "In-sample" scores the units the model was trained on (their factual outcome was
  seen, the counterfactual never), "out-of-sample" held-out units.
* ATE error: ``|mean_i tau_hat(x_i) - mean_i tau(x_i)|``.
* For more than two treatment values, both are averaged over the contrasts ``k`` vs ``0``
  (TransTEE's multi-treatment tables use the same convention).
* AMSE of the average dose-response function (ADRF) ``psi(t) = E_x[mu(x, t)]`` on a grid of
  treatments: ``mean_g (psi_hat(t_g) - psi(t_g))^2`` with both curves averaged over the same units
  (VCNet's evaluation, where the grid is the held-out units' own treatments).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from interplay.tabular.causal.data import CausalInputError

__all__ = [
    "adrf_amse",
    "ate_error",
    "average_dose_response",
    "binary_effect_metrics",
    "effect_r2",
    "multi_treatment_metrics",
    "pehe",
    "sqrt_pehe",
    "summarize_replications",
]


def _pair(true_effect, estimated_effect) -> tuple[np.ndarray, np.ndarray]:
    true_effect = np.asarray(true_effect, dtype=np.float64).reshape(-1)
    estimated_effect = np.asarray(estimated_effect, dtype=np.float64).reshape(-1)
    if true_effect.shape != estimated_effect.shape or true_effect.size == 0:
        raise CausalInputError(
            f"true and estimated effects must be non-empty and of one length, got {true_effect.shape} "
            f"and {estimated_effect.shape}"
        )
    return true_effect, estimated_effect


def pehe(true_effect, estimated_effect) -> float:
    """Mean squared error of the individual effects (PEHE, not its square root)."""
    tau, tau_hat = _pair(true_effect, estimated_effect)
    return float(np.mean((tau_hat - tau) ** 2))


def sqrt_pehe(true_effect, estimated_effect) -> float:
    """``sqrt(PEHE)``, the figure IHDP tables report."""
    return float(np.sqrt(pehe(true_effect, estimated_effect)))


def ate_error(true_effect, estimated_effect) -> float:
    """``|mean(tau_hat) - mean(tau)|``, the absolute error of the average treatment effect."""
    tau, tau_hat = _pair(true_effect, estimated_effect)
    return float(abs(tau_hat.mean() - tau.mean()))


def effect_r2(true_effect, estimated_effect) -> float:
    """``1 - PEHE / Var(tau)``: the share of the effect's heterogeneity recovered (1 is perfect)."""
    tau, tau_hat = _pair(true_effect, estimated_effect)
    variance = float(np.var(tau))
    if variance == 0.0:
        raise CausalInputError("effect_r2 needs a heterogeneous true effect (its variance is 0)")
    return 1.0 - pehe(tau, tau_hat) / variance


def binary_effect_metrics(mu0, mu1, mu0_hat, mu1_hat, suffix: str = "") -> dict[str, float]:
    """``sqrt_pehe``, ``pehe`` and ``ate_error`` of binary potential outcomes (keys end in ``suffix``)."""
    tau = np.asarray(mu1, dtype=np.float64) - np.asarray(mu0, dtype=np.float64)
    tau_hat = np.asarray(mu1_hat, dtype=np.float64) - np.asarray(mu0_hat, dtype=np.float64)
    return {
        f"sqrt_pehe{suffix}": sqrt_pehe(tau, tau_hat),
        f"pehe{suffix}": pehe(tau, tau_hat),
        f"ate_error{suffix}": ate_error(tau, tau_hat),
    }


def multi_treatment_metrics(potential, potential_hat, suffix: str = "") -> dict[str, float]:
    """Binary metrics averaged over the contrasts ``k`` vs ``0`` of ``[n, K]`` potential outcomes."""
    potential = np.asarray(potential, dtype=np.float64)
    potential_hat = np.asarray(potential_hat, dtype=np.float64)
    if potential.shape != potential_hat.shape or potential.ndim != 2 or potential.shape[1] < 2:
        raise CausalInputError(
            f"potential outcomes must be [n, K >= 2] and match, got {potential.shape} and "
            f"{potential_hat.shape}"
        )
    per_contrast = [
        binary_effect_metrics(potential[:, 0], potential[:, k], potential_hat[:, 0], potential_hat[:, k])
        for k in range(1, potential.shape[1])
    ]
    # sqrt(PEHE) of several contrasts: the root of the mean PEHE (one error scale for all contrasts)
    mean_pehe = float(np.mean([m["pehe"] for m in per_contrast]))
    return {
        f"sqrt_pehe{suffix}": float(np.sqrt(mean_pehe)),
        f"pehe{suffix}": mean_pehe,
        f"ate_error{suffix}": float(np.mean([m["ate_error"] for m in per_contrast])),
    }


def average_dose_response(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, grid
) -> np.ndarray:
    """``psi(t) = mean_i predict(x_i, t)`` for each ``t`` in ``grid``."""
    x = np.asarray(x)
    grid = np.asarray(grid, dtype=np.float64).reshape(-1)
    return np.array([float(np.mean(predict(x, np.full(len(x), g)))) for g in grid])


def adrf_amse(true_curve, estimated_curve) -> float:
    """Mean squared error between two dose-response curves on the same grid (VCNet's AMSE)."""
    truth, estimate = _pair(true_curve, estimated_curve)
    return float(np.mean((estimate - truth) ** 2))


def summarize_replications(values, name: str) -> dict[str, float]:
    """Mean, median, population std, min and max of one metric over replications."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise CausalInputError(f"no replications to summarise for {name}")
    return {
        name: float(values.mean()),
        f"{name}_median": float(np.median(values)),
        f"{name}_std": float(values.std()),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
    }
