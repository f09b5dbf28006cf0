"""Vision training: EMA against its closed form (alone and inside a Lightning fit), soft-target cross-
entropy, top-5 accuracy, weight-decay groups, the ``--model`` option of the CLI and a short end-to-end
run through the console entry point on an image folder."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from interplay.core.train import OptimizerConfig
from interplay.vision.cli import main, translate_model_option
from interplay.vision.data import smooth_one_hot, write_shapes_folder
from interplay.vision.ema import ModelEma
from interplay.vision.tasks import ImageClassificationTask, soft_target_cross_entropy


def _closed_form(history: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """``e_k = d^k w_0 + (1 - d) sum_{i=1..k} d^(k-i) w_i`` from the weights after each step."""
    k = len(history) - 1
    return {
        name: decay**k * history[0][name]
        + sum((1 - decay) * decay ** (k - i) * history[i][name] for i in range(1, k + 1))
        for name in history[0]
    }


def test_ema_equals_its_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = ModelEma(model, decay=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    history = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    for _ in range(6):
        model(torch.randn(8, 4)).square().sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
    want = _closed_form(history, 0.9)
    for name, p in ema.module.named_parameters():
        torch.testing.assert_close(p, want[name], rtol=1e-5, atol=1e-6)
        assert not p.requires_grad
    # buffers are copied, not averaged
    torch.testing.assert_close(ema.module[1].running_mean, model[1].running_mean)
    assert int(ema.num_updates) == 6 and not ema.module.training


class _Record(pl.Callback):
    def __init__(self):
        self.history = []
        self.val_logits = []

    def on_train_start(self, trainer, task):
        self.history.append({n: p.detach().clone() for n, p in task.model.named_parameters()})

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        self.history.append({n: p.detach().clone() for n, p in task.model.named_parameters()})


def test_task_updates_the_ema_once_per_step_and_validates_with_it(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(24, 6), torch.randint(0, 3, (24,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    task = ImageClassificationTask(
        nn.Linear(6, 3),
        num_classes=3,
        optimizer=OptimizerConfig(name="sgd", lr=0.3, momentum=0.0),
        ema_decay=0.8,
    )
    record = _Record()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)
    assert len(record.history) == 4  # initial weights + 3 steps
    want = _closed_form(record.history, 0.8)
    for name, p in task.model_ema.module.named_parameters():
        torch.testing.assert_close(p, want[name], rtol=1e-5, atol=1e-6)
    assert task.eval_model is task.model_ema.module
    val = trainer.validate(task, dataloaders=loader, verbose=False)[0]
    with torch.no_grad():
        want_loss = F.cross_entropy(task.model_ema.module(x), y)
    assert val["val/loss"] == pytest.approx(float(want_loss), rel=1e-5)


def test_soft_target_cross_entropy_and_smoothing():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 7), torch.randint(0, 7, (5,))
    targets = smooth_one_hot(labels, 7, 0.1)
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, targets), F.cross_entropy(logits, labels, label_smoothing=0.1)
    )
    by_hand = -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets), by_hand)


def test_top5_metric_and_mixup_training_step():
    torch.manual_seed(0)
    task = ImageClassificationTask(nn.Linear(4, 8), num_classes=8, mixup_alpha=0.8, cutmix_alpha=0.0)
    assert set(task.stage_metrics("val")) == {"val/acc", "val/acc_top5"}
    x, y = torch.randn(6, 4), torch.randint(0, 8, (6,))
    loss = task.step((x, y), "train")
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert task.mixer.last_mode == "mixup"
    metrics = task.stage_metrics("val")
    task.step((x, y), "val")
    top5 = metrics["val/acc_top5"].compute()
    with torch.no_grad():
        logits = task.model(x)
    want = (logits.topk(5, dim=-1).indices == y[:, None]).any(-1).float().mean()
    torch.testing.assert_close(top5, want)


def test_position_embedding_and_class_token_are_not_decayed():
    from interplay.vision.models.vit import VisionTransformer

    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    task = ImageClassificationTask(model, num_classes=3, optimizer=OptimizerConfig(weight_decay=0.05))
    optimizer = task.configure_optimizers()
    decay, no_decay = optimizer.param_groups
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.pos_embed) in ids and id(model.cls_token) in ids
    assert id(model.patch_embed.proj.weight) in {id(p) for p in decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_model_option_becomes_the_default_config():
    args = translate_model_option(["train", "--model", "vit_pico_patch4_32", "data.root=/x"])
    assert args == [
        "train",
        "--config",
        "vision-classification",
        "data.root=/x",
        "model.name=vit_pico_patch4_32",
        "data.params.image_size=32",
    ]
    args = translate_model_option(["train", "--config", "vit-pico-digits", "--model=vit_tiny_patch16_224"])
    assert args == [
        "train",
        "--config",
        "vit-pico-digits",
        "model.name=vit_tiny_patch16_224",
        "data.params.image_size=224",
    ]
    args = translate_model_option(["train", "--model", "vit_tiny_patch16_224", "data.params.image_size=64"])
    assert args[-1] == "model.name=vit_tiny_patch16_224"
    assert translate_model_option(["models"]) == ["models"]


def test_train_from_the_command_line_on_an_image_folder(tmp_path, capsys):
    root = write_shapes_folder(tmp_path / "shapes", n_per_class=8, size=32)
    code = main(
        [
            "train",
            "--model",
            "vit_pico_patch4_32",
            f"data.root={root}",
            "data.num_workers=0",
            "data.batch_size=8",
            "task.params.ema_decay=0.5",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            "trainer.limit_train_batches=2",
            "--run-root",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "val/acc" and "test/acc" in metrics["test"]
    assert main(["train", "--model", "no_such_model", f"data.root={root}", "--run-root", str(tmp_path)]) == 2
