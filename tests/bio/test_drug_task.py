"""Drug sensitivity training: regression task, runner (Lightning and LightGBM), explanations, configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import interplay.bio.drug  # noqa: F401  (registers the entries)
from interplay.bio.drug.explain import atom_attention, draw_atom_attention, top_genes
from interplay.bio.drug.task import DrugRegressionTask, run_drug_experiment
from interplay.bio.registry import REGISTRY
from interplay.bio.regression_metrics import regression_metrics
from interplay.core.cli import available_configs, load_experiment
from interplay.core.errors import ConfigError, DataError
from interplay.core.train import restore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_DATA = [
    "data.params.n_drugs=12",
    "data.params.n_cell_lines=10",
    "data.params.n_genes=24",
    "data.params.n_pathways=6",
    "data.params.test_fraction=0.2",
    "data.params.val_fraction=0.2",
    "data.batch_size=32",
    "trainer.max_epochs=2",
    "trainer.early_stopping.enabled=false",
]
TINY_MCA = "model.params={filters: [4, 4, 4], heads: [1, 1, 1, 1], attention_size: 4, dense_sizes: [8]}"


def _overrides(tmp_path: Path) -> list[str]:
    return [f"data.root={tmp_path / 'data'}", f"run_root={tmp_path / 'runs'}", *TINY_DATA]


def test_atom_attention_keeps_atom_tokens_in_atom_order():
    # C ( = O ) O -> atoms C, O, O at token positions 0, 3, 5
    weights = atom_attention("C(=O)O", [0.1, 0.05, 0.05, 0.4, 0.05, 0.35])
    np.testing.assert_allclose(weights, [0.1, 0.4, 0.35])
    # bracket atoms and two-letter atoms are one atom each
    np.testing.assert_allclose(atom_attention("Cl[NH3+]", [0.3, 0.7]), [0.3, 0.7])
    with pytest.raises(DataError, match="3 tokens but 2"):
        atom_attention("CCO", [0.5, 0.5])


def test_draw_atom_attention_writes_a_png(tmp_path):
    path = draw_atom_attention("c1ccccc1O", [0.0, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0], tmp_path / "mol.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(DataError, match="7 atoms but 2"):
        draw_atom_attention("c1ccccc1O", [0.5, 0.5], tmp_path / "bad.png")


def test_top_genes_by_hand():
    attention = np.array([[0.1, 0.6, 0.3], [0.3, 0.4, 0.3]])  # means 0.2, 0.5, 0.3
    frame = top_genes(attention, ["A", "B", "C"], k=2)
    assert list(frame["gene"]) == ["B", "C"]
    np.testing.assert_allclose(frame["mean_attention"], [0.5, 0.3])
    np.testing.assert_allclose(frame["times_uniform"], [1.5, 0.9])


class _Constant(nn.Module):
    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.values = values
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return self.values + 0 * self.dummy


def test_task_loss_and_metrics_on_the_ln_ic50_scale():
    predictions = torch.tensor([0.2, 0.4, 0.9, 0.5])
    labels = torch.tensor([0.1, 0.5, 1.0, 0.3])
    task = DrugRegressionTask(_Constant(predictions), label_min=-2.0, label_max=6.0)
    batch = {"label": labels, "drug": torch.arange(4), "cell_line": torch.arange(4)}
    loss = task.step(batch, "val")
    assert float(loss.detach()) == pytest.approx(float(((predictions - labels) ** 2).mean()))
    metrics = task.stage_metrics("val").compute()
    expected = regression_metrics(predictions.double() * 8 - 2, labels.double() * 8 - 2, prefix="val/")
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert float(metrics[key]) == pytest.approx(value, rel=1e-5)
    out = task.predict_batch(batch)
    torch.testing.assert_close(out["ln_ic50"], predictions * 8 - 2)


def test_mca_run_writes_metrics_and_explanations(tmp_path):
    cfg = load_experiment(
        REGISTRY, "mca-synthetic", [*_overrides(tmp_path), TINY_MCA, "evaluation.explain=1"]
    )
    result = run_drug_experiment(cfg, REGISTRY)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"test/rmse", "test/r2", "test/pearson", "test/spearman"}
    assert metrics["monitor"] == "val/rmse" and np.isfinite(metrics["best_val"])
    explanations = result.run_dir / "explanations"
    pngs = list(explanations.glob("attention_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == PNG_MAGIC
    genes = pd.read_csv(explanations / "top_genes.csv")
    assert len(genes) == 20 and genes["gene"].str.startswith("GENE").all()
    tokens = pd.read_csv(explanations / "smiles_attention.csv", keep_default_na=False)
    drug = tokens["drug"].iloc[0]
    _, datamodule, _ = restore(result.best_checkpoint, REGISTRY)
    assert "".join(tokens["token"]) == datamodule.tables.smiles[drug]  # one row per SMILES token
    # the rest of the attention went to <start> and <stop>, which are not drawn
    assert 0.5 < tokens["attention"].sum() <= 1.0 + 1e-6


def test_lightgbm_run_outside_lightning(tmp_path):
    cfg = load_experiment(
        REGISTRY,
        "fp-lightgbm-synthetic",
        [*_overrides(tmp_path), "model.params={num_leaves: 7, n_estimators: 30, threads: 1}"],
    )
    result = run_drug_experiment(cfg, REGISTRY)
    assert (result.run_dir / "checkpoints" / "model.txt").is_file()
    assert (result.run_dir / "config.yaml").is_file()
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["best_val"] == metrics["last_val"]["val/rmse"]
    assert set(metrics["test"]) == {"test/rmse", "test/r2", "test/pearson", "test/spearman"}


def test_unknown_evaluation_key_is_a_config_error(tmp_path):
    cfg = load_experiment(REGISTRY, "fp-lightgbm-synthetic", [*_overrides(tmp_path), "evaluation={folds: 3}"])
    with pytest.raises(ConfigError, match="evaluation.folds"):
        run_drug_experiment(cfg, REGISTRY)


def test_shipped_drug_configs_load():
    names = [
        "mca",
        "mca-gdsc",
        "mca-synthetic",
        "paccmann-v2-synthetic",
        "fp-mlp-synthetic",
        "fp-lightgbm-synthetic",
    ]
    assert set(names) <= set(available_configs(REGISTRY))
    for name in names:
        cfg = load_experiment(REGISTRY, name)
        assert cfg.task.name == "drug_regression" and cfg.trainer.monitor == "val/rmse"
        REGISTRY.models.get(cfg.model.name)
        REGISTRY.datasets.get(cfg.data.name)
        for overrides in cfg.baselines.values():
            REGISTRY.models.get(load_experiment(REGISTRY, name, overrides).model.name)


def test_gdsc_config_without_data_is_a_one_line_error(tmp_path):
    cfg = load_experiment(REGISTRY, "mca-gdsc", [f"data.root={tmp_path}", f"run_root={tmp_path / 'runs'}"])
    with pytest.raises(DataError) as info:
        run_drug_experiment(cfg, REGISTRY)
    assert "drug table not found" in str(info.value) and "\n" not in str(info.value)
