"""DCAL training tasks: fine-grained classification and re-identification, each branch (SA, GLCA,
PWCA) with its own loss, combined by :class:`~interplay.vision.modules.dcal.losses.UncertaintyWeightedLoss`
(``uncertainty: false`` sums them instead). Every training batch draws each image's PWCA distractor
from the same batch (:func:`~interplay.vision.modules.dcal.model.distractor_permutation`).

- ``dcal-classification``: cross-entropy per branch (label smoothing in training); metrics on the
  inference prediction (SA + GLCA class probabilities): ``acc`` (+ ``acc_top5``), and per branch
  ``acc_sa`` / ``acc_glca``.
- ``dcal-reid``: per branch ID cross-entropy + batch-hard triplet loss on the class-token feature;
  validation and test rank the gallery for every query with the inference feature
  ``[SA; GLCA]``: ``map``, ``rank1``, ``rank5`` (evaluation losses are reported as 0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.vision.modules.dcal.losses import UncertaintyWeightedLoss, batch_hard_triplet_loss
from interplay.vision.modules.dcal.metrics import ReIDRetrieval
from interplay.vision.modules.dcal.model import DCALOutput, DCALViT, distractor_permutation
from interplay.vision.registry import REGISTRY

BRANCHES = ("sa", "glca", "pwca")


class _DCALTask(TaskModule):
    def __init__(self, model: nn.Module, optimizer: OptimizerConfig | None, uncertainty: bool) -> None:
        super().__init__(model, optimizer)
        if not isinstance(model, DCALViT):
            raise ConfigError(f"DCAL tasks need a DCAL model (dcal_vit), got {type(model).__name__}")
        self.uncertainty = UncertaintyWeightedLoss(BRANCHES) if uncertainty else None

    def combine(self, losses: dict[str, Tensor]) -> Tensor:
        if self.uncertainty is not None:
            return self.uncertainty(losses)
        return torch.stack(list(losses.values())).sum()

    def training_outputs(self, images: Tensor) -> DCALOutput:
        distractors = distractor_permutation(images.shape[0], device=images.device)
        return self.model.branches(images, distractors)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.uncertainty is not None:
            weights = {f"train/weight_{k}": v for k, v in self.uncertainty.weights().items()}
            self.log_dict(weights, sync_dist=False)


@REGISTRY.tasks.register(
    "dcal-classification",
    "DCAL fine-grained classification: SA / GLCA / PWCA cross-entropy, uncertainty-weighted",
)
class DCALClassificationTask(_DCALTask):
    """Args:
    model: a :class:`~interplay.vision.modules.dcal.model.DCALViT`.
    num_classes: number of classes (filled from the data module).
    label_smoothing: of the training cross-entropies.
    uncertainty: learnable uncertainty weights (else the plain sum of the branch losses).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        label_smoothing: float = 0.0,
        uncertainty: bool = True,
    ) -> None:
        super().__init__(model, optimizer, uncertainty)
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        self.label_smoothing = label_smoothing

        def collection(stage: str) -> torchmetrics.MetricCollection:
            acc = {"task": "multiclass", "num_classes": num_classes}
            metrics: dict[str, torchmetrics.Metric] = {"acc": torchmetrics.Accuracy(**acc)}
            if num_classes > 5:
                metrics["acc_top5"] = torchmetrics.Accuracy(**acc, top_k=5)
            return torchmetrics.MetricCollection(metrics, prefix=f"{stage}/")

        self.metrics.update({f"{s}_metrics": collection(s) for s in STAGES})
        if model.use_glca:
            self.branch_metrics = nn.ModuleDict(
                {
                    f"{s}_{b}": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
                    for s in ("val", "test")
                    for b in ("sa", "glca")
                }
            )

    def step(self, batch: Any, stage: str) -> Tensor:
        images, labels = batch
        if stage == "train":
            out = self.training_outputs(images)
            losses = {"sa": F.cross_entropy(out.sa_logits, labels, label_smoothing=self.label_smoothing)}
            if out.glca_logits is not None:
                losses["glca"] = F.cross_entropy(
                    out.glca_logits, labels, label_smoothing=self.label_smoothing
                )
            if out.pwca_logits is not None:
                losses["pwca"] = F.cross_entropy(
                    out.pwca_logits, labels, label_smoothing=self.label_smoothing
                )
            loss = self.combine(losses)
        else:
            out = self.model.branches(images)
            loss = None
        if out.glca_logits is None:
            scores = out.sa_logits
        else:
            probs = 0.5 * (out.sa_logits.softmax(-1) + out.glca_logits.softmax(-1))
            scores = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
            if stage != "train":
                self.branch_metrics[f"{stage}_sa"].update(out.sa_logits.detach(), labels)
                self.branch_metrics[f"{stage}_glca"].update(out.glca_logits.detach(), labels)
        if loss is None:  # scores are log-probabilities or logits: cross-entropy is right for both
            loss = F.cross_entropy(scores, labels)
        self.stage_metrics(stage).update(scores.detach(), labels)
        return loss

    def _log_branches(self, stage: str) -> None:
        if not self.model.use_glca:
            return
        values = {}
        for b in ("sa", "glca"):
            metric = self.branch_metrics[f"{stage}_{b}"]
            if metric.update_called:
                values[f"{stage}/acc_{b}"] = metric.compute()
            metric.reset()
        if values:
            self.log_dict(values, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_branches("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_branches("test")

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        probs = self.model(images).softmax(-1)
        out = {"pred": probs.argmax(-1), "prob": probs}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["target"] = batch[1]
        return out


@REGISTRY.tasks.register(
    "dcal-reid", "DCAL re-identification: ID + triplet per branch, mAP / rank-1 retrieval"
)
class DCALReIDTask(_DCALTask):
    """Args:
    model: a :class:`~interplay.vision.modules.dcal.model.DCALViT` whose classifiers span the training
        identities (``num_classes`` from the data module).
    margin: of the batch-hard triplet loss (0.3).
    label_smoothing: of the ID cross-entropy (0.1, as TransReID).
    uncertainty: learnable uncertainty weights over the three branch losses.
    normalize_triplet: the triplet loss on L2-normalised features (the default). On raw features a
        backbone trained from scratch collapses: shrinking the final norm's gain shrinks every
        distance and leaves the loss at its margin (the paper fine-tunes a pre-trained ViT, where the
        raw features work; set ``false`` there to follow it).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        margin: float = 0.3,
        label_smoothing: float = 0.1,
        uncertainty: bool = True,
        normalize_triplet: bool = True,
    ) -> None:
        super().__init__(model, optimizer, uncertainty)
        if num_classes < 2:
            raise ConfigError(f"re-ID needs >= 2 training identities, got {num_classes}")
        self.margin, self.label_smoothing = margin, label_smoothing
        self.normalize_triplet = normalize_triplet
        self.metrics.update(
            {
                f"{s}_metrics": torchmetrics.MetricCollection({"retrieval": ReIDRetrieval()}, prefix=f"{s}/")
                for s in ("val", "test")
            }
        )

    def branch_loss(self, features: Tensor, logits: Tensor, pids: Tensor) -> Tensor:
        identity = F.cross_entropy(logits, pids, label_smoothing=self.label_smoothing)
        if self.normalize_triplet:
            features = F.normalize(features, dim=-1)
        return identity + batch_hard_triplet_loss(features, pids, self.margin)

    def step(self, batch: Any, stage: str) -> Tensor:
        if stage == "train":
            images, pids = batch
            out = self.training_outputs(images)
            losses = {"sa": self.branch_loss(out.sa_features, out.sa_logits, pids)}
            if out.glca_features is not None:
                losses["glca"] = self.branch_loss(out.glca_features, out.glca_logits, pids)
            if out.pwca_features is not None:
                losses["pwca"] = self.branch_loss(out.pwca_features, out.pwca_logits, pids)
            return self.combine(losses)
        images, pids, cams, is_query = batch
        features = self.model.embed(images)
        self.stage_metrics(stage).update(features, pids, cams, is_query)
        return features.new_zeros(())

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        out = {"feature": self.model.embed(images)}
        if isinstance(batch, (list, tuple)) and len(batch) >= 4:
            out.update({"pid": batch[1], "cam": batch[2], "is_query": batch[3]})
        return out
