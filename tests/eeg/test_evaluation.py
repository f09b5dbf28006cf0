"""Cross-validation runner: folds never leak, SMOTE touches training windows only, metrics are the
mean of per-fold scores, and RBTransformer runs write attention plots."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from interplay.core.errors import ConfigError, DataError, UnknownNameError
from interplay.core.registry import DomainRegistry
from interplay.core.train import DataConfig, ExperimentConfig, ModelConfig, OptimizerConfig, TaskConfig
from interplay.core.train.config import TrainerConfig
from interplay.eeg.data.base import WindowFeatures
from interplay.eeg.data.montage import make_info
from interplay.eeg.evaluation import EEGDataModule, classification_metrics, cross_validate, oversample_smote
from interplay.eeg.protocols import check_no_leak
from interplay.eeg.registry import REGISTRY
from interplay.eeg.tasks import EmotionClassificationTask

CHANNELS = ["Fp1", "F3", "C3", "Cz", "P4", "O2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def hand_features(n_subjects=3, n_trials=10, windows=5, seed=0, imbalance=False) -> WindowFeatures:
    """Windows whose band features carry the trial's valence class plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject in range(1, n_subjects + 1):
        for trial in range(n_trials):
            high = trial % 4 != 0 if imbalance else trial % 2 == 0
            rating = 7.0 if high else 3.0
            centre = rng.normal(size=(len(CHANNELS), 4)) * 0.3 + (0.8 if high else -0.8)
            for w in range(windows):
                rows.append((subject, trial, w * 64, rating, centre + rng.normal(size=centre.shape) * 0.5))
    subjects, trials, start, ratings, x = (np.array(v) for v in zip(*rows))
    groups = np.unique(np.stack([subjects, trials], 1), axis=0, return_inverse=True)[1].reshape(-1)
    return WindowFeatures(
        dataset="deap",
        features=x,
        bands=("theta", "alpha", "beta", "gamma"),
        info=make_info(CHANNELS, 128.0),
        subjects=subjects,
        sessions=np.zeros(len(x)),
        trials=trials,
        groups=groups,
        start=start,
        ratings={"valence": ratings, "arousal": 10 - ratings},
    )


def test_smote_balances_the_classes_and_keeps_the_real_windows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 3, 4)).astype(np.float32)
    y = np.array([0] * 10 + [1] * 3)
    x_res, y_res = oversample_smote(x, y, seed=0)
    assert np.bincount(y_res).tolist() == [10, 10]
    np.testing.assert_array_equal(x_res[:13], x)  # imblearn keeps the originals first
    # synthetic minority windows lie on segments between minority windows: inside their bounding box
    minority = x[y == 1].reshape(3, -1)
    synthetic = x_res[13:].reshape(7, -1)
    assert (synthetic >= minority.min(0) - 1e-6).all() and (synthetic <= minority.max(0) + 1e-6).all()
    with pytest.warns(RuntimeWarning, match="SMOTE skipped"):
        same_x, same_y = oversample_smote(x[:11], y[:11])
    assert len(same_y) == 11


def test_smote_touches_only_the_training_fold():
    features = hand_features(imbalance=True)
    common = dict(target="valence", n_classes=2, protocol="subject_dependent", n_folds=3, fold=1)
    plain = EEGDataModule(features, smote=False, **common)
    oversampled = EEGDataModule(features, smote=True, **common)
    for split in ("val", "test"):
        np.testing.assert_array_equal(oversampled.arrays(split)[0], plain.arrays(split)[0])
        np.testing.assert_array_equal(oversampled.arrays(split)[1], plain.arrays(split)[1])
    x_plain, y_plain = plain.arrays("train")
    x_over, y_over = oversampled.arrays("train")
    counts = np.bincount(y_plain)
    assert counts[0] < counts[1]
    assert np.bincount(y_over).tolist() == [counts[1], counts[1]]
    np.testing.assert_array_equal(x_over[: len(x_plain)], x_plain)


@pytest.mark.parametrize("protocol", ["subject_dependent", "loso"])
def test_folds_and_validation_split_never_share_a_trial(protocol):
    features = hand_features()
    module = EEGDataModule(features, protocol=protocol, n_folds=5)
    assert len(module.folds) == (15 if protocol == "subject_dependent" else 3)
    tested = np.zeros(len(features), dtype=int)
    for i, fold in enumerate(module.folds):
        check_no_leak(features, fold)
        index = EEGDataModule(features, protocol=protocol, n_folds=5, fold=i).index
        parts = {name: set(features.groups[idx]) for name, idx in index.items()}
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["test"]
        assert set(index["train"]) | set(index["val"]) == set(fold.train)
        tested[index["test"]] += 1
    assert (tested == 1).all()  # every window is tested exactly once


def test_features_are_standardised_with_training_statistics_only():
    features = hand_features()
    module = EEGDataModule(features, protocol="loso", fold=0)
    x_train, _ = module.arrays("train")
    np.testing.assert_allclose(x_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(0), 1.0, atol=1e-4)
    raw = features.features
    train = raw[module.index["train"]]
    expected_test = (raw[module.index["test"]] - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(module.arrays("test")[0], expected_test, atol=1e-5)


def test_bad_protocol_settings_name_the_config_key():
    features = hand_features(n_trials=4)
    with pytest.raises(ConfigError, match="data.params.protocol"):
        EEGDataModule(features, protocol="kfold")
    with pytest.raises(ConfigError, match="data.params.n_folds"):
        EEGDataModule(features, protocol="subject_dependent", n_folds=6)
    with pytest.raises(ConfigError, match="data.params.fold"):
        EEGDataModule(features, protocol="loso", fold=3)
    with pytest.raises(ConfigError, match="data.target"):
        EEGDataModule(features, target="liking")
    bad = hand_features(n_trials=4)
    bad.features[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        EEGDataModule(bad, protocol="loso")


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    metrics = classification_metrics(y, pred, 3)
    assert metrics["test/acc"] == pytest.approx(accuracy_score(y, pred))
    assert metrics["test/f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))


# -- the runner ------------------------------------------------------------------------------------------
def registry_with(features: WindowFeatures) -> DomainRegistry:
    """The eeg models and task, plus a dataset serving ``features``."""
    registry = DomainRegistry("eeg")
    for entry in REGISTRY.models:
        registry.models.register(entry.name, entry.description)(entry.factory)
    registry.tasks.register("emotion", "emotion task")(EmotionClassificationTask)

    def windows(
        batch_size: int = 64,
        seed: int = 0,
        fold: int = 0,
        protocol: str = "loso",
        n_folds: int | None = None,
        smote: bool = False,
    ) -> EEGDataModule:
        return EEGDataModule(
            features,
            protocol=protocol,
            n_folds=n_folds,
            fold=fold,
            smote=smote,
            batch_size=batch_size,
            seed=seed,
        )

    registry.datasets.register("windows", "hand-built windows")(windows)
    return registry


def experiment(tmp_path, model: str, params: dict, data: dict, epochs: int = 1) -> ExperimentConfig:
    return ExperimentConfig(
        domain="eeg",
        model=ModelConfig(model, params),
        data=DataConfig("windows", batch_size=32, params=data),
        task=TaskConfig("emotion"),
        optimizer=OptimizerConfig(lr=3e-3, weight_decay=1e-3, scheduler="cosine", min_lr=1e-6),
        trainer=TrainerConfig(
            max_epochs=epochs,
            progress_bar=False,
            tensorboard=False,
            monitor="val/f1_macro",
            monitor_mode="max",
            accelerator="cpu",
        ),
        run_root=str(tmp_path / "runs"),
    )


def test_logistic_regression_scores_are_the_per_fold_scores_averaged(tmp_path):
    features = hand_features()
    registry = registry_with(features)
    cfg = experiment(tmp_path, "logreg", {"c": 0.5}, {"protocol": "loso"})
    result = cross_validate(cfg, registry, progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["n_folds"] == 3 and len(metrics["folds"]) == 3
    expected = []
    for fold in range(3):  # the same fit by hand on the same standardised arrays
        module = EEGDataModule(features, protocol="loso", fold=fold)
        x, y = module.arrays("train")
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000, random_state=0))
        clf.fit(x.reshape(len(x), -1), y)
        x_test, y_test = module.arrays("test")
        expected.append(accuracy_score(y_test, clf.predict(x_test.reshape(len(x_test), -1))))
        assert metrics["folds"][fold]["test/acc"] == pytest.approx(expected[-1])
        assert metrics["folds"][fold]["subject"] == fold + 1
    assert metrics["test"]["test/acc"] == pytest.approx(np.mean(expected))
    assert metrics["test"]["test/acc_std"] == pytest.approx(np.std(expected))
    assert "test/f1_macro" in metrics["test"] and metrics["protocol"] == "loso"
    assert metrics["test"]["test/acc"] > 0.9  # the classes are separable by construction


def test_rbtransformer_run_writes_fold_checkpoints_metrics_and_attention_plots(tmp_path):
    features = hand_features(n_subjects=2, n_trials=6, windows=4)
    registry = registry_with(features)
    params = {"dim": 16, "depth": 2, "heads": 2, "head_dim": 8, "ffn_dim": 16}
    cfg = experiment(tmp_path, "rbtransformer", params, {"protocol": "loso"}, epochs=2)
    result = cross_validate(cfg, registry, progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"test/acc", "test/acc_std", "test/f1_macro", "test/f1_macro_std"}
    fold_acc = [f["test/acc"] for f in metrics["folds"]]
    assert metrics["test"]["test/acc"] == pytest.approx(np.mean(fold_acc))
    assert metrics["epochs"] == 2 and metrics["attention"]["block"] == "last"
    fold_dirs = sorted((result.run_dir / "folds").iterdir())
    assert len(fold_dirs) == 2
    for fold_dir in fold_dirs:
        fold_metrics = json.loads((fold_dir / "metrics.json").read_text())
        assert "test/acc" in fold_metrics["test"]
        assert list((fold_dir / "checkpoints").glob("best-*.ckpt"))
        assert not (fold_dir / "checkpoints" / "last.ckpt").exists()
    attention = json.loads((result.run_dir / "attention.json").read_text())
    matrix = np.array(attention["matrix"])
    assert attention["ch_names"] == CHANNELS and matrix.shape == (6, 6)
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-4)
    for name in ("attention_heatmap.png", "attention_topomap.png"):
        assert (result.run_dir / "plots" / name).stat().st_size > 1000


def test_pooled_windows_warns_that_it_leaks_and_uses_window_level_validation():
    features = hand_features(n_subjects=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = EEGDataModule(features, protocol="pooled_windows", n_folds=5)
    assert any("leak" in str(w.message).lower() or "inflated" in str(w.message) for w in caught)
    groups = features.groups
    # pooled folds put windows of a trial on both sides: the leak the honest protocols avoid
    assert set(groups[module.index["train"]]) & set(groups[module.index["test"]])


def test_unknown_model_fails_before_any_run_directory_is_made(tmp_path):
    registry = registry_with(hand_features(n_subjects=2, n_trials=4))
    cfg = experiment(tmp_path, "rbtransformr", {}, {"protocol": "loso"})
    with pytest.raises(UnknownNameError, match="did you mean 'rbtransformer'"):
        cross_validate(cfg, registry, progress=False)
    assert not (tmp_path / "runs").exists()


def test_lightgbm_fits_with_early_stopping_on_the_validation_windows():
    from interplay.eeg.models import lightgbm_baseline

    module = EEGDataModule(hand_features(), protocol="loso", fold=0)
    model = lightgbm_baseline(n_estimators=200, early_stopping_rounds=5, min_child_samples=5)
    x_val, y_val = module.arrays("val")
    # validation labels unrelated to the features: its log-loss worsens from the first trees on
    model.fit(*module.arrays("train"), x_val, np.random.default_rng(0).permutation(y_val))
    assert 1 <= model.estimator.model.best_iteration_ < 50
    model.fit(*module.arrays("train"), x_val, y_val)
    x_test, y_test = module.arrays("test")
    assert (model.predict(x_test) == y_test).mean() > 0.9
    np.testing.assert_allclose(model.predict_proba(x_test).sum(1), 1.0)
    with pytest.raises(DataError, match="single class"):
        model.fit(x_test, np.zeros(len(x_test), dtype=int))
