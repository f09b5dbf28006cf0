"""Medical image segmentation on core's engine (registered as ``medical-segmentation``).

Loss: ``ce_weight * CE + dice_weight * soft Dice`` (DAE-Former: 0.4 / 0.6; TransUNet 0.5 / 0.5), with
the soft Dice of TransUNet's ``DiceLoss``: per class ``1 - (2 sum p g + eps) / (sum p^2 + sum g^2 + eps)``
on the softmax probabilities, averaged over every class including background (``eps = 1e-5``).

* Training and validation batches are 2-D slices ``(image [B, C, S, S], label [B, S, S])``; their
  ``pooled_dice`` pools each foreground class's overlap over the whole split
  (:class:`~interplay.vision.modules.transdae.metrics.OverlapDice`). Select on ``val/pooled_dice``.
* Test batches are whole volumes ``(image [1, D, H, W], label [1, D, H, W])``: every slice is resized
  to the network size, segmented, its logits resized back (bilinear) and arg-maxed; the volume's
  per-class Dice and HD95 follow the Synapse protocol (:func:`~interplay.vision.modules.transdae.
  metrics.case_metrics`) and are averaged over volumes: ``test/dice``, ``test/hd95`` (mean over the
  foreground classes: the papers' DSC and HD95) and ``test/dice_<class>``, ``test/hd95_<class>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.vision.modules.transdae.metrics import CaseMetrics, OverlapDice
from interplay.vision.modules.transdae.model import interpolate_labels
from interplay.vision.registry import REGISTRY


def soft_dice_loss(logits: Tensor, labels: Tensor, eps: float = 1e-5) -> Tensor:
    """TransUNet's ``DiceLoss(softmax=True)``: mean over classes of ``1 - (2 sum p g + eps) / (sum p^2 +
    sum g^2 + eps)``, sums over the batch and pixels; ``logits [B, K, H, W]``, ``labels [B, H, W]``."""
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(labels, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    denominator = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    return (1 - (2 * intersection + eps) / (denominator + eps)).mean()


@REGISTRY.tasks.register(
    "medical-segmentation", "2-D segmentation: CE + Dice loss, pooled Dice; per-volume Dice / HD95 on test"
)
class MedicalSegmentationTask(TaskModule):
    """Args:
    model: maps ``[B, C, S, S]`` to logits ``[B, num_classes, S, S]``.
    num_classes: classes including background (from the data module's ``info``).
    class_names: names for the per-class test metrics (default ``class1``, ...).
    ce_weight, dice_weight: loss weights (0.4 / 0.6).
    image_size: the network input size volumes' slices are resized to (default: the validation size).
    slice_batch: slices per forward pass when segmenting a test volume.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        class_names: Sequence[str] | None = None,
        ce_weight: float = 0.4,
        dice_weight: float = 0.6,
        image_size: int | None = None,
        slice_batch: int = 16,
    ) -> None:
        super().__init__(model, optimizer)
        if num_classes < 2:
            raise ConfigError(f"medical-segmentation needs num_classes >= 2, got {num_classes}")
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ConfigError(
                f"ce_weight and dice_weight must be >= 0 and not both 0, got {ce_weight}, {dice_weight}"
            )
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
        self.num_classes, self.class_names = num_classes, names
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.image_size, self.slice_batch = image_size, slice_batch
        self.metrics.update(
            {
                f"{s}_metrics": torchmetrics.MetricCollection(
                    {"pooled_dice": OverlapDice(num_classes)}, prefix=f"{s}/"
                )
                for s in STAGES
            }
        )
        self.case_metrics = CaseMetrics(num_classes)

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.ce_weight * F.cross_entropy(logits, labels) + self.dice_weight * soft_dice_loss(
            logits, labels
        )

    def segment_volume(self, image: Tensor, label: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Label map ``[D, H, W]`` of a volume ``[D, H, W]`` (slice by slice) and, with ``label``, the loss
        averaged over the slices at the original resolution."""
        depth, h, w = image.shape
        size = self.image_size or h
        preds, losses = [], []
        for start in range(0, depth, self.slice_batch):
            chunk = image[start : start + self.slice_batch, None]
            if (h, w) != (size, size):
                chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False)
            logits = self.model(chunk)
            if (h, w) != (size, size):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            preds.append(logits.argmax(dim=1))
            if label is not None:
                part = label[start : start + self.slice_batch]
                losses.append(self.loss(logits, part) * part.shape[0])
        loss = torch.stack(losses).sum() / depth if losses else None
        return torch.cat(preds), loss

    def step(self, batch: Any, stage: str) -> Tensor:
        images, labels = batch
        if images.dim() == 4 and labels.dim() == 4:  # whole volumes, one per batch
            total = images.new_zeros(())
            for image, label in zip(images, labels):
                pred, loss = self.segment_volume(image, label)
                self.stage_metrics(stage).update(pred, label)
                if stage == "test":
                    self.case_metrics.update(pred, label)
                total = total + loss
            return total / images.shape[0]
        if images.dim() != 4 or labels.dim() != 3:
            raise ConfigError(
                f"medical-segmentation expects slices ([B, C, S, S], [B, S, S]) or volumes ([1, D, H, W] "
                f"twice), got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        logits = self.model(images)
        if logits.shape[-2:] != labels.shape[-2:]:
            labels = interpolate_labels(labels, tuple(logits.shape[-2:]))
        self.stage_metrics(stage).update(logits.argmax(dim=1), labels)
        return self.loss(logits, labels)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if int(self.case_metrics.cases) == 0:
            return
        values = self.case_metrics.compute()
        logged = {"test/dice": values["dice"], "test/hd95": values["hd95"]}
        for name, d, h in zip(self.class_names[1:], values["dice_per_class"], values["hd95_per_class"]):
            logged[f"test/dice_{name}"] = d
            logged[f"test/hd95_{name}"] = h
        self.log_dict(logged, sync_dist=False)
        self.case_metrics.reset()

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if images.dim() == 4 and isinstance(batch, (list, tuple)) and batch[1].dim() == 4:
            from interplay.vision.modules.transdae.metrics import case_metrics

            rows = []
            for image, label in zip(images, batch[1]):
                pred, _ = self.segment_volume(image)
                rows.append(torch.as_tensor(case_metrics(pred, label, self.num_classes), dtype=torch.float32))
            scores = torch.stack(rows)  # [B, K - 1, 2]
            return {"dice": scores[..., 0], "hd95": scores[..., 1]}
        logits = self.model(images)
        return {"foreground_fraction": (logits.argmax(dim=1) > 0).float().mean(dim=(1, 2))}
