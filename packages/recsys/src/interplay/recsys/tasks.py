"""CTR ranking task: binary cross-entropy (+ a model's auxiliary losses), AUC / logloss / GAUC.

Models return logits ``[B]`` from ``forward(batch)``. A model may also define
``training_step_outputs(batch) -> (logits, {name: weighted auxiliary loss})`` (AW-MoE's contrastive
loss); the task adds those losses to the BCE during training only. Selection uses ``val/auc``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.recsys.metrics import CTRMetrics
from interplay.recsys.registry import REGISTRY


@REGISTRY.tasks.register("ctr", "click-through-rate ranking: BCE (+ auxiliary losses), AUC, logloss, GAUC")
class CTRTask(TaskModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig | None = None,
        long_tail_k: int = 3,
        features: dict | None = None,
    ) -> None:
        super().__init__(model, optimizer)
        self.long_tail_k = long_tail_k
        # fitted vocabularies / statistics, stored in checkpoints so that serving reuses them unchanged
        self.features = features
        self.metrics.update(
            {
                f"{s}_metrics": torchmetrics.MetricCollection(
                    {"ctr": CTRMetrics(long_tail_k)}, prefix=f"{s}/"
                )
                for s in STAGES
            }
        )
        self.aux_losses = nn.ModuleDict()

    def step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        aux: dict[str, Tensor] = {}
        if stage == "train" and hasattr(self.model, "training_step_outputs"):
            logits, aux = self.model.training_step_outputs(batch)
        else:
            logits = self.model(batch)
        labels = batch["label"].float()
        if logits.shape != labels.shape:
            raise ValueError(
                f"model returned logits of shape {tuple(logits.shape)}, labels are {tuple(labels.shape)}"
            )
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        for name, value in aux.items():
            loss = loss + value
            if name not in self.aux_losses:
                self.aux_losses[name] = torchmetrics.MeanMetric().to(value.device)
            self.aux_losses[name].update(value.detach())
        self.stage_metrics(stage).update(
            torch.sigmoid(logits.detach()), labels, batch.get("user"), batch.get("sequence_length")
        )
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for name, metric in self.aux_losses.items():
            if metric.update_called:
                self.log(f"train/{name}", metric.compute(), sync_dist=False)
            metric.reset()

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {"prob": torch.sigmoid(self.model(batch))}
        if "label" in batch:
            out["label"] = batch["label"]
        if "user" in batch:
            out["user"] = batch["user"]
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.features is not None:
            checkpoint["interplay_features"] = self.features
