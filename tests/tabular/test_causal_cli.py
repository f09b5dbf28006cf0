"""The tabular CLI with the treatment-effect runner: train over replications, evaluate, reproduce, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from interplay.tabular.cli import _load, _train, main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def _config(tmp_path: Path, **changes) -> Path:
    config = {
        "domain": "tabular",
        "model": {"name": "transtee", "params": {"dim": 8, "ff_dim": 16, "adversarial": "tr"}},
        "data": {
            "name": "synthetic-ihdp",
            "root": str(tmp_path / "data"),
            "batch_size": 128,
            "params": {"n_replications": 2, "test_fraction": 0.1, "val_fraction": 0.1},
        },
        "task": {"name": "treatment-effect"},
        "optimizer": {"name": "adam", "lr": 3.0e-3, "scheduler": "cosine"},
        "trainer": {"max_epochs": 2, "progress_bar": False, "tensorboard": False, "accelerator": "cpu"},
        "run_root": str(tmp_path / "runs"),
        **changes,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run_dir(out: str) -> Path:
    return Path(out.split("run directory: ")[1].split()[0])


def test_train_runs_every_replication_and_evaluate_reads_one(tmp_path, capsys):
    assert main(["train", "--config", str(_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "test/sqrt_pehe_out_median" in out
    run_dir = _run_dir(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    per_rep = metrics["sqrt_pehe_out"]["per_replication"]
    assert set(per_rep) == {"1", "2"}
    values = sorted(per_rep.values())
    assert test["test/sqrt_pehe_out"] == pytest.approx(sum(values) / 2)
    assert test["test/sqrt_pehe_out_median"] == pytest.approx(sum(values) / 2)  # median of two = mean
    assert {"test/sqrt_pehe_in", "test/ate_error_out", "test/ate_error_in"} <= set(test)
    assert metrics["protocol"]["replications"] == [1, 2]
    rows = {r["replication"]: r for r in metrics["replications"]}
    assert rows[1]["n_test"] == 75 and rows[1]["n_val"] + rows[1]["n_train"] == 672
    # each replication keeps its selected weights; evaluate scores the test split with them
    checkpoint = run_dir / "replications" / "002" / "checkpoints" / "best.ckpt"
    assert checkpoint.is_file() and (run_dir / "replications" / "002" / "metrics.csv").is_file()
    scores = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--output", str(scores)]) == 0
    evaluated = json.loads(scores.read_text())
    assert evaluated["test/sqrt_pehe"] == pytest.approx(per_rep["2"], rel=1e-4)
    predictions = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(checkpoint), "--output", str(predictions)]) == 0
    header, *lines = predictions.read_text().splitlines()
    assert header.split(",") == ["index", "t", "y", "y_hat", "mu_hat_0", "mu_hat_1"] and len(lines) == 75


def test_reproduce_compares_the_median_with_a_lightgbm_baseline(tmp_path, capsys):
    path = _config(
        tmp_path,
        paper="test paper",
        baselines={"lgbm_t": ["model.name=lgbm-t-learner", "model.params={n_estimators: 20}"]},
        must_beat={"test/sqrt_pehe_out_median": ["lgbm_t"]},
        lower_is_better=["test/sqrt_pehe_out_median"],
    )
    assert main(["reproduce", str(path), "model.params.dim=4", "trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    report = json.loads((_run_dir(out) / "reproduction.json").read_text())
    claim = report["metrics"]["test/sqrt_pehe_out_median"]
    assert claim["lower_is_better"] and set(claim["beats"]) == {"lgbm_t"}
    assert claim["beats"]["lgbm_t"] == (claim["ours"] < claim["baselines"]["lgbm_t"])
    lgbm_runs = report["runs"]["lgbm_t"]
    assert lgbm_runs and "test/sqrt_pehe_out" in lgbm_runs[0]


def test_configs_without_a_runner_go_to_the_engine(monkeypatch):
    import interplay.core.train as engine

    calls = []
    monkeypatch.setattr(engine, "train", lambda cfg, registry, **kw: calls.append(cfg) or "engine")

    class Entry:
        factory = staticmethod(lambda: None)

    class Datasets:
        @staticmethod
        def get(name):
            return Entry

    class Registry:
        datasets = Datasets

    class Cfg:
        class data:
            name = "anything"

    assert _train(Cfg, Registry) == "engine" and calls == [Cfg]


def test_user_mistakes_print_one_line(tmp_path, capsys):
    bad_model = _config(tmp_path, model={"name": "transtea", "params": {}})
    assert main(["train", "--config", str(bad_model)]) == 2
    err = capsys.readouterr().err
    assert "unknown tabular models 'transtea'" in err and "Traceback" not in err
    missing = _config(tmp_path, data={"name": "ihdp-csv", "root": str(tmp_path / "nowhere")})
    assert main(["train", "--config", str(missing)]) == 2
    assert "no IHDP CSVs" in capsys.readouterr().err


def test_every_shipped_config_names_registered_entries_and_their_parameters():
    """Every tabular config (TransTEE's and those the other families ship) must name registered
    models, datasets and tasks and only parameters their factories take."""
    from interplay.core.cli import available_configs, load_experiment
    from interplay.core.errors import ConfigError
    from interplay.core.registry import check_kwargs
    from interplay.tabular.registry import REGISTRY

    def check_names(factory, params, what):  # unknown parameters only: the data module fills the rest
        try:
            check_kwargs(factory, params, what=what)
        except ConfigError as error:
            if "does not take" in str(error):
                raise

    _load()
    names = available_configs(REGISTRY)
    assert {"transtee-ihdp", "transtee", "tarnet-ihdp", "dragonnet-ihdp", "lgbm-t-learner-ihdp"} <= set(names)
    for name in names:
        cfg = load_experiment(REGISTRY, name)
        model = REGISTRY.models.get(cfg.model.name)
        check_names(model.factory, cfg.model.params, f"{name}: model '{cfg.model.name}'")
        dataset = REGISTRY.datasets.get(cfg.data.name)
        check_names(dataset.factory, cfg.data.params, f"{name}: dataset '{cfg.data.name}'")
        REGISTRY.tasks.get(cfg.task.name)
        for label, overrides in cfg.baselines.items():
            base = load_experiment(REGISTRY, name, overrides)
            check_names(REGISTRY.models.get(base.model.name).factory, base.model.params, f"{name}: {label}")
        if cfg.reported or cfg.must_beat:
            assert cfg.paper, f"{name} reproduces a paper but does not cite it"
        if "causal" in dataset.tags:  # the replication runner reports these figures, all errors
            for metric in [*cfg.must_beat, *cfg.reported]:
                assert metric.startswith("test/") and (
                    "pehe" in metric or "amse" in metric or "ate" in metric
                ), f"{name}: {metric} is not a figure the replication runner writes"
                assert metric in cfg.lower_is_better, (
                    f"{name}: {metric} is an error: list it in lower_is_better"
                )
