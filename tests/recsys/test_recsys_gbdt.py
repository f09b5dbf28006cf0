"""LightGBM baseline on the data module's features: learns the planted signal, scores test once."""

from __future__ import annotations

import pytest

from interplay.recsys.data.synthetic import write_synthetic_criteo

pytest.importorskip("lightgbm")


def test_lightgbm_on_synthetic_criteo(tmp_path):
    from interplay.recsys.data.datamodule import CTRDataModule
    from interplay.recsys.gbdt import collect_split, train_lightgbm

    path = tmp_path / "day.tsv"
    write_synthetic_criteo(path, n_rows=8000, seed=0, fmt="tsv")
    dm = CTRDataModule(spec="criteo_small", path=str(path), batch_size=256, cache_dir=str(tmp_path / "cache"))
    results = train_lightgbm(dm, n_estimators=200, seed=0)
    assert {"val/auc", "test/auc", "test/logloss", "best_iteration"} <= set(results)
    assert results["test/auc"] > 0.6  # planted interactions are learnable
    test = collect_split(dm, "test")
    layout = dm.info["layout"]
    assert test["features"].shape[1] == layout.n_categorical + layout.n_numeric
    sizes = dm.split_sizes()
    assert len(test["label"]) == sizes["test"] and len(collect_split(dm, "train")["label"]) == sizes["train"]
