"""The Orion-MSP runner of ``interplay-tabular train`` / ``reproduce``: pre-training and evaluation.

Two kinds of configs go through :func:`run_orion` (the datasets ``orion-prior`` and ``sklearn-tables``
carry it as their ``runner``):

* **pre-training** (``data.name: orion-prior``, e.g. ``--config orion-msp-prior``): builds
  ``model.params``' OrionMSP and runs :func:`~interplay.tabular.icl.pretrain.pretrain` with AdamW
  (``optimizer.lr``, ``optimizer.weight_decay``) and the ``evaluation`` settings ``steps``,
  ``warmup_steps``, ``min_lr_ratio``, ``grad_clip``, ``save_every``, ``time_limit_minutes``,
  ``threads`` (torch CPU threads) and ``val_batches`` (held-out prior batches scored at the end:
  ``val/loss``, ``val/acc`` and ``val/majority_acc``, the context's majority class; drawn from the
  full ranges even when the prior has a curriculum). The checkpoint is
  ``<run>/checkpoints/last.pt``; ``train --config orion-msp-prior --resume
  <run>/checkpoints/last.pt`` continues it in its own run directory.
* **evaluation** (``data.name: sklearn-tables``, e.g. ``--config orion-msp``): stratified 5-fold
  cross-validation (``evaluation.folds``; ``StratifiedKFold(shuffle=True, random_state=seed)``) on each
  table; ``model.name: orion-msp`` scores an :class:`~interplay.tabular.icl.classifier.OrionMSPClassifier`
  over ``evaluation.checkpoint`` (when it is null, the ``evaluation.pretrain_config`` config is
  pre-trained first, inside the run directory), ``model.name: lightgbm-classifier`` fits LightGBM on
  each training fold. Figures: accuracy and weighted F1 per table (mean over folds) and their mean
  over tables (``test/acc_mean``, ``test/f1_mean``); there is no selection step, so no validation.

Every run writes ``config.yaml``, ``versions.json`` and ``metrics.json`` to its run directory.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interplay.core.errors import CheckpointError, ConfigError
from interplay.core.registry import DomainRegistry
from interplay.core.train import ExperimentConfig, RunResult
from interplay.core.train.runs import plot_curves, run_directory, write_json
from interplay.tabular.icl.classifier import OrionMSPClassifier
from interplay.tabular.icl.datasets import NamedTable
from interplay.tabular.icl.model import OrionMSP
from interplay.tabular.icl.pretrain import PretrainConfig, episode_loss, pretrain
from interplay.tabular.icl.prior import PriorSampler

__all__ = ["PRETRAIN_KEYS", "EVALUATION_KEYS", "cross_validate", "run_orion"]

PRETRAIN_KEYS = (
    "steps",
    "warmup_steps",
    "min_lr_ratio",
    "grad_clip",
    "save_every",
    "time_limit_minutes",
    "threads",
    "val_batches",
    "progress",
    "device",
)
EVALUATION_KEYS = (
    "checkpoint",
    "pretrain_config",
    "folds",
    "n_estimators",
    "batch_size",
    "softmax_temperature",
    "threads",
    "progress",
    "device",
)


def _default_registry() -> DomainRegistry:
    import interplay.tabular.icl  # noqa: F401  (registers the entries)
    from interplay.tabular.registry import REGISTRY

    return REGISTRY


def _check_keys(cfg: ExperimentConfig, known: tuple[str, ...], what: str) -> None:
    unknown = set(cfg.evaluation) - set(known)
    if unknown:
        raise ConfigError(
            f"evaluation: unknown key(s) {', '.join(sorted(unknown))} for {what} (known: {', '.join(known)})"
        )


def _device(cfg: ExperimentConfig) -> str:
    """``evaluation.device``: ``cpu``, ``cuda`` or ``auto`` (CUDA when available; the default)."""
    device = str(cfg.evaluation.get("device", "auto"))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _set_threads(cfg: ExperimentConfig) -> None:
    threads = cfg.evaluation.get("threads")
    if threads:
        torch.set_num_threads(int(threads))


def run_orion(
    cfg: ExperimentConfig,
    registry: DomainRegistry | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
) -> RunResult:
    """Pre-train (``orion-prior`` data) or cross-validate (``sklearn-tables`` data) ``cfg``."""
    registry = registry or _default_registry()
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    registry.models.get(cfg.model.name)  # unknown names fail before anything is written
    data = registry.datasets.create(cfg.data.name, **{"seed": cfg.seed, **cfg.data.params})
    if isinstance(data, PriorSampler):
        return _run_pretraining(cfg, registry, data, resume_from=resume_from, run_dir=run_dir)
    if resume_from is not None:
        raise CheckpointError("an evaluation run has nothing to resume: run it again")
    return _run_evaluation(cfg, registry, data, run_dir=run_dir)


# -- pre-training ----------------------------------------------------------------------------------
def pretrain_config(cfg: ExperimentConfig) -> PretrainConfig:
    _check_keys(cfg, PRETRAIN_KEYS, "pre-training")
    if cfg.optimizer.name != "adamw":
        raise ConfigError(f"optimizer.name: Orion-MSP pre-training uses adamw, got '{cfg.optimizer.name}'")
    ev = cfg.evaluation
    minutes = ev.get("time_limit_minutes")
    try:
        return PretrainConfig(
            steps=int(ev.get("steps", 1000)),
            lr=cfg.optimizer.lr,
            weight_decay=cfg.optimizer.weight_decay,
            warmup_steps=int(ev.get("warmup_steps", 100)),
            min_lr_ratio=float(ev.get("min_lr_ratio", 0.1)),
            grad_clip=float(ev.get("grad_clip", 1.0)),
            save_every=int(ev.get("save_every", 100)),
            time_limit_s=None if minutes is None else 60.0 * float(minutes),
            progress=bool(ev.get("progress", True)),
        )
    except ValueError as err:
        raise ConfigError(f"evaluation (pre-training settings): {err}") from err


@torch.no_grad()
def validate_on_prior(model: OrionMSP, sampler: PriorSampler, n_batches: int) -> dict[str, float]:
    """Mean loss and accuracy on ``n_batches`` prior batches of another seed than training's, drawn
    from the full ranges (no curriculum), with the majority class of each table's context beside."""
    full_ranges = dataclasses.replace(sampler.config, curriculum_steps=0)
    held_out = PriorSampler(full_ranges, batch_size=sampler.batch_size, seed=sampler.seed + 1_000_003)
    model.eval()
    losses, accuracies, majority = [], [], []
    for k in range(n_batches):
        batch = held_out.batch(k)
        loss, accuracy = episode_loss(model, batch)
        losses.append(float(loss))
        accuracies.append(float(accuracy))
        context, queries = batch["y"][:, : batch["train_size"]], batch["y"][:, batch["train_size"] :]
        for known, asked in zip(context, queries):
            majority.append(float((asked == torch.bincount(known).argmax()).float().mean()))
    model.train()
    return {
        "val/loss": float(np.mean(losses)),
        "val/acc": float(np.mean(accuracies)),
        "val/majority_acc": float(np.mean(majority)),
    }


def _write_history(history: list[dict], run_dir: Path) -> None:
    path = run_dir / "metrics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss", "train/acc", "lr"])
        for row in history:
            writer.writerow([row["step"], row["step"], row["loss"], row["accuracy"], row["lr"]])
    plot_curves(path, run_dir / "plots" / "curves.png")


def _run_pretraining(
    cfg: ExperimentConfig,
    registry: DomainRegistry,
    sampler: PriorSampler,
    *,
    resume_from: str | os.PathLike | None,
    run_dir: str | os.PathLike | None,
) -> RunResult:
    settings = pretrain_config(cfg)
    _set_threads(cfg)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = registry.models.create(cfg.model.name, **cfg.model.params)
    if not isinstance(model, OrionMSP):
        raise ConfigError(f"model '{cfg.model.name}' cannot be pre-trained on prior tables (use orion-msp)")
    resume = resume_from is not None
    if resume:
        resume_from = Path(resume_from)
        if not resume_from.is_file():
            raise CheckpointError(f"checkpoint to resume from not found: {resume_from}")
        if run_dir is None:  # continue in the run directory the checkpoint belongs to
            run_dir = resume_from.parent.parent if resume_from.parent.name == "checkpoints" else None
    with run_directory(cfg, run_dir, versions={"resumed_from": str(resume_from)} if resume else None) as path:
        checkpoint = path / "checkpoints" / "last.pt"
        if resume and Path(resume_from).resolve() != checkpoint.resolve():
            import shutil

            shutil.copyfile(resume_from, checkpoint)
    summary = pretrain(model, sampler, settings, checkpoint, resume=resume, device=_device(cfg))
    _write_history(summary["history"], path)
    val = validate_on_prior(model, sampler, int(cfg.evaluation.get("val_batches", 8)))
    last = summary["history"][-1] if summary["history"] else {}
    metrics: dict[str, Any] = {
        "monitor": "val/loss",
        "best_val": val["val/loss"],
        "last_val": val,
        "test": {},
        "epochs": summary["step"],
        "global_step": summary["step"],
        "fit_seconds": round(summary["seconds"], 3),
        "stopped_early": summary["stopped_early"],
        "train_loss_last": last.get("loss"),
        "checkpoint": str(checkpoint),
        "checkpoint_bytes": checkpoint.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "prior": {**sampler.config.to_dict(), "batch_size": sampler.batch_size, "seed": sampler.seed},
    }
    write_json(path / "metrics.json", metrics)
    return RunResult(path, metrics, checkpoint, checkpoint)


# -- evaluation ------------------------------------------------------------------------------------
def cross_validate(
    make_estimator, tables: list[NamedTable], *, folds: int = 5, seed: int = 0, progress: bool = False
) -> list[dict[str, Any]]:
    """Per (table, fold) accuracy and weighted F1 of ``make_estimator()`` under stratified k-fold."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    rows = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    jobs = [(t, k, split) for t in tables for k, split in enumerate(splitter.split(t.x, t.y))]
    for table, fold, (train, test) in tqdm(jobs, desc="folds", disable=not progress):
        start = time.perf_counter()
        estimator = make_estimator().fit(table.x[train], table.y[train])
        predicted = estimator.predict(table.x[test])
        rows.append(
            {
                "table": table.name,
                "fold": fold,
                "n_train": len(train),
                "n_test": len(test),
                "accuracy": float(accuracy_score(table.y[test], predicted)),
                "f1_weighted": float(f1_score(table.y[test], predicted, average="weighted")),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    return rows


def summarize_folds(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    tables = list(dict.fromkeys(r["table"] for r in rows))
    for name in tables:
        mine = [r for r in rows if r["table"] == name]
        out[f"test/acc_{name}"] = float(np.mean([r["accuracy"] for r in mine]))
        out[f"test/acc_{name}_std"] = (
            float(np.std([r["accuracy"] for r in mine], ddof=1)) if len(mine) > 1 else 0.0
        )
        out[f"test/f1_{name}"] = float(np.mean([r["f1_weighted"] for r in mine]))
    out["test/acc_mean"] = float(np.mean([out[f"test/acc_{n}"] for n in tables]))
    out["test/f1_mean"] = float(np.mean([out[f"test/f1_{n}"] for n in tables]))
    return out


def _given_checkpoint(cfg: ExperimentConfig) -> Path | None:
    """``evaluation.checkpoint`` checked before anything is written (None: pre-train one first)."""
    checkpoint = cfg.evaluation.get("checkpoint")
    if not checkpoint:
        if not cfg.evaluation.get("pretrain_config"):
            raise ConfigError("evaluation: give a checkpoint or a pretrain_config to pre-train one first")
        return None
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"evaluation.checkpoint not found: {path} (pre-train one with "
            "`interplay-tabular train --config orion-msp-prior`, or set evaluation.checkpoint=null to "
            "pre-train inside this run)"
        )
    return path


def _pretrain_inside(cfg: ExperimentConfig, registry: DomainRegistry, run_dir: Path) -> Path:
    from interplay.core.cli import load_experiment

    pre_cfg = load_experiment(registry, cfg.evaluation["pretrain_config"], [f"seed={cfg.seed}"])
    result = run_orion(pre_cfg, registry, run_dir=run_dir / "pretrain")
    return Path(result.last_checkpoint)


def _run_evaluation(
    cfg: ExperimentConfig, registry: DomainRegistry, tables: list[NamedTable], *, run_dir
) -> RunResult:
    _check_keys(cfg, EVALUATION_KEYS, "cross-validation")
    _set_threads(cfg)
    ev = cfg.evaluation
    folds = int(ev.get("folds", 5))
    if folds < 2:
        raise ConfigError(f"evaluation.folds must be >= 2, got {folds}")
    checkpoint = _given_checkpoint(cfg) if cfg.model.name == "orion-msp" else None
    with run_directory(cfg, run_dir) as path:
        pass
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if cfg.model.name == "orion-msp":
        checkpoint = checkpoint or _pretrain_inside(cfg, registry, path)
        extra["checkpoint"] = str(checkpoint)

        def make_estimator():
            return OrionMSPClassifier(
                checkpoint=str(checkpoint),
                n_estimators=int(ev.get("n_estimators", 4)),
                batch_size=int(ev.get("batch_size", 4)),
                softmax_temperature=float(ev.get("softmax_temperature", 0.9)),
                random_state=cfg.seed,
                device=_device(cfg),
            )
    else:

        def make_estimator():
            return registry.models.create(cfg.model.name, **cfg.model.params)

        probe = make_estimator()
        if not hasattr(probe, "fit") or not hasattr(probe, "predict"):
            raise ConfigError(f"model '{cfg.model.name}' is not a classifier with fit / predict")
    rows = cross_validate(
        make_estimator, tables, folds=folds, seed=cfg.seed, progress=bool(ev.get("progress", False))
    )
    metrics: dict[str, Any] = {
        "monitor": "val/none",
        "best_val": None,
        "last_val": {},
        "test": summarize_folds(rows),
        "epochs": 0,
        "fit_seconds": round(time.perf_counter() - start, 3),
        "protocol": f"stratified {folds}-fold cross-validation (shuffle, random_state={cfg.seed}) per table",
        "folds": rows,
        **extra,
    }
    write_json(path / "metrics.json", metrics)
    return RunResult(path, metrics, None, None)
