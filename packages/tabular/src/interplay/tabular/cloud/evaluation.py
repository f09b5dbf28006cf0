"""Datasets of the CloudFormer family and the unseen-application runner.

Shahbazinia et al., "CloudFormer" (arXiv:2509.03394, 2025), Sec. 5: train on 7 applications, test
on the 4 others, over 6 random partitions; MAE and MSE of ``P`` in percentage points, mean +- std
over partitions.

* ``cloud-synthetic``: the synthetic interference data (:func:`~interplay.tabular.cloud.data.simulate_runs`),
  written once in the CloudPerfTrace layout and read back with the real reader.
* ``cloudperftrace``: the real dataset under ``data.root`` (the ``parquet_ds`` folder).

Both build a :class:`~interplay.tabular.cloud.protocol.CloudDataModule` serving
``data.params.partition``, so ``interplay-tabular train`` with the engine alone fits one partition.
:func:`run_cloud_protocol` runs every partition (``evaluation.n_partitions``) in one run directory:
neural models through :func:`interplay.core.train.train` (selection on the validation runs of the
training applications, test scored once per partition), the aggregated-feature baselines fitted on
the same runs. ``metrics.json`` holds the mean over partitions in ``test`` (``test/mae_pp``,
``test/mse_pp``) with the sample standard deviation (``test/mae_pp_std`` ...) and per-partition rows.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from interplay.core.errors import CheckpointError, ConfigError
from interplay.core.registry import DomainRegistry
from interplay.core.train import ExperimentConfig, RunResult
from interplay.core.train.engine import build_datamodule as core_build_datamodule
from interplay.core.train.runs import open_run_dir, write_json
from interplay.tabular.cloud.baselines import AggregatedRegressor, aggregate_runs
from interplay.tabular.cloud.data import (
    CloudPerfTraceSchema,
    CloudRun,
    read_cloudperftrace,
    synthetic_cloudperftrace,
)
from interplay.tabular.cloud.protocol import CloudDataModule
from interplay.tabular.cloud.tasks import percentage_point_errors
from interplay.tabular.registry import REGISTRY

PROTOCOL = "unseen_applications"
EVALUATION_KEYS = ("protocol", "n_partitions")

# Runs read once per process: the runner builds a data module per partition (and the engine one
# more per fit) over the same runs.
_RUNS: OrderedDict[tuple, list[CloudRun]] = OrderedDict()


def _cached(key: tuple, load) -> list[CloudRun]:
    if key in _RUNS:
        _RUNS.move_to_end(key)
        return _RUNS[key]
    runs = load()
    _RUNS[key] = runs
    while len(_RUNS) > 2:
        _RUNS.popitem(last=False)
    return runs


def _module(runs: list[CloudRun], dataset: str, **kwargs: Any) -> CloudDataModule:
    return CloudDataModule(runs, dataset=dataset, **kwargs)


@REGISTRY.datasets.register(
    "cloud-synthetic",
    "synthetic VM interference runs (206 metrics per second) in the CloudPerfTrace layout, made locally",
)
def cloud_synthetic(
    root: str | None = None,
    runs_per_application: int = 40,
    min_steps: int = 30,
    max_steps: int = 120,
    data_seed: int = 0,
    applications: Sequence[int] | None = None,
    partition: int = 0,
    n_train_applications: int = 7,
    n_partitions: int = 6,
    val_fraction: float = 0.15,
    split_seed: int = 0,
    log_transform: bool = True,
    batch_size: int = 16,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> CloudDataModule:
    settings = dict(
        runs_per_application=runs_per_application, min_steps=min_steps, max_steps=max_steps, seed=data_seed
    )
    if applications is not None:
        settings["applications"] = tuple(applications)
    directory = synthetic_cloudperftrace(root, **settings)
    runs = _cached(
        ("synthetic", str(Path(directory).resolve()), tuple(sorted(settings.items()))),
        lambda: read_cloudperftrace(directory),
    )
    return _module(
        runs,
        "cloud-synthetic",
        partition=partition,
        n_train_applications=n_train_applications,
        n_partitions=n_partitions,
        val_fraction=val_fraction,
        split_seed=split_seed,
        log_transform=log_transform,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


def _cloudperftrace_root(root: str | None) -> Path:
    from interplay.core.data import dataset_dir

    where = (
        "download CloudPerfTrace (CC-BY-4.0, 18 GB: the dataset card's parquet_ds/ folder holding "
        "tasks=4/ ... tasks=16/) and pass data.root=/path/to/parquet_ds, or put that folder at "
    )
    if root is None:
        default = dataset_dir("cloudperftrace")
        if default.is_dir():
            return default
        raise ConfigError(f"cloudperftrace needs data.root: {where}{default}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"data.root={root} is not a directory: {where}$INTERPLAY_DATA/cloudperftrace")
    return path


@REGISTRY.datasets.register(
    "cloudperftrace",
    "CloudPerfTrace (CC-BY-4.0): 11 applications, 206 metrics per second, P = PM_ideal/PM_actual; data.root",
)
def cloudperftrace(
    root: str | None = None,
    tasks: Sequence[int] | None = None,
    max_runs_per_task: int | None = None,
    max_steps: int | None = None,
    schema: dict[str, Any] | None = None,
    partition: int = 0,
    n_train_applications: int = 7,
    n_partitions: int = 6,
    val_fraction: float = 0.15,
    split_seed: int = 0,
    log_transform: bool = True,
    batch_size: int = 16,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> CloudDataModule:
    directory = _cloudperftrace_root(root)
    parsed = CloudPerfTraceSchema.from_params(schema)
    key = (
        "cloudperftrace",
        str(directory.resolve()),
        tuple(tasks or ()),
        max_runs_per_task,
        max_steps,
        repr(parsed),
    )
    runs = _cached(
        key,
        lambda: read_cloudperftrace(
            directory, tasks, schema=parsed, max_runs_per_task=max_runs_per_task, max_steps=max_steps
        ),
    )
    return _module(
        runs,
        "cloudperftrace",
        partition=partition,
        n_train_applications=n_train_applications,
        n_partitions=n_partitions,
        val_fraction=val_fraction,
        split_seed=split_seed,
        log_transform=log_transform,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


# -- the runner ---------------------------------------------------------------------------------------
def _default_registry() -> DomainRegistry:
    import interplay.tabular.cloud  # noqa: F401  (registers the entries)

    return REGISTRY


def _accepted(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    import inspect

    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def evaluation_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """``{'protocol', 'n_partitions'}`` from ``cfg.evaluation`` (defaults: the paper's 6 partitions)."""
    unknown = sorted(set(cfg.evaluation) - set(EVALUATION_KEYS))
    if unknown:
        raise ConfigError(
            f"evaluation: unknown key(s) {', '.join(unknown)} (known: {', '.join(EVALUATION_KEYS)})"
        )
    protocol = cfg.evaluation.get("protocol", PROTOCOL)
    if protocol != PROTOCOL:
        raise ConfigError(f"evaluation.protocol must be '{PROTOCOL}', got {protocol!r}")
    n = cfg.evaluation.get("n_partitions", cfg.data.params.get("n_partitions", 6))
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"evaluation.n_partitions must be an integer >= 1, got {n!r}")
    return {"protocol": protocol, "n_partitions": n}


def _with_partition(cfg: ExperimentConfig, partition: int, n_partitions: int) -> ExperimentConfig:
    params = {**cfg.data.params, "partition": partition, "n_partitions": n_partitions}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, params=params))


def build_datamodule(cfg: ExperimentConfig, registry: DomainRegistry) -> CloudDataModule:
    """The data module of ``cfg`` (as the engine builds it)."""
    module = core_build_datamodule(cfg, registry)
    if not isinstance(module, CloudDataModule):
        raise ConfigError(
            f"dataset '{cfg.data.name}' does not serve VM runs for the unseen-application protocol"
        )
    return module


def features(module: CloudDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Aggregated features and targets of ``split``, normalised with the training statistics."""
    module._fit()
    runs = module.split(split)
    x = aggregate_runs([module.normalizer.transform(r.metrics) for r in runs])
    return x, np.array([r.target for r in runs], dtype=np.float64)


def fit_aggregated(model: AggregatedRegressor, module: CloudDataModule) -> dict[str, Any]:
    """Fit a tabular baseline on one partition; val and test errors in percentage points."""
    start = time.perf_counter()
    x_train, y_train = features(module, "train")
    x_val, y_val = features(module, "val")
    model.fit(x_train, y_train, x_val, y_val)
    seconds = time.perf_counter() - start
    val = {f"val/{k}": v for k, v in percentage_point_errors(model.predict(x_val), y_val).items()}
    x_test, y_test = features(module, "test")  # scored once, after fitting
    test = {f"test/{k}": v for k, v in percentage_point_errors(model.predict(x_test), y_test).items()}
    return {
        "best_val": val.get("val/mae_pp"),
        "last_val": val,
        "test": test,
        "epochs": None,
        "fit_seconds": seconds,
    }


def summarize_partitions(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1) over partitions of each metric all rows have."""
    keys = [k for k in rows[0] if all(k in r and r[k] is not None for r in rows)]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def run_cloud_protocol(
    cfg: ExperimentConfig,
    registry: DomainRegistry | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    max_partitions: int | None = None,
) -> RunResult:
    """Train and score ``cfg``'s model on every partition of the unseen-application protocol.

    One run directory: ``config.yaml``, ``versions.json``, ``partitions/<i>-<name>/`` (each neural
    fit's engine run: checkpoints, metrics) and ``metrics.json`` with the engine's keys (``monitor``,
    ``best_val``, ``test`` ...) as means over partitions plus ``partitions``.
    """
    if resume_from is not None:
        raise CheckpointError(
            "an unseen-application run cannot be resumed from one checkpoint: train again "
            "(each partition's best checkpoint stays under <run>/partitions/ for evaluate and predict)"
        )
    registry = registry or _default_registry()
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    settings = evaluation_settings(cfg)
    n_partitions = settings["n_partitions"]
    model_entry = registry.models.get(cfg.model.name)  # unknown names fail before any data is read
    registry.tasks.get(cfg.task.name)
    first = build_datamodule(_with_partition(cfg, 0, n_partitions), registry)
    partitions = first.partitions[: min(n_partitions, max_partitions or n_partitions)]
    probe = registry.models.create(
        cfg.model.name, **{**_accepted(model_entry.factory, first.info), **cfg.model.params}
    )
    neural = isinstance(probe, torch.nn.Module)
    del probe

    run_dir = open_run_dir(cfg, run_dir)

    from tqdm.auto import tqdm

    show = cfg.trainer.progress_bar if progress is None else progress
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for partition in tqdm(
        partitions, desc=f"{cfg.model.name} partitions", unit="partition", disable=not show
    ):
        part_cfg = _with_partition(cfg, partition.index, n_partitions)
        part_dir = run_dir / "partitions" / f"{partition.index:02d}-{partition.name}"
        part_dir.mkdir(parents=True, exist_ok=True)
        module = build_datamodule(part_cfg, registry)
        if neural:
            from interplay.core.train import train

            result = train(part_cfg, registry, run_dir=part_dir)
            metrics = dict(result.metrics)
            # the best checkpoint stays for evaluate / predict; last.ckpt would double the disk use
            if result.last_checkpoint is not None and result.last_checkpoint != result.best_checkpoint:
                result.last_checkpoint.unlink(missing_ok=True)
        else:
            model = registry.models.create(
                cfg.model.name,
                **{**_accepted(model_entry.factory, {**module.info, "seed": cfg.seed}), **cfg.model.params},
            )
            metrics = fit_aggregated(model, module)
            metrics["monitor"] = cfg.trainer.monitor
            write_json(part_dir / "metrics.json", metrics)
        rows.append(
            {
                "partition": partition.index,
                "name": partition.name,
                "train_applications": list(partition.train),
                "test_applications": list(partition.test),
                "n_train": int(len(module.index["train"])),
                "n_val": int(len(module.index["val"])),
                "n_test": int(len(module.index["test"])),
                "best_val": metrics.get("best_val"),
                "epochs": metrics.get("epochs"),
                "fit_seconds": metrics.get("fit_seconds"),
                **{k: v for k, v in metrics.get("test", {}).items() if k != "test/loss"},
            }
        )
    fit_seconds = time.perf_counter() - start
    test_keys = [k for k in rows[0] if k.startswith("test/")]
    best = [r["best_val"] for r in rows if r["best_val"] is not None]
    epochs = [r["epochs"] for r in rows if r["epochs"] is not None]
    summary: dict[str, Any] = {
        "monitor": cfg.trainer.monitor,
        "best_val": float(np.mean(best)) if best else None,
        "epochs": int(max(epochs)) if epochs else 0,
        "fit_seconds": round(fit_seconds, 3),
        "last_val": {},
        "test": summarize_partitions([{k: r[k] for k in test_keys} for r in rows]),
        "protocol": PROTOCOL,
        "n_partitions": len(partitions),
        "n_applications": len({r.task for r in first.runs}),
        "n_runs": len(first.runs),
        "partitions": rows,
    }
    write_json(run_dir / "metrics.json", summary)
    return RunResult(run_dir, summary, None, None)


def run_cloud(cfg: ExperimentConfig, registry: DomainRegistry, **kwargs: Any) -> RunResult:
    """``train`` / ``reproduce`` runner of the cloud datasets: the unseen-application protocol when
    ``evaluation.protocol`` is ``unseen_applications``, else one engine fit of ``data.params.partition``."""
    if cfg.evaluation.get("protocol") == PROTOCOL:
        return run_cloud_protocol(cfg, registry, **kwargs)
    from interplay.core.train import train

    return train(cfg, registry, **kwargs)


# the tabular command line trains a config with its dataset factory's ``runner`` when there is one
cloud_synthetic.runner = run_cloud
cloudperftrace.runner = run_cloud
