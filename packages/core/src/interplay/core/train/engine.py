"""The training engine: config -> (task, data) -> Lightning Trainer -> run directory.

``build_trainer`` maps a :class:`TrainerConfig` onto ``lightning.pytorch.Trainer`` (accelerator,
devices, strategy, precision, clipping, accumulation, checkpoints, early stopping, loggers).
``train`` runs a whole experiment: seed, fit with selection on the validation monitor, then score
the test split exactly once with the selected checkpoint, and write ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from interplay.core.config import from_dict, to_dict
from interplay.core.errors import CheckpointError, ConfigError
from interplay.core.registry import DomainRegistry
from interplay.core.train.checkpoint import AtomicCheckpointIO, load_checkpoint
from interplay.core.train.config import ExperimentConfig, TrainerConfig
from interplay.core.train.runs import plot_curves, run_directory, write_json
from interplay.core.train.task import TaskModule

# Lightning's hints (dataloader workers, idle GPUs, cloud loggers, callbacks on restore) are noise
# for our runs: the engine supplies the callbacks itself and reports devices in versions.json.
for _pattern in (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*is not using a GPU.*",
    ".*callbacks used to create the checkpoint need to be provided.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*smaller than the logging interval.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*Experiment logs directory .* exists and is not empty.*",
    ".*The dirpath has changed from.*",
    ".*when logging on epoch level in distributed setting.*",
):
    warnings.filterwarnings("ignore", _pattern)
for _logger in (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
):
    logging.getLogger(_logger).setLevel(logging.WARNING)


def build_trainer(
    config: TrainerConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    callbacks: list[pl.Callback] | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """A Lightning Trainer configured from ``config``.

    With ``run_dir``, checkpoints go to ``run_dir/checkpoints`` (best on ``config.monitor`` plus
    ``last.ckpt``) and metrics to ``run_dir/metrics.csv`` (and TensorBoard when installed).
    Without it the trainer logs and checkpoints nothing (handy for evaluation and predictions).
    """
    cbs: list[pl.Callback] = list(callbacks or [])
    loggers: list[Any] | bool = False
    if run_dir is not None:
        run_dir = Path(run_dir)
        cbs.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best-epoch{epoch:03d}",
                monitor=config.monitor,
                mode=config.monitor_mode,
                save_top_k=config.save_top_k,
                save_last=True,
                auto_insert_metric_name=False,
            )
        )
        loggers = [CSVLogger(save_dir=str(run_dir), name="", version="")]
        if config.tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    if config.early_stopping.enabled:
        cbs.append(
            EarlyStopping(
                monitor=config.monitor,
                mode=config.monitor_mode,
                patience=config.early_stopping.patience,
                min_delta=config.early_stopping.min_delta,
            )
        )
    if config.progress_bar:
        cbs.append(TQDMProgressBar(refresh_rate=1))
    kwargs: dict[str, Any] = dict(
        max_epochs=config.max_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        gradient_clip_val=config.gradient_clip_val,
        gradient_clip_algorithm=config.gradient_clip_algorithm if config.gradient_clip_val else None,
        accumulate_grad_batches=config.accumulate_grad_batches,
        deterministic=config.deterministic,
        enable_progress_bar=config.progress_bar,
        enable_checkpointing=run_dir is not None,
        enable_model_summary=False,
        log_every_n_steps=config.log_every_n_steps,
        check_val_every_n_epoch=config.check_val_every_n_epoch,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        limit_test_batches=config.limit_test_batches,
        logger=loggers,
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir) if run_dir is not None else None,
    )
    kwargs.update(overrides)
    try:
        return pl.Trainer(**kwargs)
    except (ValueError, TypeError) as err:  # MisconfigurationException is a ValueError
        raise ConfigError(f"invalid trainer settings: {err}") from err


def _accepted(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``values`` that ``factory`` takes as keyword arguments."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def build_datamodule(cfg: ExperimentConfig, registry: DomainRegistry) -> Any:
    """The data module ``cfg.data`` names, given the common data settings its factory accepts."""
    entry = registry.datasets.get(cfg.data.name)
    common = dict(
        root=cfg.data.root,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )
    return registry.datasets.create(cfg.data.name, **{**_accepted(entry.factory, common), **cfg.data.params})


def build_experiment(
    cfg: ExperimentConfig, registry: DomainRegistry, *, checkpoint: dict[str, Any] | None = None
) -> tuple[TaskModule, pl.LightningDataModule]:
    """Data module, model and task named by ``cfg``.

    The data module's ``info`` (e.g. ``num_classes``, ``num_features``) fills model and task
    parameters the config leaves out; explicit config values always win. With ``checkpoint``, the
    data module first takes the state Lightning saved in it (e.g. vocabularies fitted on train), so
    the rebuilt model sees exactly the features it was trained on.
    """
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    datamodule = build_datamodule(cfg, registry)
    data_state = (checkpoint or {}).get(type(datamodule).__qualname__)
    if data_state:
        datamodule.load_state_dict(data_state)
    info = dict(getattr(datamodule, "info", {}) or {})

    model_entry = registry.models.get(cfg.model.name)
    model = registry.models.create(
        cfg.model.name, **{**_accepted(model_entry.factory, info), **cfg.model.params}
    )

    task_entry = registry.tasks.get(cfg.task.name)
    task_kwargs = {**_accepted(task_entry.factory, info), **cfg.task.params}
    task = registry.tasks.create(cfg.task.name, model=model, optimizer=cfg.optimizer, **task_kwargs)
    task.experiment_config = to_dict(cfg)
    return task, datamodule


@contextlib.contextmanager
def local_metrics(module: torch.nn.Module):
    """Compute torchmetrics locally: the single-process test after a multi-process fit must not
    wait for the other ranks (they have finished), and sees the whole test split itself."""
    metrics = [m for m in module.modules() if isinstance(m, torchmetrics.Metric)]
    saved = [m.sync_on_compute for m in metrics]
    for m in metrics:
        # torchmetrics copies sync_on_compute into _to_sync at construction and after forward()
        m.sync_on_compute = m._to_sync = False
    try:
        yield
    finally:
        for m, value in zip(metrics, saved):
            m.sync_on_compute = m._to_sync = value


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    is_global_zero: bool = True  # False on the other processes of a multi-process run


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}


def train(
    cfg: ExperimentConfig,
    registry: DomainRegistry,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    callbacks: list[pl.Callback] | None = None,
) -> RunResult:
    """Train ``cfg`` in a fresh run directory; select on validation; test once at the end."""
    if resume_from is not None and not Path(resume_from).is_file():
        raise CheckpointError(f"checkpoint to resume from not found: {resume_from}")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task, datamodule = build_experiment(cfg, registry)
    resumed = {"resumed_from": str(Path(resume_from).resolve())} if resume_from is not None else None
    with run_directory(cfg, run_dir, versions=resumed) as run_dir:
        # settings Lightning rejects (e.g. fsdp on CPU) fail here and leave no run directory behind
        trainer = build_trainer(cfg.trainer, run_dir, callbacks=callbacks)

    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    fit_seconds = time.perf_counter() - start

    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    last = run_dir / "checkpoints" / "last.ckpt"
    metrics: dict[str, Any] = {
        "monitor": cfg.trainer.monitor,
        "best_val": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "best_checkpoint": str(best) if best else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_seconds, 3),
        "last_val": _scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}),
    }
    if cfg.trainer.run_test and trainer.is_global_zero:
        # The test split is scored once, with the checkpoint chosen on validation.
        tester = build_trainer(cfg.trainer, None, devices=1, num_nodes=1, strategy="auto")
        ckpt = str(best) if best and best.is_file() else None
        if ckpt is None:
            warnings.warn("no best checkpoint: testing the final weights", stacklevel=2)
        with local_metrics(task):
            results = tester.test(task, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        metrics["test"] = _scalars(results[0]) if results else {}
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        plot_curves(run_dir / "metrics.csv", run_dir / "plots" / "curves.png")
    return RunResult(run_dir, metrics, best, last if last.is_file() else None, trainer.is_global_zero)


def experiment_from_checkpoint(
    checkpoint_path: str | os.PathLike, overrides: list[str] | None = None
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The experiment config stored in an Interplay checkpoint (with ``overrides``) and the checkpoint."""
    from interplay.core.config import apply_overrides

    ckpt = load_checkpoint(checkpoint_path)
    if "interplay_config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{checkpoint_path} is not an Interplay checkpoint (no stored config)")
    raw = apply_overrides(ckpt["interplay_config"], list(overrides or []), schema=ExperimentConfig)
    return from_dict(ExperimentConfig, raw, source=str(checkpoint_path)), ckpt


def restore(
    checkpoint_path: str | os.PathLike, registry: DomainRegistry, overrides: list[str] | None = None
) -> tuple[TaskModule, pl.LightningDataModule, ExperimentConfig]:
    """Rebuild task and data from the config stored in a checkpoint and load its weights.

    ``overrides`` (``key=value``) may change non-architectural settings, e.g. ``data.root``.
    """
    cfg, ckpt = experiment_from_checkpoint(checkpoint_path, overrides)
    task, datamodule = build_experiment(cfg, registry, checkpoint=ckpt)
    try:
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"weights in {checkpoint_path} do not match the model: {err}") from err
    return task, datamodule, cfg


def evaluate(
    checkpoint_path: str | os.PathLike,
    registry: DomainRegistry,
    *,
    split: str = "test",
    overrides: list[str] | None = None,
) -> dict[str, float]:
    """Metrics of a checkpoint on the validation or test split."""
    if split not in ("val", "test"):
        raise ConfigError(f"split must be 'val' or 'test', got '{split}'")
    task, datamodule, cfg = restore(checkpoint_path, registry, overrides)
    trainer = build_trainer(cfg.trainer, None, devices=1, num_nodes=1, strategy="auto")
    run = trainer.validate if split == "val" else trainer.test
    results = run(task, datamodule=datamodule, verbose=False)
    return _scalars(results[0]) if results else {}


def predict(
    checkpoint_path: str | os.PathLike,
    registry: DomainRegistry,
    *,
    split: str = "test",
    overrides: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example outputs of a checkpoint on ``split`` (the data module's predict loader)."""
    task, datamodule, cfg = restore(checkpoint_path, registry, overrides)
    if hasattr(datamodule, "predict_split"):
        datamodule.predict_split = split
    trainer = build_trainer(cfg.trainer, None, devices=1, num_nodes=1, strategy="auto")
    batches = trainer.predict(task, datamodule=datamodule)
    if not batches:
        return {}
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
