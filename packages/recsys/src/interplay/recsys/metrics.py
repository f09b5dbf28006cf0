"""CTR metrics: AUC, logloss, GAUC and AUC on long-tail users.

* AUC: the Mann-Whitney statistic with average ranks for ties (equals scikit-learn's roc_auc_score).
* GAUC (Zhou et al., DIN, 2018): the mean of per-user AUCs weighted by each user's impressions, over
  users that have both a click and a non-click (others have no AUC).
* Long-tail AUC: AUC on the examples of users with at most ``k`` behaviours.

:class:`CTRMetrics` accumulates predictions over an epoch (synchronised across processes by
torchmetrics) and computes all of them at once.
"""

from __future__ import annotations

import math

import torch
import torchmetrics
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` with ties given their average rank."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    n = x.numel()
    # boundaries of runs of equal values
    new_run = torch.ones(n, dtype=torch.bool, device=x.device)
    new_run[1:] = sorted_x[1:] != sorted_x[:-1]
    run_id = torch.cumsum(new_run, 0) - 1
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    run_sum = torch.zeros(int(run_id[-1]) + 1, dtype=torch.float64, device=x.device).index_add_(
        0, run_id, positions
    )
    run_len = torch.bincount(run_id).to(torch.float64)
    ranks = torch.empty(n, dtype=torch.float64, device=x.device)
    ranks[order] = (run_sum / run_len)[run_id]
    return ranks


def auc(labels: Tensor, scores: Tensor) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = labels.flatten().bool()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores.flatten().double())
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: Tensor, probs: Tensor, eps: float = 1e-7) -> float:
    p = probs.flatten().double().clamp(eps, 1 - eps)
    y = labels.flatten().double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def gauc(labels: Tensor, scores: Tensor, users: Tensor) -> float:
    """Impression-weighted mean of per-user AUCs (users with both classes only); NaN if none."""
    labels, scores, users = labels.flatten(), scores.flatten(), users.flatten()
    total, weight = 0.0, 0
    for user in torch.unique(users):
        sel = users == user
        value = auc(labels[sel], scores[sel])
        if not math.isnan(value):
            n = int(sel.sum())
            total += n * value
            weight += n
    return total / weight if weight else math.nan


def long_tail_auc(labels: Tensor, scores: Tensor, behaviour_counts: Tensor, k: int) -> float:
    """AUC over the examples whose user has at most ``k`` behaviours."""
    sel = behaviour_counts.flatten() <= k
    return auc(labels.flatten()[sel], scores.flatten()[sel])


class CTRMetrics(torchmetrics.Metric):
    """Epoch-level AUC, logloss and, when users / sequence lengths are given, GAUC and long-tail AUC."""

    full_state_update = False

    def __init__(self, long_tail_k: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.long_tail_k = long_tail_k
        for name in ("probs", "labels", "users", "lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, probs: Tensor, labels: Tensor, users: Tensor | None = None, lengths: Tensor | None = None
    ) -> None:
        self.probs.append(probs.detach().flatten().float())
        self.labels.append(labels.detach().flatten().float())
        if users is not None:
            self.users.append(users.detach().flatten())
        if lengths is not None:
            self.lengths.append(lengths.detach().flatten())

    def compute(self) -> dict[str, Tensor]:
        probs, labels = dim_zero_cat(self.probs), dim_zero_cat(self.labels)
        out = {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}
        if len(self.users) if isinstance(self.users, list) else self.users.numel():
            out["gauc"] = gauc(labels, probs, dim_zero_cat(self.users))
        if len(self.lengths) if isinstance(self.lengths, list) else self.lengths.numel():
            out["auc_longtail"] = long_tail_auc(labels, probs, dim_zero_cat(self.lengths), self.long_tail_k)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}
