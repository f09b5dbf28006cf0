"""recsys end to end through the CLI: train -> evaluate with the checkpoint's own vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from interplay.recsys.cli import main
from interplay.recsys.data.synthetic import write_synthetic_criteo


def test_train_then_evaluate_reuses_the_fitted_vocabulary(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "data"))
    path = tmp_path / "day.tsv"
    write_synthetic_criteo(path, n_rows=1500, seed=1, fmt="tsv")
    config = {
        "domain": "recsys",
        "model": {
            "name": "hiformer",
            "params": {"dim": 8, "layers": 1, "heads": 1, "d_k": 4, "d_v": 4, "prune_last": True},
        },
        "data": {
            "name": "criteo",
            "batch_size": 256,
            "params": {"path": str(path), "spec": "criteo_small", "cache_dir": str(tmp_path / "cache")},
        },
        "task": {"name": "ctr"},
        "trainer": {
            "max_epochs": 1,
            "progress_bar": False,
            "tensorboard": False,
            "monitor": "val/auc",
            "monitor_mode": "max",
        },
        "run_root": str(tmp_path / "runs"),
    }
    cfg_path = tmp_path / "hiformer.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(cfg_path)]) == 0
    run_dir = Path(capsys.readouterr().out.split("run directory: ")[1].split()[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics["best_checkpoint"]

    from interplay.core.train import restore
    from interplay.core.train.checkpoint import load_checkpoint
    from interplay.recsys.registry import REGISTRY

    stored = load_checkpoint(best)["CTRDataModule"]["fitted_features"]
    # a different split seed would fit other vocabularies; the checkpoint's must win
    _, datamodule, _ = restore(best, REGISTRY, ["data.params.split_seed=7"])
    assert datamodule.fitted.to_dict() == stored
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", best, "--output", str(out_json)]) == 0
    assert abs(json.loads(out_json.read_text())["test/auc"] - metrics["test"]["test/auc"]) < 1e-6


def test_every_shipped_config_names_registered_entries_and_their_parameters():
    from interplay.core.cli import available_configs, load_experiment
    from interplay.core.errors import ConfigError
    from interplay.core.registry import check_kwargs
    from interplay.recsys.cli import _load
    from interplay.recsys.registry import REGISTRY

    def check_names(factory, params, what):  # unknown parameters only: the data module fills the rest
        try:
            check_kwargs(factory, params, what=what)
        except ConfigError as error:
            if "does not take" in str(error):
                raise

    _load()
    names = available_configs(REGISTRY)
    assert {"hiformer", "awmoe", "hiformer-criteo", "hiformer-synthetic", "awmoe-synthetic"} <= set(names)
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
