"""Synthetic classification tables for pre-training tabular in-context learners.

TabICL (Qu et al., ICML 2025, "prior" section and appendix) and Orion-MSP (Bouadi et al., 2025)
pre-train on tables drawn from structural causal models (SCMs), as TabPFN (Hollmann et al., 2023):

* **MLP-SCM** (weight 0.7): root causes ``z ~ N(mu, sigma)`` or ``U(a, b)`` pass through a random MLP
  (random depth, width, sparse Gaussian weights, a random activation per layer, Gaussian noise at
  every node). Features are the values of randomly chosen nodes; the target is another node.
* **Tree-SCM** (weight 0.3): the same graph with every layer a sum of random decision trees
  (gradient-boosted-tree style: random split features, thresholds drawn from the data, Gaussian leaf
  values, shrinkage), which gives axis-aligned, piecewise-constant dependencies.

Classes: the target node is cut at ``C - 1`` thresholds placed at the quantiles of random class
proportions (Dirichlet), and the labels are permuted, so class indices carry no order. Some features
are made categorical (rounded to a few levels). Every table has ``2..max_classes`` classes (classes
that end up empty are dropped and the labels renumbered) and ``min..max_features`` features.
An optional simple-to-hard curriculum (``curriculum_steps``) widens the feature and class ranges
linearly from their minima over the first batches (TabICL's pre-training also grows its tables in
stages).

Tables are drawn by a :class:`PriorSampler` whose batch for step ``k`` depends only on ``(seed, k)``,
so a resumed pre-training run sees exactly the batches an uninterrupted one would. The tables of one
batch share the number of rows, features and training rows (the split point); their classes differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = [
    "PriorConfig",
    "PriorSampler",
    "PriorTable",
    "make_table",
    "mlp_scm",
    "tree_scm",
]

ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda h: np.maximum(h, 0.0),
    "leaky_relu": lambda h: np.where(h > 0, h, 0.1 * h),
    "sigmoid": lambda h: 1.0 / (1.0 + np.exp(-np.clip(h, -30, 30))),
    "sin": np.sin,
    "abs": np.abs,
    "square": lambda h: np.clip(h, -10, 10) ** 2,
    "identity": lambda h: h,
}


@dataclass
class PriorConfig:
    """Ranges of the synthetic tables (inclusive); ``mlp_weight`` / ``tree_weight``: mix of SCM kinds."""

    min_features: int = 2
    max_features: int = 100
    min_classes: int = 2
    max_classes: int = 10
    min_rows: int = 64
    max_rows: int = 512
    min_train_fraction: float = 0.5
    max_train_fraction: float = 0.9
    mlp_weight: float = 0.7
    tree_weight: float = 0.3
    categorical_probability: float = 0.1
    # simple-to-hard curriculum: over the first ``curriculum_steps`` batches the upper ends of the
    # feature and class ranges grow linearly from ``min_features`` / ``min_classes`` to their maxima
    # (0: no curriculum; the full ranges from the first step)
    curriculum_steps: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.curriculum_steps < 0:
            problems.append(f"curriculum_steps >= 0 ({self.curriculum_steps})")
        if not 1 <= self.min_features <= self.max_features:
            problems.append(f"1 <= min_features ({self.min_features}) <= max_features ({self.max_features})")
        if not 2 <= self.min_classes <= self.max_classes:
            problems.append(f"2 <= min_classes ({self.min_classes}) <= max_classes ({self.max_classes})")
        if not 4 <= self.min_rows <= self.max_rows:
            problems.append(f"4 <= min_rows ({self.min_rows}) <= max_rows ({self.max_rows})")
        if not 0.0 < self.min_train_fraction <= self.max_train_fraction < 1.0:
            problems.append(
                f"0 < min_train_fraction ({self.min_train_fraction}) <= max_train_fraction "
                f"({self.max_train_fraction}) < 1"
            )
        if self.mlp_weight < 0 or self.tree_weight < 0 or self.mlp_weight + self.tree_weight <= 0:
            problems.append(
                f"non-negative SCM weights with a positive sum ({self.mlp_weight}, {self.tree_weight})"
            )
        if problems:
            raise ValueError("invalid prior settings: need " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PriorTable:
    """One synthetic table: ``x [n, F]`` float32, ``y [n]`` int64 in ``0..n_classes-1``."""

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    kind: str


# -- graph values ----------------------------------------------------------------------------------
def _root_causes(rng: np.random.Generator, n_rows: int, n_causes: int) -> np.ndarray:
    if rng.random() < 0.5:
        mean = rng.normal(0.0, 1.0, n_causes)
        std = np.exp(rng.uniform(np.log(0.3), np.log(2.0), n_causes))
        return rng.normal(mean, std, (n_rows, n_causes))
    low = rng.uniform(-2.0, 0.0, n_causes)
    return rng.uniform(low, low + rng.uniform(0.5, 3.0, n_causes), (n_rows, n_causes))


def _noise_std(rng: np.random.Generator, width: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(1e-3), np.log(0.3), width))


def _mlp_nodes(rng: np.random.Generator, causes: np.ndarray, n_layers: int, width: int) -> list[np.ndarray]:
    """Node values of each hidden layer ``[n, width]`` of a random MLP with noise at every node."""
    h, layers = causes, []
    for _ in range(n_layers):
        fan_in = h.shape[1]
        weight = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, width))
        weight *= rng.random((fan_in, width)) < rng.uniform(0.3, 1.0)  # sparse graph: edge dropout
        activation = ACTIVATIONS[rng.choice(list(ACTIVATIONS))]
        h = activation(h @ weight + rng.normal(0.0, 0.1, width))
        h = h + rng.normal(0.0, 1.0, h.shape) * _noise_std(rng, width)
        h = (h - h.mean(0)) / (h.std(0) + 1e-6)  # keep node scales comparable across layers
        layers.append(h)
    return layers


def random_trees(
    rng: np.random.Generator, x: np.ndarray, n_outputs: int, n_trees: int, depth: int
) -> np.ndarray:
    """``[n, n_outputs]``: each output a shrunk sum of ``n_trees`` random trees of ``depth`` on ``x``."""
    n_rows, n_inputs = x.shape
    internal, leaves = 2**depth - 1, 2**depth
    split_feature = rng.integers(0, n_inputs, (n_outputs, n_trees, internal))
    # thresholds taken at the values of random rows, so every split cuts the data somewhere
    split_value = x[rng.integers(0, n_rows, (n_outputs, n_trees, internal)), split_feature]
    leaf_value = rng.normal(0.0, 1.0, (n_outputs, n_trees, leaves))
    node = np.zeros((n_rows, n_outputs, n_trees), dtype=np.int64)
    out_idx = np.arange(n_outputs)[None, :, None]
    tree_idx = np.arange(n_trees)[None, None, :]
    row_idx = np.arange(n_rows)[:, None, None]
    for _ in range(depth):
        feature = split_feature[out_idx, tree_idx, node]
        right = x[row_idx, feature] > split_value[out_idx, tree_idx, node]
        node = 2 * node + 1 + right
    values = leaf_value[out_idx, tree_idx, node - internal]
    shrinkage = rng.uniform(0.3, 1.0)
    return shrinkage * values.sum(-1)


def _tree_nodes(rng: np.random.Generator, causes: np.ndarray, n_layers: int, width: int) -> list[np.ndarray]:
    h, layers = causes, []
    for _ in range(n_layers):
        h = random_trees(rng, h, width, n_trees=int(rng.integers(1, 5)), depth=int(rng.integers(2, 6)))
        h = h + rng.normal(0.0, 1.0, h.shape) * _noise_std(rng, width)
        h = (h - h.mean(0)) / (h.std(0) + 1e-6)
        layers.append(h)
    return layers


def _features_and_target(
    rng: np.random.Generator, causes: np.ndarray, layers: list[np.ndarray], n_features: int
) -> tuple[np.ndarray, np.ndarray]:
    """Target: a node of the last layer; features: other nodes (causes included)."""
    target_index = int(rng.integers(0, layers[-1].shape[1]))
    target = layers[-1][:, target_index]
    pool = np.concatenate([causes, *layers], axis=1)
    target_column = causes.shape[1] + sum(h.shape[1] for h in layers[:-1]) + target_index
    candidates = np.delete(np.arange(pool.shape[1]), target_column)
    picks = rng.choice(candidates, size=n_features, replace=len(candidates) < n_features)
    return pool[:, picks], target


def _scm(rng: np.random.Generator, n_rows: int, n_features: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    n_causes = int(rng.integers(1, max(2, n_features // 2) + 1))
    n_layers = int(rng.integers(1, 4))
    width = int(rng.integers(max(4, n_features // 2 + 1), n_features + 8))
    causes = _root_causes(rng, n_rows, n_causes)
    nodes = _mlp_nodes if kind == "mlp" else _tree_nodes
    return _features_and_target(rng, causes, nodes(rng, causes, n_layers, width), n_features)


def mlp_scm(rng: np.random.Generator, n_rows: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[n, F]`` and a continuous target ``[n]`` from a random MLP structural causal model."""
    return _scm(rng, n_rows, n_features, "mlp")


def tree_scm(rng: np.random.Generator, n_rows: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and a continuous target from a tree-based structural causal model."""
    return _scm(rng, n_rows, n_features, "tree")


def quantise(rng: np.random.Generator, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Classes ``0..C'-1`` from a continuous target: thresholds at random-proportion quantiles, labels
    permuted, empty classes dropped."""
    proportions = rng.dirichlet(np.full(n_classes, 2.0))
    thresholds = np.quantile(target, np.cumsum(proportions)[:-1])
    labels = np.searchsorted(thresholds, target, side="right")
    labels = rng.permutation(n_classes)[labels]
    _, compact = np.unique(labels, return_inverse=True)
    return compact.astype(np.int64)


def _make_categorical(rng: np.random.Generator, x: np.ndarray, probability: float) -> np.ndarray:
    for j in np.flatnonzero(rng.random(x.shape[1]) < probability):
        levels = int(rng.integers(2, 8))
        edges = np.quantile(x[:, j], np.linspace(0, 1, levels + 1)[1:-1])
        x[:, j] = rng.permutation(levels)[np.searchsorted(edges, x[:, j])]
    return x


def make_table(
    rng: np.random.Generator,
    config: PriorConfig,
    n_rows: int,
    n_features: int,
    n_classes: int,
    kind: str | None = None,
    max_attempts: int = 20,
) -> PriorTable:
    """One table of ``n_rows x n_features`` with at most ``n_classes`` (at least 2) classes."""
    for _ in range(max_attempts):
        if kind is None:
            weights = np.array([config.mlp_weight, config.tree_weight])
            table_kind = ("mlp", "tree")[int(rng.choice(2, p=weights / weights.sum()))]
        else:
            table_kind = kind
        x, target = _scm(rng, n_rows, n_features, table_kind)
        if np.ptp(target) < 1e-9 or not np.isfinite(x).all():
            continue
        y = quantise(rng, target, n_classes)
        n_found = int(y.max()) + 1
        if n_found < 2:
            continue
        x = _make_categorical(rng, x.copy(), config.categorical_probability)
        x = x * np.exp(rng.normal(0.0, 1.0, n_features)) + rng.normal(0.0, 1.0, n_features)
        return PriorTable(x.astype(np.float32), y, n_found, table_kind)
    raise RuntimeError(f"could not draw a usable {kind or 'prior'} table in {max_attempts} attempts")


class PriorSampler:
    """Batches of synthetic tables; batch ``step`` depends only on ``(seed, step)``.

    ``batch(step)`` returns ``{"x": [B, n, F] float32, "y": [B, n] int64, "train_size": int,
    "n_classes": [B] int64, "kinds": list[str]}``: the first ``train_size`` rows of every table are the
    context, the rest are scored.
    """

    def __init__(self, config: PriorConfig | None = None, *, batch_size: int = 8, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config = config or PriorConfig()
        self.batch_size = batch_size
        self.seed = seed

    def ranges(self, step: int) -> tuple[int, int]:
        """Upper ends of the feature and class ranges at ``step`` (the curriculum; see PriorConfig)."""
        cfg = self.config
        if cfg.curriculum_steps <= 0:
            return cfg.max_features, cfg.max_classes
        progress = min(1.0, (step + 1) / cfg.curriculum_steps)
        return (
            cfg.min_features + round(progress * (cfg.max_features - cfg.min_features)),
            cfg.min_classes + round(progress * (cfg.max_classes - cfg.min_classes)),
        )

    def batch(self, step: int) -> dict:
        cfg = self.config
        rng = np.random.default_rng([self.seed, step])
        max_features, max_classes = self.ranges(step)
        n_rows = int(rng.integers(cfg.min_rows, cfg.max_rows + 1))
        n_features = int(rng.integers(cfg.min_features, max_features + 1))
        fraction = rng.uniform(cfg.min_train_fraction, cfg.max_train_fraction)
        train_size = int(np.clip(round(fraction * n_rows), 2, n_rows - 1))
        tables = []
        for _ in range(self.batch_size):
            n_classes = int(rng.integers(cfg.min_classes, max_classes + 1))
            table = make_table(rng, cfg, n_rows, n_features, n_classes)
            order = rng.permutation(n_rows)  # the split point is random w.r.t. the SCM's draw order
            tables.append(PriorTable(table.x[order], table.y[order], table.n_classes, table.kind))
        return {
            "x": torch.from_numpy(np.stack([t.x for t in tables])),
            "y": torch.from_numpy(np.stack([t.y for t in tables])),
            "train_size": train_size,
            "n_classes": torch.tensor([t.n_classes for t in tables]),
            "kinds": [t.kind for t in tables],
        }

    def __repr__(self) -> str:
        return f"PriorSampler(batch_size={self.batch_size}, seed={self.seed}, {self.config})"
