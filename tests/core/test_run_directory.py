"""run_directory: the one way every runner opens its run directory (config, versions, cleanup)."""

from __future__ import annotations

import json

import pytest
import yaml

from interplay.core.config import from_dict
from interplay.core.train import open_run_dir, run_directory
from interplay.core.train.config import ExperimentConfig


def _cfg(tmp_path) -> ExperimentConfig:
    raw = {
        "domain": "core",
        "model": {"name": "toy"},
        "data": {"name": "toy"},
        "task": {"name": "classification"},
        "run_root": str(tmp_path / "runs"),
    }
    return from_dict(ExperimentConfig, raw)


def test_writes_config_versions_and_folders(tmp_path):
    cfg = _cfg(tmp_path)
    path = open_run_dir(cfg, versions={"resumed_from": "x.ckpt"})
    assert path.parent == tmp_path / "runs" / "core" / "toy"
    assert (path / "checkpoints").is_dir() and (path / "plots").is_dir()
    assert yaml.safe_load((path / "config.yaml").read_text())["model"]["name"] == "toy"
    versions = json.loads((path / "versions.json").read_text())
    assert versions["resumed_from"] == "x.ckpt" and "packages" in versions


def test_a_failed_start_removes_the_directory_it_created(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), run_directory(cfg):
        raise RuntimeError("boom")
    assert not any((tmp_path / "runs" / "core" / "toy").iterdir())


def test_a_given_directory_is_never_removed(tmp_path):
    cfg = _cfg(tmp_path)
    given = tmp_path / "mine"
    given.mkdir()
    (given / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError), run_directory(cfg, given):
        raise RuntimeError("boom")
    assert (given / "keep.txt").read_text() == "x"
