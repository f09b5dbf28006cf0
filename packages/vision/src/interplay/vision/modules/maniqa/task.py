"""No-reference IQA regression on core's engine (registered as ``iqa-regression``).

Batches are ``(images, scores)``: training images ``[B, 3, S, S]`` (one random crop each), evaluation
images ``[B, K, 3, S, S]`` (``K`` fixed crops, whose predictions are averaged, as the released
``eval_epoch`` averages ``num_avg_val`` crops). The loss is the released MSE (``loss="l1"`` for L1);
each split's SRCC and PLCC are computed once per epoch over the whole split
(:class:`~interplay.vision.modules.maniqa.metrics.CorrelationMetric`). Select on ``val/srcc``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.vision.modules.maniqa.metrics import CorrelationMetric
from interplay.vision.registry import REGISTRY


@REGISTRY.tasks.register("iqa-regression", "image quality regression: MSE on MOS, SRCC / PLCC per split")
class IQARegressionTask(TaskModule):
    """Args:
    model: maps ``[B, 3, S, S]`` crops to scores ``[B]`` (or ``[B, 1]``).
    loss: ``"mse"`` (released) or ``"l1"``.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerConfig | None = None, loss: str = "mse") -> None:
        super().__init__(model, optimizer)
        if loss not in ("mse", "l1"):
            raise ConfigError(f"iqa-regression loss must be 'mse' or 'l1', got '{loss}'")
        self.loss_name = loss

        def collection(stage: str) -> torchmetrics.MetricCollection:
            metrics = {"srcc": CorrelationMetric("srcc"), "plcc": CorrelationMetric("plcc")}
            return torchmetrics.MetricCollection(metrics, prefix=f"{stage}/")

        self.metrics.update({f"{s}_metrics": collection(s) for s in STAGES})

    def predict_scores(self, images: Tensor) -> Tensor:
        """Scores ``[B]``; ``[B, K, 3, S, S]`` inputs average the ``K`` crops' scores."""
        if images.dim() == 5:
            b, k = images.shape[:2]
            return self.model(images.flatten(0, 1)).reshape(b, k).mean(dim=1)
        return self.model(images).reshape(images.shape[0])

    def step(self, batch: Any, stage: str) -> Tensor:
        images, scores = batch
        preds = self.predict_scores(images)
        loss = F.mse_loss(preds, scores) if self.loss_name == "mse" else F.l1_loss(preds, scores)
        self.stage_metrics(stage).update(preds.detach(), scores)
        return loss

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        out = {"score": self.predict_scores(images)}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["target"] = batch[1]
        return out
