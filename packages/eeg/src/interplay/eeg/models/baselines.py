"""Baselines for EEG emotion recognition on band differential entropy (DE) features.

* ``logreg``: logistic regression on the flattened ``C x n_bands`` DE features (scikit-learn,
  standardised with the training fold's statistics).
* ``lightgbm``: gradient-boosted trees on the same features (LightGBM), early stopping on the
  validation trials.
* ``dgcnn``: DGCNN (Song, Zheng, Song and Cui, "EEG Emotion Recognition Using Dynamical Graph
  Convolutional Neural Networks", IEEE Trans. Affective Computing 2018): a learnable electrode
  adjacency ``W`` (initialised here from the electrodes' distances with a Gaussian kernel, kept
  non-negative by a ReLU as in the paper's update rule), a Chebyshev graph convolution of order
  ``K`` on the normalised Laplacian of ``W`` (Eq. 7-9: ``y = sum_k theta_k T_k(L~) x`` with
  ``L~ = 2 L / lambda_max - I`` and ``lambda_max ~ 2``), ReLU, and a fully connected head.

The two scikit-learn style models are not ``nn.Module`` s: the cross-validation runner
(:mod:`interplay.eeg.evaluation`) fits them on each training fold with :meth:`SklearnBaseline.fit`
and scores the test fold once, on exactly the folds the neural models see.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from interplay.core.errors import ConfigError, DataError
from interplay.eeg.registry import REGISTRY

__all__ = ["DGCNN", "SklearnBaseline", "distance_adjacency", "lightgbm_baseline", "logistic_regression"]


class SklearnBaseline:
    """A classifier on flattened DE features: ``fit`` on train (validation for early stopping),
    ``predict`` / ``predict_proba`` on ``[n, C, n_bands]`` or ``[n, C * n_bands]`` arrays."""

    def __init__(self, name: str, make_estimator, uses_validation: bool = False) -> None:
        self.name = name
        self._make_estimator = make_estimator
        self.uses_validation = uses_validation
        self.estimator: Any = None

    @staticmethod
    def flatten(features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        return features.reshape(len(features), -1)

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        val_features: np.ndarray | None = None,
        val_labels: np.ndarray | None = None,
    ) -> SklearnBaseline:
        if len(np.unique(labels)) < 2:
            raise DataError(f"{self.name}: the training fold holds a single class ({np.unique(labels)})")
        self.estimator = self._make_estimator()
        x = self.flatten(features)
        if self.uses_validation and val_features is not None and len(val_features):
            self.estimator.fit(x, labels, eval_set=(self.flatten(val_features), val_labels))
        else:
            self.estimator.fit(x, labels)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if self.estimator is None:
            raise RuntimeError(f"{self.name} is not fitted")
        return self.estimator.predict_proba(self.flatten(features))

    def predict(self, features: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(features)
        return np.asarray(self.estimator.classes_)[proba.argmax(1)]


class _LightGBMEarlyStopping:
    """LGBMClassifier whose ``fit`` takes the validation set and stops on its log-loss."""

    def __init__(self, early_stopping_rounds: int, **params: Any) -> None:
        import lightgbm

        self.model = lightgbm.LGBMClassifier(**params)
        self.early_stopping_rounds = early_stopping_rounds

    def fit(self, x: np.ndarray, y: np.ndarray, eval_set: tuple[np.ndarray, np.ndarray] | None = None):
        import lightgbm

        if eval_set is None:
            self.model.fit(x, y)
            return self
        callbacks = [lightgbm.early_stopping(self.early_stopping_rounds, verbose=False)]
        if "eval_X" in inspect.signature(self.model.fit).parameters:  # LightGBM >= 4.6 renamed eval_set
            self.model.fit(x, y, eval_X=(eval_set[0],), eval_y=(eval_set[1],), callbacks=callbacks)
        else:
            self.model.fit(x, y, eval_set=[eval_set], callbacks=callbacks)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_


@REGISTRY.models.register(
    "logreg", "logistic regression on flattened band-DE features (scikit-learn)", tags=("sklearn",)
)
def logistic_regression(c: float = 1.0, max_iter: int = 2000, seed: int = 0) -> SklearnBaseline:
    """L2-regularised logistic regression (inverse strength ``c``) after per-feature standardisation."""
    if c <= 0:
        raise ConfigError(f"model.params.c must be > 0, got {c}")

    def make():
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))

    return SklearnBaseline("logreg", make)


@REGISTRY.models.register(
    "lightgbm", "LightGBM on flattened band-DE features, early stopping on validation", tags=("sklearn",)
)
def lightgbm_baseline(
    num_leaves: int = 31,
    learning_rate: float = 0.05,
    n_estimators: int = 500,
    early_stopping_rounds: int = 30,
    min_child_samples: int = 20,
    threads: int = 1,
    seed: int = 0,
) -> SklearnBaseline:
    """LightGBM classifier on ``threads`` OpenMP threads (0: LightGBM's default, all cores).

    One thread by default: the fold-sized problems are small, and on a shared machine LightGBM's
    spinning OpenMP threads slowed a 2,800-window fit from 7 s (1 thread) to 145 s (2 threads).
    """

    def make():
        return _LightGBMEarlyStopping(
            early_stopping_rounds,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            min_child_samples=min_child_samples,
            n_jobs=threads or None,
            random_state=seed,
            verbose=-1,
        )

    return SklearnBaseline("lightgbm", make, uses_validation=True)


def distance_adjacency(positions: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Gaussian-kernel adjacency ``exp(-d_ij^2 / (2 sigma^2))`` of electrode positions ``[C, 3]``
    (zero diagonal); ``sigma`` defaults to the median inter-electrode distance."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.isfinite(positions).all():
        raise DataError(f"electrode positions must be a finite [C, 3] array, got shape {positions.shape}")
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    off_diagonal = distances[~np.eye(len(positions), dtype=bool)]
    sigma = float(np.median(off_diagonal)) if sigma is None and off_diagonal.size else (sigma or 1.0)
    adjacency = np.exp(-(distances**2) / (2 * sigma**2))
    np.fill_diagonal(adjacency, 0.0)
    return adjacency


@REGISTRY.models.register(
    "dgcnn", "DGCNN: learnable-adjacency Chebyshev graph convolution (Song et al., 2018)"
)
class DGCNN(nn.Module):
    """Dynamical graph CNN on ``[B, C, n_bands]`` DE features.

    Args:
        n_channels: electrodes ``C``.
        num_classes: output classes.
        n_bands: features per electrode.
        positions: electrode positions ``[C, 3]`` (from the montage) that initialise the adjacency;
            without them every pair of electrodes starts equally connected.
        order: Chebyshev order ``K`` (terms ``T_0 .. T_{K-1}``).
        hidden: graph-convolution output features per electrode.
        dropout: before the fully connected head.
    """

    def __init__(
        self,
        n_channels: int,
        num_classes: int = 2,
        n_bands: int = 4,
        positions: Any = None,
        order: int = 2,
        hidden: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if order < 1:
            raise ConfigError(f"model.params.order must be >= 1, got {order}")
        if hidden < 1:
            raise ConfigError(f"model.params.hidden must be >= 1, got {hidden}")
        self.n_channels, self.n_bands, self.order = n_channels, n_bands, order
        if positions is not None and np.asarray(positions).shape[0] != n_channels:
            raise DataError(
                f"DGCNN: {np.asarray(positions).shape[0]} electrode positions for {n_channels} channels"
            )
        initial = (
            distance_adjacency(positions)
            if positions is not None
            else np.ones((n_channels, n_channels)) - np.eye(n_channels)
        )
        self.adjacency = nn.Parameter(torch.as_tensor(initial, dtype=torch.float32))
        self.input_norm = nn.BatchNorm1d(n_channels * n_bands)
        self.theta = nn.Parameter(torch.empty(order, n_bands, hidden))
        nn.init.xavier_uniform_(self.theta.view(order * n_bands, hidden))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_channels * hidden, num_classes)

    def scaled_laplacian(self) -> Tensor:
        """``L~ = 2 L / lambda_max - I`` with ``lambda_max = 2``: ``-D^-1/2 A D^-1/2`` of the
        non-negative, symmetrised adjacency."""
        a = torch.relu(self.adjacency)
        a = (a + a.T) / 2
        degree = a.sum(1).clamp_min(1e-6)
        inv_sqrt = degree.rsqrt()
        return -(inv_sqrt[:, None] * a * inv_sqrt[None, :])

    def chebyshev_terms(self) -> Tensor:
        """``[K, C, C]``: ``T_0 = I``, ``T_1 = L~``, ``T_k = 2 L~ T_{k-1} - T_{k-2}``."""
        laplacian = self.scaled_laplacian()
        terms = [torch.eye(self.n_channels, device=laplacian.device, dtype=laplacian.dtype)]
        if self.order > 1:
            terms.append(laplacian)
        for _ in range(2, self.order):
            terms.append(2 * laplacian @ terms[-1] - terms[-2])
        return torch.stack(terms)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.n_channels or x.shape[2] != self.n_bands:
            raise DataError(
                f"DGCNN input has shape {tuple(x.shape)}, expected [batch, {self.n_channels}, {self.n_bands}]"
            )
        b = x.shape[0]
        x = self.input_norm(x.reshape(b, -1)).view(b, self.n_channels, self.n_bands)
        propagated = torch.einsum("kij,bjf->bkif", self.chebyshev_terms(), x)  # [B, K, C, F]
        out = torch.relu(torch.einsum("bkif,kfh->bih", propagated, self.theta) + self.bias)
        return self.head(self.dropout(out.flatten(1)))
