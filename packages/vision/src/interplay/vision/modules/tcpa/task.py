"""TCPA training: image classification (cross-entropy, Mixup / CutMix, EMA: the vision task) plus
``matching_loss_weight x`` the matching loss of the pass, with random prompt matching during the
first ``random_match_epochs`` epochs (the official ``--random_epoch`` warm-up)."""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor

from interplay.core.errors import ConfigError
from interplay.vision.registry import REGISTRY
from interplay.vision.tasks import ImageClassificationTask


@REGISTRY.tasks.register(
    "tcpa-classification", "TCPA prompt tuning: cross-entropy + weighted key-matching loss, random warm-up"
)
class TCPAClassificationTask(ImageClassificationTask):
    """Args (besides :class:`~interplay.vision.tasks.ImageClassificationTask`'s):
    matching_loss_weight: weight of the matching loss (10 in the official README).
    random_match_epochs: epochs at the start with random prompt selection (10 in the official scripts).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_classes: int,
        *args: Any,
        matching_loss_weight: float = 10.0,
        random_match_epochs: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, num_classes, *args, **kwargs)
        if not hasattr(model, "matching_loss"):
            raise ConfigError(
                f"task 'tcpa-classification' needs a TCPA model (tcpa_vit), got {type(model).__name__}"
            )
        if matching_loss_weight < 0 or random_match_epochs < 0:
            raise ConfigError("matching_loss_weight and random_match_epochs must be >= 0")
        self.matching_loss_weight = matching_loss_weight
        self.random_match_epochs = random_match_epochs
        self.train_matching = torchmetrics.MeanMetric()

    def step(self, batch: Any, stage: str) -> Tensor:
        if stage == "train":
            self.model.random_matching = self.current_epoch < self.random_match_epochs
        loss = super().step(batch, stage)
        if stage == "train":
            matching = self.model.matching_loss
            self.train_matching.update(matching.detach())
            loss = loss + self.matching_loss_weight * matching
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.train_matching.update_called:
            self.log("train/matching_loss", self.train_matching.compute(), sync_dist=False)
        self.train_matching.reset()
