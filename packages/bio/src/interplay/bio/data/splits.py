"""Cross-validation split files (MCAT / MOTCat ``splits/5foldcv/tcga_<study>/splits_<k>.csv``).

Each file has pandas' index column, then ``train`` and ``val`` columns of case ids; the shorter column
is padded with empty cells (NaN). MCAT and MOTCat train on ``train`` and report the validation
c-index of ``val`` (selecting the epoch on it too, see ``docs/reproductions/motcat.md``). To select
models without looking at the reported fold, :func:`inner_validation` carves a stratified model-
selection set out of a fold's training part.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from interplay.core.data import require_file
from interplay.core.errors import ConfigError, DataError

__all__ = ["SPLIT_COLUMNS", "cv_splits", "inner_validation", "read_split", "split_path"]

SPLIT_COLUMNS: tuple[str, ...] = ("train", "val")


def _ids(frame: pd.DataFrame, column: str, path: Path) -> list[str]:
    values = frame[column].dropna().astype(str).str.strip()
    values = values[values != ""].tolist()
    dupes = pd.Index(values)[pd.Index(values).duplicated()].unique()
    if len(dupes):
        raise DataError(f"{path}: column {column!r} lists case ids more than once: {', '.join(dupes[:5])}")
    return values


def read_split(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)`` of one MCAT-style split CSV; a case in both raises, naming it."""
    path = require_file(path, "split CSV")
    try:
        frame = pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: the split file is empty, expected columns train and val") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot parse the split CSV: {error}") from error
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found {', '.join(map(str, frame.columns))})"
        )
    train, val = _ids(frame, "train", path), _ids(frame, "val", path)
    if not train:
        raise DataError(f"{path}: the train column lists no case ids")
    if not val:
        raise DataError(f"{path}: the val column lists no case ids")
    overlap = sorted(set(train) & set(val))
    if overlap:
        raise DataError(f"{path}: {len(overlap)} cases are in both train and val: {', '.join(overlap[:5])}")
    return train, val


def split_path(directory: str | os.PathLike[str], fold: int) -> Path:
    return Path(directory).expanduser() / f"splits_{int(fold)}.csv"


def cv_splits(directory: str | os.PathLike[str], n_folds: int = 5) -> list[tuple[list[str], list[str]]]:
    """The ``n_folds`` splits ``<directory>/splits_{0..n_folds-1}.csv``, in fold order."""
    if int(n_folds) != n_folds or n_folds < 1:
        raise ConfigError(f"n_folds must be a positive integer, got {n_folds!r}")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(f"split directory not found: {root}")
    missing = [split_path(root, k).name for k in range(int(n_folds)) if not split_path(root, k).is_file()]
    if missing:
        raise DataError(f"{root}: missing split file(s) {', '.join(missing)} for {n_folds} folds")
    return [read_split(split_path(root, k)) for k in range(int(n_folds))]


def inner_validation(
    train_index: Sequence[int] | np.ndarray,
    events: Sequence[bool] | np.ndarray,
    fraction: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training patients into ``(inner_train, inner_val)``, stratified by event.

    ``events[i]`` is the event indicator (1 = death observed) of patient ``train_index[i]``. Each
    stratum contributes ``round(fraction * size)`` patients to the validation part (at least one
    when the stratum has two or more, so that the c-index on it is defined); both outputs hold values
    of ``train_index``, sorted, and are a partition of it. Deterministic in ``seed``.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"inner validation fraction must be in (0, 1), got {fraction!r}")
    train_index = np.asarray(train_index).reshape(-1)
    events = np.asarray(events).reshape(-1)
    if train_index.shape != events.shape:
        raise DataError(
            f"inner_validation: {train_index.size} training indices but {events.size} event indicators"
        )
    if np.unique(train_index).size != train_index.size:
        raise DataError("inner_validation: the training indices repeat a patient")
    if train_index.size < 2:
        raise DataError(f"inner_validation: need at least 2 training patients, got {train_index.size}")
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for stratum in (False, True):
        members = train_index[events.astype(bool) == stratum]
        if members.size == 0:
            continue
        count = int(round(float(fraction) * members.size))
        # keep one of each stratum on either side where the stratum allows it
        count = min(max(count, 1), members.size - 1) if members.size >= 2 else 0
        chosen.append(rng.permutation(members)[:count])
    validation = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=train_index.dtype)
    training = np.sort(np.setdiff1d(train_index, validation))
    if validation.size == 0:
        raise DataError(
            f"inner_validation: fraction {fraction} of {train_index.size} patients selects nobody"
        )
    return training, validation
