"""EEG emotion classification task (the LightningModule the engine trains on each fold).

RBTransformer's recipe: cross-entropy with label smoothing 0.12 on the training batches only,
accuracy and macro-F1 per stage (macro-F1 on validation and test, where selection and the final
score read it). Optimiser and schedule (AdamW lr 1e-3, weight decay 1e-3, cosine to 1e-6 over
the run) come from the experiment's ``optimizer`` section, as for every Interplay task.
"""

from __future__ import annotations

import torchmetrics
from torch import nn

from interplay.core.errors import ConfigError
from interplay.core.train import ClassificationTask, OptimizerConfig
from interplay.core.train.task import STAGES
from interplay.eeg.registry import REGISTRY

__all__ = ["EmotionClassificationTask"]

#: RBTransformer's label smoothing
LABEL_SMOOTHING = 0.12


@REGISTRY.tasks.register(
    "emotion", "emotion classification of EEG windows: smoothed cross-entropy, accuracy, macro-F1"
)
class EmotionClassificationTask(ClassificationTask):
    """Batches are ``(features [B, C, n_bands], labels [B])``; the model returns logits.

    Metrics are logged as ``{stage}/acc`` and ``{stage}/f1_macro`` (validation and test).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: OptimizerConfig | None = None,
        label_smoothing: float = LABEL_SMOOTHING,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"task.params.label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(model, num_classes, optimizer, label_smoothing)

        def collection(stage: str) -> torchmetrics.MetricCollection:
            metrics: dict[str, torchmetrics.Metric] = {
                "acc": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            }
            if stage != "train":
                metrics["f1_macro"] = torchmetrics.F1Score(
                    task="multiclass", num_classes=num_classes, average="macro"
                )
            return torchmetrics.MetricCollection(metrics, prefix=f"{stage}/")

        self.metrics.update({f"{s}_metrics": collection(s) for s in STAGES})
