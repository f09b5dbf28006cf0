"""Registered CTR datasets: ``criteo``, ``taobao-tiny``, ``synthetic-ctr``, ``synthetic-sequences``.

Each factory takes the common data parameters (``root``, ``batch_size``, ``eval_batch_size``,
``num_workers``, ``seed``) plus its own, and returns a :class:`CTRDataModule`. ``root`` is the data
root (``$INTERPLAY_DATA`` or ``~/.cache/interplay``); relative file names that do not exist as given
are looked up under ``<root>/recsys/``. Caches (fitted features, arrays) and generated synthetic
files go to ``<root>/recsys/{cache,synthetic}`` when the root is writable, else under
``~/.cache/interplay/recsys/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from interplay.core.data import data_root
from interplay.recsys.data.datamodule import CTRDataModule, default_cache_dir, synthetic_data_dir
from interplay.recsys.data.synthetic import (
    CRITEO_VERSION,
    SEQUENCES_VERSION,
    write_synthetic_criteo,
    write_synthetic_sequences,
)
from interplay.recsys.registry import REGISTRY

__all__ = ["criteo", "synthetic_ctr", "synthetic_sequences", "taobao_tiny"]

PathLike = str | os.PathLike[str]


def _root(root: PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else data_root()


def _resolve(path: PathLike | None, root: PathLike | None) -> Path | None:
    if path is None:
        return None
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return _root(root) / "recsys" / candidate


@REGISTRY.datasets.register(
    "criteo",
    "Criteo display-ads CTR (label, I1-I13, C1-C26): TSV day file or CSV sample, random or explicit splits",
)
def criteo(
    root: PathLike | None = None,
    batch_size: int = 1024,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    path: PathLike | None = None,
    train: PathLike | None = None,
    valid: PathLike | None = None,
    test: PathLike | None = None,
    spec: str = "criteo",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    chunksize: int = 100_000,
    cache_dir: PathLike | None = None,
    fitted: PathLike | None = None,
) -> CTRDataModule:
    """``path`` (default ``<root>/recsys/criteo_sample.txt``) is split at random, or give train/valid/test."""
    if path is None and train is None and valid is None and test is None:
        path = "criteo_sample.txt"
    return CTRDataModule(
        spec,
        path=_resolve(path, root),
        train=_resolve(train, root),
        valid=_resolve(valid, root),
        test=_resolve(test, root),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        chunksize=chunksize,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(root),
        fitted=fitted,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


def _criteo_download(root: PathLike | None = None) -> str:
    target = _root(root) / "recsys"
    return (
        "Criteo's logs need their terms accepted: get the Kaggle 2014 train.txt or a 1TB-log day file "
        "(day_0.gz ...) from https://ailab.criteo.com/ressources/, then train with "
        f"data.params.path=<file> (relative names are looked up under {target})"
    )


criteo.download = _criteo_download  # type: ignore[attr-defined]


@REGISTRY.datasets.register(
    "taobao-tiny", "FuxiCTR tiny_csv: Taobao ads with click sequences (train/valid/test_sample.csv)"
)
def taobao_tiny(
    root: PathLike | None = None,
    batch_size: int = 1024,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    directory: PathLike | None = None,
    spec: str = "taobao",
    chunksize: int = 100_000,
    cache_dir: PathLike | None = None,
    fitted: PathLike | None = None,
) -> CTRDataModule:
    """``directory`` (default ``<root>/recsys/tiny_csv``) holds train/valid/test_sample.csv."""
    folder = _resolve(directory if directory is not None else "tiny_csv", root)
    assert folder is not None
    return CTRDataModule(
        spec,
        train=folder / "train_sample.csv",
        valid=folder / "valid_sample.csv",
        test=folder / "test_sample.csv",
        chunksize=chunksize,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(root),
        fitted=fitted,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


def _taobao_download(root: PathLike | None = None) -> str:
    return (
        "tiny_csv ships with FuxiCTR (https://github.com/reczoo/FuxiCTR, data/tiny_csv): copy "
        f"train_sample.csv, valid_sample.csv and test_sample.csv to {_root(root) / 'recsys' / 'tiny_csv'}"
    )


taobao_tiny.download = _taobao_download  # type: ignore[attr-defined]


def synthetic_ctr_file(
    root: PathLike | None = None, n_rows: int = 20_000, data_seed: int = 0, fmt: str = "tsv"
) -> Path:
    """The synthetic Criteo file for these parameters, generated on first use."""
    path = synthetic_data_dir(root) / f"criteo-v{CRITEO_VERSION}-n{n_rows}-seed{data_seed}.{fmt}"
    if not path.is_file():
        write_synthetic_criteo(path, n_rows, seed=data_seed, fmt=fmt)  # type: ignore[arg-type]
    return path


@REGISTRY.datasets.register(
    "synthetic-ctr", "synthetic Criteo-format CTR data with planted cross-feature interactions (generated)"
)
def synthetic_ctr(
    root: PathLike | None = None,
    batch_size: int = 1024,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    n_rows: int = 20_000,
    data_seed: int = 0,
    fmt: str = "tsv",
    spec: str = "criteo_small",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    chunksize: int = 100_000,
    cache_dir: PathLike | None = None,
    fitted: PathLike | None = None,
) -> CTRDataModule:
    """Generates ``n_rows`` records (seed ``data_seed``) once, then reads them like a Criteo file."""
    return CTRDataModule(
        spec,
        path=synthetic_ctr_file(root, n_rows, data_seed, fmt),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        chunksize=chunksize,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(root),
        fitted=fitted,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


synthetic_ctr.download = lambda root=None: synthetic_ctr_file(root)  # type: ignore[attr-defined]


def synthetic_sequences_dir(
    root: PathLike | None = None,
    n_users: int = 2000,
    n_items: int = 1000,
    data_seed: int = 0,
    long_tail_fraction: float = 0.3,
    impressions_per_user: int = 10,
    max_history: int = 50,
) -> Path:
    """The directory of synthetic sequence CSVs for these parameters, generated on first use."""
    folder = synthetic_data_dir(root) / (
        f"sequences-v{SEQUENCES_VERSION}-u{n_users}-i{n_items}-s{data_seed}-lt{long_tail_fraction:g}"
        f"-imp{impressions_per_user}-h{max_history}"
    )
    if not all((folder / f"{name}.csv").is_file() for name in ("train", "valid", "test")):
        write_synthetic_sequences(
            folder,
            n_users=n_users,
            n_items=n_items,
            seed=data_seed,
            long_tail_fraction=long_tail_fraction,
            impressions_per_user=impressions_per_user,
            max_history=max_history,
        )
    return folder


@REGISTRY.datasets.register(
    "synthetic-sequences",
    "synthetic FuxiCTR-style CSVs with behaviour sequences and long-tail users (generated)",
)
def synthetic_sequences(
    root: PathLike | None = None,
    batch_size: int = 1024,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    n_users: int = 2000,
    n_items: int = 1000,
    data_seed: int = 0,
    long_tail_fraction: float = 0.3,
    impressions_per_user: int = 10,
    max_history: int = 50,
    spec: str = "synthetic_sequences",
    chunksize: int = 100_000,
    cache_dir: PathLike | None = None,
    fitted: PathLike | None = None,
) -> CTRDataModule:
    """Generates the train/valid/test CSVs once (seed ``data_seed``), then reads them."""
    folder = synthetic_sequences_dir(
        root, n_users, n_items, data_seed, long_tail_fraction, impressions_per_user, max_history
    )
    return CTRDataModule(
        spec,
        train=folder / "train.csv",
        valid=folder / "valid.csv",
        test=folder / "test.csv",
        chunksize=chunksize,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(root),
        fitted=fitted,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


synthetic_sequences.download = lambda root=None: synthetic_sequences_dir(root)  # type: ignore[attr-defined]
