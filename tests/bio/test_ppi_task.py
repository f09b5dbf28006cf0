"""Metrics, data module, task, configs and a CLI run of the PPI affinity task (interplay.bio.ppi.task)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import interplay.bio.ppi  # noqa: F401  (registers models, datasets, task)
from interplay.bio.ppi.task import (
    AffinityMetrics,
    PPIDataModule,
    linear_warmup_decay,
    pearson,
    rankdata,
    rmse,
    spearman,
    spearman_standard_error,
    synthetic_ppi,
)
from interplay.bio.registry import REGISTRY
from interplay.core.cli import available_configs, load_experiment, run_domain_cli
from interplay.core.errors import ConfigError, DataError

PPI_CONFIGS = [
    "ppi",
    "ppi-ec-synthetic",
    "ppi-hp-esm2",
    "ppi-hp-synthetic",
    "ppi-pad-synthetic",
    "ppi-sc-synthetic",
]


def test_spearman_pearson_rmse_on_hand_cases():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, torch.tensor([10.0, 20.0, 30.0, 40.0])).item() == pytest.approx(1.0)
    assert spearman(x, torch.tensor([9.0, 1.0, 0.5, -3.0])).item() == pytest.approx(-1.0)
    # monotone but not linear: Spearman 1, Pearson below 1
    cubic = x**3
    assert spearman(x, cubic).item() == pytest.approx(1.0)
    assert pearson(x, cubic).item() == pytest.approx(104 / math.sqrt(5 * 2390))  # by hand
    # one swapped pair of four: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(x, torch.tensor([1.0, 3.0, 2.0, 4.0])).item() == pytest.approx(0.8)
    # ties take their average rank
    assert rankdata(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert rmse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])).item() == pytest.approx(math.sqrt(2))
    # no variance: 0, not NaN (checkpoint selection must never see NaN)
    assert spearman(torch.ones(5), torch.arange(5.0)).item() == 0.0


def test_metrics_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 6, 200).astype(float)  # many ties
    target = pred + rng.normal(0, 2, 200)
    metric = AffinityMetrics()
    metric.update(torch.tensor(pred[:120]), torch.tensor(target[:120]))
    metric.update(torch.tensor(pred[120:]), torch.tensor(target[120:]))
    out = metric.compute()
    rho = stats.spearmanr(pred, target).statistic
    assert out["spearman"].item() == pytest.approx(rho, abs=1e-5)
    assert out["pearson"].item() == pytest.approx(stats.pearsonr(pred, target).statistic, abs=1e-5)
    assert out["rmse"].item() == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)), abs=1e-5)
    expected_se = math.sqrt((1 - rho**2) ** 2 * (1 + rho**2 / 2) / 197)
    assert out["spearman_se"].item() == pytest.approx(expected_se, rel=1e-4)
    assert spearman_standard_error(0.47, 803) == pytest.approx(0.02903, abs=1e-5)  # by hand


def test_linear_warmup_decay_is_huggingface_schedule():
    factor = linear_warmup_decay(10, 110)
    assert [factor(s) for s in (0, 5, 10, 60, 110, 200)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]


def test_data_module_batches_and_errors(tmp_path):
    module = synthetic_ppi(root=tmp_path, n_complexes=60, n_families=12, batch_size=8, eval_batch_size=16)
    sizes = module.sizes()
    assert sum(sizes.values()) == 60 and min(sizes.values()) > 0
    batch = next(iter(module.train_dataloader()))
    assert list(batch)[0] == "target" and batch["target"].shape == (8,)
    assert len(batch["ligand"]) == 8 and all(isinstance(c, tuple) for c in batch["ligand"])
    assert module.info["target_mean"] == pytest.approx(np.mean([c.pkd for c in module.splits["train"]]))
    assert (tmp_path / "synthetic_ppi").is_dir()
    with pytest.raises(DataError, match="val split is empty"):
        PPIDataModule({"train": module.splits["train"], "val": [], "test": module.splits["test"]})
    with pytest.raises(ConfigError, match="unknown split"):
        synthetic_ppi(root=tmp_path, n_complexes=60, n_families=12, split="scaffold")


def test_ppb_affinity_dataset_resolves_files_under_root(tmp_path):
    from interplay.bio.ppi.data import write_synthetic_ppb_affinity

    write_synthetic_ppb_affinity(tmp_path, n_complexes=60, n_families=12)
    module = REGISTRY.datasets.create("ppb-affinity", root=str(tmp_path), batch_size=4)
    assert sum(module.sizes().values()) == 60
    random = REGISTRY.datasets.create("ppb-affinity", root=str(tmp_path), split="random", clusters=None)
    assert random.sizes()["test"] == 6
    with pytest.raises(DataError, match="PPB-Affinity CSV not found"):
        REGISTRY.datasets.create("ppb-affinity", root=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="data.params.val, data.params.test"):
        REGISTRY.datasets.create("ppb-affinity", root=str(tmp_path), split="files", train="ppb_affinity.csv")


def test_configs_load_and_name_registered_entries():
    assert set(PPI_CONFIGS) <= set(available_configs(REGISTRY))
    for name in PPI_CONFIGS:
        cfg = load_experiment(REGISTRY, name)
        assert cfg.model.name in REGISTRY.models and cfg.data.name in REGISTRY.datasets
        assert cfg.task.name == "ppi_regression" and cfg.trainer.monitor == "val/spearman"
    cfg = load_experiment(REGISTRY, "ppi")
    assert cfg.reported == {"test/spearman": 0.47} and cfg.must_beat == {"test/spearman": ["ec", "sc"]}
    esm = load_experiment(REGISTRY, "ppi-hp-esm2")
    assert esm.optimizer.lr == 5e-4 and esm.trainer.accumulate_grad_batches == 32 and esm.data.batch_size == 1


def test_esm_config_without_weights_fails_with_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path))
    cfg = load_experiment(REGISTRY, "ppi-hp-esm2")
    with pytest.raises(ConfigError, match="Nothing is downloaded"):
        REGISTRY.models.create(cfg.model.name, **cfg.model.params)


def test_cli_trains_a_synthetic_config_and_scores_test_once(tmp_path, capsys):
    torch.set_num_threads(1)
    argv = [
        "train",
        "--config",
        "ppi-pad-synthetic",
        f"data.root={tmp_path}",
        f"run_root={tmp_path / 'runs'}",
        "data.params.n_complexes=60",
        "data.params.n_families=12",
        "trainer.max_epochs=2",
        "trainer.tensorboard=false",
        "model.params.plm_params.dim=16",
        "model.params.plm_params.layers=1",
    ]
    code = run_domain_cli(REGISTRY, argv, load=lambda: None)
    assert code == 0, capsys.readouterr().err
    (metrics_file,) = (tmp_path / "runs").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["monitor"] == "val/spearman" and metrics["epochs"] == 2
    assert set(metrics["test"]) >= {
        "test/spearman",
        "test/pearson",
        "test/rmse",
        "test/loss",
        "test/spearman_se",
    }
    assert -1 <= metrics["test"]["test/spearman"] <= 1 and metrics["test"]["test/rmse"] > 0
