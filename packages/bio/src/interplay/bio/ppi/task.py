"""Training for protein-protein affinity: metrics, data module, registered datasets, regression task.

Alsamkary et al. (arXiv:2505.20036, 2025) train every head with MSE on pKd, AdamW at lr 5e-4
(weight decay 0), 1,000 warm-up steps then linear decay to zero (Hugging Face's default schedule),
batch 1 with 32 accumulation steps, 30 epochs, keeping the epoch with the best validation Spearman,
and report Spearman, Pearson and RMSE on test (their ``compute_ppi_metrics``; the "±" beside
a Spearman there is ``sqrt((1 - rho^2)^2 (1 + rho^2 / 2) / (n - 3))``, logged here as
``spearman_se``).

Batches: padding changes no output (see :mod:`interplay.bio.ppi.models`) and the MSE is a mean,
so one batch of ``B`` padded complexes gives the same gradient as ``B`` accumulated single-complex
steps (the paper's accumulation divides each step's loss by 32); only dropout draws differ. The
synthetic configs therefore use ``batch_size: 32`` and no accumulation; ``ppi-hp-esm2`` keeps
``1 x 32``.

Metrics are written here (Spearman with average ranks for ties, Pearson, RMSE); a prediction or
target with zero variance gives correlation 0 instead of NaN so that checkpoint selection never
sees NaN.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.utilities import dim_zero_cat

from interplay.bio.ppi.data import (
    SYNTHETIC_VERSION,
    Complex,
    cluster_split,
    random_split,
    read_clusters,
    read_ppb_affinity,
    write_synthetic_ppb_affinity,
)
from interplay.bio.registry import REGISTRY
from interplay.core.data import data_root
from interplay.core.errors import ConfigError, DataError
from interplay.core.train import OptimizerConfig, TaskModule, build_optimizer
from interplay.core.train.task import STAGES

__all__ = [
    "AffinityMetrics",
    "PPIDataModule",
    "PPIRegressionTask",
    "collate_complexes",
    "linear_warmup_decay",
    "pearson",
    "rankdata",
    "rmse",
    "spearman",
    "spearman_standard_error",
]

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------ metrics
def rankdata(values: Tensor) -> Tensor:
    """1-based ranks with ties given their average rank (``scipy.stats.rankdata(method='average')``)."""
    values = values.reshape(-1)
    ordered, order = values.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(len(values), dtype=torch.float64, device=values.device)
    ranks[order] = average[inverse]
    return ranks


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation; 0 when either side has no variance."""
    x, y = x.reshape(-1).double(), y.reshape(-1).double()
    xc, yc = x - x.mean(), y - y.mean()
    denominator = torch.sqrt((xc * xc).sum() * (yc * yc).sum())
    if denominator == 0 or len(x) < 2:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    return (xc * yc).sum() / denominator


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(rankdata(x.double()), rankdata(y.double()))


def rmse(prediction: Tensor, target: Tensor) -> Tensor:
    return torch.sqrt(torch.mean((prediction.double() - target.double()) ** 2))


def spearman_standard_error(rho: float, n: int) -> float:
    """The error bar Alsamkary et al.'s code prints beside a Spearman rho on n examples."""
    if n <= 3:
        return math.nan
    return math.sqrt((1 - rho**2) ** 2 * (1 + rho**2 / 2) / (n - 3))


class AffinityMetrics(torchmetrics.Metric):
    """Epoch-level ``spearman``, ``spearman_se``, ``pearson`` and ``rmse`` of predicted pKd."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, prediction: Tensor, target: Tensor) -> None:
        self.predictions.append(prediction.detach().reshape(-1).float())
        self.targets.append(target.detach().reshape(-1).float())

    def compute(self) -> dict[str, Tensor]:
        p, t = dim_zero_cat(self.predictions), dim_zero_cat(self.targets)
        rho = spearman(p, t)
        return {
            "spearman": rho.float(),
            "spearman_se": torch.tensor(spearman_standard_error(float(rho), len(p))),
            "pearson": pearson(p, t).float(),
            "rmse": rmse(p, t).float(),
        }


# ------------------------------------------------------------------------------- data module
def collate_complexes(complexes: list[Complex]) -> dict[str, Any]:
    """A batch: ``target`` pKd ``[B]`` first (batch-size detection), then chains and ids."""
    return {
        "target": torch.tensor([c.pkd for c in complexes], dtype=torch.float32),
        "ligand": [c.ligand for c in complexes],
        "receptor": [c.receptor for c in complexes],
        "complex_id": [c.complex_id for c in complexes],
    }


class PPIDataModule(pl.LightningDataModule):
    """Train / val / test lists of :class:`Complex`; ``info['target_mean']`` is the train mean pKd."""

    def __init__(
        self,
        splits: dict[str, list[Complex]],
        *,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        source: str = "complexes",
    ) -> None:
        super().__init__()
        for split in ("train", "val", "test"):
            if not splits.get(split):
                raise DataError(f"{source}: the {split} split is empty")
        self.splits = splits
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.predict_split = "test"
        self.info = {"target_mean": float(np.mean([c.pkd for c in splits["train"]]))}
        self.source = source

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            raise ConfigError(f"split '{split}' does not exist (have: {', '.join(self.splits)})")
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_complexes,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, False)


def _resolve(path: PathLike | None, root: PathLike | None) -> Path | None:
    """A path as given when it exists or is absolute, else under ``root`` (default
    ``$INTERPLAY_DATA/bio/ppi``)."""
    if path is None:
        return None
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    base = Path(root).expanduser() if root is not None else data_root() / "bio" / "ppi"
    return base / candidate


def split_complexes(
    complexes: list[Complex],
    *,
    split: str,
    clusters: PathLike | None,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> dict[str, list[Complex]]:
    """``split='cluster'`` (whole identity clusters from ``clusters``) or ``'random'``."""
    if split == "cluster":
        if clusters is None:
            raise ConfigError("split='cluster' needs a cluster file (data.params.clusters)")
        index = cluster_split(
            [c.complex_id for c in complexes],
            read_clusters(clusters),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=split_seed,
            source=str(clusters),
        )
    elif split == "random":
        index = random_split(
            len(complexes), val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed
        )
    else:
        raise ConfigError(f"unknown split {split!r} (choose 'cluster', 'random' or 'files')")
    return {name: [complexes[i] for i in idx] for name, idx in index.items()}


@REGISTRY.datasets.register(
    "ppb-affinity",
    "PPB-Affinity CSV (Ligand/Receptor Sequences, KD(M)): identity-cluster, random or per-file splits",
)
def ppb_affinity(
    root: PathLike | None = None,
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    path: PathLike | None = "ppb_affinity.csv",
    clusters: PathLike | None = "clusters.tsv",
    split: str = "cluster",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    train: PathLike | None = None,
    val: PathLike | None = None,
    test: PathLike | None = None,
    id_column: str | None = None,
    label_eps: float = 0.0,
) -> PPIDataModule:
    """Relative names are looked up under ``root`` (``data.root``) or ``$INTERPLAY_DATA/bio/ppi``.

    ``split='files'`` reads ``train``, ``val`` and ``test`` CSVs (e.g. the curated splits of
    Alsamkary et al. exported from ``proteinea/ppb_affinity``); otherwise ``path`` is split.
    """
    read = dict(id_column=id_column, label_eps=label_eps)
    if split == "files":
        files = {"train": train, "val": val, "test": test}
        absent = [k for k, v in files.items() if v is None]
        if absent:
            raise ConfigError(f"split='files' needs data.params.{', data.params.'.join(absent)}")
        splits = {k: read_ppb_affinity(_resolve(v, root), **read) for k, v in files.items()}
        source = str(_resolve(train, root))
    else:
        csv_path = _resolve(path, root)
        complexes = read_ppb_affinity(csv_path, **read)
        splits = split_complexes(
            complexes,
            split=split,
            clusters=_resolve(clusters, root) if split == "cluster" else None,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            split_seed=split_seed,
        )
        source = str(csv_path)
    return PPIDataModule(
        splits,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
        source=source,
    )


def _ppb_affinity_download(root: PathLike | None = None) -> str:
    target = Path(root).expanduser() if root else data_root() / "bio" / "ppi"
    return (
        "PPB-Affinity (Liu et al., Scientific Data 2024) is distributed with the paper (figshare) and, "
        "curated with <=30% identity splits by Alsamkary et al., as the Hugging Face dataset "
        f"proteinea/ppb_affinity; save it as CSV in {target} (ppb_affinity.csv, and clusters.tsv from "
        "`mmseqs easy-cluster ... --min-seq-id 0.3 --cluster-mode 1`, or train/val/test CSVs with "
        "data.params.split=files)"
    )


ppb_affinity.download = _ppb_affinity_download  # type: ignore[attr-defined]


@REGISTRY.datasets.register(
    "synthetic-ppi",
    "synthetic PPB-Affinity-format complexes whose pKd is planted on cross-chain motif pairs (+ clusters)",
)
def synthetic_ppi(
    root: PathLike | None = None,
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    n_complexes: int = 800,
    n_families: int = 80,
    n_motifs: int = 4,
    noise: float = 0.3,
    data_seed: int = 0,
    split: str = "cluster",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split_seed: int = 0,
) -> PPIDataModule:
    """Generated once into ``<root>/synthetic_ppi/<tag>`` (default root ``$INTERPLAY_DATA/bio``)."""
    generator = dict(
        n_complexes=n_complexes, n_families=n_families, n_motifs=n_motifs, noise=noise, seed=data_seed
    )
    # the generator's version is part of the tag: a changed generator never reuses stale files
    tagged = {**generator, "version": SYNTHETIC_VERSION}
    tag = hashlib.sha256(json.dumps(tagged, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(root).expanduser() if root is not None else data_root() / "bio"
    directory = base / "synthetic_ppi" / tag
    csv_path, clusters_path = directory / "ppb_affinity.csv", directory / "clusters.tsv"
    if not (csv_path.is_file() and clusters_path.is_file()):
        write_synthetic_ppb_affinity(directory, **generator)
    splits = split_complexes(
        read_ppb_affinity(csv_path),
        split=split,
        clusters=clusters_path if split == "cluster" else None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )
    return PPIDataModule(
        splits,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
        source=str(csv_path),
    )


# --------------------------------------------------------------------------------------- task
def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """Hugging Face's ``get_linear_schedule_with_warmup`` multiplier: 0 -> 1 over ``warmup_steps``,
    then linearly to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


@REGISTRY.tasks.register("ppi_regression", "protein-protein affinity: MSE on pKd, Spearman / Pearson / RMSE")
class PPIRegressionTask(TaskModule):
    """MSE on pKd; ``val/spearman`` selects. ``warmup_steps`` / ``linear_decay`` give the paper's
    schedule (optimizer steps); without them the optimizer config's schedule applies."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig | None = None,
        warmup_steps: int = 0,
        linear_decay: bool = False,
    ) -> None:
        super().__init__(model, optimizer)
        if warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps, self.linear_decay = warmup_steps, linear_decay
        self.metrics.update(
            {
                f"{s}_metrics": torchmetrics.MetricCollection({"affinity": AffinityMetrics()}, prefix=f"{s}/")
                for s in STAGES
            }
        )

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        prediction = self.model(batch)
        target = batch["target"].to(prediction.dtype)
        if prediction.shape != target.shape:
            raise ValueError(f"model returned {tuple(prediction.shape)}, targets are {tuple(target.shape)}")
        self.stage_metrics(stage).update(prediction.detach(), target)
        return F.mse_loss(prediction, target)

    def predict_batch(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return {"pkd": self.model(batch), "target": batch["target"]}

    def configure_optimizers(self):
        if not self.warmup_steps and not self.linear_decay:
            return super().configure_optimizers()
        optimizer = build_optimizer(self.parameters(), self.optimizer_config)
        total = int(self.trainer.estimated_stepping_batches)
        # without linear_decay the rate stays at its peak after warm-up
        factor = linear_warmup_decay(self.warmup_steps, total if self.linear_decay else 10**12)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
