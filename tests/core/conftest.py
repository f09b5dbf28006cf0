"""Shared fixtures: a tiny, fast digits experiment."""

from __future__ import annotations

import copy

import pytest
import yaml

TINY = {
    "domain": "core",
    "model": {
        "name": "transformer-classifier",
        "params": {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4},
    },
    "data": {"name": "digits", "batch_size": 64},
    "task": {"name": "classification"},
    "optimizer": {"name": "adamw", "lr": 3e-3},
    "trainer": {
        "max_epochs": 2,
        "limit_train_batches": 4,
        "progress_bar": False,
        "tensorboard": False,
        "monitor": "val/acc",
        "monitor_mode": "max",
    },
    "seed": 0,
}


@pytest.fixture
def tiny_dict(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["run_root"] = str(tmp_path / "runs")
    return cfg


@pytest.fixture
def tiny_yaml(tmp_path, tiny_dict):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    return path
