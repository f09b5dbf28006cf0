"""Unseen-application protocol: partitions, splits, data module, runner and command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from interplay.core.cli import load_experiment
from interplay.core.errors import ConfigError
from interplay.tabular.cli import main as tabular_main
from interplay.tabular.cloud import (
    APPLICATIONS,
    CloudDataModule,
    MetricNormalizer,
    application_partitions,
    run_cloud_protocol,
    simulate_runs,
    split_runs,
)
from interplay.tabular.cloud.evaluation import features
from interplay.tabular.registry import REGISTRY

TINY_DATA = [
    "data.params.runs_per_application=4",
    "data.params.min_steps=6",
    "data.params.max_steps=10",
    "data.params.applications=[4, 5, 6, 7]",
    "data.params.n_train_applications=2",
]
TINY_MODEL = "model.params={dim: 16, heads: 2, depth: 1, ffn_dim: 16, fusion_hidden: 16}"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs():
    return simulate_runs(runs_per_application=5, min_steps=4, max_steps=8, seed=0)


def test_partitions_hold_out_whole_applications():
    apps = list(APPLICATIONS)
    partitions = application_partitions(apps, n_train=7, n_partitions=6, seed=0)
    assert len(partitions) == 6 and len({p.train for p in partitions}) == 6  # distinct
    for p in partitions:
        assert len(p.train) == 7 and len(p.test) == 4
        assert set(p.train).isdisjoint(p.test) and set(p.train) | set(p.test) == set(apps)
    # partition i does not depend on how many are drawn; another seed draws others
    assert application_partitions(apps, 7, 2, seed=0) == partitions[:2]
    assert application_partitions(apps, 7, 6, seed=1) != partitions
    with pytest.raises(ConfigError, match="n_train_applications"):
        application_partitions(apps, n_train=11)
    with pytest.raises(ConfigError, match="at most 4"):
        application_partitions([1, 2, 3, 4], n_train=3, n_partitions=5)


def test_test_applications_never_reach_training_or_validation(runs):
    for partition in application_partitions(sorted(APPLICATIONS), 7, 6, seed=0):
        index = split_runs(runs, partition, val_fraction=0.2, seed=0)
        tasks = {split: {runs[i].task for i in idx} for split, idx in index.items()}
        assert tasks["train"] == set(partition.train) == tasks["val"]  # val carved from every train app
        assert tasks["test"] == set(partition.test)
        assert set(index["train"]).isdisjoint(index["val"])
        assert len(index["test"]) == 5 * 4 and len(index["val"]) == 7  # one of five runs per train app
        assert len(index["train"]) + len(index["val"]) + len(index["test"]) == len(runs)


def test_data_module_normalises_with_training_runs_only(runs):
    module = CloudDataModule(runs, partition=1, val_fraction=0.2, batch_size=4)
    train_runs = module.split("train")
    expected = MetricNormalizer().fit(train_runs)
    np.testing.assert_allclose(module.state_dict()["normalizer"]["mean"], expected.mean, rtol=1e-6)
    assert module.info["target_mean"] == pytest.approx(np.mean([r.target for r in train_runs]))
    batch = next(iter(module.test_dataloader()))
    lengths = [r.length for r in module.split("test")[:4]]
    assert batch["metrics"].shape == (4, max(lengths), 206)
    assert batch["mask"].sum(1).tolist() == lengths == batch["length"].tolist()
    assert (batch["metrics"][~batch["mask"]] == 0).all()
    first = module.split("test")[0]
    torch.testing.assert_close(
        batch["metrics"][0, : first.length], torch.from_numpy(expected.transform(first.metrics))
    )
    # a restored module (evaluate / predict) reuses the stored statistics, whatever the data
    other = CloudDataModule(runs, partition=2, val_fraction=0.2)
    other.load_state_dict(module.state_dict())
    np.testing.assert_array_equal(other.normalizer.mean, expected.mean)
    x_train, y_train = features(module, "train")
    assert x_train.shape == (len(train_runs), 206 * 5 + 1) and y_train.shape == (len(train_runs),)


def test_runner_scores_every_partition(tmp_path):
    cfg = load_experiment(
        REGISTRY,
        "cloudformer",
        [
            *TINY_DATA,
            "model.name=cloud-rf",
            "model.params={n_estimators: 20, n_jobs: 1}",
            "evaluation.n_partitions=3",
            f"run_root={tmp_path / 'runs'}",
        ],
    )
    result = run_cloud_protocol(cfg, REGISTRY, progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_partitions"] == 3 and len(metrics["partitions"]) == 3
    maes = [p["test/mae_pp"] for p in metrics["partitions"]]
    assert metrics["test"]["test/mae_pp"] == pytest.approx(np.mean(maes))
    assert metrics["test"]["test/mae_pp_std"] == pytest.approx(np.std(maes, ddof=1))
    for part in metrics["partitions"]:
        assert len(part["train_applications"]) == 2 and len(part["test_applications"]) == 2
        assert set(part["train_applications"]).isdisjoint(part["test_applications"])
        assert part["n_test"] == 8 and part["n_train"] + part["n_val"] == 8
        assert 0 <= part["test/mae_pp"] < 100 and part["test/mse_pp"] >= part["test/mae_pp"] ** 2 - 1e-6
    with pytest.raises(ConfigError, match="evaluation: unknown key"):
        run_cloud_protocol(load_experiment(REGISTRY, "cloudformer", ["evaluation.folds=3"]), REGISTRY)


def test_cli_train_demo_config_and_protocol_runs(tmp_path, capsys):
    common = [*TINY_DATA, TINY_MODEL, "trainer.max_epochs=1", "trainer.progress_bar=false"]
    assert (
        tabular_main(["train", "--config", "cloudformer-synthetic", "--run-root", str(tmp_path), *common])
        == 0
    )
    out = capsys.readouterr().out
    assert "test/mae_pp" in out and "best val/mae_pp" in out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 <= metrics["test"]["test/mae_pp"] < 100

    # a baseline config runs the whole protocol (here 2 partitions) through the same command
    argv = ["train", "--config", "cloud-lstm-synthetic", "--run-root", str(tmp_path), *common[:-2]]
    argv += ["model.params={hidden: 8, layers: 1}", "evaluation.n_partitions=2", "trainer.max_epochs=1"]
    assert tabular_main([*argv, "trainer.progress_bar=false"]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["n_partitions"] == 2 and "test/mae_pp_std" in summary["test"]
    assert len(list((run_dir / "partitions").iterdir())) == 2


def test_cloudperftrace_without_root_is_a_one_line_error(tmp_path, capsys):
    assert tabular_main(["train", "--config", "cloudformer-cloudperftrace"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: cloudperftrace needs data.root")
    assert "tasks=4/" in err and str(tmp_path / "data" / "cloudperftrace") in err
    assert (
        tabular_main(["train", "--config", "cloudformer-cloudperftrace", f"data.root={tmp_path / 'none'}"])
        == 2
    )
    assert "is not a directory" in capsys.readouterr().err


def test_registry_entries():
    import interplay.tabular.cloud  # noqa: F401

    for model in ("cloudformer", "cloud-lstm", "cloud-rf", "cloud-lightgbm", "cloud-linear", "cloud-tree"):
        assert model in REGISTRY.models
    assert "cloud-synthetic" in REGISTRY.datasets and "cloudperftrace" in REGISTRY.datasets
    assert "cloud-performance" in REGISTRY.tasks
    cfg = load_experiment(REGISTRY, "cloudformer")
    assert cfg.lower_is_better == ["test/mae_pp", "test/mse_pp"]
    assert set(cfg.must_beat["test/mae_pp"]) == {"rf", "lightgbm", "lstm", "lr"}
