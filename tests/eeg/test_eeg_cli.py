"""``interplay-eeg`` end to end on small fake DEAP files, user errors, and every shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from interplay.eeg.cli import main
from interplay.eeg.data.deap import write_fake_deap

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def tiny_config(tmp_path: Path, root: Path, **data_params) -> Path:
    config = {
        "domain": "eeg",
        "model": {
            "name": "rbtransformer",
            "params": {"dim": 16, "depth": 1, "heads": 2, "head_dim": 8, "ffn_dim": 16},
        },
        "data": {
            "name": "deap",
            "root": str(root),
            "batch_size": 64,
            "params": {
                "target": "arousal",
                "protocol": "loso",
                "workers": 1,
                "progress": False,
                "cache_dir": str(tmp_path / "features"),
                **data_params,
            },
        },
        "task": {"name": "emotion"},
        "optimizer": {
            "name": "adamw",
            "lr": 1.0e-3,
            "weight_decay": 1.0e-3,
            "scheduler": "cosine",
            "min_lr": 1.0e-6,
        },
        "trainer": {
            "max_epochs": 1,
            "progress_bar": False,
            "tensorboard": False,
            "monitor": "val/f1_macro",
            "monitor_mode": "max",
            "accelerator": "cpu",
        },
        "run_root": str(tmp_path / "runs"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def fake_deap(tmp_path_factory) -> Path:
    # 2 subjects x 6 trials of 3 s baseline + 8 s (five 4 s windows at a 117-sample stride)
    return write_fake_deap(tmp_path_factory.mktemp("deap"), n_subjects=2, n_trials=6, n_samples=384 + 1024)


def test_train_writes_metrics_with_the_mean_test_accuracy(tmp_path, capsys, fake_deap):
    assert main(["train", "--config", str(tiny_config(tmp_path, fake_deap))]) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    folds = metrics["folds"]
    assert len(folds) == 2 and {f["subject"] for f in folds} == {1, 2}
    assert metrics["test"]["test/acc"] == pytest.approx(sum(f["test/acc"] for f in folds) / 2)
    assert 0.0 <= metrics["test"]["test/acc"] <= 1.0 and "test/f1_macro" in metrics["test"]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "versions.json").is_file()
    assert (run_dir / "plots" / "attention_heatmap.png").is_file()
    assert (run_dir / "plots" / "attention_topomap.png").is_file()
    # a fold's best checkpoint evaluates through the core command with its own fold's split
    checkpoint = next((run_dir / "folds").glob("000-*/checkpoints/best-*.ckpt"))
    output = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["test/acc"] == pytest.approx(folds[0]["test/acc"], abs=1e-6)


def test_baseline_runs_through_the_same_command(tmp_path, capsys, fake_deap):
    path = tiny_config(tmp_path, fake_deap)
    assert main(["train", "--config", str(path), "model.name=logreg", "model.params={}"]) == 0
    run_dir = Path(capsys.readouterr().out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["folds"]) == 2 and "test/acc" in metrics["test"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=rbtransfomer", "unknown eeg models 'rbtransfomer'; did you mean 'rbtransformer'"),
        ("data.name=deep", "unknown eeg datasets 'deep'"),
        ("data.params.protocol=kfold", "data.params.protocol"),
        ("data.params.features={window_second: 4}", "data.params.features: unknown key(s) 'window_second'"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(tmp_path, capsys, fake_deap, override, message):
    assert main(["train", "--config", str(tiny_config(tmp_path, fake_deap)), override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_missing_data_root_says_where_to_put_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "data"))
    assert main(["train", "--config", "rbtransformer-deap"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        "data.root is not set" in err and str(tmp_path / "data" / "eeg" / "deap") in err and "s01.dat" in err
    )
    assert main(["train", "--config", "rbtransformer-dreamer", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_models_and_datasets_are_listed(capsys):
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("rbtransformer", "dgcnn", "logreg", "lightgbm"))
    assert main(["datasets"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("deap", "dreamer", "seed", "synthetic-deap"))


def test_every_shipped_config_names_registered_entries_and_their_parameters():
    from interplay.core.cli import available_configs, load_experiment
    from interplay.core.errors import ConfigError
    from interplay.core.registry import check_kwargs
    from interplay.eeg.cli import _load
    from interplay.eeg.data.datasets import feature_config
    from interplay.eeg.registry import REGISTRY

    def check_names(factory, params, what):  # unknown parameters only: the data module fills the rest
        try:
            check_kwargs(factory, params, what=what)
        except ConfigError as error:
            if "does not take" in str(error):
                raise

    _load()
    names = available_configs(REGISTRY)
    assert {
        "rbtransformer",
        "rbtransformer-deap",
        "rbtransformer-dreamer",
        "rbtransformer-seed",
        "rbtransformer-synthetic",
        "lr-synthetic",
        "lightgbm-synthetic",
        "dgcnn-synthetic",
    } <= set(names)
    for name in names:
        cfg = load_experiment(REGISTRY, name)
        for label, overrides in {"ours": [], **cfg.baselines}.items():
            run = load_experiment(REGISTRY, name, overrides)
            what = f"{name} ({label})"
            check_names(REGISTRY.models.get(run.model.name).factory, run.model.params, f"{what}: model")
            check_names(REGISTRY.datasets.get(run.data.name).factory, run.data.params, f"{what}: dataset")
            REGISTRY.tasks.get(run.task.name)
            feature_config(run.data.params.get("features"))  # valid feature settings
            assert run.data.params.get("protocol", "subject_dependent") in (
                "subject_dependent",
                "loso",
                "pooled_windows",
            )
            assert run.trainer.monitor.startswith("val/")
        if cfg.reported or cfg.must_beat:
            assert cfg.paper, f"{name} reproduces a paper but does not cite it"
        if name.startswith("rbtransformer-") and name != "rbtransformer-synthetic":
            # the paper's recipe
            assert cfg.model.params == {
                "dim": 128,
                "depth": 4,
                "heads": 6,
                "head_dim": 32,
                "ffn_dim": 128,
                "dropout": 0.1,
            }
            assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.min_lr) == (1e-3, 1e-3, 1e-6)
            assert cfg.optimizer.scheduler == "cosine" and cfg.trainer.max_epochs == 300
            assert cfg.task.params["label_smoothing"] == 0.12 and cfg.data.batch_size == 256
            assert cfg.data.params["smote"] is True
