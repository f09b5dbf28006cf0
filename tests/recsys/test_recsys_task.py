"""CTR task: BCE plus auxiliary losses in training only, metrics per stage, checkpointed features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interplay.recsys.layout import FeatureLayout, FieldInfo, random_batch
from interplay.recsys.tasks import CTRTask

LAYOUT = FeatureLayout(
    categorical=(FieldInfo("user", "categorical", 10), FieldInfo("item", "categorical", 20)),
    numeric=(FieldInfo("price", "numeric"),),
    sequence=FieldInfo("history", "sequence", 20, shares_with="item"),
    max_sequence_length=5,
)


class Linear(nn.Module):
    def __init__(self, aux_weight: float | None = None):
        super().__init__()
        self.w = nn.Linear(1, 1)
        self.aux_weight = aux_weight

    def forward(self, batch):
        return self.w(batch["numeric"]).squeeze(-1)

    def training_step_outputs(self, batch):
        logits = self.forward(batch)
        aux = {} if self.aux_weight is None else {"cl": self.aux_weight * self.w.weight.square().sum()}
        return logits, aux


def test_training_loss_adds_auxiliary_terms_only_in_training():
    batch = random_batch(LAYOUT, 16)
    task = CTRTask(Linear(aux_weight=2.0))
    bce = F.binary_cross_entropy_with_logits(task.model(batch), batch["label"])
    aux = 2.0 * task.model.w.weight.square().sum()
    torch.testing.assert_close(task.step(batch, "train"), bce + aux)
    torch.testing.assert_close(task.step(batch, "val"), bce)
    task.step(batch, "train").backward()
    assert task.model.w.weight.grad is not None
    assert task.aux_losses["cl"].update_called


def test_stage_metrics_include_gauc_and_long_tail():
    batch = random_batch(LAYOUT, 64, seed=3)
    task = CTRTask(Linear(), long_tail_k=2)
    task.step(batch, "val")
    values = task.stage_metrics("val").compute()
    assert set(values) == {"val/auc", "val/logloss", "val/gauc", "val/auc_longtail"}
    assert 0.0 <= values["val/auc"] <= 1.0


def test_shape_mismatch_is_named():
    class Bad(nn.Module):
        def forward(self, batch):
            return torch.zeros(len(batch["label"]), 1)

    with pytest.raises(ValueError, match=r"logits of shape \(8, 1\)"):
        CTRTask(Bad()).step(random_batch(LAYOUT, 8), "val")


def test_features_are_stored_in_checkpoints():
    task = CTRTask(Linear(), features={"vocab": {"item": ["a", "b"]}})
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["interplay_features"] == {"vocab": {"item": ["a", "b"]}}
