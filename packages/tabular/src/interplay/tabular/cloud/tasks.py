"""Training task of CloudFormer: log-cosh loss, MAE / MSE in percentage points.

Shahbazinia et al., "CloudFormer" (arXiv:2509.03394, 2025): the model is trained with the log-cosh
loss ``L = mean log(cosh(P_hat - P))`` (quadratic near zero, linear for large errors, so a few badly
degraded runs do not dominate) and scored with ``MAE = mean 100 |P - P_hat|`` and
``MSE = mean (100 (P - P_hat))^2`` (percentage points of the performance ratio P).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.tabular.registry import REGISTRY

_LOG2 = math.log(2.0)


def log_cosh(prediction: Tensor, target: Tensor) -> Tensor:
    """Element-wise ``log(cosh(prediction - target))``, stable for any error size.

    Uses ``log cosh x = |x| + log(1 + exp(-2|x|)) - log 2``: ``cosh`` itself overflows float32 past
    |x| ~ 89.
    """
    x = (prediction - target).abs()
    return x + F.softplus(-2.0 * x) - _LOG2


def percentage_point_errors(prediction, target) -> dict[str, float]:
    """``{'mae_pp', 'mse_pp'}`` of P predictions (arrays or tensors), in percentage points."""
    prediction = torch.as_tensor(prediction, dtype=torch.float64).reshape(-1)
    target = torch.as_tensor(target, dtype=torch.float64).reshape(-1)
    error = 100.0 * (prediction - target)
    return {"mae_pp": float(error.abs().mean()), "mse_pp": float((error**2).mean())}


class _PercentagePoints(torchmetrics.Metric):
    """Sums of |100 e| and (100 e)^2 over a stage; ``compute`` gives MAE and MSE in pp."""

    full_state_update = False

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.add_state("abs_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sq_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, target: Tensor) -> None:
        error = 100.0 * (prediction.double() - target.double())
        self.abs_sum += error.abs().sum()
        self.sq_sum += (error**2).sum()
        self.count += error.numel()

    def compute(self) -> dict[str, Tensor]:
        n = self.count.clamp_min(1)
        return {f"{self.prefix}/mae_pp": self.abs_sum / n, f"{self.prefix}/mse_pp": self.sq_sum / n}


@REGISTRY.tasks.register(
    "cloud-performance",
    "VM performance ratio P in (0, 1]: log-cosh loss, MAE / MSE in percentage points (CloudFormer)",
)
class CloudPerformanceTask(TaskModule):
    """Regression of ``P`` from padded runs; the model maps ``(metrics, mask)`` to ``P_hat [B]``.

    ``loss``: ``log_cosh`` (the paper's) or ``mse``.
    """

    def __init__(
        self, model: nn.Module, optimizer: OptimizerConfig | None = None, loss: str = "log_cosh"
    ) -> None:
        super().__init__(model, optimizer)
        if loss not in ("log_cosh", "mse"):
            raise ValueError(f"task.params.loss must be 'log_cosh' or 'mse', got {loss!r}")
        self.loss_name = loss
        self.errors = nn.ModuleDict({f"{s}_errors": _PercentagePoints(s) for s in STAGES})

    def _log_epoch(self, stage: str) -> None:
        super()._log_epoch(stage)
        metric = self.errors[f"{stage}_errors"]
        if metric.update_called:
            self.log_dict(metric.compute(), prog_bar=stage == "val", sync_dist=False, rank_zero_only=False)
            metric.reset()

    def step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        prediction = self.model(batch["metrics"], batch["mask"])
        target = batch["target"].to(prediction.dtype)
        if self.loss_name == "log_cosh":
            loss = log_cosh(prediction, target).mean()
        else:
            loss = F.mse_loss(prediction, target)
        self.errors[f"{stage}_errors"].update(prediction.detach(), target)
        return loss

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        prediction = self.model(batch["metrics"], batch["mask"])
        return {"pred": prediction, "target": batch["target"], "length": batch["length"]}
