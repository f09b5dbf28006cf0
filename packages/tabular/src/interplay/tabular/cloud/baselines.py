"""Baselines of CloudFormer (Shahbazinia et al., arXiv:2509.03394, 2025, Table 4): linear
regression, a decision tree, random forest and LightGBM on time-aggregated features, and an LSTM.

The tabular baselines see each run as one vector: for every metric (after the same per-time-step
normalisation as CloudFormer) its mean, standard deviation and 10 / 50 / 90 % quantiles over the
run's seconds, plus ``log T`` (206 x 5 + 1 = 1,031 features). They are fitted on the training runs
of a partition; LightGBM stops early on the validation runs; the others have no selection step.
Predictions are clipped to [0, 1], the range of P (``clip=False`` keeps the raw regression output,
which is how a linear model can land at the paper's ~49 pp).

The LSTM reads the normalised series with ``pack_padded_sequence`` (padding never enters the
recurrence) and maps its last hidden state through a linear layer and a sigmoid; it trains with
CloudFormer's task and protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from interplay.tabular.cloud.data import N_METRICS
from interplay.tabular.registry import REGISTRY

QUANTILES = (0.1, 0.5, 0.9)


def aggregate_features(metrics: np.ndarray) -> np.ndarray:
    """``[S * 5 + 1]`` time-aggregated features of one normalised run ``[T, S]``."""
    metrics = np.asarray(metrics, dtype=np.float64)
    quantiles = np.quantile(metrics, QUANTILES, axis=0)  # [3, S]
    return np.concatenate(
        [metrics.mean(0), metrics.std(0), quantiles.reshape(-1), [np.log(metrics.shape[0])]]
    ).astype(np.float32)


def feature_names(n_metrics: int = N_METRICS) -> list[str]:
    names = [f"mean_{j}" for j in range(n_metrics)] + [f"std_{j}" for j in range(n_metrics)]
    for q in QUANTILES:
        names += [f"q{int(q * 100)}_{j}" for j in range(n_metrics)]
    return [*names, "log_length"]


def aggregate_runs(runs: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([aggregate_features(m) for m in runs])


class AggregatedRegressor:
    """A scikit-learn style regressor on :func:`aggregate_features` (one row per run).

    ``fit(x, y, x_val=None, y_val=None)`` / ``predict(x)``, with ``x`` the aggregated features.
    """

    uses_validation = False

    def __init__(self, estimator: Any, *, clip: bool = True, name: str = "") -> None:
        self.estimator = estimator
        self.clip = clip
        self.name = name or type(estimator).__name__

    def fit(
        self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None
    ):
        self.estimator.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        prediction = np.asarray(self.estimator.predict(x), dtype=np.float64)
        return np.clip(prediction, 0.0, 1.0) if self.clip else prediction

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.estimator!r}, clip={self.clip})"


class LightGBMRegressor(AggregatedRegressor):
    """LightGBM with early stopping on the validation runs (``rounds`` is the ceiling)."""

    uses_validation = True

    def __init__(self, *, clip: bool = True, early_stopping: int = 50, **params: Any) -> None:
        import lightgbm

        super().__init__(lightgbm.LGBMRegressor(**params), clip=clip, name="lightgbm")
        self.early_stopping = early_stopping

    def fit(self, x, y, x_val=None, y_val=None):
        import lightgbm

        if x_val is not None and len(x_val):
            self.estimator.fit(
                x,
                y,
                eval_X=(x_val,),
                eval_y=(y_val,),
                eval_metric="l1",
                callbacks=[lightgbm.early_stopping(self.early_stopping, verbose=False)],
            )
        else:
            self.estimator.fit(x, y)
        return self


@REGISTRY.models.register(
    "cloud-linear", "CloudFormer baseline: linear regression on time-aggregated metrics"
)
def cloud_linear(clip: bool = True) -> AggregatedRegressor:
    from sklearn.linear_model import LinearRegression

    return AggregatedRegressor(LinearRegression(), clip=clip, name="linear")


@REGISTRY.models.register("cloud-tree", "CloudFormer baseline: decision tree on time-aggregated metrics")
def cloud_tree(max_depth: int | None = None, min_samples_leaf: int = 2, seed: int = 0, clip: bool = True):
    from sklearn.tree import DecisionTreeRegressor

    tree = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_samples_leaf, random_state=seed)
    return AggregatedRegressor(tree, clip=clip, name="tree")


@REGISTRY.models.register("cloud-rf", "CloudFormer baseline: random forest on time-aggregated metrics")
def cloud_rf(
    n_estimators: int = 300,
    max_features: float | str | None = 0.3,
    min_samples_leaf: int = 1,
    n_jobs: int | None = None,
    seed: int = 0,
    clip: bool = True,
) -> AggregatedRegressor:
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(
        n_estimators=n_estimators,
        max_features=max_features,
        min_samples_leaf=min_samples_leaf,
        n_jobs=n_jobs,
        random_state=seed,
    )
    return AggregatedRegressor(forest, clip=clip, name="rf")


@REGISTRY.models.register("cloud-lightgbm", "CloudFormer baseline: LightGBM on time-aggregated metrics")
def cloud_lightgbm(
    n_estimators: int = 1000,
    learning_rate: float = 0.03,
    num_leaves: int = 15,
    min_child_samples: int = 5,
    colsample_bytree: float = 0.3,
    early_stopping: int = 50,
    n_jobs: int | None = None,
    seed: int = 0,
    clip: bool = True,
) -> LightGBMRegressor:
    return LightGBMRegressor(
        clip=clip,
        early_stopping=early_stopping,
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        min_child_samples=min_child_samples,
        colsample_bytree=colsample_bytree,
        n_jobs=n_jobs,
        random_state=seed,
        verbose=-1,
    )


class RunLSTM(nn.Module):
    """LSTM over the seconds of a run; ``forward(metrics [B, T, S], mask [B, T]) -> P_hat [B]``."""

    def __init__(
        self,
        n_metrics: int = N_METRICS,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.1,
        target_mean: float | None = None,
    ) -> None:
        super().__init__()
        self.n_metrics = n_metrics
        self.lstm = nn.LSTM(
            n_metrics, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden, 1)
        if target_mean is not None:  # as CloudFormer: start at the training mean
            from interplay.tabular.cloud.model import initial_output_bias

            initial_output_bias(self.head, target_mean)

    def forward(self, metrics: Tensor, mask: Tensor | None = None) -> Tensor:
        if metrics.dim() != 3 or metrics.shape[-1] != self.n_metrics:
            raise ValueError(
                f"expected metrics of shape [B, T, {self.n_metrics}], got {tuple(metrics.shape)}"
            )
        if mask is None:
            lengths = torch.full((metrics.shape[0],), metrics.shape[1], dtype=torch.long)
        else:
            lengths = mask.sum(1).cpu().clamp_min(1)
        packed = pack_padded_sequence(metrics, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return torch.sigmoid(self.head(hidden[-1])).squeeze(-1)


@REGISTRY.models.register(
    "cloud-lstm", "CloudFormer baseline: LSTM over the per-second metrics", tags=("cloud",)
)
def cloud_lstm(
    n_metrics: int = N_METRICS,
    hidden: int = 64,
    layers: int = 2,
    dropout: float = 0.1,
    target_mean: float | None = None,
) -> RunLSTM:
    return RunLSTM(
        n_metrics=n_metrics, hidden=hidden, layers=layers, dropout=dropout, target_mean=target_mean
    )
