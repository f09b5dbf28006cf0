"""Registered treatment-effect datasets: each factory returns one replication as a :class:`CausalDataModule`.

Every dataset is a list of replications (IHDP's ``ihdp_npci_<k>`` files, an NPZ's last axis, the
seeds of a simulation); ``replication`` picks one (default: the first) and the module's
``replications`` lists them all, which is what the IHDP runner (:mod:`interplay.tabular.causal.runner`)
iterates over. The splits follow the protocols the papers use:

* ``ihdp-csv``: a ``test_fraction`` hold-out with ``sklearn.model_selection.train_test_split``
  (``random_state=split_seed``; 10% and seed 1 as the LightGBM reference); the validation split is
  carved from the training part only (stratified by treatment) and is what selection sees.
* ``ihdp-npz``: CFRNet's own train (672) / test (75) files; validation from the train file.
* ``ihdp-continuous`` / ``synthetic-*``: a fixed-size test set (VCNet: 471 train / 276 test on IHDP).

``root`` is the data root (``$INTERPLAY_DATA`` or ``~/.cache/interplay``): IHDP CSVs are looked up
in ``<root>/tabular/ihdp`` unless ``root`` itself holds them. With ``synthetic_fallback=true`` a
missing IHDP folder is replaced by the synthetic look-alike (:func:`write_synthetic_ihdp`) written
under ``<root>/tabular/synthetic/`` (the demo's mode when ``../shared`` is absent).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from interplay.core.data import data_root
from interplay.core.errors import ConfigError
from interplay.tabular.causal.data import (
    SYNTHETIC_IHDP_VERSION,
    CausalData,
    CausalInputError,
    IHDPReplications,
    ihdp_csv_files,
    make_synthetic_categorical,
    make_synthetic_dosage,
    read_ihdp_csv,
    simulate_ihdp_continuous,
    simulate_vcnet,
    write_synthetic_ihdp,
)
from interplay.tabular.causal.tasks import CausalDataModule
from interplay.tabular.registry import REGISTRY

__all__ = ["holdout_splits", "resolve_ihdp_folder"]

PathLike = str | os.PathLike
CAUSAL = ("causal",)  # tag: the tabular CLI trains these datasets with the replication runner


def holdout_splits(
    n: int,
    *,
    test_fraction: float | None = None,
    n_test: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 1,
    treatment: np.ndarray | None = None,
    fit_index: np.ndarray | None = None,
    test_index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` indices: a test hold-out, then validation from the rest only.

    ``test_index`` / ``fit_index`` give a fixed split instead (NPZ train/test files).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.params.val_fraction must be in (0, 1), got {val_fraction}")
    index = np.arange(n)
    if test_index is None:
        if n_test is not None:
            if not 0 < n_test < n:
                raise ConfigError(f"data.params.n_test must be in (0, {n}), got {n_test}")
            size: float | int = n_test
        else:
            if test_fraction is None or not 0.0 < test_fraction < 1.0:
                raise ConfigError(f"data.params.test_fraction must be in (0, 1), got {test_fraction}")
            size = test_fraction
        fit_index, test_index = train_test_split(index, test_size=size, random_state=split_seed)
    elif fit_index is None:
        fit_index = np.setdiff1d(index, test_index)
    stratify = None
    if treatment is not None:
        values, counts = np.unique(treatment[fit_index], return_counts=True)
        if len(values) < 10 and counts.min() >= 2:  # discrete: keep the treated share in validation
            stratify = treatment[fit_index]
    train_index, val_index = train_test_split(
        fit_index, test_size=val_fraction, random_state=split_seed, stratify=stratify
    )
    return {"train": np.sort(train_index), "val": np.sort(val_index), "test": np.sort(test_index)}


def _root(root: PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else data_root()


def resolve_ihdp_folder(root: PathLike | None, *, synthetic_fallback: bool = False, seed: int = 0) -> Path:
    """The folder with ``ihdp_npci_<k>.csv``: ``root``, ``<root>/tabular/ihdp`` or the synthetic copy."""
    candidates = [Path(root).expanduser()] if root is not None else []
    candidates.append(_root(root) / "tabular" / "ihdp")
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("ihdp_npci_*.csv")):
            return folder
    if not synthetic_fallback:
        raise CausalInputError(
            f"no IHDP CSVs (ihdp_npci_<k>.csv) in {' or '.join(map(str, candidates))}; set data.root to the "
            "folder with CEVAE's IHDP files, or data.params.synthetic_fallback=true for the synthetic "
            "look-alike"
        )
    folder = synthetic_ihdp_folder(root, seed)
    if folder not in _ANNOUNCED:  # once per process: the runner builds one data module per replication
        _ANNOUNCED.add(folder)
        print(
            f"ihdp: no IHDP CSVs under {candidates[-1]}; using the synthetic IHDP look-alike in {folder}",
            file=sys.stderr,
        )
    return folder


_ANNOUNCED: set[Path] = set()


def synthetic_ihdp_folder(root: PathLike | None, seed: int = 0, replications: int = 10) -> Path:
    folder = _root(root) / "tabular" / "synthetic" / f"ihdp-v{SYNTHETIC_IHDP_VERSION}-seed{seed}"
    return write_synthetic_ihdp(folder, replications, seed=seed)


def _pick(replications: Sequence[int], replication: int | None, what: str) -> int:
    if replication is None:
        return replications[0]
    if replication not in replications:
        raise ConfigError(
            f"data.params.replication: {what} has no replication {replication} (has {list(replications)})"
        )
    return replication


def _module(
    data: CausalData,
    splits,
    replication,
    replications,
    source,
    batch_size,
    eval_batch_size,
    num_workers,
    seed,
):
    return CausalDataModule(
        data,
        splits,
        replication=replication,
        replications=tuple(replications),
        source=source,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


@REGISTRY.datasets.register(
    "ihdp-csv", "IHDP in CEVAE's CSV layout (747 x 30, replications ihdp_npci_<k>.csv)", tags=CAUSAL
)
def ihdp_csv(
    root: PathLike | None = None,
    replications: list[int] | None = None,
    replication: int | None = None,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    split_seed: int = 1,
    shift_x14: bool = True,
    synthetic_fallback: bool = False,
    synthetic_seed: int = 0,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    """``root``: the folder with ``ihdp_npci_<k>.csv`` (default ``<data root>/tabular/ihdp``)."""
    folder = resolve_ihdp_folder(root, synthetic_fallback=synthetic_fallback, seed=synthetic_seed)
    files = ihdp_csv_files(folder)
    ids = list(files) if replications is None else list(replications)
    unknown = [k for k in ids if k not in files]
    if unknown:
        raise ConfigError(
            f"data.params.replications: {folder} has no ihdp_npci_{unknown[0]}.csv (has {list(files)})"
        )
    chosen = _pick(ids, replication, str(folder))
    data = read_ihdp_csv(files[chosen], shift_x14=shift_x14)
    splits = holdout_splits(
        len(data),
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        split_seed=split_seed,
        treatment=data.t,
    )
    return _module(data, splits, chosen, ids, str(folder), batch_size, eval_batch_size, num_workers, seed)


@REGISTRY.datasets.register(
    "synthetic-ihdp",
    "IHDP look-alike written in CEVAE's CSV layout (Hill's surface B, 139/747 treated)",
    tags=CAUSAL,
)
def synthetic_ihdp(
    root: PathLike | None = None,
    n_replications: int = 10,
    replication: int | None = None,
    data_seed: int = 0,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    split_seed: int = 1,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    """Writes (once) and reads ``<root>/tabular/synthetic/ihdp-v<version>-seed<data_seed>/``."""
    folder = synthetic_ihdp_folder(root, data_seed, n_replications)
    return ihdp_csv(
        root=folder,
        replications=list(range(1, n_replications + 1)),
        replication=replication,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        split_seed=split_seed,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


@REGISTRY.datasets.register(
    "ihdp-npz", "IHDP-100 / IHDP-1000 (CFRNet NPZ: 672 train / 75 test units per replication)", tags=CAUSAL
)
def ihdp_npz(
    path: PathLike = "ihdp_npci_1-100.train.npz",
    test_path: PathLike | None = None,
    root: PathLike | None = None,
    replications: list[int] | None = None,
    replication: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 1,
    shift_x14: bool = True,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    """``path``: the ``.train.npz`` file (relative names under ``<root>/tabular/ihdp``); ``test_path``
    defaults to the matching ``.test.npz``. Replications are 0-based indices of the last axis."""
    train_path = Path(path).expanduser()
    if not train_path.is_absolute() and not train_path.is_file():
        train_path = _root(root) / "tabular" / "ihdp" / train_path
    if test_path is None:
        test_path = train_path.with_name(train_path.name.replace(".train.", ".test."))
        if test_path == train_path:
            raise ConfigError(f"data.params.test_path: cannot derive a .test.npz name from {train_path}")
    train_reps = IHDPReplications(train_path, shift_x14=shift_x14)
    test_reps = IHDPReplications(test_path, shift_x14=shift_x14)
    if len(test_reps) != len(train_reps):
        raise CausalInputError(
            f"{train_path} has {len(train_reps)} replications but {test_path} has {len(test_reps)}"
        )
    ids = list(range(len(train_reps))) if replications is None else list(replications)
    chosen = _pick(ids, replication, str(train_path))
    train, test = train_reps.replication(chosen), test_reps.replication(chosen)
    data = CausalData(
        x=np.concatenate([train.x, test.x]),
        t=np.concatenate([train.t, test.t]),
        y=np.concatenate([train.y, test.y]),
        y_cf=np.concatenate([train.y_cf, test.y_cf]),
        potential_outcomes=np.concatenate([train.potential_outcomes, test.potential_outcomes]),
        name=f"{train_path}#{chosen}",
    )
    n_fit = len(train)
    splits = holdout_splits(
        len(data),
        val_fraction=val_fraction,
        split_seed=split_seed,
        treatment=data.t,
        fit_index=np.arange(n_fit),
        test_index=np.arange(n_fit, len(data)),
    )
    return _module(data, splits, chosen, ids, str(train_path), batch_size, eval_batch_size, num_workers, seed)


@REGISTRY.datasets.register(
    "ihdp-continuous",
    "VCNet's continuous-dosage simulation on IHDP covariates (471 train / 276 test)",
    tags=CAUSAL,
)
def ihdp_continuous(
    root: PathLike | None = None,
    n_replications: int = 10,
    replication: int | None = None,
    data_seed: int = 0,
    n_test: int = 276,
    val_fraction: float = 0.1,
    synthetic_fallback: bool = False,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    """One simulated draw (``data_seed``) on the covariates of ``ihdp_npci_1.csv``; replication ``k`` is the
    ``k``-th random train/test split of it (VCNet's protocol)."""
    folder = resolve_ihdp_folder(root, synthetic_fallback=synthetic_fallback)
    covariates = read_ihdp_csv(ihdp_csv_files(folder)[min(ihdp_csv_files(folder))]).x
    data = simulate_ihdp_continuous(covariates, seed=data_seed)
    ids = list(range(n_replications))
    chosen = _pick(ids, replication, "ihdp-continuous")
    splits = holdout_splits(len(data), n_test=n_test, val_fraction=val_fraction, split_seed=chosen)
    return _module(
        data,
        splits,
        chosen,
        ids,
        f"{folder} (simulated, seed {data_seed})",
        batch_size,
        eval_batch_size,
        num_workers,
        seed,
    )


def _synthetic(make, n_test, n_replications, replication, val_fraction, what, loader_args):
    ids = list(range(n_replications))
    chosen = _pick(ids, replication, what)
    data = make(chosen)
    splits = holdout_splits(
        len(data), n_test=n_test, val_fraction=val_fraction, split_seed=chosen, treatment=None
    )
    return _module(data, splits, chosen, ids, what, *loader_args)


@REGISTRY.datasets.register(
    "synthetic-continuous",
    "VCNet's Simulation 1: 6 U(0,1) covariates, confounded dosage in (0, 1)",
    tags=CAUSAL,
)
def synthetic_continuous(
    n_train: int = 500,
    n_test: int = 200,
    n_replications: int = 10,
    replication: int | None = None,
    val_fraction: float = 0.1,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    """Replication ``k`` is an independent draw (seed ``k``) of ``n_train + n_test`` units."""
    return _synthetic(
        lambda k: simulate_vcnet(n_train + n_test, seed=k), n_test, n_replications, replication, val_fraction,
        "synthetic-continuous", (batch_size, eval_batch_size, num_workers, seed),
    )  # fmt: skip


@REGISTRY.datasets.register(
    "synthetic-categorical",
    "multi-valued treatments with known potential outcomes (softmax assignment)",
    tags=CAUSAL,
)
def synthetic_categorical(
    n: int = 2000,
    n_treatments: int = 3,
    n_covariates: int = 10,
    n_test: int = 400,
    n_replications: int = 5,
    replication: int | None = None,
    val_fraction: float = 0.1,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    return _synthetic(
        lambda k: make_synthetic_categorical(n, n_treatments, n_covariates, seed=k), n_test, n_replications,
        replication, val_fraction, "synthetic-categorical", (batch_size, eval_batch_size, num_workers, seed),
    )  # fmt: skip


@REGISTRY.datasets.register(
    "synthetic-dosage", "(treatment, dosage) pairs with one dose-response curve per treatment", tags=CAUSAL
)
def synthetic_dosage(
    n: int = 2000,
    n_treatments: int = 3,
    n_test: int = 400,
    n_replications: int = 5,
    replication: int | None = None,
    val_fraction: float = 0.1,
    batch_size: int = 128,
    eval_batch_size: int | None = 4096,
    num_workers: int = 0,
    seed: int = 0,
) -> CausalDataModule:
    return _synthetic(
        lambda k: make_synthetic_dosage(n, n_treatments, seed=k), n_test, n_replications, replication,
        val_fraction, "synthetic-dosage", (batch_size, eval_batch_size, num_workers, seed),
    )  # fmt: skip
