"""The CTR data module: files -> fitted features -> memory-mapped arrays -> batches.

:class:`CTRDataModule` reads one of two split policies:

* explicit files: ``train`` and ``valid`` (and optionally ``test``), as FuxiCTR ships its datasets;
* one file (``path``) split at random: each row goes to validation with probability
  ``val_fraction`` and to test with probability ``test_fraction``, decided by a hash of
  ``(split_seed, row number)``. The split is therefore reproducible, independent of the chunk size
  and computable while streaming (no pass over the file is needed first); split sizes match the
  fractions up to sampling noise.

Preparation (:meth:`CTRDataModule.prepare`, run on first access to ``info``, ``fitted`` or a loader)
fits the features on the training rows only, in one streaming pass, and saves them as JSON
(``fitted_path``); then transforms every file, in chunks, into memory-mapped arrays
(:mod:`~interplay.recsys.data.cache`). Both are cached under ``cache_dir`` by a hash of the source
files' identity and the spec, so a second run reads the cache directly. Given ``fitted`` (a JSON
saved before, e.g. with a checkpoint), no fitting happens: its vocabularies are reused unchanged.

Batches are gathered by index from the memory maps: a :class:`CTRDataset` indexed by a list of
rows returns a whole batch dict, and the loaders use ``DataLoader(batch_size=None,
sampler=BatchSampler(...))`` so one ``__getitem__`` call builds one batch (much faster than
collating single rows). Training batches are shuffled (``seed``); evaluation batches follow file
order. ``info = {"layout": FeatureLayout}`` for the model factories. ``state_dict()`` holds the
fitted features, so Lightning stores them in every checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from interplay.core.data import data_root, require_file
from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import ConfigError
from interplay.recsys.data.cache import CachedArrays, cache_key, cached_arrays, file_fingerprint
from interplay.recsys.data.criteo import read_criteo
from interplay.recsys.data.features import FORMAT, FeatureSpec, FittedFeatures, load_spec, uniform_from_rows
from interplay.recsys.data.fuxictr import read_fuxictr_csv
from interplay.recsys.layout import FeatureLayout

__all__ = [
    "CTRDataModule",
    "CTRDataset",
    "default_cache_dir",
    "read_chunks",
    "split_assignment",
    "synthetic_data_dir",
]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def default_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """``<root>/recsys/cache`` when the data root is writable, else ``~/.cache/interplay/recsys/cache``."""
    base = Path(root).expanduser() if root is not None else data_root()
    probe = base
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if os.access(probe, os.W_OK):
        return base / "recsys" / "cache"
    return Path("~/.cache/interplay/recsys/cache").expanduser()


def synthetic_data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where generated synthetic files go: ``synthetic/`` beside :func:`default_cache_dir`."""
    return default_cache_dir(root).parent / "synthetic"


def read_chunks(spec: FeatureSpec, path: str | os.PathLike[str], chunksize: int) -> Iterator[pd.DataFrame]:
    """Chunks of ``path`` with the reader the spec names (``criteo`` or ``csv``)."""
    if spec.format == "criteo":
        return read_criteo(path, chunksize)
    return read_fuxictr_csv(
        path,
        chunksize,
        numeric_columns=spec.numeric_columns(),
        usecols=spec.columns(),
        sep=spec.separator,
        categorical_columns=spec.categorical_columns(),
    )


def split_assignment(rows: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split code per row number (0 train, 1 val, 2 test), a pure function of (row, seed)."""
    u = uniform_from_rows(rows, 0x5EED0000 + int(seed))
    codes = np.zeros(len(u), dtype=np.int8)
    codes[u < test_fraction + val_fraction] = SPLIT_CODES["val"]
    codes[u < test_fraction] = SPLIT_CODES["test"]
    return codes


def _rows_of_split(
    chunks: Iterable[pd.DataFrame], split: str, val_fraction: float, test_fraction: float, seed: int
) -> Iterator[pd.DataFrame]:
    start = 0
    for chunk in chunks:
        rows = np.arange(start, start + len(chunk), dtype=np.uint64)
        start += len(chunk)
        keep = split_assignment(rows, val_fraction, test_fraction, seed) == SPLIT_CODES[split]
        selected = chunk[keep] if keep.any() else None
        del chunk
        if selected is not None:
            yield selected
        del selected


class CTRDataset(Dataset):
    """Rows of a :class:`CachedArrays` (all, or those in ``indices``) in the batch-contract format.

    ``dataset[i]`` is one example (tensors without the batch dimension, so the default collate
    works); ``dataset[[i, j, ...]]`` (a list, array or slice) is a whole batch dict, built by one
    gather from the memory maps.
    """

    def __init__(self, arrays: CachedArrays, indices: np.ndarray | None = None) -> None:
        self.arrays = arrays
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.arrays) if self.indices is None else len(self.indices)

    def _rows(self, index: Any) -> np.ndarray | slice:
        if isinstance(index, slice):
            return index if self.indices is None else self.indices[index]
        rows = np.asarray(index, dtype=np.int64)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} rows")
        return rows if self.indices is None else self.indices[rows]

    def __getitem__(self, index: Any) -> dict[str, Tensor]:
        if isinstance(index, int | np.integer):
            batch = self.arrays.batch(self._rows([int(index)]))
            return {key: value[0] for key, value in batch.items()}
        return self.arrays.batch(self._rows(index))

    def labels(self) -> np.ndarray:
        labels = self.arrays.arrays["label"]
        return np.asarray(labels if self.indices is None else labels[self.indices])


class SortedBatchSampler(BatchSampler):
    """A :class:`BatchSampler` whose batches list their indices in increasing order (disk locality)."""

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield sorted(batch)


class CTRDataModule(SplitDataModule):
    """CTR batches from Criteo / FuxiCTR-style files (see the module docstring)."""

    def __init__(
        self,
        spec: str | os.PathLike[str] | Mapping | FeatureSpec,
        path: str | os.PathLike[str] | None = None,
        train: str | os.PathLike[str] | None = None,
        valid: str | os.PathLike[str] | None = None,
        test: str | os.PathLike[str] | None = None,
        *,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        chunksize: int = 100_000,
        cache_dir: str | os.PathLike[str] | None = None,
        fitted: str | os.PathLike[str] | FittedFeatures | None = None,
        batch_size: int = 1024,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if path is not None and any(p is not None for p in (train, valid, test)):
            raise ConfigError(
                "give either 'path' (one file, split at random) or 'train'/'valid'/'test' files"
            )
        if path is None and (train is None or valid is None):
            raise ConfigError("give 'path' (one file, split at random) or at least 'train' and 'valid' files")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
                "and sum to less than 1"
            )
        if chunksize < 1:
            raise ConfigError(f"chunksize must be >= 1, got {chunksize}")
        self.spec = load_spec(spec) if not isinstance(fitted, FittedFeatures) else fitted.spec
        self.path = Path(path).expanduser() if path is not None else None
        self.files = {
            split: Path(p).expanduser()
            for split, p in (("train", train), ("val", valid), ("test", test))
            if p is not None
        }
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.chunksize = chunksize
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._fitted: FittedFeatures | None = None
        self.fitted_path: Path | None = None
        if isinstance(fitted, FittedFeatures):
            self._fitted = fitted
        elif fitted is not None:
            self.fitted_path = Path(fitted).expanduser()
            self._fitted = FittedFeatures.load(self.fitted_path)
            self.spec = self._fitted.spec

    # ------------------------------------------------------------------ info

    @property
    def info(self) -> dict[str, object]:  # type: ignore[override]
        """``{"layout": FeatureLayout}`` (fits the features on first access)."""
        return {"layout": self.layout}

    @info.setter
    def info(self, value: dict[str, object]) -> None:
        pass  # computed from the fitted features; SplitDataModule's default is ignored

    @property
    def fitted(self) -> FittedFeatures:
        """The features fitted on the training split (fitted, or loaded from the cache, on first use)."""
        if self._fitted is None:
            self._fitted = self._fit()
        return self._fitted

    @property
    def layout(self) -> FeatureLayout:
        return self.fitted.layout()

    # ------------------------------------------------------------------ preparation

    def _chunks(self, file: Path) -> Iterator[pd.DataFrame]:
        return read_chunks(self.spec, file, self.chunksize)

    def _train_chunks(self) -> Iterator[pd.DataFrame]:
        if self.path is not None:
            return _rows_of_split(
                self._chunks(self.path), "train", self.val_fraction, self.test_fraction, self.split_seed
            )
        return self._chunks(self.files["train"])

    def _fit_source(self) -> dict[str, Any]:
        if self.path is not None:
            return {
                "file": file_fingerprint(self.path),
                "split": {
                    "val_fraction": self.val_fraction,
                    "test_fraction": self.test_fraction,
                    "split_seed": self.split_seed,
                },
            }
        return {"file": file_fingerprint(self.files["train"])}

    def _fit(self) -> FittedFeatures:
        for file in [self.path] if self.path is not None else self.files.values():
            require_file(file, "data file")
        source = self._fit_source()
        key = cache_key(FORMAT, self.spec.to_dict(), source)
        path = self.cache_dir / f"fitted-{key}.json"
        self.fitted_path = path
        if path.is_file():
            return FittedFeatures.load(path)
        fitted = FittedFeatures.fit(self.spec, self._train_chunks(), source=source)
        fitted.save(path)
        return fitted

    def prepare(self) -> None:
        """Fit (or load) the features and build (or reuse) the array caches; idempotent."""
        if self.datasets:
            return
        fitted = self.fitted
        if self.fitted_path is None or not self.fitted_path.is_file():
            self.fitted_path = fitted.save(self.cache_dir / f"fitted-{fitted.digest()[:20]}.json")
        if self.path is not None:
            arrays = cached_arrays(
                "rows", [self.path], lambda: self._chunks(self.path), fitted, self.cache_dir
            )
            codes = np.empty(len(arrays), dtype=np.int8)
            block = 1 << 22
            for start in range(0, len(arrays), block):
                rows = np.arange(start, min(start + block, len(arrays)), dtype=np.uint64)
                codes[start : start + len(rows)] = split_assignment(
                    rows, self.val_fraction, self.test_fraction, self.split_seed
                )
            self.datasets = {
                split: CTRDataset(arrays, np.flatnonzero(codes == code))
                for split, code in SPLIT_CODES.items()
            }
        else:
            self.datasets = {
                split: CTRDataset(
                    cached_arrays(split, [file], lambda file=file: self._chunks(file), fitted, self.cache_dir)
                )
                for split, file in self.files.items()
            }

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # ------------------------------------------------------------------ loaders

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup(None)
        if split not in self.datasets:
            raise ConfigError(f"split '{split}' does not exist (have: {', '.join(self.datasets)})")
        dataset = self.datasets[split]
        if shuffle:
            order = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
        else:
            order = SequentialSampler(dataset)
        size = self.batch_size if shuffle else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=SortedBatchSampler(order, size, drop_last=False),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The fitted features (Lightning stores this in every checkpoint)."""
        return {"fitted_features": self.fitted.to_dict()} if self._fitted is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use the checkpoint's fitted features (the arrays are rebuilt if they differ)."""
        data = state_dict.get("fitted_features")
        if not data:
            return
        fitted = FittedFeatures.from_dict(data, where="<checkpoint>")
        if self._fitted is None or fitted.digest() != self._fitted.digest():
            self._fitted, self.spec, self.fitted_path = fitted, fitted.spec, None
            self.datasets = {}

    def split_sizes(self) -> dict[str, int]:
        self.prepare()
        return {split: len(dataset) for split, dataset in self.datasets.items()}

    def batches(self, split: str) -> Iterable[dict[str, Tensor]]:
        """Evaluation-order batches of ``split`` (for scripts and baselines such as LightGBM)."""
        return self._loader(split, shuffle=False)

    def __repr__(self) -> str:
        source = (
            str(self.path) if self.path is not None else ", ".join(f"{k}={v}" for k, v in self.files.items())
        )
        return f"CTRDataModule({source}, spec={self.spec.description or self.spec.format})"
