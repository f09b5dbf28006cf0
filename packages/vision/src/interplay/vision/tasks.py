"""Image classification on core's engine: soft-target cross-entropy, top-1 / top-5, Mixup / CutMix,
label smoothing, AdamW + cosine + warm-up, EMA of the weights.

Batches are ``(images [B, 3, S, S], labels [B])`` already normalised (and, in training, augmented) by
the data module. In training, :class:`~interplay.vision.data.transforms.MixupCutmix` mixes the batch
and turns labels into soft targets ``t`` (label smoothing folded in), and the loss is
``mean_b sum_k -t_bk log softmax(z_b)_k``; without mixing it is cross-entropy with
``label_smoothing``. Validation and test use plain cross-entropy. Accuracy is read against the hard
labels (in training, the label with the larger mixing weight).

With ``ema_decay > 0`` the task keeps :class:`~interplay.vision.ema.ModelEma` of the model, updated
after every optimiser step, and validates, tests and predicts with the averaged weights (so model
selection and the reported figures are the EMA model's). The optimiser and schedule come from
``optimizer:`` (core's :class:`~interplay.core.train.OptimizerConfig`: AdamW, cosine, linear warm-up
in epochs); biases, norms and the parameters a model lists in ``no_weight_decay()`` (ViT's
``pos_embed``, ``cls_token``) are not decayed.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.vision.data.transforms import MixupCutmix
from interplay.vision.ema import ModelEma
from interplay.vision.registry import REGISTRY

# the EMA copy is kept in eval mode on purpose (it is only evaluated); Lightning warns about it
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``mean_b sum_k -t_bk log softmax(logits_b)_k`` for soft targets ``[B, K]``."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


@REGISTRY.tasks.register(
    "image-classification", "image classification: soft-target CE, Mixup/CutMix, smoothing, top-1/5, EMA"
)
class ImageClassificationTask(TaskModule):
    """Args:
    model: maps images to logits ``[B, num_classes]``.
    num_classes: number of classes (filled from the data module's ``info``).
    label_smoothing: epsilon of the smoothed targets (training only).
    mixup_alpha, cutmix_alpha: Beta parameters (0 disables each); ``mix_prob``: chance a batch is
        mixed; ``switch_prob``: chance of CutMix when both are enabled.
    ema_decay: decay of the weight EMA (0 disables it).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        ema_decay: float = 0.0,
    ) -> None:
        super().__init__(model, optimizer)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.mixer = MixupCutmix(
            num_classes,
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=mix_prob,
            switch_prob=switch_prob,
            label_smoothing=label_smoothing,
        )
        self.model_ema = ModelEma(model, ema_decay) if ema_decay > 0 else None
        self._ema_step = 0  # the global step of the last EMA update

        def collection(stage: str) -> torchmetrics.MetricCollection:
            metrics: dict[str, torchmetrics.Metric] = {
                "acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            }
            if num_classes > 5:
                metrics["acc_top5"] = torchmetrics.Accuracy(
                    task="multiclass", num_classes=num_classes, top_k=5
                )
            return torchmetrics.MetricCollection(metrics, prefix=f"{stage}/")

        self.metrics.update({f"{s}_metrics": collection(s) for s in STAGES})

    @property
    def eval_model(self) -> nn.Module:
        """The weights used for validation, test and predictions (the EMA when enabled)."""
        return self.model_ema.module if self.model_ema is not None else self.model

    def step(self, batch: Any, stage: str) -> Tensor:
        images, labels = batch
        if stage == "train":
            if self.mixer.active:
                images, targets = self.mixer(images, labels)
                logits = self.model(images)
                loss = soft_target_cross_entropy(logits, targets)
                hard = targets.argmax(dim=-1)
            else:
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
                hard = labels
        else:
            logits = self.eval_model(images)
            loss = F.cross_entropy(logits, labels)
            hard = labels
        self.stage_metrics(stage).update(logits.detach(), hard)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # one EMA update per optimiser step (gradient accumulation runs several batches per step)
        if self.model_ema is not None and self.global_step != self._ema_step:
            self._ema_step = self.global_step
            self.model_ema.update(self.model)

    def predict_batch(self, batch: Any) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        probs = self.eval_model(images).softmax(-1)
        out = {"pred": probs.argmax(-1), "prob": probs}
        if isinstance(batch, (list, tuple)) and len(batch) > 1:
            out["target"] = batch[1]
        return out

    def configure_optimizers(self):
        config = super().configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        skip = getattr(self.model, "no_weight_decay", None)
        names = set(skip()) if callable(skip) else set()
        if names and len(optimizer.param_groups) == 2:
            # core's builder puts ndim > 1 tensors in group 0 (decayed) and the rest in group 1
            exempt = {id(p) for n, p in self.model.named_parameters() if n in names}
            decay, no_decay = optimizer.param_groups
            moved = [p for p in decay["params"] if id(p) in exempt]
            decay["params"] = [p for p in decay["params"] if id(p) not in exempt]
            no_decay["params"] = list(no_decay["params"]) + moved
        return config
