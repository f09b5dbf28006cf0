"""The replication protocol of treatment-effect benchmarks (IHDP: 10 replications, 90/10 split).

``interplay-tabular train --config transtee-ihdp`` runs :func:`train_replications`: for each
replication of the config's dataset it fits the model once and scores it, then writes one run
directory::

    runs/tabular/<model>/<time>/
      config.yaml, versions.json
      metrics.json                 mean / median / per-replication figures (see below)
      replications/<k>/metrics.csv per-epoch losses of the neural models
      replications/<k>/checkpoints/best.ckpt   the selected weights (``evaluate --checkpoint`` reads it)

Neural models train through :class:`~interplay.tabular.causal.tasks.TreatmentEffectTask` on the
training split and are selected on the validation split's factual loss (early stopping when
configured); models without a selection step (LightGBM, EconML) fit the whole non-test part, as the
LightGBM reference does. The test split is scored once, after fitting.

Figures (``metrics.json``): binary and categorical treatments get ``sqrt_pehe`` and ``ate_error``
in-sample (``_in``: the units the model was fitted on) and out-of-sample (``_out``: the test split);
treatments with a continuous part get the AMSE of the average dose-response curve (``amse_in``,
``amse_out``) on the grid of the split's own treatments. The ``test`` section holds the mean over
replications (``test/sqrt_pehe_out``), the median (``test/sqrt_pehe_out_median``) and the std;
they are errors, so reproduce configs list them under ``lower_is_better``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from interplay.core.errors import CheckpointError, ConfigError
from interplay.core.registry import DomainRegistry
from interplay.core.train import ExperimentConfig, RunResult, build_experiment
from interplay.core.train.runs import open_run_dir, plot_curves, write_json
from interplay.tabular.causal.data import CausalData
from interplay.tabular.causal.metrics import (
    adrf_amse,
    average_dose_response,
    multi_treatment_metrics,
    summarize_replications,
)
from interplay.tabular.causal.tasks import CausalDataModule, fit_task

__all__ = ["evaluate_model", "predict_outcomes", "replication_config", "train_replications"]

# the runner's settings in a config's ``evaluation`` section: a progress bar over replications
# (epochs have trainer.progress_bar) and a cap on how many replications run (quick looks)
EVALUATION_KEYS = ("progress", "max_replications")


def _accepted(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def build_datamodule(cfg: ExperimentConfig, registry: DomainRegistry) -> CausalDataModule:
    """The data module of ``cfg`` (as the engine builds it)."""
    entry = registry.datasets.get(cfg.data.name)
    common = dict(
        root=cfg.data.root,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )
    datamodule = registry.datasets.create(
        cfg.data.name, **{**_accepted(entry.factory, common), **cfg.data.params}
    )
    if not isinstance(datamodule, CausalDataModule):
        raise ConfigError(f"dataset '{cfg.data.name}' is not a treatment-effect dataset (no replications)")
    return datamodule


def replication_config(cfg: ExperimentConfig, replication: int) -> ExperimentConfig:
    data = dataclasses.replace(cfg.data, params={**cfg.data.params, "replication": replication})
    return dataclasses.replace(cfg, data=data)


# -- predictions and scores ----------------------------------------------------------------------------------
def predict_outcomes(model: Any, data: CausalData) -> np.ndarray:
    """``[n, K]`` predicted potential outcomes (discrete treatments) of a neural model or an estimator."""
    if isinstance(model, nn.Module):
        model.eval()
        with torch.no_grad():
            x = torch.as_tensor(data.x, dtype=torch.float32)
            dosage = None if data.dosage is None else torch.as_tensor(data.dosage, dtype=torch.float32)
            return model.potential_outcomes(x, dosage).double().numpy()
    try:
        return np.column_stack(
            [model.predict_outcome(data.x, k, data.dosage) for k in range(data.n_treatments)]
        )
    except NotImplementedError:  # effect-only estimators (EconML): levels relative to treatment 0
        zeros = np.zeros(len(data))
        return np.column_stack([zeros] + [model.effect(data.x, 0, k) for k in range(1, data.n_treatments)])


def _estimated_curve(model: Any, x: np.ndarray, grid: np.ndarray, treatment: int | None) -> np.ndarray:
    if isinstance(model, nn.Module):
        model.eval()
        with torch.no_grad():
            xx = torch.as_tensor(x, dtype=torch.float32)
            return (
                model.average_outcomes(xx, torch.as_tensor(grid, dtype=torch.float32), treatment)
                .double()
                .numpy()
            )
    if treatment is None:
        return average_dose_response(lambda xs, t: model.predict_outcome(xs, t), x, grid)
    return average_dose_response(lambda xs, d: model.predict_outcome(xs, treatment, d), x, grid)


def _curve_metrics(model: Any, data: CausalData) -> float:
    """AMSE of the average dose-response on the grid of ``data``'s own treatments (dosages)."""
    if data.response is None:
        raise ConfigError(f"{data.name}: no true response function, cannot score a dose-response curve")
    if data.treatment == "continuous":
        truth = average_dose_response(lambda x, t: data.response(x, t), data.x, data.t)
        return adrf_amse(truth, _estimated_curve(model, data.x, data.t, None))
    errors = []
    for k in range(data.n_treatments):  # dosage pairs: one curve per treatment over the dosage grid
        t = np.full(len(data), k)
        truth = average_dose_response(lambda x, d, t=t: data.response(x, t, d), data.x, data.dosage)
        errors.append(adrf_amse(truth, _estimated_curve(model, data.x, data.dosage, k)))
    return float(np.mean(errors))


def evaluate_model(model: Any, datamodule: CausalDataModule, fitted_on: str = "train") -> dict[str, float]:
    """In-sample (``fitted_on`` units) and out-of-sample (test) figures of one fitted model."""
    out: dict[str, float] = {}
    for suffix, split in (("_in", fitted_on), ("_out", "test")):
        data = datamodule.split(split)
        if len(data) == 0:
            continue
        if data.treatment in ("binary", "categorical"):
            if data.potential_outcomes is None:
                raise ConfigError(f"{data.name}: no true potential outcomes, cannot score effects")
            out.update(
                multi_treatment_metrics(data.potential_outcomes, predict_outcomes(model, data), suffix)
            )
        else:
            out[f"amse{suffix}"] = _curve_metrics(model, data)
    return out


# -- the runner ----------------------------------------------------------------------------------------------
def _default_registry() -> DomainRegistry:
    import interplay.tabular.causal  # noqa: F401  (registers the entries)
    from interplay.tabular.registry import REGISTRY

    return REGISTRY


def _fit_neural(
    cfg: ExperimentConfig, registry: DomainRegistry, rep_dir: Path
) -> tuple[Any, CausalDataModule, dict]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task, datamodule = build_experiment(cfg, registry)
    summary = fit_task(task, datamodule, cfg.trainer, log_dir=rep_dir)
    trainer = summary.pop("trainer")
    (rep_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(rep_dir / "checkpoints" / "best.ckpt", weights_only=False)
    plot_curves(rep_dir / "metrics.csv", rep_dir / "curves.png")
    return task.model.cpu(), datamodule, summary


def _fit_estimator(
    cfg: ExperimentConfig, registry: DomainRegistry, datamodule: CausalDataModule
) -> tuple[Any, dict]:
    entry = registry.models.get(cfg.model.name)
    model = registry.models.create(
        cfg.model.name, **{**_accepted(entry.factory, datamodule.info), **cfg.model.params}
    )
    data = datamodule.split("fit")
    start = time.perf_counter()
    model.fit(data.x, data.t, data.y, data.dosage)
    return model, {
        "best_val": None,
        "best_epoch": None,
        "epochs": None,
        "fit_seconds": round(time.perf_counter() - start, 3),
    }


def train_replications(
    cfg: ExperimentConfig,
    registry: DomainRegistry | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    max_replications: int | None = None,
) -> RunResult:
    """Fit and score ``cfg``'s model on every replication of its dataset; one run directory.

    ``max_replications`` (or ``evaluation.max_replications``) runs only the first ones (quick looks;
    ``metrics.json`` says how many ran); ``evaluation.progress`` shows a bar over replications.
    """
    if resume_from is not None:
        raise CheckpointError(
            "a replication run cannot be resumed from one checkpoint: train again (each replication's "
            "selected weights stay in <run>/replications/<k>/checkpoints/best.ckpt for evaluate and predict)"
        )
    registry = registry or _default_registry()
    unknown = set(cfg.evaluation) - set(EVALUATION_KEYS)
    if unknown:
        raise ConfigError(
            f"evaluation: unknown key(s) {', '.join(sorted(unknown))} for the replication runner "
            f"(known: {', '.join(EVALUATION_KEYS)})"
        )
    max_replications = max_replications or cfg.evaluation.get("max_replications")
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    entry = registry.models.get(cfg.model.name)  # unknown names fail before any data is read
    registry.tasks.get(cfg.task.name)
    first = build_datamodule(cfg, registry)
    replications = list(first.replications)[: max_replications or None]
    probe = registry.models.create(
        cfg.model.name, **{**_accepted(entry.factory, first.info), **cfg.model.params}
    )
    neural = isinstance(probe, nn.Module)

    run_dir = open_run_dir(cfg, run_dir)

    from tqdm.auto import tqdm

    show = bool(cfg.evaluation.get("progress", True)) if progress is None else progress
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for k in tqdm(replications, desc=f"{cfg.model.name} replications", unit="rep", disable=not show):
        rep_cfg = replication_config(cfg, k)
        rep_dir = run_dir / "replications" / f"{k:03d}"
        rep_dir.mkdir(parents=True, exist_ok=True)
        if neural:
            model, datamodule, summary = _fit_neural(rep_cfg, registry, rep_dir)
            fitted_on = "train"
        else:
            datamodule = build_datamodule(rep_cfg, registry)
            model, summary = _fit_estimator(rep_cfg, registry, datamodule)
            fitted_on = "fit"
        scores = evaluate_model(model, datamodule, fitted_on)
        row = {
            "replication": k,
            **{f"n_{s}": int(len(i)) for s, i in datamodule.index.items()},
            **summary,
            **scores,
        }
        write_json(rep_dir / "metrics.json", row)
        rows.append(row)
    fit_seconds = time.perf_counter() - start

    score_keys = [k for k in rows[0] if k.endswith(("_in", "_out")) and all(k in r for r in rows)]
    test: dict[str, float] = {}
    for key in score_keys:
        stats = summarize_replications([r[key] for r in rows], key)
        test.update({f"test/{name}": v for name, v in stats.items() if not name.endswith(("_min", "_max"))})
    best_values = [r["best_val"] for r in rows if r.get("best_val") is not None]
    epochs = [r["epochs"] for r in rows if r.get("epochs") is not None]
    per_metric = {
        key: {
            "mean": float(np.mean([r[key] for r in rows])),
            "median": float(np.median([r[key] for r in rows])),
            "per_replication": {str(r["replication"]): r[key] for r in rows},
        }
        for key in score_keys
    }
    summary_json: dict[str, Any] = {
        "monitor": cfg.trainer.monitor,
        "best_val": float(np.mean(best_values)) if best_values else None,
        "epochs": int(max(epochs)) if epochs else 0,
        "fit_seconds": round(fit_seconds, 3),
        "last_val": {},
        "test": test,
        **per_metric,
        "protocol": {
            "dataset": cfg.data.name,
            "source": first.source,
            "replications": replications,
            "n_replications_total": len(first.replications),
            "treatment": first.data.treatment,
            "selection": "validation factual loss (neural); none: fit on train + val (estimators)",
        },
        "replications": rows,
    }
    write_json(run_dir / "metrics.json", summary_json)
    return RunResult(run_dir, summary_json, None, None)
