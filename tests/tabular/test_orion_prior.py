"""Synthetic prior tables: shapes, classes, SCM mix, determinism by seed, tree functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interplay.tabular.icl import PriorConfig, PriorSampler, make_table
from interplay.tabular.icl.prior import quantise, random_trees

SMALL = PriorConfig(min_features=2, max_features=12, min_rows=32, max_rows=80, max_classes=10)


def test_batch_shapes_and_classes():
    sampler = PriorSampler(SMALL, batch_size=6, seed=3)
    for step in range(5):
        batch = sampler.batch(step)
        b, n, f = batch["x"].shape
        assert (
            b == 6 and SMALL.min_rows <= n <= SMALL.max_rows and SMALL.min_features <= f <= SMALL.max_features
        )
        assert batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64
        assert batch["y"].shape == (6, n)
        assert 2 <= batch["train_size"] <= n - 1
        assert (
            round(SMALL.min_train_fraction * n) - 1
            <= batch["train_size"]
            <= round(SMALL.max_train_fraction * n) + 1
        )
        assert torch.isfinite(batch["x"]).all()
        for i in range(b):
            labels = batch["y"][i]
            k = int(batch["n_classes"][i])
            assert 2 <= k <= SMALL.max_classes
            # classes are 0..k-1 and every one occurs
            assert set(labels.tolist()) == set(range(k))


def test_same_seed_same_batches_other_seed_other_batches():
    a = PriorSampler(SMALL, batch_size=3, seed=7)
    b = PriorSampler(SMALL, batch_size=3, seed=7)
    c = PriorSampler(SMALL, batch_size=3, seed=8)
    for step in (0, 5):
        first, second = a.batch(step), b.batch(step)
        assert torch.equal(first["x"], second["x"]) and torch.equal(first["y"], second["y"])
        assert first["train_size"] == second["train_size"] and first["kinds"] == second["kinds"]
    # batches depend on the step alone: out of order gives the same batch
    assert torch.equal(a.batch(5)["x"], PriorSampler(SMALL, batch_size=3, seed=7).batch(5)["x"])

    def differ(u, v):
        return u.shape != v.shape or not torch.equal(u, v)

    assert differ(a.batch(0)["x"], c.batch(0)["x"])
    assert differ(a.batch(0)["x"], a.batch(1)["x"])


def test_scm_mix_follows_the_weights():
    rng = np.random.default_rng(0)
    config = PriorConfig(min_features=2, max_features=6, min_rows=16, max_rows=16)
    kinds = [make_table(rng, config, 16, 4, 3).kind for _ in range(300)]
    tree_share = kinds.count("tree") / len(kinds)
    assert abs(tree_share - 0.3) < 0.08  # binomial sd at n=300: 0.026
    only_trees = PriorConfig(mlp_weight=0.0, tree_weight=1.0)
    assert {make_table(rng, only_trees, 16, 3, 2).kind for _ in range(10)} == {"tree"}


def test_features_carry_signal_about_the_class():
    # a random forest fitted on the training rows beats the majority class on the query rows
    from sklearn.ensemble import RandomForestClassifier

    sampler = PriorSampler(
        PriorConfig(min_features=4, max_features=8, min_rows=200, max_rows=200), batch_size=8
    )
    gains = []
    for step in range(3):
        batch = sampler.batch(step)
        t = batch["train_size"]
        for x, y in zip(batch["x"].numpy(), batch["y"].numpy()):
            forest = RandomForestClassifier(20, random_state=0, n_jobs=1).fit(x[:t], y[:t])
            majority = np.bincount(y[:t]).argmax()
            gains.append((forest.predict(x[t:]) == y[t:]).mean() - (y[t:] == majority).mean())
    assert np.mean(gains) > 0.05  # measured 0.10 (synthetic priors are noisy by design)


def test_random_tree_of_depth_one_is_a_stump():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    out = random_trees(np.random.default_rng(5), x, n_outputs=1, n_trees=1, depth=1)
    # a stump: exactly two values, split on one feature at one threshold
    values = np.unique(out[:, 0])
    assert len(values) <= 2
    low = out[:, 0] == values[0]
    separable = [
        (x[low, j].max() <= x[~low, j].min()) or (x[~low, j].max() <= x[low, j].min()) for j in range(3)
    ]
    assert any(separable)


def test_quantise_keeps_every_class_and_drops_empty_ones():
    rng = np.random.default_rng(0)
    labels = quantise(rng, rng.normal(size=500), 4)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    few = quantise(rng, np.repeat([0.0, 1.0], 5), 6)  # a two-valued target cannot make 6 classes
    assert set(np.unique(few)) == set(range(len(np.unique(few)))) and len(np.unique(few)) <= 2


def test_bad_prior_settings_raise():
    with pytest.raises(ValueError, match="min_features"):
        PriorConfig(min_features=5, max_features=3)
    with pytest.raises(ValueError, match="min_classes"):
        PriorConfig(min_classes=1)
    with pytest.raises(ValueError, match="SCM weights"):
        PriorConfig(mlp_weight=0.0, tree_weight=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        PriorSampler(batch_size=0)


def test_curriculum_widens_feature_and_class_ranges():
    config = PriorConfig(min_features=2, max_features=12, min_classes=2, max_classes=10, curriculum_steps=10)
    sampler = PriorSampler(config, batch_size=4, seed=0)
    assert sampler.ranges(0) == (3, 3)  # (step + 1) / 10 of the way: 2 + round(1.0), 2 + round(0.8)
    assert sampler.ranges(4) == (7, 6)
    assert sampler.ranges(9) == sampler.ranges(500) == (12, 10)
    assert PriorSampler(SMALL).ranges(0) == (SMALL.max_features, SMALL.max_classes)  # no curriculum
    for step in range(3):
        batch = sampler.batch(step)
        max_features, max_classes = sampler.ranges(step)
        assert batch["x"].shape[2] <= max_features and int(batch["n_classes"].max()) <= max_classes
    with pytest.raises(ValueError, match="curriculum_steps"):
        PriorConfig(curriculum_steps=-1)
