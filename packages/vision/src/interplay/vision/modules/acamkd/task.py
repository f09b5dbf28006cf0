"""ACAM-KD classification distillation on the vision task: the student's image-classification loss
(cross-entropy with label smoothing, Mixup / CutMix: :class:`~interplay.vision.tasks.ImageClassificationTask`)
plus ``feature_weight x L_feat + diversity_weight x L_div`` of the pass and, with ``kd_weight > 0``,
``kd_weight x T^2 KL(teacher || student)`` on the logits. Validation, test and predictions use the
student alone."""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor

from interplay.core.errors import ConfigError
from interplay.vision.modules.acamkd.model import ACAMDistiller, logit_kd_loss
from interplay.vision.registry import REGISTRY
from interplay.vision.tasks import ImageClassificationTask

_TERMS = ("feature_loss", "diversity_loss", "kd_loss")


@REGISTRY.tasks.register(
    "acamkd-classification",
    "ACAM-KD distillation: CE(student) + masked feature loss + mask diversity (+ logit KD); frozen teacher",
)
class ACAMKDClassificationTask(ImageClassificationTask):
    """Args (besides :class:`~interplay.vision.tasks.ImageClassificationTask`'s):
    feature_weight: ``lambda``, weight of the masked feature loss ``L_s + L_c``.
    diversity_weight: ``mu``, weight of the mask diversity (Dice) loss.
    kd_weight: weight of the logit distillation term (0: feature distillation only, as the paper).
    kd_temperature: its temperature ``T``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_classes: int,
        *args: Any,
        feature_weight: float = 1.0,
        diversity_weight: float = 1.0,
        kd_weight: float = 0.0,
        kd_temperature: float = 4.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, ACAMDistiller):
            raise ConfigError(
                f"task 'acamkd-classification' needs the 'acamkd' model, got {type(model).__name__}"
            )
        for name, value in (
            ("feature_weight", feature_weight),
            ("diversity_weight", diversity_weight),
            ("kd_weight", kd_weight),
        ):
            if value < 0:
                raise ConfigError(f"acamkd-classification: {name} must be >= 0, got {value}")
        if kd_temperature <= 0:
            raise ConfigError(f"acamkd-classification: kd_temperature must be > 0, got {kd_temperature}")
        super().__init__(model, num_classes, *args, **kwargs)
        self.feature_weight = feature_weight
        self.diversity_weight = diversity_weight
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        model.teacher_logits = kd_weight > 0
        self.train_terms = torch.nn.ModuleDict({t: torchmetrics.MeanMetric() for t in _TERMS})

    def step(self, batch: Any, stage: str) -> Tensor:
        loss = super().step(batch, stage)
        out = self.model.last if stage == "train" else None
        if out is None:
            return loss
        kd = loss.new_zeros(())
        if self.kd_weight > 0 and out.teacher_logits is not None:
            kd = logit_kd_loss(out.logits, out.teacher_logits, self.kd_temperature)
        for name, value in zip(_TERMS, (out.feature_loss, out.diversity_loss, kd)):
            self.train_terms[name].update(value.detach())
        self.model.last = None  # do not keep the graph alive past the step
        return (
            loss
            + self.feature_weight * out.feature_loss
            + self.diversity_weight * out.diversity_loss
            + self.kd_weight * kd
        )

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for name, metric in self.train_terms.items():
            if metric.update_called:
                self.log(f"train/{name}", metric.compute(), sync_dist=False)
            metric.reset()
