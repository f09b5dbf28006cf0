"""5-fold cross-validation of survival models from split files, with honest or reference selection.

MCAT (Chen et al., ICCV 2021) and MOTCat (Xu & Chen, ICCV 2023) train each fold on the split file's
``train`` column, score the ``val`` column after every epoch and report, per fold, the BEST epoch's
c-index on it (MOTCat's ``utils/core_utils.py`` keeps ``max_c_index`` over epochs); the paper's table
is the mean over the 5 folds. The ``val`` column is therefore both the selection set and the reported
test set. Here:

* the split file's ``val`` column is the fold's TEST set, scored once per fold;
* ``evaluation.selection: honest`` (default) selects the epoch on an inner validation split carved from
  the fold's training patients (stratified on the event, ``evaluation.inner_val_fraction``, 15%);
* ``evaluation.selection: reference`` reproduces the published protocol (train on the whole ``train``
  column, keep the best epoch on the fold's test patients);
* ``evaluation.selection: both`` runs both per fold and reports both: ``test/c_index`` (honest) and
  ``test/c_index_reference``.

Neural models train through :func:`interplay.core.train.train` (one Lightning run per fold and
selection under ``<run>/folds/<k>-<selection>/``); tabular models (the scikit-survival Cox baseline:
``fit(X, times, events)``, ``predict_risk(X)``, optionally ``predict_survival(X, times)``) are fitted
on the same training patients and the same standardised omics. The run directory gets
``config.yaml``, ``versions.json``, ``metrics.json`` (``test`` holds the mean over folds of
``test/c_index``, ``test/td_auc``, ``test/ibs`` and their ``_std``, population standard deviation over
folds, plus ``test/km_p_value``; per-fold figures under ``folds``), ``predictions.csv`` (every test
patient of every fold: risk, fold, risk group) and ``plots/km_test.png``: Kaplan-Meier curves of the
pooled test patients split into high / low risk at the median risk of each fold's TRAINING patients
(never at a test-set statistic), with the log-rank p-value.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import inspect
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from interplay.bio.tasks import SurvivalDataModule, model_outputs, survival_scores
from interplay.core.data import atomic_write
from interplay.core.errors import CheckpointError, ConfigError, InterplayError
from interplay.core.registry import DomainRegistry
from interplay.core.train import ExperimentConfig, RunResult
from interplay.core.train.engine import build_datamodule as core_build_datamodule
from interplay.core.train.runs import open_run_dir, write_json

__all__ = [
    "EVALUATION_SELECTIONS",
    "EvaluationSettings",
    "build_datamodule",
    "cross_validate",
    "evaluation_settings",
    "predict_split",
    "summarize_folds",
]

EVALUATION_SELECTIONS = ("honest", "reference", "both")
_EVALUATION_KEYS = ("selection", "inner_val_fraction", "folds")


@dataclass(frozen=True)
class EvaluationSettings:
    """The ``evaluation`` section of a bio config."""

    selection: str = "honest"
    inner_val_fraction: float = 0.15
    folds: tuple[int, ...] | None = None  # run only these folds (quick looks); None: all

    @property
    def modes(self) -> tuple[str, ...]:
        return ("honest", "reference") if self.selection == "both" else (self.selection,)


def evaluation_settings(cfg: ExperimentConfig) -> EvaluationSettings:
    """Validated ``cfg.evaluation`` (unknown keys and bad values name the key)."""
    raw = dict(getattr(cfg, "evaluation", None) or {})
    unknown = [k for k in raw if k not in _EVALUATION_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown key(s) evaluation.{', evaluation.'.join(unknown)} "
            f"(known: {', '.join(_EVALUATION_KEYS)})"
        )
    selection = raw.get("selection", "honest")
    if selection not in EVALUATION_SELECTIONS:
        raise ConfigError(
            f"evaluation.selection: unknown value {selection!r} "
            f"(choose from {', '.join(EVALUATION_SELECTIONS)})"
        )
    fraction = raw.get("inner_val_fraction", 0.15)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"evaluation.inner_val_fraction must be a number in (0, 1), got {fraction!r}")
    folds = raw.get("folds")
    if folds is not None:
        if isinstance(folds, int) and not isinstance(folds, bool):
            folds = [folds]
        if (
            not isinstance(folds, (list, tuple))
            or not folds
            or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds)
        ):
            raise ConfigError(f"evaluation.folds must be a list of fold numbers (>= 0), got {folds!r}")
        folds = tuple(dict.fromkeys(folds))
    return EvaluationSettings(selection, float(fraction), folds)


# -- building blocks ---------------------------------------------------------------------------------------
def _accepted(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def _default_registry() -> DomainRegistry:
    from interplay.bio.cli import _load
    from interplay.bio.registry import REGISTRY

    _load()
    return REGISTRY


def _with_fold(cfg: ExperimentConfig, fold: int, selection: str, fraction: float) -> ExperimentConfig:
    params = {**cfg.data.params, "fold": fold, "selection": selection, "inner_val_fraction": fraction}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, params=params))


def build_datamodule(cfg: ExperimentConfig, registry: DomainRegistry) -> SurvivalDataModule:
    """The data module ``cfg`` names (as the engine builds it), for the fold in ``cfg.data.params``."""
    datamodule = core_build_datamodule(cfg, registry)
    if not isinstance(datamodule, SurvivalDataModule):
        raise ConfigError(
            f"dataset '{cfg.data.name}' does not serve survival folds (not a SurvivalDataModule)"
        )
    return datamodule


@torch.no_grad()
def predict_split(
    model: torch.nn.Module, datamodule: SurvivalDataModule, split: str
) -> dict[str, np.ndarray]:
    """Risk (and per-bin survival when the model gives it) of every patient of ``split``, in order."""
    model.eval()
    risks, curves = [], []
    for batch in datamodule.split_loader(split):
        out = model_outputs(model, batch)
        risks.append(out["risk"].reshape(-1).double().cpu())
        if "survival" in out:
            curves.append(out["survival"].reshape(len(batch["time"]), -1).double().cpu())
    index = datamodule.index[split]
    result = {
        "risk": torch.cat(risks).numpy(),
        "time": datamodule.cohort.times[index],
        "censorship": datamodule.cohort.censorship[index],
    }
    if curves:
        result["survival"] = torch.cat(curves).numpy()
    return result


class _KeepTask(pl.Callback):
    """Hands the fitted task and its data module back to the runner (the engine returns neither)."""

    task: pl.LightningModule | None = None
    datamodule: Any = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.task, self.datamodule = pl_module, trainer.datamodule


def _fit_neural(cfg: ExperimentConfig, registry: DomainRegistry, fold_dir: Path) -> dict[str, Any]:
    from interplay.core.train import train
    from interplay.core.train.checkpoint import load_checkpoint

    keep = _KeepTask()
    result = train(cfg, registry, run_dir=fold_dir, callbacks=[keep])
    metrics = dict(result.metrics)
    task, datamodule = keep.task, keep.datamodule
    if result.best_checkpoint is not None and result.best_checkpoint.is_file():
        task.load_state_dict(load_checkpoint(result.best_checkpoint)["state_dict"])
        # the best checkpoint stays for evaluate / predict; last.ckpt (a 20-epoch fold cannot be
        # resumed on its own) would double the disk use of every fold
        if result.last_checkpoint is not None and result.last_checkpoint != result.best_checkpoint:
            result.last_checkpoint.unlink(missing_ok=True)
    predictions = {split: predict_split(task.model, datamodule, split) for split in ("train", "test")}
    metrics["best_epoch"] = _best_epoch(result.best_checkpoint)
    return {"metrics": metrics, "predictions": predictions, "datamodule": datamodule}


def _best_epoch(checkpoint: Path | None) -> int | None:
    if checkpoint is None:
        return None
    stem = checkpoint.stem  # best-epochNNN
    digits = stem.rsplit("epoch", 1)[-1]
    return int(digits) if digits.isdigit() else None


def _fit_tabular(model: Any, datamodule: SurvivalDataModule, monitor: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        # scikit-survival's Breslow baseline divides by empty risk sets beyond the last training
        # time; those entries are never read at the evaluation times (inside the training range)
        warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)
        return _fit_tabular_quiet(model, datamodule, monitor)


def _fit_tabular_quiet(model: Any, datamodule: SurvivalDataModule, monitor: str) -> dict[str, Any]:
    start = time.perf_counter()
    x_train, t_train, c_train = datamodule.arrays("train")
    x_val, t_val, c_val = datamodule.arrays("val")
    if "validation" in inspect.signature(model.fit).parameters:
        # the model's own hyper-parameter (Coxnet's alpha) is chosen on the selection split: the
        # inner validation patients (honest) or the fold's test patients (reference)
        model.fit(x_train, t_train, c_train == 0, validation=(x_val, t_val, c_val == 0))
    else:
        model.fit(x_train, t_train, c_train == 0)
    fit_seconds = time.perf_counter() - start
    predictions, scores = {}, {}
    for split in ("train", "val", "test"):
        x, times, censorship = datamodule.arrays(split)
        risk = np.asarray(model.predict_risk(x), dtype=np.float64).reshape(-1)
        predictions[split] = {"risk": risk, "time": times, "censorship": censorship}
        survival_function = None
        if split == "test" and hasattr(model, "predict_survival"):
            survival_function = functools.partial(model.predict_survival, x)
        scores[split] = survival_scores(
            times,
            censorship,
            risk,
            train_times=t_train,
            train_censorship=c_train,
            survival_function=survival_function,
            full=split == "test",
            split=split,
        )
    val = {f"val/{k}": v for k, v in scores["val"].items()}
    return {
        "metrics": {
            "monitor": monitor,
            "best_val": val.get(monitor),
            "last_val": val,
            "test": {f"test/{k}": v for k, v in scores["test"].items()},
            "epochs": None,
            "fit_seconds": round(fit_seconds, 3),
            "best_epoch": None,
        },
        "predictions": {"train": predictions["train"], "test": predictions["test"]},
        "datamodule": datamodule,
    }


def summarize_folds(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean and population standard deviation over folds of every metric all folds report (NaN folds
    skipped)."""
    keys = [k for k in fold_metrics[0] if all(m.get(k) is not None for m in fold_metrics)]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([m[key] for m in fold_metrics], dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values):  # a figure no fold could compute (e.g. IBS without survival curves) is left out
            out[key] = float(values.mean())
            out[f"{key}_std"] = float(values.std())
    return out


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = [
        "case_id",
        "fold",
        "selection",
        "time",
        "censorship",
        "risk",
        "train_median_risk",
        "risk_group",
    ]
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _km_plot(rows: list[dict[str, Any]], path: Path, title: str) -> dict[str, Any]:
    """KM curves of the pooled test patients, high vs low risk (per-fold training medians)."""
    from interplay.bio.survival import kaplan_meier_plot

    times = np.array([r["time"] for r in rows], dtype=np.float64)
    events = np.array([r["censorship"] == 0 for r in rows])
    # the risk relative to the fold's training median: > 0 is the high-risk group in every fold
    relative = np.array([r["risk"] - r["train_median_risk"] for r in rows], dtype=np.float64)
    try:
        result = kaplan_meier_plot(times, events, relative, path, split=0.0, title=title)
    except InterplayError as err:  # e.g. a model that ranks everybody alike leaves a group empty
        warnings.warn(f"no Kaplan-Meier plot: {err}", RuntimeWarning, stacklevel=2)
        return {"p_value": None, "error": str(err)}
    return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in dict(result).items()}


# -- the runner ----------------------------------------------------------------------------------------------
def cross_validate(
    cfg: ExperimentConfig,
    registry: DomainRegistry | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> RunResult:
    """Run ``cfg``'s model over the folds of its split files and write one run directory.

    Returns a :class:`RunResult` whose ``metrics`` has the engine's keys (``monitor``, ``best_val``,
    ``test``, ``epochs``, ``fit_seconds``, ``last_val``) as means over folds, plus ``folds``,
    ``selection`` and ``km``.
    """
    if resume_from is not None:
        raise CheckpointError(
            "a cross-validated survival run cannot be resumed from one checkpoint: train again "
            "(each fold's best checkpoint stays under <run>/folds/ for evaluate and predict)"
        )
    registry = registry or _default_registry()
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    settings = evaluation_settings(cfg)
    model_entry = registry.models.get(cfg.model.name)  # unknown names fail before any data is read
    registry.tasks.get(cfg.task.name)
    if not cfg.trainer.monitor.startswith("val/c_index") and cfg.trainer.monitor != "val/loss":
        warnings.warn(
            f"selecting on {cfg.trainer.monitor}; MCAT / MOTCat select on val/c_index", stacklevel=2
        )

    first = build_datamodule(_with_fold(cfg, 0, settings.modes[0], settings.inner_val_fraction), registry)
    n_folds = len(first.folds)
    folds = list(settings.folds) if settings.folds is not None else list(range(n_folds))
    bad = [f for f in folds if f >= n_folds]
    if bad:
        raise ConfigError(f"evaluation.folds: fold(s) {bad} do not exist (the data have {n_folds} folds)")
    probe = registry.models.create(
        cfg.model.name, **{**_accepted(model_entry.factory, first.info), **cfg.model.params}
    )
    neural = isinstance(probe, torch.nn.Module)
    if neural and cfg.task.params.get("loss") == "cox" and cfg.data.batch_size < 2:
        raise ConfigError(
            "task.params.loss=cox compares patients within a step: set data.batch_size >= 2 "
            "(omics-only models) or use the nll loss"
        )
    del probe

    run_dir = open_run_dir(cfg, run_dir)

    from tqdm.auto import tqdm

    show = cfg.trainer.progress_bar if progress is None else progress
    primary = settings.modes[0]
    fold_rows: list[dict[str, Any]] = []
    summaries: dict[str, list[dict[str, float]]] = {mode: [] for mode in settings.modes}
    prediction_rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    jobs = [(fold, mode) for fold in folds for mode in settings.modes]
    bar = tqdm(jobs, desc=f"{cfg.model.name} folds", unit="fit", disable=not show)
    for fold, mode in bar:
        fold_cfg = _with_fold(cfg, fold, mode, settings.inner_val_fraction)
        fold_dir = run_dir / "folds" / f"{fold}-{mode}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        if neural:
            outcome = _fit_neural(fold_cfg, registry, fold_dir)
        else:
            module = build_datamodule(fold_cfg, registry)
            model = registry.models.create(
                cfg.model.name, **{**_accepted(model_entry.factory, module.info), **cfg.model.params}
            )
            outcome = _fit_tabular(model, module, cfg.trainer.monitor)
            write_json(fold_dir / "metrics.json", outcome["metrics"])
        metrics, module = outcome["metrics"], outcome["datamodule"]
        test = {k: v for k, v in metrics.get("test", {}).items() if k != "test/loss"}
        summaries[mode].append(test)
        row = next((r for r in fold_rows if r["fold"] == fold), None)
        if row is None:
            row = {
                "fold": fold,
                "n_train_fold": len(module.folds[fold][0]),
                "n_test": len(module.index["test"]),
            }
            fold_rows.append(row)
        row[mode] = {
            "n_train": int(len(module.index["train"])),
            "n_val": int(len(module.index["val"])),
            "best_val": metrics.get("best_val"),
            "best_epoch": metrics.get("best_epoch"),
            "epochs": metrics.get("epochs"),
            "fit_seconds": metrics.get("fit_seconds"),
            **test,
        }
        if mode == primary:
            train_median = float(np.median(outcome["predictions"]["train"]["risk"]))
            test_pred = outcome["predictions"]["test"]
            for case, t, c, r in zip(
                module.case_ids("test"), test_pred["time"], test_pred["censorship"], test_pred["risk"]
            ):
                prediction_rows.append(
                    {
                        "case_id": case,
                        "fold": fold,
                        "selection": mode,
                        "time": float(t),
                        "censorship": float(c),
                        "risk": float(r),
                        "train_median_risk": train_median,
                        "risk_group": "high" if r > train_median else "low",
                    }
                )
    fit_seconds = time.perf_counter() - start

    test = summarize_folds(summaries[primary])
    if "reference" in settings.modes and primary != "reference":
        for key, value in summarize_folds(summaries["reference"]).items():
            base, std = (key[: -len("_std")], "_std") if key.endswith("_std") else (key, "")
            test[f"{base}_reference{std}"] = value
    _write_predictions(run_dir / "predictions.csv", prediction_rows)
    title = f"{cfg.name or cfg.model.name}: test patients of {len(folds)} folds ({primary} selection)"
    km = _km_plot(prediction_rows, run_dir / "plots" / "km_test.png", title)
    if km.get("p_value") is not None:
        km.update({"plot": "plots/km_test.png", "split": "median risk of each fold's training patients"})
        test["test/km_p_value"] = float(km["p_value"])

    best_values = [row[primary]["best_val"] for row in fold_rows if row[primary]["best_val"] is not None]
    epochs = [row[primary]["epochs"] for row in fold_rows if row[primary]["epochs"] is not None]
    summary: dict[str, Any] = {
        "monitor": cfg.trainer.monitor,
        "best_val": float(np.mean(best_values)) if best_values else None,
        "epochs": int(max(epochs)) if epochs else 0,
        "fit_seconds": round(fit_seconds, 3),
        "last_val": {},
        "test": test,
        "selection": settings.selection,
        "selection_note": {
            "honest": "epoch selected on an inner validation split of each fold's training patients",
            "reference": "epoch selected on the fold's test patients (MCAT / MOTCat protocol; optimistic)",
        },
        "n_folds": len(folds),
        "n_folds_total": n_folds,
        "n_patients": len(first.cohort),
        "folds": fold_rows,
        "km": km,
    }
    write_json(run_dir / "metrics.json", summary)
    return RunResult(run_dir, summary, None, None)


def cox_omics(
    l1_ratio: float = 0.5,
    n_alphas: int = 50,
    alpha_min_ratio: float | str = "auto",
    validation_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 100_000,
) -> Any:
    """The elastic-net Cox baseline (:class:`~interplay.bio.models.survival_baselines.CoxOmicsBaseline`);
    under :func:`cross_validate` its ``alpha`` is chosen on the fold's selection split."""
    from interplay.bio.models.survival_baselines import CoxOmicsBaseline

    return CoxOmicsBaseline(
        l1_ratio=l1_ratio,
        n_alphas=n_alphas,
        alpha_min_ratio=alpha_min_ratio,
        validation_fraction=validation_fraction,
        seed=seed,
        max_iter=max_iter,
    )


def register_cox() -> None:
    """Register ``cox`` unless the models package already did (it ships the class, not an entry)."""
    from interplay.bio.registry import REGISTRY

    if "cox" not in REGISTRY.models:
        REGISTRY.models.register(
            "cox", "elastic-net Cox proportional hazards on the omics (scikit-survival Coxnet baseline)"
        )(cox_omics)
