"""Honest cross-validation of EEG emotion models on band-DE windows.

RBTransformer's reference pools the overlapping windows of every subject and trial and shuffles
them into 5 folds, so near-duplicate windows of one trial land in training and test. Here the
protocol is a setting (``data.params.protocol``) and every fold is built from whole trials unless
the leaky protocol is asked for by name:

* ``subject_dependent``: trial-grouped k-fold within each subject;
* ``loso``: leave one subject out;
* ``pooled_windows``: the reference's pooled shuffled k-fold (logs a warning that it leaks).

For each fold, a validation set of whole trials is carved from the training part (model selection
and early stopping look at it only), optional SMOTE oversamples the training windows only, the
features are standardised with training statistics, and the test windows are scored once. The
neural models train through :func:`interplay.core.train.train` (one Lightning run per fold under
``<run>/folds/``); the scikit-learn baselines are fitted on the same arrays. The run directory gets
``metrics.json`` whose ``test`` section holds the mean over folds (``test/acc``, ``test/f1_macro``)
and the standard deviation (``test/acc_std`` ...; population std over folds), with per-fold figures
under ``folds``; for RBTransformer also the last block's electrode x electrode attention averaged over
heads and all test windows of all folds (``attention.json`` and two plots).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import CheckpointError, ConfigError, DataError
from interplay.core.registry import DomainRegistry
from interplay.core.train import ExperimentConfig, RunResult
from interplay.core.train.runs import open_run_dir, write_json
from interplay.eeg.data.base import WindowFeatures, make_targets
from interplay.eeg.protocols import PROTOCOLS, make_folds, validation_split

__all__ = [
    "PROTOCOLS",
    "EEGDataModule",
    "classification_metrics",
    "cross_validate",
    "electrode_positions",
    "oversample_smote",
    "summarize_folds",
]


def oversample_smote(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 0, k_neighbors: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE (imbalanced-learn) on ``[n, C, n_bands]`` windows: every class up to the largest.

    Call it on a training fold only: synthetic windows interpolate between neighbours, so on a
    validation or test set they would score the model on data it partly made up. ``k_neighbors``
    shrinks to the smallest class size minus one; with a class of one window, or a single class,
    nothing is oversampled (with a warning).
    """
    features, labels = np.asarray(features), np.asarray(labels)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        warnings.warn(
            f"SMOTE skipped: the training fold has class counts {counts.tolist()}",
            RuntimeWarning,
            stacklevel=2,
        )
        return features, labels
    if present.min() == present.max():
        return features, labels
    from imblearn.over_sampling import SMOTE

    sampler = SMOTE(k_neighbors=min(k_neighbors, int(present.min()) - 1), random_state=seed)
    flat, resampled = sampler.fit_resample(features.reshape(len(features), -1), labels)
    return flat.reshape(-1, *features.shape[1:]).astype(features.dtype), resampled.astype(labels.dtype)


def electrode_positions(info: Any) -> np.ndarray | None:
    """Electrode positions ``[C, 3]`` (metres) from an :class:`mne.Info`, or ``None`` without a montage."""
    if info is None:
        return None
    locs = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    if not np.isfinite(locs).all() or np.allclose(locs, 0.0):
        return None
    return locs


# the protocols name their settings as an "evaluation" section; in a config they are data parameters
_PROTOCOL_KEYS = {
    "evaluation.protocol": "data.params.protocol",
    "evaluation.n_folds": "data.params.n_folds",
    "evaluation.validation_fraction": "data.params.val_fraction",
}


@contextlib.contextmanager
def _config_keys():
    try:
        yield
    except ConfigError as err:
        message = str(err)
        for old, new in _PROTOCOL_KEYS.items():
            message = message.replace(old, new)
        raise ConfigError(message) from None


# The runner builds one data module per fold (and the engine one more per fit): the folds of a
# dataset are computed once per process, which also shows the pooled protocol's warning once.
_FOLDS: OrderedDict[tuple, tuple[WindowFeatures, list]] = OrderedDict()


def _folds(
    features: WindowFeatures, protocol: str, n_folds: int | None, seed: int, labels: np.ndarray
) -> list:
    key = (id(features), protocol, n_folds, seed, hashlib.sha1(np.ascontiguousarray(labels)).hexdigest())
    cached = _FOLDS.get(key)
    if cached is not None and cached[0] is features:
        return cached[1]
    with _config_keys():
        folds = make_folds(protocol, features, n_folds=n_folds, seed=seed, labels=labels)
    _FOLDS[key] = (features, folds)  # holding the features keeps their id from being reused
    while len(_FOLDS) > 4:
        _FOLDS.popitem(last=False)
    return folds


class EEGDataModule(SplitDataModule):
    """One fold of one protocol over :class:`WindowFeatures`, as train / val / test tensors.

    Args:
        features: the windows of the whole dataset.
        target, n_classes: which rating and how many classes (see :func:`make_targets`).
        protocol: one of :data:`PROTOCOLS`.
        n_folds: folds per subject (``subject_dependent``) or in total (``pooled_windows``);
            ignored by ``loso``. ``None``: the protocol's default.
        fold: index into :attr:`folds` this module serves.
        val_fraction: fraction of the training trials (whole trials; windows for
            ``pooled_windows``, as the reference) held out for selection.
        smote: oversample the training windows with SMOTE (never validation or test).
        standardize: z-score each (electrode, band) feature with the training fold's statistics.
        split_seed: seed of the folds and the validation split (the model seed is separate).
    """

    def __init__(
        self,
        features: WindowFeatures,
        *,
        target: str = "valence",
        n_classes: int = 2,
        protocol: str = "subject_dependent",
        n_folds: int | None = None,
        fold: int = 0,
        val_fraction: float = 0.1,
        smote: bool = False,
        standardize: bool = True,
        split_seed: int = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"data.params.protocol: unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})"
            )
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.params.val_fraction must be in (0, 1), got {val_fraction}")
        if not isinstance(features, WindowFeatures):
            raise ConfigError(f"EEGDataModule needs WindowFeatures, got {type(features).__name__}")
        if len(features) == 0:
            raise DataError(f"{features.dataset}: no windows (are the trials shorter than one window?)")
        if not np.isfinite(features.features).all():
            raise DataError(f"{features.dataset}: features contain NaN or inf")
        self.features = features
        self.target, self.n_classes, self.protocol = target, n_classes, protocol
        self.smote, self.standardize, self.split_seed = smote, standardize, split_seed
        self.labels = make_targets(features.dataset, features.ratings, target, n_classes)
        self.folds = _folds(features, protocol, n_folds, split_seed, self.labels)
        if not self.folds:
            raise DataError(f"{features.dataset}: protocol {protocol} produced no folds")
        if not 0 <= fold < len(self.folds):
            raise ConfigError(f"data.params.fold must be in [0, {len(self.folds)}), got {fold}")
        self.fold_index = fold
        self.fold = self.folds[fold]
        with _config_keys():
            train_index, val_index = validation_split(
                features,
                np.asarray(self.fold.train),
                fraction=val_fraction,
                seed=split_seed,
                grouped=protocol != "pooled_windows",
                labels=self.labels,
            )
        self.index = {
            "train": np.asarray(train_index, dtype=np.int64),
            "val": np.asarray(val_index, dtype=np.int64),
            "test": np.asarray(self.fold.test, dtype=np.int64),
        }
        for split, index in self.index.items():
            if len(index) == 0:
                raise DataError(
                    f"{features.dataset}: fold {self.fold.name} has an empty {split} split "
                    f"(too few trials for protocol {protocol} and val_fraction {val_fraction})"
                )
        _, n_channels, n_bands = features.features.shape
        self.info = {
            "num_classes": n_classes,
            "n_channels": n_channels,
            "n_bands": n_bands,
            "positions": electrode_positions(features.info),
        }
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def _build(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._arrays is not None:
            return self._arrays
        x = self.features.features
        arrays = {split: (x[index], self.labels[index]) for split, index in self.index.items()}
        if self.standardize:
            train_x = arrays["train"][0]
            mean = train_x.mean(0, keepdims=True)
            std = np.maximum(train_x.std(0, keepdims=True), 1e-6)
            arrays = {s: ((a - mean) / std, y) for s, (a, y) in arrays.items()}
        if self.smote:  # training windows only: validation and test stay real windows
            arrays["train"] = oversample_smote(*arrays["train"], seed=self.split_seed)
        self._arrays = {s: (a.astype(np.float32), y.astype(np.int64)) for s, (a, y) in arrays.items()}
        return self._arrays

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features [n, C, n_bands], labels [n])`` of ``split`` as the model sees them."""
        if split not in self.index:
            raise ConfigError(f"split must be one of train, val, test, got {split!r}")
        return self._build()[split]

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {
                split: TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
                for split, (x, y) in self._build().items()
            }

    def state_dict(self) -> dict[str, Any]:
        return {"fold": self.fold_index, "fold_name": self.fold.name, "protocol": self.protocol}


# -- metrics ------------------------------------------------------------------------------------------
def classification_metrics(
    labels: np.ndarray, predictions: np.ndarray, n_classes: int, prefix: str = "test"
) -> dict[str, float]:
    """Accuracy and macro-F1 computed as the neural task computes them (torchmetrics)."""
    import torchmetrics

    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    pred = torch.as_tensor(np.asarray(predictions), dtype=torch.long)
    acc = torchmetrics.functional.accuracy(pred, target, task="multiclass", num_classes=n_classes)
    f1 = torchmetrics.functional.f1_score(
        pred, target, task="multiclass", num_classes=n_classes, average="macro"
    )
    return {f"{prefix}/acc": float(acc), f"{prefix}/f1_macro": float(f1)}


def summarize_folds(fold_metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and population standard deviation over folds of every metric all folds report."""
    keys = [k for k in fold_metrics[0] if all(k in m and m[k] is not None for m in fold_metrics)]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([m[key] for m in fold_metrics], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    return out


# -- the runner -----------------------------------------------------------------------------------------
def _accepted(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(values)
    return {k: v for k, v in values.items() if k in params}


def _default_registry() -> DomainRegistry:
    import interplay.eeg.data.datasets
    import interplay.eeg.models
    import interplay.eeg.tasks  # noqa: F401  (registers the entries)
    from interplay.eeg.registry import REGISTRY

    return REGISTRY


def build_datamodule(cfg: ExperimentConfig, registry: DomainRegistry, fold: int = 0) -> EEGDataModule:
    """The data module of ``cfg`` serving ``fold`` (as the engine builds it)."""
    entry = registry.datasets.get(cfg.data.name)
    common = dict(
        root=cfg.data.root,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )
    datamodule = registry.datasets.create(
        cfg.data.name, **{**_accepted(entry.factory, common), **cfg.data.params, "fold": fold}
    )
    if not isinstance(datamodule, EEGDataModule):
        raise ConfigError(f"dataset '{cfg.data.name}' does not produce EEG windows for cross-validation")
    return datamodule


def _with_fold(cfg: ExperimentConfig, fold: int) -> ExperimentConfig:
    data = dataclasses.replace(cfg.data, params={**cfg.data.params, "fold": fold})
    return dataclasses.replace(cfg, data=data)


def _fit_sklearn(model: Any, datamodule: EEGDataModule, monitor: str) -> dict[str, Any]:
    start = time.perf_counter()
    x_train, y_train = datamodule.arrays("train")
    x_val, y_val = datamodule.arrays("val")
    model.fit(x_train, y_train, x_val, y_val)
    fit_seconds = time.perf_counter() - start
    val = classification_metrics(y_val, model.predict(x_val), datamodule.n_classes, "val")
    x_test, y_test = datamodule.arrays("test")  # scored once, after fitting
    test = classification_metrics(y_test, model.predict(x_test), datamodule.n_classes, "test")
    return {
        "best_val": val.get(monitor),
        "last_val": val,
        "test": test,
        "epochs": None,
        "fit_seconds": fit_seconds,
    }


@torch.no_grad()
def _attention_sum(checkpoint: Path, registry: DomainRegistry) -> tuple[np.ndarray, int] | None:
    """Sum over the fold's test windows of the last block's attention (mean over heads)."""
    from interplay.core.train import restore

    task, datamodule, _ = restore(checkpoint, registry)
    model = task.model
    if not hasattr(model, "attention_maps"):
        return None
    model.eval()
    x, _ = datamodule.arrays("test")
    total = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), 512):
        maps = model.attention_maps(torch.from_numpy(x[start : start + 512]))  # [depth, B, H, C, C]
        total += maps[-1].mean(1).sum(0).double().numpy()
    return total, len(x)


def _fit_neural(
    cfg: ExperimentConfig, registry: DomainRegistry, fold: int, fold_dir: Path
) -> tuple[dict[str, Any], tuple[np.ndarray, int] | None]:
    from interplay.core.train import train

    result = train(_with_fold(cfg, fold), registry, run_dir=fold_dir)
    metrics = dict(result.metrics)
    attention = None
    if result.best_checkpoint is not None and result.best_checkpoint.is_file():
        attention = _attention_sum(result.best_checkpoint, registry)
        # the best checkpoint of each fold is kept (evaluate / predict read it); last.ckpt would
        # double the disk use of a run with hundreds of folds and cannot be resumed on its own
        if result.last_checkpoint is not None and result.last_checkpoint != result.best_checkpoint:
            result.last_checkpoint.unlink(missing_ok=True)
    return metrics, attention


def cross_validate(
    cfg: ExperimentConfig,
    registry: DomainRegistry | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    max_folds: int | None = None,
) -> RunResult:
    """Run ``cfg``'s model over every fold of its protocol and write one run directory.

    ``max_folds`` runs only the first folds (quick looks; the metrics say how many ran).
    Returns a :class:`RunResult` whose ``metrics`` has the engine's keys (``monitor``, ``best_val``,
    ``test``, ``epochs``, ``fit_seconds``, ``last_val``) as means over folds, plus ``folds``.
    """
    if resume_from is not None:
        raise CheckpointError(
            "an EEG cross-validation run cannot be resumed from one checkpoint: train again "
            "(each fold's best checkpoint stays under <run>/folds/ for evaluate and predict)"
        )
    registry = registry or _default_registry()
    if cfg.domain != registry.domain:
        raise ConfigError(f"config is for domain '{cfg.domain}', not '{registry.domain}'")
    model_entry = registry.models.get(cfg.model.name)  # unknown names fail before any data is read
    registry.tasks.get(cfg.task.name)
    datamodule = build_datamodule(cfg, registry)
    folds = datamodule.folds[: max_folds or None]
    probe = registry.models.create(
        cfg.model.name, **{**_accepted(model_entry.factory, datamodule.info), **cfg.model.params}
    )
    neural = isinstance(probe, torch.nn.Module)

    run_dir = open_run_dir(cfg, run_dir)

    from tqdm.auto import tqdm

    show = cfg.trainer.progress_bar if progress is None else progress
    fold_rows: list[dict[str, Any]] = []
    attention_total, attention_windows = None, 0
    start = time.perf_counter()
    for i, fold in enumerate(tqdm(folds, desc=f"{cfg.model.name} folds", unit="fold", disable=not show)):
        fold_dir = run_dir / "folds" / f"{i:03d}-{fold.name}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        module = build_datamodule(cfg, registry, fold=i)
        if neural:
            metrics, attention = _fit_neural(cfg, registry, i, fold_dir)
            if attention is not None:
                attention_total = attention[0] if attention_total is None else attention_total + attention[0]
                attention_windows += attention[1]
        else:
            model = registry.models.create(
                cfg.model.name, **{**_accepted(model_entry.factory, module.info), **cfg.model.params}
            )
            metrics = _fit_sklearn(model, module, cfg.trainer.monitor)
            metrics["monitor"] = cfg.trainer.monitor
            write_json(fold_dir / "metrics.json", metrics)
        fold_rows.append(
            {
                "fold": i,
                "name": fold.name,
                "subject": None if fold.subject is None else int(fold.subject),
                "n_train": int(len(module.index["train"])),
                "n_val": int(len(module.index["val"])),
                "n_test": int(len(module.index["test"])),
                "best_val": metrics.get("best_val"),
                "epochs": metrics.get("epochs"),
                "last_val": metrics.get("last_val", {}),
                **{k: v for k, v in metrics.get("test", {}).items() if k != "test/loss"},
            }
        )
    fit_seconds = time.perf_counter() - start

    test_keys = [k for k in fold_rows[0] if k.startswith("test/")]
    test = summarize_folds([{k: row[k] for k in test_keys} for row in fold_rows])
    best_values = [row["best_val"] for row in fold_rows if row["best_val"] is not None]
    epochs = [row["epochs"] for row in fold_rows if row["epochs"] is not None]
    summary: dict[str, Any] = {
        "monitor": cfg.trainer.monitor,
        "best_val": float(np.mean(best_values)) if best_values else None,
        "epochs": int(max(epochs)) if epochs else 0,
        "fit_seconds": round(fit_seconds, 3),
        "last_val": summarize_folds([row["last_val"] for row in fold_rows])
        if fold_rows[0]["last_val"]
        else {},
        "test": test,
        "protocol": datamodule.protocol,
        "target": datamodule.target,
        "n_classes": datamodule.n_classes,
        "n_folds": len(folds),
        "n_folds_total": len(datamodule.folds),
        "n_windows": len(datamodule.features),
        "folds": fold_rows,
    }
    if attention_total is not None and attention_windows:
        from interplay.eeg.plots import save_attention_plots

        matrix = attention_total / attention_windows
        summary["attention"] = {"block": "last", "heads": "mean", "windows": attention_windows}
        write_json(
            run_dir / "attention.json",
            {
                "description": "last block's attention, mean over heads and over the test windows of "
                "all folds; rows are query electrodes (sum to 1), columns the electrodes attended to",
                "ch_names": datamodule.features.ch_names,
                "matrix": matrix.round(6).tolist(),
            },
        )
        save_attention_plots(matrix, datamodule.features.info, run_dir / "plots")
    write_json(run_dir / "metrics.json", summary)
    return RunResult(run_dir, summary, None, None)
