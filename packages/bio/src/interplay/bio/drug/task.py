"""Drug sensitivity regression: the Lightning task and the runner that trains any drug model.

:class:`DrugRegressionTask` (task name ``drug_regression``) trains MCA, PaccMann v2 and the fingerprint
MLP on min-max scaled ln IC50 with the mean squared error (Manica et al. 2019, Section 2.4) and scores
every stage on the ln IC50 scale (the scaling undone): ``{stage}/rmse``, ``/r2``, ``/pearson``,
``/spearman``. Selection uses a validation split carved from the training data (``val/rmse`` in the
shipped configs); the test split is scored once, with the selected checkpoint. (The reference
``train_paccmann.py`` saves the checkpoint with the best *test* loss; see docs/reproductions/mca.md.)

:func:`run_drug_experiment` is the ``train`` function the bio command line uses for configs whose task
is ``drug_regression``: neural models go through :func:`interplay.core.train.train`; a model registered
with the ``gbdt`` tag (``fp-lightgbm``) is fitted outside Lightning on the same data module's arrays,
with early stopping on validation, and gets a run directory of the same layout (``config.yaml``,
``versions.json``, ``metrics.json``, the booster under ``checkpoints/``). With
``evaluation: {explain: N}`` a neural run also writes attention explanations of N test drugs and the
``top_genes`` most attended genes under ``<run>/explanations/`` (see :mod:`interplay.bio.drug.explain`);
``evaluation: {threads: N}`` sets torch's CPU threads for the run (0 keeps torch's default).
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from interplay.bio.regression_metrics import RegressionMetrics, regression_metrics
from interplay.core.errors import CheckpointError, ConfigError
from interplay.core.registry import DomainRegistry
from interplay.core.train import OptimizerConfig, RunResult, TaskModule
from interplay.core.train.config import ExperimentConfig
from interplay.core.train.runs import run_directory, write_json
from interplay.core.train.task import STAGES

__all__ = ["EVALUATION_KEYS", "DrugRegressionTask", "fit_gbdt", "run_drug_experiment"]

#: keys of a drug config's ``evaluation`` section read by :func:`run_drug_experiment`
EVALUATION_KEYS = ("explain", "top_genes", "threads")


class DrugRegressionTask(TaskModule):
    """MSE on scaled labels; RMSE / R² / Pearson / Spearman on ln IC50 (``label_min``, ``label_max``
    come from the data module's training split)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig | None = None,
        label_min: float = 0.0,
        label_max: float = 1.0,
    ) -> None:
        super().__init__(model, optimizer)
        if not label_max > label_min:
            raise ConfigError(f"label_max ({label_max}) must exceed label_min ({label_min})")
        self.label_min, self.label_max = float(label_min), float(label_max)
        scale = self.label_max - self.label_min
        self.metrics.update(
            {
                f"{s}_metrics": torchmetrics.MetricCollection(
                    {"regression": RegressionMetrics(scale=scale, offset=self.label_min)}, prefix=f"{s}/"
                )
                for s in STAGES
            }
        )

    def to_ln_ic50(self, scaled: Tensor) -> Tensor:
        return scaled * (self.label_max - self.label_min) + self.label_min

    def step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        prediction = self.model(batch)
        target = batch["label"]
        if prediction.shape != target.shape:
            raise ValueError(
                f"model returned {tuple(prediction.shape)} predictions for {tuple(target.shape)} labels"
            )
        loss = F.mse_loss(prediction, target)
        self.stage_metrics(stage).update(prediction.detach(), target)
        return loss

    def predict_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {"ln_ic50": self.to_ln_ic50(self.model(batch))}
        if "label" in batch:
            out["target_ln_ic50"] = self.to_ln_ic50(batch["label"])
        out["drug"] = batch["drug"]
        out["cell_line"] = batch["cell_line"]
        return out


# ----------------------------------------------------------------------------------------- runner


def _accepted(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def _default_registry() -> DomainRegistry:
    import interplay.bio.drug  # noqa: F401  (registers the drug entries)
    from interplay.bio.registry import REGISTRY

    return REGISTRY


def _check_evaluation(cfg: ExperimentConfig) -> dict[str, int]:
    unknown = [k for k in cfg.evaluation if k not in EVALUATION_KEYS]
    if unknown:
        raise ConfigError(
            f"evaluation.{unknown[0]} is not a drug-sensitivity setting (known: {', '.join(EVALUATION_KEYS)})"
        )
    out = {
        "explain": int(cfg.evaluation.get("explain", 0)),
        "top_genes": int(cfg.evaluation.get("top_genes", 20)),
        "threads": int(cfg.evaluation.get("threads", 0)),
    }
    if out["explain"] < 0 or out["top_genes"] < 1 or out["threads"] < 0:
        raise ConfigError(
            f"evaluation.explain and .threads must be >= 0 and evaluation.top_genes >= 1, got {out}"
        )
    return out


def build_datamodule(cfg: ExperimentConfig, registry: DomainRegistry):
    """The data module named by ``cfg`` (common data settings + ``data.params``)."""
    entry = registry.datasets.get(cfg.data.name)
    common = dict(
        root=cfg.data.root,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )
    return registry.datasets.create(cfg.data.name, **{**_accepted(entry.factory, common), **cfg.data.params})


def fit_gbdt(model: Any, datamodule: Any, *, run_test: bool = True) -> dict[str, Any]:
    """Fit a tree model on ``datamodule.arrays('train')`` (early stopping on ``val``) and score
    validation and, once, test; metrics on the ln IC50 scale."""
    x_train, y_train = datamodule.arrays("train")
    x_val, y_val = datamodule.arrays("val")
    start = time.perf_counter()
    model.fit(x_train, y_train, x_val, y_val)
    fit_seconds = time.perf_counter() - start
    val = regression_metrics(model.predict(x_val), y_val, prefix="val/") if len(y_val) else {}
    out: dict[str, Any] = {"last_val": val, "fit_seconds": round(fit_seconds, 3)}
    if run_test:
        x_test, y_test = datamodule.arrays("test")
        out["test"] = regression_metrics(model.predict(x_test), y_test, prefix="test/")
    return out


def _run_gbdt(cfg: ExperimentConfig, registry: DomainRegistry, run_dir: Path | None) -> RunResult:
    entry = registry.models.get(cfg.model.name)
    datamodule = build_datamodule(cfg, registry)
    params = {**_accepted(entry.factory, {"seed": cfg.seed}), **cfg.model.params}
    model = registry.models.create(cfg.model.name, **params)
    with run_directory(cfg, run_dir) as run_dir:
        outcome = fit_gbdt(model, datamodule, run_test=cfg.trainer.run_test)
    booster = getattr(getattr(model, "model", None), "booster_", None)
    checkpoint = None
    if booster is not None:
        from interplay.core.data import atomic_save

        checkpoint = atomic_save(
            lambda temp: booster.save_model(str(temp)), run_dir / "checkpoints" / "model.txt"
        )
    metrics = {
        "monitor": cfg.trainer.monitor,
        "best_val": outcome["last_val"].get(cfg.trainer.monitor),
        "best_checkpoint": str(checkpoint) if checkpoint else None,
        "epochs": 0,
        "best_iteration": getattr(model, "best_iteration", None),
        "fit_seconds": outcome["fit_seconds"],
        "last_val": outcome["last_val"],
        "split": dict(datamodule.split_settings, sizes={k: int(len(v)) for k, v in datamodule.index.items()}),
    }
    if "test" in outcome:
        metrics["test"] = outcome["test"]
    write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, metrics, None, None, True)


def _explain_run(result: RunResult, registry: DomainRegistry, settings: dict[str, int]) -> None:
    from interplay.bio.drug.explain import explain_split
    from interplay.core.train import restore

    if result.best_checkpoint is None or not Path(result.best_checkpoint).is_file():
        return
    task, datamodule, _ = restore(result.best_checkpoint, registry)
    if not hasattr(task.model, "explain"):
        return
    written = explain_split(
        task.model,
        datamodule,
        result.run_dir / "explanations",
        split="test",
        n_drugs=settings["explain"],
        top_k=settings["top_genes"],
    )
    result.metrics["explanations"] = {k: str(v) for k, v in written.items()}
    write_json(result.run_dir / "metrics.json", result.metrics)


def run_drug_experiment(
    cfg: ExperimentConfig,
    registry: DomainRegistry | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
) -> RunResult:
    """Train ``cfg`` (a ``drug_regression`` config): Lightning for neural models, LightGBM directly."""
    from interplay.core.train import train

    registry = registry or _default_registry()
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    settings = _check_evaluation(cfg)
    entry = registry.models.get(cfg.model.name)
    if "gbdt" in entry.tags:
        if resume_from is not None:
            raise CheckpointError(f"{cfg.model.name} is fitted in one go and cannot be resumed: train again")
        return _run_gbdt(cfg, registry, Path(run_dir) if run_dir is not None else None)
    previous_threads = torch.get_num_threads()
    if settings["threads"]:
        # small models on a shared CPU: one thread avoids OpenMP spin-waits that make every step
        # several times slower when the cores are oversubscribed
        torch.set_num_threads(settings["threads"])
    try:
        result = train(cfg, registry, resume_from=resume_from, run_dir=run_dir)
        if settings["explain"] and result.is_global_zero:
            with torch.no_grad():
                _explain_run(result, registry, settings)
    finally:
        torch.set_num_threads(previous_threads)
    return result
