"""IQA agreement metrics: SRCC (Spearman rank-order) and PLCC (Pearson linear) correlation between
predicted and subjective scores, as the released MANIQA code reports them (``scipy.stats.spearmanr``
and ``pearsonr`` on the raw predictions, no logistic fitting).

Both are written in torch (float64) so they run on the training device; ties get their average rank,
as in scipy. :class:`CorrelationMetric` accumulates a whole split (a torchmetrics metric, gathered
across processes under DDP) and scores it once per epoch: correlations do not average over batches.
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor


def _check_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred, target = torch.as_tensor(pred).flatten().double(), torch.as_tensor(target).flatten().double()
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same length, got {pred.numel()} and {target.numel()}"
        )
    if pred.numel() < 2:
        raise ValueError(f"a correlation needs at least 2 values, got {pred.numel()}")
    if not (torch.isfinite(pred).all() and torch.isfinite(target).all()):
        raise ValueError("pred and target must be finite (NaN or inf found)")
    return pred, target


def rankdata(x: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor, ties averaged (``scipy.stats.rankdata(method="average")``)."""
    sorted_x, order = torch.sort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() - 1) / 2  # mean of the positions start..end (1-based)
    ranks = torch.empty_like(sorted_x, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def plcc(pred: Tensor, target: Tensor) -> float:
    """Pearson correlation ``sum (x - mx)(y - my) / sqrt(sum (x - mx)^2 sum (y - my)^2)``; 0 when either
    side is constant (the correlation is undefined there: scipy returns NaN with a warning)."""
    x, y = _check_pair(pred, target)
    x, y = x - x.mean(), y - y.mean()
    den = torch.sqrt((x * x).sum() * (y * y).sum())
    if den == 0:
        return 0.0
    return float(((x * y).sum() / den).clamp(-1.0, 1.0))


def srcc(pred: Tensor, target: Tensor) -> float:
    """Spearman rank-order correlation: Pearson correlation of the (tie-averaged) ranks."""
    x, y = _check_pair(pred, target)
    return plcc(rankdata(x), rankdata(y))


class CorrelationMetric(torchmetrics.Metric):
    """SRCC (``kind="srcc"``) or PLCC (``kind="plcc"``) of every prediction seen since the last reset."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, kind: str = "srcc", **kwargs) -> None:
        super().__init__(**kwargs)
        if kind not in ("srcc", "plcc"):
            raise ValueError(f"kind must be 'srcc' or 'plcc', got {kind!r}")
        self.kind = kind
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, targets: Tensor) -> None:
        self.preds.append(preds.detach().flatten().double())
        self.targets.append(targets.detach().flatten().double())

    def compute(self) -> Tensor:
        preds = torchmetrics.utilities.dim_zero_cat(self.preds)
        targets = torchmetrics.utilities.dim_zero_cat(self.targets)
        if preds.numel() < 2:
            return torch.tensor(0.0)
        fn = srcc if self.kind == "srcc" else plcc
        return torch.tensor(fn(preds, targets), dtype=torch.float32)
