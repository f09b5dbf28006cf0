"""LightningModules: the loop is Lightning's; a task holds the model, its loss and its metrics.

:class:`TaskModule` is the base every domain task derives from. A subclass implements
:meth:`TaskModule.step` (loss for one batch, updating that stage's metrics) and, for
``predict``, :meth:`TaskModule.predict_batch`. Optimiser and learning-rate schedule come from an
:class:`~interplay.core.train.config.OptimizerConfig`, so every model is trained the same way.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.registry import CORE_TASKS
from interplay.core.train.config import OptimizerConfig

STAGES = ("train", "val", "test")


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg``; biases and norm weights get no weight decay."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_lambda(cfg: OptimizerConfig, steps_per_epoch: int, total_steps: int):
    """Multiplier of the base learning rate at optimiser step ``s``: warm-up, then the schedule."""
    warmup = max(0, round(cfg.warmup_epochs * steps_per_epoch))
    floor = cfg.min_lr / cfg.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.scheduler == "step":
            return cfg.gamma ** ((step // max(1, steps_per_epoch)) // cfg.step_size)
        return 1.0

    return factor


class TaskModule(pl.LightningModule):
    """Base task: wraps ``model``, builds the optimiser, logs per-epoch loss and metrics.

    Metrics are torchmetrics objects held in ``self.metrics[f"{stage}_metrics"]``: ``step``
    only updates them, and the base class computes, logs and resets them once per epoch. Logging
    once per epoch instead of per step keeps the engine's cost per step near a plain loop's, and
    torchmetrics synchronises the states across processes under DDP.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerConfig | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_config = optimizer or OptimizerConfig()
        self.metrics = nn.ModuleDict()  # subclasses add f"{stage}_metrics" collections
        self.losses = nn.ModuleDict({f"{s}_loss": torchmetrics.MeanMetric() for s in STAGES})
        # Filled by the engine so that a checkpoint can rebuild the whole experiment.
        self.experiment_config: dict[str, Any] | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    # -- to implement ---------------------------------------------------------------------------
    def step(self, batch: Any, stage: str) -> Tensor:
        """Loss of ``batch``; update the metrics of ``stage`` ('train', 'val' or 'test')."""
        raise NotImplementedError

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        """Per-example outputs (one row each) written by ``predict``."""
        raise NotImplementedError

    def stage_metrics(self, stage: str) -> torchmetrics.MetricCollection | None:
        key = f"{stage}_metrics"
        return self.metrics[key] if key in self.metrics else None  # noqa: SIM401 (ModuleDict has no get)

    # -- Lightning hooks ---------------------------------------------------------------------------
    def _run(self, batch: Any, stage: str) -> Tensor:
        loss = self.step(batch, stage)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage} loss is {loss.item()} at step {self.global_step}")
        self.losses[f"{stage}_loss"].update(loss.detach(), max(1, batch_size_of(batch)))
        return loss

    def _log_epoch(self, stage: str) -> None:
        loss = self.losses[f"{stage}_loss"]
        values: dict[str, Tensor] = {}
        if loss.update_called:
            values[f"{stage}/loss"] = loss.compute()
        metrics = self.stage_metrics(stage)
        if metrics is not None and all(m.update_called for m in metrics.values()):
            values.update(metrics.compute())
        loss.reset()
        if metrics is not None:
            metrics.reset()
        if values:
            # already reduced across processes by torchmetrics
            self.log_dict(values, prog_bar=stage != "test", sync_dist=False, rank_zero_only=False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._run(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._run(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._run(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self.predict_batch(batch)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), self.optimizer_config)
        cfg = self.optimizer_config
        if cfg.scheduler == "none" and cfg.warmup_epochs == 0:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, per_epoch, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.experiment_config is not None:
            checkpoint["interplay_config"] = self.experiment_config


def batch_size_of(batch: Any) -> int:
    """Number of examples in a batch made of tensors, tuples, lists or dicts."""
    if isinstance(batch, Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = batch_size_of(item)
            if size:
                return size
    return 0


@CORE_TASKS.register("classification", "multi-class classification: cross-entropy, accuracy, macro-F1")
class ClassificationTask(TaskModule):
    """Multi-class classification: cross-entropy, accuracy and macro-F1 per stage.

    Batches are ``(inputs, targets)``; the model maps inputs to logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(model, optimizer)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

        def collection(stage: str) -> torchmetrics.MetricCollection:
            metrics = {"acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)}
            if stage != "train":  # macro-F1 only where it is read: selection and the final score
                metrics["f1"] = torchmetrics.F1Score(
                    task="multiclass", num_classes=num_classes, average="macro"
                )
            return torchmetrics.MetricCollection(metrics, prefix=f"{stage}/")

        # ModuleDict keys may not shadow nn.Module attributes such as ``train``
        self.metrics.update({f"{s}_metrics": collection(s) for s in STAGES})

    def step(self, batch: Any, stage: str) -> Tensor:
        inputs, targets = batch
        logits = self.model(inputs)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        self.stage_metrics(stage).update(logits.detach(), targets)
        return loss

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        probs = self.model(inputs).softmax(-1)
        out = {"pred": probs.argmax(-1), "prob": probs}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["target"] = batch[1]
        return out
