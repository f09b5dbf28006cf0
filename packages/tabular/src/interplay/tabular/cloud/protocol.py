"""The unseen-application protocol of CloudFormer and the data module serving one partition.

Shahbazinia et al., "CloudFormer" (arXiv:2509.03394, 2025), evaluation on unknown workloads: of the
11 applications, 7 are trained on and 4 held out entirely; 6 random partitions; MAE and MSE of the
performance ``P`` in percentage points (``100 |P - P_hat|``), mean +- std over partitions.

:func:`application_partitions` draws the partitions (seeded; partition ``i`` does not depend on how
many are drawn). :class:`CloudDataModule` serves one partition: training runs from the training
applications, a validation split carved from those same applications' runs (a fraction of each
application's runs: model selection never sees a test application), and every run of the test
applications as the test split. The per-time-step normalisation is fitted on the training runs
alone. Batches are dicts: ``metrics [B, T_max, S]`` zero-padded, ``mask [B, T_max]`` (True = a real
second), ``target [B]``, ``length [B]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import ConfigError, DataError
from interplay.tabular.cloud.data import CloudRun, MetricNormalizer, check_runs


@dataclass(frozen=True)
class ApplicationPartition:
    index: int
    train: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"p{self.index}-test-" + "-".join(str(t) for t in self.test)


def application_partitions(
    applications: Sequence[int], n_train: int = 7, n_partitions: int = 6, seed: int = 0
) -> list[ApplicationPartition]:
    """``n_partitions`` distinct random splits of ``applications`` into ``n_train`` train and the rest test.

    Drawn one after the other from one seeded generator, so the first partitions are the same
    whatever ``n_partitions`` is.
    """
    apps = sorted({int(a) for a in applications})
    if not 1 <= n_train < len(apps):
        raise ConfigError(
            f"data.params.n_train_applications must be in [1, {len(apps) - 1}] for {len(apps)} applications, "
            f"got {n_train}"
        )
    from math import comb

    possible = comb(len(apps), n_train)
    if not 1 <= n_partitions <= possible:
        raise ConfigError(
            f"cannot draw {n_partitions} distinct partitions of {len(apps)} applications into "
            f"{n_train} train / {len(apps) - n_train} test (at most {possible})"
        )
    rng = np.random.default_rng([seed, 2718])
    seen: set[tuple[int, ...]] = set()
    out: list[ApplicationPartition] = []
    while len(out) < n_partitions:
        train = tuple(sorted(int(a) for a in rng.permutation(apps)[:n_train]))
        if train in seen:
            continue
        seen.add(train)
        test = tuple(a for a in apps if a not in train)
        out.append(ApplicationPartition(len(out), train, test))
    return out


def split_runs(
    runs: Sequence[CloudRun], partition: ApplicationPartition, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of the train / val / test runs of ``partition``: val is a fraction of each training
    application's runs (at least one when it has two or more); test is every run of the test apps."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.params.val_fraction must be in (0, 1), got {val_fraction}")
    tasks = np.array([r.task for r in runs])
    rng = np.random.default_rng([seed, 31337, partition.index])
    train, val = [], []
    for app in partition.train:
        idx = np.flatnonzero(tasks == app)
        if len(idx) == 0:
            raise DataError(f"training application {app} has no runs")
        idx = rng.permutation(idx)
        n_val = int(round(val_fraction * len(idx)))
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    test = np.flatnonzero(np.isin(tasks, partition.test))
    return {
        "train": np.sort(np.concatenate(train)),
        "val": np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64),
        "test": test,
    }


class CloudRunDataset(Dataset):
    """Normalised runs as ``(metrics [T, S] float32 tensor, target)`` pairs."""

    def __init__(self, runs: Sequence[CloudRun], normalizer: MetricNormalizer) -> None:
        self.metrics = [torch.from_numpy(normalizer.transform(r.metrics)) for r in runs]
        self.targets = torch.tensor([r.target for r in runs], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.metrics)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.metrics[index], self.targets[index]


def pad_runs(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate variable-length runs: zero-pad to the longest run of the batch, with a validity mask."""
    lengths = torch.tensor([m.shape[0] for m, _ in items], dtype=torch.long)
    n_metrics = items[0][0].shape[1]
    metrics = torch.zeros(len(items), int(lengths.max()), n_metrics)
    for i, (m, _) in enumerate(items):
        metrics[i, : m.shape[0]] = m
    mask = torch.arange(metrics.shape[1])[None, :] < lengths[:, None]
    return {
        "metrics": metrics,
        "mask": mask,
        "length": lengths,
        "target": torch.stack([t for _, t in items]),
    }


class CloudDataModule(SplitDataModule):
    """One partition of the unseen-application protocol over ``runs``.

    Args:
        runs: every run of the dataset (all applications).
        partition: index into :attr:`partitions`.
        n_train_applications: applications trained on (the rest are the test applications).
        n_partitions: how many partitions :attr:`partitions` lists (the runner scores them all).
        val_fraction: fraction of each training application's runs held out for selection.
        split_seed: seed of the partitions and validation split (the model seed is separate).
        log_transform: signed ``log1p`` before standardising (see :class:`MetricNormalizer`).
    """

    def __init__(
        self,
        runs: Sequence[CloudRun],
        *,
        partition: int = 0,
        n_train_applications: int = 7,
        n_partitions: int = 6,
        val_fraction: float = 0.15,
        split_seed: int = 0,
        log_transform: bool = True,
        dataset: str = "cloud",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        runs = list(runs)
        n_metrics = runs[0].metrics.shape[1] if runs else 0
        check_runs(runs, n_metrics, what=dataset)
        self.runs = runs
        self.dataset_name = dataset
        applications = sorted({r.task for r in runs})
        self.partitions = application_partitions(
            applications, n_train_applications, max(n_partitions, partition + 1), split_seed
        )
        if not 0 <= partition < len(self.partitions):
            raise ConfigError(f"data.params.partition must be >= 0, got {partition}")
        self.partition = self.partitions[partition]
        self.index = split_runs(runs, self.partition, val_fraction, split_seed)
        for split, idx in self.index.items():
            if len(idx) == 0:
                raise DataError(
                    f"{dataset}: partition {self.partition.name} has an empty {split} split "
                    f"(too few runs per application for val_fraction {val_fraction})"
                )
        self.normalizer = MetricNormalizer(log_transform=log_transform)
        self._fitted = False
        self.info = {
            "n_metrics": n_metrics,
            "target_mean": float(np.mean([runs[i].target for i in self.index["train"]])),
        }

    # the engine checkpoints this state, so evaluate / predict reuse the training statistics
    def state_dict(self) -> dict[str, Any]:
        self._fit()
        return {
            "partition": self.partition.index,
            "train_applications": list(self.partition.train),
            "test_applications": list(self.partition.test),
            "normalizer": self.normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "normalizer" in state:
            self.normalizer.load_state_dict(state["normalizer"])
            self._fitted = True
            self.datasets = {}

    def _fit(self) -> None:
        if not self._fitted:
            self.normalizer.fit(self.split("train"))
            self._fitted = True

    def split(self, name: str) -> list[CloudRun]:
        """The raw (unnormalised) runs of ``name`` ('train', 'val' or 'test')."""
        if name not in self.index:
            raise ConfigError(f"split must be one of train, val, test, got {name!r}")
        return [self.runs[i] for i in self.index[name]]

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self._fit()
            self.datasets = {s: CloudRunDataset(self.split(s), self.normalizer) for s in self.index}

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        self.setup(None)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator,
            collate_fn=pad_runs,
        )
