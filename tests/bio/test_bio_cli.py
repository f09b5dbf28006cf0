"""``interplay-bio`` end to end on a tiny synthetic cohort, user errors, and every shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from interplay.bio.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def write_config(tmp_path: Path, model: dict, **data_params) -> Path:
    config = {
        "domain": "bio",
        "model": model,
        "data": {
            "name": "synthetic-cohort",
            "root": str(tmp_path / "data"),
            "batch_size": 1,
            "params": {"n_patients": 40, "n_patches": [4, 12], "dim": 64, **data_params},
        },
        "task": {"name": "survival", "params": {"loss": "nll", "alpha": 0.0}},
        "optimizer": {"name": "adam", "lr": 2.0e-4, "weight_decay": 1.0e-5},
        "trainer": {
            "max_epochs": 2,
            "accumulate_grad_batches": 8,
            "accelerator": "cpu",
            "progress_bar": False,
            "tensorboard": False,
            "monitor": "val/c_index",
            "monitor_mode": "max",
        },
        "evaluation": {"selection": "honest", "folds": [0]},
        "run_root": str(tmp_path / "runs"),
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_dir_of(output: str) -> Path:
    return Path(output.split("run directory: ")[1].split()[0])


def test_train_motcat_end_to_end_writes_metrics_and_km_plot(tmp_path, capsys):
    model = {
        "name": "motcat",
        "params": {"ot_reg": 0.1, "ot_tau": 0.5, "ot_micro_batch": 8, "path_input_dim": 64, "dim": 32},
    }
    config = write_config(tmp_path, model)
    assert main(["train", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    run_dir = run_dir_of(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert 0.0 <= test["test/c_index"] <= 1.0 and "test/km_p_value" in test and "test/td_auc" in test
    assert metrics["selection"] == "honest" and metrics["n_folds"] == 1
    assert (run_dir / "plots" / "km_test.png").stat().st_size > 1000
    fold_dir = run_dir / "folds" / "0-honest"
    assert (fold_dir / "metrics.csv").is_file()
    best = json.loads((fold_dir / "metrics.json").read_text())["best_checkpoint"]
    assert best and Path(best).is_file()
    # the fold's checkpoint restores its own fold (fitted genomics, bins) for evaluate
    eval_json = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", best, "--output", str(eval_json)]) == 0
    fold_test = metrics["folds"][0]["honest"]["test/c_index"]
    assert json.loads(eval_json.read_text())["test/c_index"] == pytest.approx(fold_test, abs=1e-6)


def test_train_snn_omics_only_with_reference_selection(tmp_path, capsys):
    config = write_config(tmp_path, {"name": "snn"}, modality="omics", omics_layout="flat")
    assert main(["train", "--config", str(config), "evaluation.selection=both", "trainer.max_epochs=1"]) == 0
    metrics = json.loads((run_dir_of(capsys.readouterr().out) / "metrics.json").read_text())
    assert {"test/c_index", "test/c_index_reference"} <= set(metrics["test"])
    fold = metrics["folds"][0]
    assert fold["reference"]["n_val"] == fold["n_test"]


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    config = write_config(tmp_path, {"name": "motcatt"})
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown bio models 'motcatt'" in err and "did you mean 'motcat'" in err

    missing = tmp_path / "nowhere"
    assert (
        main(["train", "--config", "snn-blca-genomic", f"data.root={missing}", f"run_root={tmp_path}"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "TCGA CSV not found" in err and str(missing) in err
    assert not (tmp_path / "bio").exists()  # nothing written for a run that could not start

    assert main(["train", "--config", "motcat-blca", f"data.root={tmp_path}"]) == 2
    assert "TCGA CSV not found" in capsys.readouterr().err

    assert main(["train", "--config", str(config), "model.name=motcat", "evaluation.selection=test-set"]) == 2
    assert "evaluation.selection" in capsys.readouterr().err


def test_every_shipped_config_names_registered_entries_and_their_parameters():
    from interplay.bio.cli import _load
    from interplay.bio.evaluation import evaluation_settings
    from interplay.bio.registry import REGISTRY
    from interplay.core.cli import available_configs, load_experiment
    from interplay.core.errors import ConfigError
    from interplay.core.registry import check_kwargs

    def check_names(factory, params, what):  # unknown parameters only: the data module fills the rest
        try:
            check_kwargs(factory, params, what=what)
        except ConfigError as error:
            if "does not take" in str(error):
                raise

    _load()
    names = available_configs(REGISTRY)
    cohorts = {f"motcat-{c}" for c in ("blca", "brca", "ucec", "gbmlgg", "luad")}
    assert cohorts | {"motcat", "snn-blca-genomic", "cox-blca-genomic", "motcat-synthetic"} <= set(names)
    for name in names:
        cfg = load_experiment(REGISTRY, name)
        model = REGISTRY.models.get(cfg.model.name)
        check_names(model.factory, cfg.model.params, f"{name}: model '{cfg.model.name}'")
        dataset = REGISTRY.datasets.get(cfg.data.name)
        check_names(dataset.factory, cfg.data.params, f"{name}: dataset '{cfg.data.name}'")
        task = REGISTRY.tasks.get(cfg.task.name)
        check_names(task.factory, cfg.task.params, f"{name}: task '{cfg.task.name}'")
        if cfg.task.name == "survival":
            evaluation_settings(cfg)
        for label, overrides in cfg.baselines.items():
            base = load_experiment(REGISTRY, name, overrides)
            check_names(REGISTRY.models.get(base.model.name).factory, base.model.params, f"{name}: {label}")
        if cfg.reported or cfg.must_beat:
            assert cfg.paper, f"{name} reproduces a paper but does not cite it"
    # the paper's OT settings per cohort: eps 0.05 for BLCA and LUAD, 0.1 otherwise; tau 0.5
    for cohort, eps in {"blca": 0.05, "luad": 0.05, "brca": 0.1, "ucec": 0.1, "gbmlgg": 0.1}.items():
        cfg = load_experiment(REGISTRY, f"motcat-{cohort}")
        assert cfg.model.params["ot_reg"] == eps and cfg.model.params["ot_tau"] == 0.5
        assert cfg.trainer.max_epochs == 20 and cfg.trainer.accumulate_grad_batches == 32
        assert cfg.optimizer.lr == 2.0e-4 and cfg.optimizer.weight_decay == 1.0e-5
        assert cfg.data.params["splits"] == f"splits_{cohort}"
