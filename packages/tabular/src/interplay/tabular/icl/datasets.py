"""Registered entries of the tabular in-context-learning family.

* model ``orion-msp``: :class:`~interplay.tabular.icl.model.OrionMSP` (``model.params`` = its config);
* model ``lightgbm-classifier``: LightGBM's ``LGBMClassifier`` (the baseline of ``reproduce orion-msp``);
* dataset ``orion-prior``: a :class:`~interplay.tabular.icl.prior.PriorSampler` of synthetic tables
  (MLP-SCM 0.7, tree-SCM 0.3), what ``interplay-tabular train --config orion-msp-prior`` pre-trains on;
* dataset ``sklearn-tables``: scikit-learn's bundled breast cancer (569 x 30, 2 classes), wine
  (178 x 13, 3 classes) and digits (1797 x 64, 10 classes) tables, read offline;
* task ``tabular-icl``: a LightningModule over prior batches (cross-entropy of the query rows) for
  users who prefer Lightning's loop; the CLI uses :mod:`interplay.tabular.icl.runner`.

Both datasets carry :func:`~interplay.tabular.icl.runner.run_orion` as ``runner``: the tabular CLI's
``train`` / ``reproduce`` hand such configs to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchmetrics
from torch import Tensor

from interplay.core.errors import ConfigError
from interplay.core.train import OptimizerConfig, TaskModule
from interplay.core.train.task import STAGES
from interplay.tabular.icl.model import OrionMSP, OrionMSPConfig
from interplay.tabular.icl.prior import PriorConfig, PriorSampler
from interplay.tabular.registry import REGISTRY

__all__ = ["SKLEARN_TABLES", "NamedTable", "TabularICLTask", "load_sklearn_table", "sklearn_tables"]

ICL = ("icl",)  # tag: trained by the Orion-MSP runner


@REGISTRY.models.register(
    "orion-msp", "Orion-MSP: multi-scale sparse attention tabular ICL (Bouadi et al., 2025)"
)
def orion_msp(**params: Any) -> OrionMSP:
    try:
        return OrionMSP(OrionMSPConfig(**params))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.params of orion-msp: {err}") from err


@REGISTRY.models.register("lightgbm-classifier", "LightGBM gradient-boosted trees (classification baseline)")
def lightgbm_classifier(
    n_estimators: int = 100, learning_rate: float = 0.1, num_leaves: int = 31, n_jobs: int = 1, **params: Any
):
    from lightgbm import LGBMClassifier

    return LGBMClassifier(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        n_jobs=n_jobs,
        verbose=-1,
        **params,
    )


@REGISTRY.datasets.register(
    "orion-prior",
    "synthetic classification tables: MLP-SCM 0.7 + tree-SCM 0.3 (TabICL / Orion-MSP prior)",
    tags=ICL,
)
def orion_prior(batch_size: int = 8, seed: int = 0, **params: Any) -> PriorSampler:
    """``data.params`` are :class:`PriorConfig` fields (feature, class and row ranges, SCM weights)."""
    try:
        config = PriorConfig(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.params of orion-prior: {err}") from err
    return PriorSampler(config, batch_size=batch_size, seed=seed)


@dataclass
class NamedTable:
    name: str
    x: np.ndarray
    y: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(np.unique(self.y))


SKLEARN_TABLES = ("breast_cancer", "wine", "digits")


def load_sklearn_table(name: str) -> NamedTable:
    """One of scikit-learn's bundled tables (no download)."""
    from sklearn import datasets

    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
    }
    if name not in loaders:
        raise ConfigError(f"unknown sklearn table '{name}' (known: {', '.join(loaders)})")
    x, y = loaders[name](return_X_y=True)
    return NamedTable(name, x.astype(np.float64), y.astype(np.int64))


@REGISTRY.datasets.register(
    "sklearn-tables", "scikit-learn's bundled breast cancer, wine and digits tables (offline)", tags=ICL
)
def sklearn_tables(names: list[str] | tuple[str, ...] = SKLEARN_TABLES, **_: Any) -> list[NamedTable]:
    if isinstance(names, str):
        names = [names]
    return [load_sklearn_table(n) for n in names]


@REGISTRY.tasks.register(
    "tabular-icl", "in-context classification of prior tables: cross-entropy of query rows"
)
class TabularICLTask(TaskModule):
    """Batches are prior batches (``x``, ``y``, ``train_size``, ``n_classes``); the loss is the
    cross-entropy of the rows after ``train_size`` given the labelled rows before it."""

    def __init__(self, model: OrionMSP, optimizer: OptimizerConfig | None = None) -> None:
        super().__init__(model, optimizer)
        self.accuracy = torch.nn.ModuleDict({f"{s}_acc": torchmetrics.MeanMetric() for s in STAGES})

    def step(self, batch: dict, stage: str) -> Tensor:
        from interplay.tabular.icl.pretrain import episode_loss

        loss, accuracy = episode_loss(self.model, batch)
        self.accuracy[f"{stage}_acc"].update(accuracy.detach())
        return loss

    def _log_epoch(self, stage: str) -> None:
        super()._log_epoch(stage)
        metric = self.accuracy[f"{stage}_acc"]
        if metric.update_called:
            self.log(f"{stage}/acc", metric.compute(), prog_bar=stage == "val", sync_dist=False)
            metric.reset()
