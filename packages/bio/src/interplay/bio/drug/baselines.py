"""Fingerprint baselines for drug sensitivity: a dense network and LightGBM on Morgan bits + expression.

PaccMann MCA (Manica et al. 2019) compares its SMILES encoders with a baseline reading 512-bit
Morgan fingerprints (radius 2) instead of the SMILES: the authors' ``models/dense.py`` concatenates the
fingerprint bits with the gene expression profile and stacks dense layers [1024, 512, 256, 64] before
a Linear(1). :class:`FingerprintMLP` is that network (ReLU, optional dropout and batch norm, sigmoid
output on the min-max scaled ln IC50 as MCA). Note the reference keeps its dense layers in a plain
Python list, so they are never registered as sub-modules and never trained; ours are trained.

:class:`FingerprintLightGBM` fits gradient-boosted trees (LightGBM) on the same features, on the ln
IC50 scale, with early stopping on the validation split; it is trained outside Lightning (see
:func:`interplay.bio.drug.task.run_drug_experiment`), as the recsys and EEG domains do with theirs.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from interplay.core.errors import DataError

__all__ = ["FingerprintLightGBM", "FingerprintMLP"]


class FingerprintMLP(nn.Module):
    """``[fingerprint | expression] -> dense stack -> Linear(1) (-> sigmoid)``; ``forward(batch) -> [B]``."""

    def __init__(
        self,
        fingerprint_bits: int,
        n_genes: int,
        hidden_sizes: Sequence[int] = (1024, 512, 256, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        final_activation: bool = True,
    ) -> None:
        super().__init__()
        sizes = [fingerprint_bits + n_genes, *hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out) if batch_norm else nn.Identity()]
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        self.dense = nn.Sequential(*layers)
        self.output = nn.Linear(sizes[-1], 1)
        self.final_activation = final_activation

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = torch.cat([batch["fingerprint"].float(), batch["expression"]], dim=1)
        prediction = self.output(self.dense(inputs)).squeeze(-1)
        return torch.sigmoid(prediction) if self.final_activation else prediction


class FingerprintLightGBM:
    """LightGBM regression of ln IC50 from ``[fingerprint bits | standardised expression]``."""

    def __init__(
        self,
        num_leaves: int = 63,
        learning_rate: float = 0.05,
        n_estimators: int = 2000,
        early_stopping_rounds: int = 50,
        min_child_samples: int = 20,
        colsample_bytree: float = 0.5,
        threads: int = 0,
        seed: int = 0,
    ) -> None:
        self.params: dict[str, Any] = dict(
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            min_child_samples=min_child_samples,
            colsample_bytree=colsample_bytree,
            n_jobs=threads or None,
            random_state=seed,
            verbose=-1,
        )
        self.early_stopping_rounds = early_stopping_rounds
        self.model: Any = None

    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> FingerprintLightGBM:
        import lightgbm

        if len(x_train) == 0:
            raise DataError("LightGBM: the training split is empty")
        self.model = lightgbm.LGBMRegressor(**self.params)
        kwargs: dict[str, Any] = {}
        if x_val is not None and len(x_val) and self.early_stopping_rounds > 0:
            if "eval_X" in inspect.signature(self.model.fit).parameters:  # LightGBM >= 4.7
                kwargs.update(eval_X=x_val, eval_y=y_val)
            else:
                kwargs["eval_set"] = [(x_val, y_val)]
            kwargs["eval_metric"] = "l2"
            kwargs["callbacks"] = [lightgbm.early_stopping(self.early_stopping_rounds, verbose=False)]
        self.model.fit(x_train, y_train, **kwargs)
        return self

    @property
    def best_iteration(self) -> int | None:
        return None if self.model is None else (self.model.best_iteration_ or self.params["n_estimators"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("FingerprintLightGBM.predict before fit")
        return np.asarray(self.model.predict(x), dtype=np.float64)
