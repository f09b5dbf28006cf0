"""Survival data module, task and 5-fold runner: train-only fitting, honest vs reference selection.

Fixtures are tiny synthetic cohorts written in the TCGA formats (CSV + signatures + split CSVs + bags);
nothing here reads ../shared.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from interplay.bio.data.datasets import breast_cancer_cohort, stratified_folds, tcga
from interplay.bio.data.labels import fit_time_bins
from interplay.bio.data.splits import read_split
from interplay.bio.data.synthetic import SyntheticCohortLayout, write_synthetic_cohort
from interplay.bio.data.tcga import read_tcga_csv
from interplay.bio.tasks import SurvivalDataModule, SurvivalMetrics, SurvivalTask, collate_survival
from interplay.core.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    return write_synthetic_cohort(root, n_patients=60, n_patches=(4, 8), dim=64, seed=3)


def module(cohort_dir: Path, **params) -> SurvivalDataModule:
    layout = SyntheticCohortLayout(cohort_dir)
    defaults = dict(
        csv=layout.csv,
        signatures=layout.signatures,
        splits=layout.splits,
        bags=layout.features,
        bag_dim=64,
        modality="omics",
        weighted_sample=False,
    )
    return tcga(**{**defaults, **params})


def test_time_bins_and_standardisation_see_only_the_training_patients(cohort_dir, tmp_path):
    dm = module(cohort_dir, fold=1)
    train = dm.index["train"]
    cohort = dm.cohort
    edges = fit_time_bins(cohort.times[train], cohort.censorship[train], n_bins=4)
    np.testing.assert_allclose(dm.bin_edges, edges)
    columns = dm.genomics.feature_columns
    np.testing.assert_allclose(
        dm.genomics.mean, cohort.omics.iloc[train][columns].mean().to_numpy(), rtol=1e-10
    )
    np.testing.assert_allclose(
        dm.genomics.scale, cohort.omics.iloc[train][columns].std(ddof=0).to_numpy(), rtol=1e-9
    )

    # the same cohort with the held-out patients' omics and follow-up changed fits the same statistics
    held_out = set(dm.case_ids("val")) | set(dm.case_ids("test"))
    frame = pd.read_csv(SyntheticCohortLayout(cohort_dir).csv)
    rows = frame["case_id"].isin(held_out)
    omics = [c for c in frame.columns if c.endswith(("_rnaseq", "_cnv", "_mut"))]
    frame.loc[rows, omics] = frame.loc[rows, omics] * 7.0 + 100.0
    frame.loc[rows, "survival_months"] = frame.loc[rows, "survival_months"] * 0.5 + 0.3
    changed = tmp_path / "changed_all_clean.csv"
    frame.to_csv(changed, index=False)
    other = module(cohort_dir, fold=1, csv=changed)
    np.testing.assert_allclose(other.bin_edges[1:-1], dm.bin_edges[1:-1])
    np.testing.assert_allclose(other.genomics.mean, dm.genomics.mean)
    np.testing.assert_allclose(other.genomics.scale, dm.genomics.scale)
    # ... while the held-out patients' own inputs did change (they are transformed, not refitted)
    other.setup()
    dm.setup()
    assert not np.allclose(other.datasets["test"].omics[0], dm.datasets["test"].omics[0])


def test_honest_validation_is_carved_from_the_fold_training_patients(cohort_dir):
    layout = SyntheticCohortLayout(cohort_dir)
    for fold in range(5):
        train_ids, test_ids = read_split(layout.splits / f"splits_{fold}.csv")
        dm = module(cohort_dir, fold=fold, inner_val_fraction=0.2)
        train, val, test = (set(dm.case_ids(s)) for s in ("train", "val", "test"))
        assert test == set(test_ids)
        assert train | val == set(train_ids)
        assert not (train & val) and not (val & set(test_ids)) and not (train & set(test_ids))
        assert 0 < len(val) < len(train_ids) / 2
        assert dm.cohort.events[dm.index["val"]].any()  # stratified: the c-index is defined on it


def test_reference_selection_validates_on_the_split_files_val_column(cohort_dir):
    layout = SyntheticCohortLayout(cohort_dir)
    train_ids, test_ids = read_split(layout.splits / "splits_2.csv")
    dm = module(cohort_dir, fold=2, selection="reference")
    assert dm.case_ids("val") == dm.case_ids("test")
    assert set(dm.case_ids("val")) == set(test_ids)
    assert set(dm.case_ids("train")) == set(train_ids)
    # fitted on the whole train column (nothing is held out for selection)
    cohort = dm.cohort
    edges = fit_time_bins(cohort.times[dm.index["train"]], cohort.censorship[dm.index["train"]], n_bins=4)
    np.testing.assert_allclose(dm.bin_edges, edges)


def test_items_follow_the_contract_and_bags_concatenate_slides(cohort_dir):
    dm = module(cohort_dir, modality="multimodal")
    dm.setup()
    item = dm.datasets["train"][0]
    assert list(item) == ["path", "omics", "label", "time", "censorship", "case_id"]
    slides = dm.cohort.slides[item["case_id"]]
    assert item["path"].shape[1] == 64 and item["path"].dtype == torch.float32
    assert item["path"].shape[0] == sum(dm.bags.load(s).shape[0] for s in slides)
    assert [len(g) for g in item["omics"]] == dm.info["omic_sizes"]
    batch = collate_survival([item])
    assert batch["path"].shape == (1, *item["path"].shape)
    assert [g.shape for g in batch["omics"]] == [(1, n) for n in dm.info["omic_sizes"]]
    with pytest.raises(ConfigError, match="bags of one size"):
        collate_survival([dm.datasets["train"][i] for i in range(8)])


def test_user_mistakes_name_the_field(cohort_dir, tmp_path):
    with pytest.raises(DataError, match="data.params.bags"):
        module(cohort_dir, modality="multimodal", bags=None)
    with pytest.raises(ConfigError, match="data.params.selection"):
        module(cohort_dir, selection="best-on-test")
    with pytest.raises(ConfigError, match="data.params.fold"):
        module(cohort_dir, fold=5)
    with pytest.raises(DataError, match="TCGA CSV not found"):
        tcga(root=tmp_path, modality="omics")
    # a cohort whose training patients have no death: no bins, an error naming it
    cohort = read_tcga_csv(SyntheticCohortLayout(cohort_dir).csv)
    cohort.censorship[:] = 1.0
    with pytest.raises(DataError, match="no uncensored"):
        SurvivalDataModule(
            cohort, [(cohort.case_ids[:40], cohort.case_ids[40:])], omics_layout="all", modality="omics"
        )


def test_breast_cancer_set_loads_offline_with_stratified_folds():
    cohort = breast_cancer_cohort()
    assert len(cohort) == 198 and cohort.omics.shape == (198, 80) and int(cohort.events.sum()) == 51
    folds = stratified_folds(cohort, 5, seed=0)
    tests = [set(test) for _, test in folds]
    assert set().union(*tests) == set(cohort.case_ids) and sum(map(len, tests)) == 198
    for train, test in folds:
        assert not set(train) & set(test)
        events = cohort.events[cohort.index_of(test)]
        assert 9 <= events.sum() <= 12  # 51 deaths over 5 folds


def test_survival_metrics_agree_with_scikit_survival():
    from sksurv.metrics import concordance_index_censored, cumulative_dynamic_auc

    rng = np.random.default_rng(0)
    n = 80
    times = rng.exponential(20, n) + 0.5
    censorship = (rng.random(n) < 0.4).astype(float)
    risk = -times + rng.normal(0, 10, n)
    train_times = rng.exponential(20, 200) + 0.5
    train_censorship = (rng.random(200) < 0.4).astype(float)
    metric = SurvivalMetrics(
        full=True, split="test", train_times=train_times, train_censorship=train_censorship
    )
    for chunk in np.array_split(np.arange(n), 7):  # per-batch updates, one epoch-level figure
        metric.update(torch.tensor(risk[chunk]), torch.tensor(times[chunk]), torch.tensor(censorship[chunk]))
    values = metric.compute()
    expected = concordance_index_censored(censorship == 0, times, risk)[0]
    assert float(values["c_index"]) == pytest.approx(expected, abs=1e-6)
    from interplay.bio.survival import evaluation_times

    grid = evaluation_times(train_times, times, censorship == 0, split="test")
    structured = np.dtype([("event", bool), ("time", float)])
    train = np.array(list(zip(train_censorship == 0, train_times)), dtype=structured)
    test = np.array(list(zip(censorship == 0, times)), dtype=structured)
    assert float(values["td_auc"]) == pytest.approx(
        cumulative_dynamic_auc(train, test, risk, grid)[1], abs=1e-6
    )
    assert math.isnan(float(values["ibs"]))  # no survival curves given


class LinearHazards(nn.Module):
    """A tiny discrete-time model (omics -> 4 hazards) standing in for the registered ones."""

    def __init__(self, omic_input_dim: int, n_classes: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(omic_input_dim, n_classes)

    def forward(self, batch):
        omics = batch["omics"]
        x = torch.cat(omics, dim=-1) if isinstance(omics, list) else omics
        logits = self.linear(x)
        hazards = torch.sigmoid(logits)
        survival = torch.cumprod(1 - hazards, dim=1)
        return {"logits": logits, "hazards": hazards, "survival": survival, "risk": -survival.sum(1)}


def test_task_step_uses_the_nll_loss_and_cox_needs_several_patients():
    from interplay.bio.survival import cox_partial_likelihood_loss, nll_survival_loss

    torch.manual_seed(0)
    model = LinearHazards(5)
    batch = {
        "path": None,
        "omics": torch.randn(6, 5),
        "label": torch.tensor([0, 1, 2, 3, 1, 0]),
        "time": torch.tensor([1.0, 5.0, 9.0, 20.0, 4.0, 2.0]),
        "censorship": torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]),
        "case_id": list("abcdef"),
    }
    out = model(batch)
    task = SurvivalTask(model, alpha=0.3)
    loss = task.step(batch, "train")
    assert loss.item() == pytest.approx(
        nll_survival_loss(out["hazards"], batch["label"], batch["censorship"], 0.3).item()
    )
    cox = SurvivalTask(model, loss="cox")
    assert cox.step(batch, "train").item() == pytest.approx(
        cox_partial_likelihood_loss(out["risk"], batch["time"], batch["censorship"] == 0).item()
    )
    with pytest.raises(ConfigError, match="task.params.loss"):
        SurvivalTask(model, loss="hinge")


def fake_registry():
    """The real datasets and task with a tiny model, so the runner is tested on its own."""
    from interplay.bio.data import datasets
    from interplay.bio.tasks import SurvivalTask
    from interplay.core.registry import DomainRegistry

    registry = DomainRegistry("bio")
    registry.datasets.register("tcga", "tcga")(datasets.tcga)
    registry.tasks.register("survival", "survival")(SurvivalTask)
    registry.models.register("linear", "linear hazards")(LinearHazards)
    return registry


def runner_config(cohort_dir: Path, tmp_path: Path, **evaluation):
    from interplay.core.config import from_dict
    from interplay.core.train import ExperimentConfig

    layout = SyntheticCohortLayout(cohort_dir)
    raw = {
        "domain": "bio",
        "model": {"name": "linear"},
        "data": {
            "name": "tcga",
            "batch_size": 4,
            "params": {
                "csv": str(layout.csv),
                "signatures": str(layout.signatures),
                "splits": str(layout.splits),
                "modality": "omics",
                "omics_layout": "flat",
            },
        },
        "task": {"name": "survival"},
        "optimizer": {"name": "adam", "lr": 1.0e-2},
        "trainer": {
            "max_epochs": 3,
            "accelerator": "cpu",
            "progress_bar": False,
            "tensorboard": False,
            "monitor": "val/c_index",
            "monitor_mode": "max",
            "log_every_n_steps": 1,
        },
        "evaluation": evaluation,
        "run_root": str(tmp_path / "runs"),
    }
    return from_dict(ExperimentConfig, raw)


def test_cross_validation_reports_honest_and_reference_selection(cohort_dir, tmp_path):
    from interplay.bio.evaluation import cross_validate

    cfg = runner_config(cohort_dir, tmp_path, selection="both", folds=[0, 3])
    result = cross_validate(cfg, fake_registry(), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_folds"] == 2 and [row["fold"] for row in metrics["folds"]] == [0, 3]
    for row in metrics["folds"]:
        honest, reference = row["honest"], row["reference"]
        assert reference["n_val"] == row["n_test"]
        assert honest["n_train"] + honest["n_val"] == reference["n_train"] == row["n_train_fold"]
        # reference selection picks the best epoch ON the test patients: its best validation
        # c-index is the reported test c-index
        assert reference["test/c_index"] == pytest.approx(reference["best_val"], abs=1e-6)
    test = metrics["test"]
    for key in (
        "test/c_index",
        "test/c_index_std",
        "test/c_index_reference",
        "test/td_auc",
        "test/km_p_value",
    ):
        assert key in test
    values = [row["honest"]["test/c_index"] for row in metrics["folds"]]
    assert test["test/c_index"] == pytest.approx(np.mean(values))
    assert test["test/c_index_std"] == pytest.approx(np.std(values))
    assert (result.run_dir / "plots" / "km_test.png").stat().st_size > 1000
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    assert len(predictions) == sum(row["n_test"] for row in metrics["folds"])
    high = predictions["risk"] > predictions["train_median_risk"]
    assert (predictions["risk_group"] == np.where(high, "high", "low")).all()
    assert (result.run_dir / "config.yaml").is_file() and (result.run_dir / "versions.json").is_file()
    assert sorted(p.name for p in (result.run_dir / "folds").iterdir()) == [
        "0-honest",
        "0-reference",
        "3-honest",
        "3-reference",
    ]


def test_evaluation_section_is_validated(cohort_dir, tmp_path):
    from interplay.bio.evaluation import cross_validate

    registry = fake_registry()
    with pytest.raises(ConfigError, match="evaluation.selection"):
        cross_validate(runner_config(cohort_dir, tmp_path, selection="test"), registry)
    with pytest.raises(ConfigError, match="evaluation.folds"):
        cross_validate(runner_config(cohort_dir, tmp_path, folds=[7]), registry)
    with pytest.raises(ConfigError, match="evaluation.patience"):
        cross_validate(runner_config(cohort_dir, tmp_path, patience=3), registry)
    cox = runner_config(cohort_dir, tmp_path)
    cox.task.params["loss"] = "cox"
    cox.data.batch_size = 1
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        cross_validate(cox, registry)
