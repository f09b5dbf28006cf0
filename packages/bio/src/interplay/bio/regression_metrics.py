"""Regression metrics shared by the bio tasks: RMSE, R², Pearson and Spearman correlation.

Drug sensitivity (PaccMann MCA, Manica et al. 2019, which reports R² and RMSE of ln IC50) and
protein-protein binding affinity (Spearman, Pearson and RMSE of pKd) score predictions with these.

* :func:`rmse` ``sqrt(mean((y - ŷ)²))``;
* :func:`r2_score` the coefficient of determination ``1 - SS_res / SS_tot`` (scikit-learn's
  ``r2_score``: it can be negative, it is not the squared Pearson correlation);
* :func:`pearson` ``cov(y, ŷ) / (sd(y) sd(ŷ))``;
* :func:`spearman` Pearson's correlation of the ranks, with tied values given their average rank
  (as ``scipy.stats.spearmanr``).

Correlations of a constant vector are undefined: they return ``nan`` rather than raising, so that
one degenerate validation epoch does not stop a run. :class:`RegressionMetrics` is the torchmetrics
form (it gathers the predictions of an epoch and, given ``scale`` and ``offset``, maps them back to
the original unit, e.g. undoing a min-max scaling, before scoring).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from interplay.core.errors import DataError

__all__ = [
    "METRIC_NAMES",
    "RegressionMetrics",
    "pearson",
    "r2_score",
    "rankdata",
    "regression_metrics",
    "rmse",
    "spearman",
]

METRIC_NAMES = ("rmse", "r2", "pearson", "spearman")
ArrayLike = Sequence[float] | np.ndarray | Tensor


def _pair(predictions: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    def as_array(values: ArrayLike) -> np.ndarray:
        if isinstance(values, Tensor):
            values = values.detach().cpu().double().numpy()
        return np.asarray(values, dtype=np.float64).reshape(-1)

    pred, true = as_array(predictions), as_array(targets)
    if pred.shape != true.shape:
        raise DataError(f"predictions ({pred.size}) and targets ({true.size}) differ in length")
    if pred.size == 0:
        raise DataError("regression metrics need at least one prediction")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise DataError("predictions or targets hold NaN or infinite values")
    return pred, true


def rmse(predictions: ArrayLike, targets: ArrayLike) -> float:
    pred, true = _pair(predictions, targets)
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def r2_score(predictions: ArrayLike, targets: ArrayLike) -> float:
    """``1 - sum((y - ŷ)²) / sum((y - mean y)²)``; ``nan`` for constant targets."""
    pred, true = _pair(predictions, targets)
    total = np.sum((true - true.mean()) ** 2)
    if total == 0:
        return float("nan")
    return float(1.0 - np.sum((true - pred) ** 2) / total)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if denominator == 0:
        return float("nan")
    # clip: rounding can push |r| a hair above 1 for (anti-)collinear inputs
    return float(np.clip(np.sum(a * b) / denominator, -1.0, 1.0))


def pearson(predictions: ArrayLike, targets: ArrayLike) -> float:
    pred, true = _pair(predictions, targets)
    return _correlation(pred, true)


def rankdata(values: ArrayLike) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span (``scipy`` 'average')."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of runs of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def spearman(predictions: ArrayLike, targets: ArrayLike) -> float:
    pred, true = _pair(predictions, targets)
    return _correlation(rankdata(pred), rankdata(true))


def regression_metrics(predictions: ArrayLike, targets: ArrayLike, prefix: str = "") -> dict[str, float]:
    """``{prefix + name: value}`` for RMSE, R², Pearson and Spearman."""
    pred, true = _pair(predictions, targets)
    return {
        f"{prefix}rmse": rmse(pred, true),
        f"{prefix}r2": r2_score(pred, true),
        f"{prefix}pearson": pearson(pred, true),
        f"{prefix}spearman": spearman(pred, true),
    }


class RegressionMetrics(torchmetrics.Metric):
    """RMSE, R², Pearson and Spearman over an epoch, in the original unit ``value * scale + offset``.

    Spearman needs every prediction at once, so the states are concatenated lists (synchronised across
    processes under DDP), not running sums; ``compute`` returns a dict of four scalars.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, scale: float = 1.0, offset: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.offset = float(offset)
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        self.predictions.append(predictions.detach().reshape(-1).double())
        self.targets.append(targets.detach().reshape(-1).double())

    def compute(self) -> dict[str, Tensor]:
        pred = torchmetrics.utilities.dim_zero_cat(self.predictions) * self.scale + self.offset
        true = torchmetrics.utilities.dim_zero_cat(self.targets) * self.scale + self.offset
        values = regression_metrics(pred, true)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
