"""Training engine: run directories, selection on validation, resume, atomic checkpoints."""

from __future__ import annotations

import csv
import json
import math

import lightning.pytorch as pl
import pytest
import torch
import yaml

from interplay.core.config import from_dict
from interplay.core.demo import REGISTRY, DigitsDataModule
from interplay.core.errors import CheckpointError, ConfigError, UnknownNameError
from interplay.core.registry import DomainRegistry
from interplay.core.train import (
    AtomicCheckpointIO,
    ExperimentConfig,
    OptimizerConfig,
    TrainerConfig,
    build_experiment,
    build_trainer,
    load_checkpoint,
    train,
)
from interplay.core.train.task import lr_lambda


def make_cfg(d, **changes) -> ExperimentConfig:
    d = json.loads(json.dumps(d))
    for dotted, value in changes.items():
        node = d
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return from_dict(ExperimentConfig, d)


def test_run_directory_has_everything(tiny_dict):
    result = train(make_cfg(tiny_dict), REGISTRY)
    run = result.run_dir
    assert run.parent.parent.name == "core" and run.parent.name == "transformer-classifier"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["params"]["dim"] == 16 and saved["trainer"]["max_epochs"] == 2
    versions = json.loads((run / "versions.json").read_text())
    assert versions["packages"]["torch"].startswith("2.13")
    assert "interplay-core" in versions["packages"] and "commit" in versions["git"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and set(metrics["test"]) == {"test/acc", "test/f1", "test/loss"}
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val_acc = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert len(val_acc) == 2
    # the selected checkpoint is the best validation epoch
    assert metrics["best_val"] == pytest.approx(max(val_acc), abs=1e-6)
    assert result.best_checkpoint.is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "plots" / "curves.png").stat().st_size > 1000


class CountingDigits(DigitsDataModule):
    calls: list[str] = []

    def test_dataloader(self):
        CountingDigits.calls.append("test")
        return super().test_dataloader()

    def val_dataloader(self):
        CountingDigits.calls.append("val")
        return super().val_dataloader()


def counting_registry() -> DomainRegistry:
    reg = DomainRegistry("core")
    reg.models.register("transformer-classifier", "tiny")(
        REGISTRY.models.get("transformer-classifier").factory
    )
    reg.datasets.register("digits", "counting digits")(CountingDigits)
    return reg


def test_test_split_scored_once_after_training(tiny_dict):
    CountingDigits.calls = []
    result = train(make_cfg(tiny_dict, trainer__max_epochs=3), counting_registry())
    assert CountingDigits.calls.count("test") == 1
    assert CountingDigits.calls[-1] == "test"  # only after every validation
    # the test score is computed with the best checkpoint's weights
    best = load_checkpoint(result.best_checkpoint)
    task, dm = build_experiment(make_cfg(tiny_dict), REGISTRY)
    task.load_state_dict(best["state_dict"])
    acc = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False).test(
        task, datamodule=dm, verbose=False
    )[0]["test/acc"]
    assert acc == pytest.approx(result.metrics["test"]["test/acc"], abs=1e-6)


class RecordStart(pl.Callback):
    def __init__(self):
        self.epoch = None
        self.step = None
        self.exp_avg = None
        self.weights = None

    def on_train_start(self, trainer, pl_module):
        self.epoch, self.step = trainer.current_epoch, trainer.global_step
        state = trainer.optimizers[0].state_dict()["state"]
        self.exp_avg = {k: v["exp_avg"].clone() for k, v in state.items()}
        self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_resume_continues_at_right_epoch_with_same_optimizer_state(tiny_dict):
    first = train(make_cfg(tiny_dict), REGISTRY)
    last = first.run_dir / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(last)
    assert saved["epoch"] == 1  # 0-based epoch index of the last finished epoch
    recorder = RecordStart()
    second = train(
        make_cfg(tiny_dict, trainer__max_epochs=4), REGISTRY, resume_from=last, callbacks=[recorder]
    )
    assert recorder.epoch == 2 and recorder.step == saved["global_step"]
    opt_state = saved["optimizer_states"][0]["state"]
    assert set(recorder.exp_avg) == set(opt_state)
    for k, v in opt_state.items():
        torch.testing.assert_close(recorder.exp_avg[k], v["exp_avg"], rtol=0, atol=0)
    for k, v in saved["state_dict"].items():
        torch.testing.assert_close(recorder.weights[k], v, rtol=0, atol=0)
    assert second.metrics["epochs"] == 4 and second.run_dir != first.run_dir
    assert json.loads((second.run_dir / "versions.json").read_text())["resumed_from"].endswith("last.ckpt")


def test_resume_from_missing_checkpoint_is_a_clear_error(tiny_dict, tmp_path):
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        train(make_cfg(tiny_dict), REGISTRY, resume_from=tmp_path / "nope.ckpt")


def test_crash_while_writing_checkpoint_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.arange(5)}, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "w": torch.arange(6)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


class FailSavingAt(pl.Callback):
    """Makes the checkpoint write of epoch ``epoch`` die half-way."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:

            def broken_save(obj, f, *args, **kwargs):
                with open(f, "wb") as handle:
                    handle.write(b"partial")
                raise OSError("killed while writing")

            torch.save = broken_save


def test_crash_during_training_leaves_last_checkpoint_loadable(tiny_dict, tmp_path):
    real_save = torch.save
    run_dir = tmp_path / "crash-run"
    try:
        with pytest.raises(OSError, match="killed while writing"):
            train(
                make_cfg(tiny_dict, trainer__max_epochs=3),
                REGISTRY,
                run_dir=run_dir,
                callbacks=[FailSavingAt(1)],
            )
    finally:
        torch.save = real_save
    last = run_dir / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["epoch"] == 0
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.endswith(".ckpt")]
    assert leftovers == []
    resumed = train(make_cfg(tiny_dict, trainer__max_epochs=2), REGISTRY, resume_from=last)
    assert resumed.metrics["epochs"] == 2


def test_early_stopping_on_validation(tiny_dict):
    cfg = make_cfg(
        tiny_dict,
        trainer__max_epochs=10,
        trainer__monitor="val/loss",
        trainer__monitor_mode="min",
        trainer__early_stopping={"enabled": True, "patience": 2, "min_delta": 10.0},
    )
    result = train(cfg, REGISTRY)
    assert result.metrics["epochs"] == 3  # first epoch sets the reference, then 2 without improvement


def test_monitor_must_be_validation_metric(tiny_dict):
    with pytest.raises(ConfigError, match="never looks at the test split"):
        make_cfg(tiny_dict, trainer__monitor="test/acc")


def test_same_seed_same_result(tiny_dict):
    a = train(make_cfg(tiny_dict, trainer__deterministic=True), REGISTRY).metrics["test"]
    b = train(make_cfg(tiny_dict, trainer__deterministic=True), REGISTRY).metrics["test"]
    assert a == b


def test_build_trainer_maps_settings(tmp_path):
    cfg = TrainerConfig(
        max_epochs=3,
        precision="bf16-mixed",
        accumulate_grad_batches=4,
        gradient_clip_val=0.5,
        gradient_clip_algorithm="value",
        progress_bar=False,
        tensorboard=False,
    )
    trainer = build_trainer(cfg, tmp_path)
    assert trainer.max_epochs == 3
    assert trainer.accumulate_grad_batches == 4
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == "value"
    assert "bf16" in str(trainer.precision)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.checkpoint_callback.dirpath == str(tmp_path / "checkpoints")
    with pytest.raises(ConfigError, match="precision"):
        build_trainer(TrainerConfig(precision="17-bits"), None)


def test_model_params_from_data_info_and_overrides(tiny_dict):
    task, dm = build_experiment(make_cfg(tiny_dict), REGISTRY)
    assert task.model.head.out_features == 10 and task.num_classes == 10
    d = json.loads(json.dumps(tiny_dict))
    d["model"]["params"]["dimm"] = 3
    with pytest.raises(ConfigError, match="'dimm'.*did you mean 'dim'"):
        build_experiment(from_dict(ExperimentConfig, d), REGISTRY)
    d["model"]["params"].pop("dimm")
    d["model"]["name"] = "transformer-clasifier"
    with pytest.raises(UnknownNameError, match="did you mean 'transformer-classifier'"):
        build_experiment(from_dict(ExperimentConfig, d), REGISTRY)


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = OptimizerConfig(lr=1.0, scheduler="cosine", warmup_epochs=2, min_lr=0.1)
    f = lr_lambda(cfg, steps_per_epoch=10, total_steps=100)
    assert f(0) == pytest.approx(1 / 20) and f(9) == pytest.approx(10 / 20)  # linear warm-up over 20 steps
    assert f(19) == pytest.approx(1.0)
    assert f(20) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.1)
    step = lr_lambda(OptimizerConfig(lr=1.0, scheduler="step", step_size=2, gamma=0.5), 10, 100)
    assert [step(s) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]
