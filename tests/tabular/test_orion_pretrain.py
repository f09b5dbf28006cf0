"""Orion-MSP pre-training: schedule, checkpoints, exact resume, and the CLI runner."""

from __future__ import annotations

import json

import pytest
import torch

from interplay.core.errors import CheckpointError
from interplay.tabular.cli import main
from interplay.tabular.icl import (
    OrionMSP,
    OrionMSPConfig,
    PretrainConfig,
    PriorConfig,
    PriorSampler,
    load_pretrained,
    pretrain,
)
from interplay.tabular.icl.pretrain import episode_loss, warmup_cosine

TINY = dict(
    embed_dim=8,
    col_num_blocks=1,
    col_nhead=2,
    col_num_inds=4,
    row_num_blocks=1,
    row_nhead=2,
    row_scales=(1, 4),
    perc_num_latents=2,
    perc_layers=1,
    icl_num_blocks=1,
    icl_nhead=2,
    dropout=0.1,  # so that the restored RNG state matters
)
PRIOR = PriorConfig(min_features=2, max_features=6, min_rows=12, max_rows=20, max_classes=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def tiny_model(seed: int) -> OrionMSP:
    torch.manual_seed(seed)
    return OrionMSP(OrionMSPConfig(**TINY))


def settings(steps: int = 4) -> PretrainConfig:
    return PretrainConfig(steps=steps, lr=1e-3, warmup_steps=2, save_every=2, progress=False)


class CrashAt:
    """A sampler that fails when asked for batch ``step`` (a run killed there)."""

    def __init__(self, sampler: PriorSampler, step: int) -> None:
        self.sampler, self.step = sampler, step
        self.config, self.batch_size, self.seed = sampler.config, sampler.batch_size, sampler.seed

    def batch(self, step: int) -> dict:
        if step == self.step:
            raise KeyboardInterrupt
        return self.sampler.batch(step)


def test_warmup_then_cosine():
    assert warmup_cosine(0, 4, 20, 0.1) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert warmup_cosine(20, 4, 20, 0.1) == pytest.approx(0.1)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    sampler = PriorSampler(PRIOR, batch_size=2, seed=5)
    straight = tiny_model(seed=0)
    torch.manual_seed(123)
    full = pretrain(straight, sampler, settings(4), tmp_path / "straight.pt")
    assert full["step"] == 4 and len(full["history"]) == 4

    interrupted = tiny_model(seed=0)
    torch.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted, CrashAt(sampler, 2), settings(4), tmp_path / "resumed.pt")
    assert torch.load(tmp_path / "resumed.pt", weights_only=False)["step"] == 2

    torch.manual_seed(999)  # a new process: another RNG state and other initial weights
    resumed_model = tiny_model(seed=1)
    resumed = pretrain(resumed_model, sampler, settings(4), tmp_path / "resumed.pt", resume=True)
    assert resumed["step"] == 4
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resuming"
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]

    # without resume a fresh run starts over (from step 0)
    again = pretrain(tiny_model(seed=0), sampler, settings(2), tmp_path / "fresh.pt")
    assert again["step"] == 2


def test_checkpoint_contents_and_loading(tmp_path):
    sampler = PriorSampler(PRIOR, batch_size=2, seed=0)
    model = tiny_model(seed=0)
    pretrain(model, sampler, settings(2), tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert {"model", "model_config", "optimizer", "scheduler", "step", "rng", "history", "prior"} <= set(
        state
    )
    assert set(state["rng"]) == {"torch", "numpy", "python"}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
    loaded = load_pretrained(tmp_path / "ckpt.pt")
    assert not loaded.training
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an Orion-MSP checkpoint"):
        load_pretrained(tmp_path / "other.pt")


def test_lightning_task_computes_the_episode_loss():
    from interplay.tabular.icl import TabularICLTask

    model = tiny_model(seed=0).eval()
    batch = PriorSampler(PRIOR, batch_size=2, seed=1).batch(0)
    task = TabularICLTask(model)
    loss = task.step(batch, "val")
    expected, accuracy = episode_loss(model, batch)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(task.accuracy["val_acc"].compute(), accuracy)


TINY_OVERRIDES = [
    "model.params={embed_dim: 8, col_num_blocks: 1, col_nhead: 2, col_num_inds: 4, row_num_blocks: 1, "
    "row_nhead: 2, row_scales: [1, 4], perc_num_latents: 2, perc_layers: 1, icl_num_blocks: 1, icl_nhead: 2}",
    "data.params={batch_size: 2, min_features: 2, max_features: 5, min_rows: 12, max_rows: 16, "
    "max_classes: 3}",
    "evaluation.steps=2",
    "evaluation.save_every=1",
    "evaluation.warmup_steps=1",
    "evaluation.val_batches=1",
    "evaluation.progress=false",
    "evaluation.device=cpu",
]


def test_cli_pretrains_resumes_and_evaluates(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["train", "--config", "orion-msp-prior", "--run-root", str(root), *TINY_OVERRIDES]) == 0
    (run,) = (root / "tabular" / "orion-msp-prior").iterdir()
    checkpoint = run / "checkpoints" / "last.pt"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0.0 <= metrics["last_val"]["val/acc"] <= 1.0
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()

    # resume to 3 steps in the same run directory
    overrides = [o if o != "evaluation.steps=2" else "evaluation.steps=3" for o in TINY_OVERRIDES]
    assert main(["train", "--config", "orion-msp-prior", "--resume", str(checkpoint), *overrides]) == 0
    assert torch.load(checkpoint, weights_only=False)["step"] == 3
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3

    # the evaluation config on one table, 2 folds, with that checkpoint
    capsys.readouterr()
    code = main(
        [
            "train",
            "--config",
            "orion-msp",
            "--run-root",
            str(root),
            f"evaluation.checkpoint={checkpoint}",
            "data.params.names=[wine]",
            "evaluation.folds=2",
            "evaluation.n_estimators=1",
            "evaluation.device=cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "test/acc_wine" in printed
    (eval_run,) = (root / "tabular" / "orion-msp").iterdir()
    result = json.loads((eval_run / "metrics.json").read_text())
    assert len(result["folds"]) == 2 and 0.0 <= result["test"]["test/acc_mean"] <= 1.0

    # reproduce: the same folds for Orion-MSP and the LightGBM baseline, and the must_beat check
    code = main(
        [
            "reproduce",
            "orion-msp",
            "--run-root",
            str(tmp_path / "reproduce"),
            f"evaluation.checkpoint={checkpoint}",
            "data.params.names=[wine]",
            "evaluation.folds=2",
            "evaluation.n_estimators=1",
            "evaluation.device=cpu",
        ]
    )
    assert code == 0  # not --strict: a claim that fails is reported, not an error
    report = json.loads(next((tmp_path / "reproduce").rglob("reproduction.json")).read_text())
    assert set(report["runs"]) == {"ours", "lightgbm"}
    assert report["metrics"]["test/acc_mean"]["baselines"]["lightgbm"] > 0.8  # LightGBM on wine


def test_cli_reports_bad_settings(tmp_path, capsys):
    root = str(tmp_path / "runs")
    assert main(["train", "--config", "orion-msp-prior", "--run-root", root, "evaluation.stepz=3"]) == 2
    assert "evaluation: unknown key(s) stepz" in capsys.readouterr().err
    missing = str(tmp_path / "nope.pt")
    assert (
        main(["train", "--config", "orion-msp", "--run-root", root, f"evaluation.checkpoint={missing}"]) == 2
    )
    assert "evaluation.checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tabular").exists()  # nothing half-written
