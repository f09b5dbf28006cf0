"""Evaluation protocols: grouped folds never split a trial (property tests over random layouts),
every window is tested once, the pooled protocol leaks and says so, bad names are config errors."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from interplay.core.errors import ConfigError, DataError
from interplay.eeg.data.base import WindowFeatures
from interplay.eeg.protocols import (
    PROTOCOLS,
    Fold,
    LeakError,
    LeakWarning,
    check_no_leak,
    leave_one_subject_out,
    make_folds,
    pooled_window_folds,
    subject_dependent_folds,
    validation_split,
)


class _Info(dict):
    """Stands in for mne.Info: protocols read only the bookkeeping arrays."""


def random_layout(rng: np.random.Generator, n_classes: int = 2, min_trials: int = 6):
    """Random subjects x sessions x trials with 1-8 windows each, windows shuffled in order, and a
    label per trial (the same for all its windows)."""
    subjects, sessions, trials, labels = [], [], [], []
    for subject in range(rng.integers(2, 6)):
        n_sessions = rng.integers(1, 3)
        for session in range(n_sessions):
            n_trials = rng.integers(min_trials, min_trials + 8)
            trial_labels = rng.permutation(np.arange(n_trials) % n_classes)  # every class present
            for trial in range(n_trials):
                n_windows = rng.integers(1, 9)
                subjects += [subject] * n_windows
                sessions += [session] * n_windows
                trials += [trial] * n_windows
                labels += [trial_labels[trial]] * n_windows
    order = rng.permutation(len(subjects))  # windows of a trial need not be contiguous
    subjects, sessions, trials, labels = (np.asarray(a)[order] for a in (subjects, sessions, trials, labels))
    keys = np.stack([subjects, sessions, trials], 1)
    groups = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
    n = len(subjects)
    features = WindowFeatures(
        dataset="synthetic",
        features=rng.standard_normal((n, 2, 4)),
        bands=("theta", "alpha", "beta", "gamma"),
        info=_Info(ch_names=["Fz", "Cz"]),
        subjects=subjects,
        sessions=sessions,
        trials=trials,
        groups=groups,
        start=np.zeros(n),
        ratings={"valence": labels.astype(float)},
    )
    return features, labels


def min_trials_per_subject(features: WindowFeatures) -> int:
    return min(len(np.unique(features.groups[features.subjects == s])) for s in np.unique(features.subjects))


def test_subject_dependent_folds_never_split_a_trial_and_test_each_window_once():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        features, labels = random_layout(rng, n_classes=int(rng.integers(2, 4)))
        n_folds = int(rng.integers(2, min(6, min_trials_per_subject(features)) + 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # unstratified fallback on small classes
            folds = subject_dependent_folds(
                features, n_folds=n_folds, seed=seed, labels=labels if seed % 2 else None
            )
        assert len(folds) == n_folds * len(np.unique(features.subjects))
        for subject in np.unique(features.subjects):
            own = np.flatnonzero(features.subjects == subject)
            subject_folds = [f for f in folds if f.subject == subject]
            tested = np.concatenate([f.test for f in subject_folds])
            np.testing.assert_array_equal(np.sort(tested), own)  # each window of the subject exactly once
            for fold in subject_folds:
                check_no_leak(features, fold)
                assert len(fold.test) > 0
                assert (features.subjects[fold.train] == subject).all()  # trained on the same subject
                np.testing.assert_array_equal(np.sort(np.concatenate([fold.train, fold.test])), own)


def test_stratified_folds_keep_every_class_in_every_test_fold():
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        features, labels = random_layout(rng, n_classes=2, min_trials=12)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # 6+ trials per class per subject: no fallback
            folds = subject_dependent_folds(features, n_folds=3, seed=seed, labels=labels)
        for fold in folds:
            assert set(labels[fold.test]) == {0, 1}, fold.name


def test_subject_dependent_falls_back_to_grouped_folds_with_a_clear_warning(caplog):
    features, labels = random_layout(np.random.default_rng(7), n_classes=2, min_trials=10)
    # one trial of class 1 per subject: too few to stratify over 5 folds
    rare = labels.copy()
    for subject in np.unique(features.subjects):
        own = features.subjects == subject
        keep = features.groups[own][0]
        rare[own] = (features.groups[own] == keep).astype(int)
    with pytest.warns(UserWarning, match="not stratified"), caplog.at_level(logging.WARNING):
        folds = subject_dependent_folds(features, n_folds=5, labels=rare)
    assert "not stratified" in caplog.text
    for fold in folds:
        check_no_leak(features, fold)


def test_subject_dependent_rejects_too_many_folds_and_inconsistent_labels():
    features, labels = random_layout(np.random.default_rng(8))
    n = min_trials_per_subject(features)
    with pytest.raises(ConfigError, match=r"evaluation\.n_folds.*only \d+ trials"):
        subject_dependent_folds(features, n_folds=n + 1)
    with pytest.raises(ConfigError, match=r"evaluation\.n_folds must be an integer >= 2"):
        subject_dependent_folds(features, n_folds=1)
    mixed = labels.copy()
    mixed[np.flatnonzero(features.groups == features.groups[0])[0]] += 1
    if (features.groups == features.groups[0]).sum() == 1:  # make sure the trial has 2+ windows
        pytest.skip("first trial has a single window")
    with pytest.raises(DataError, match="different labels"):
        subject_dependent_folds(features, n_folds=2, labels=mixed)
    with pytest.raises(DataError, match="one per window"):
        subject_dependent_folds(features, n_folds=2, labels=labels[:-1])


def test_leave_one_subject_out_tests_every_window_once():
    for seed in range(20):
        features, _ = random_layout(np.random.default_rng(200 + seed))
        folds = leave_one_subject_out(features)
        assert [f.subject for f in folds] == list(np.unique(features.subjects))
        tested = np.concatenate([f.test for f in folds])
        np.testing.assert_array_equal(np.sort(tested), np.arange(len(features)))
        for fold in folds:
            check_no_leak(features, fold)
            assert set(features.subjects[fold.test]) == {fold.subject}
            assert fold.subject not in set(features.subjects[fold.train])
    single = features.select(features.subjects == features.subjects[0])
    with pytest.raises(ConfigError, match="at least 2 subjects"):
        leave_one_subject_out(single)


def test_pooled_windows_mix_trials_and_warn(caplog):
    features, _ = random_layout(np.random.default_rng(9), min_trials=10)
    with pytest.warns(LeakWarning, match="inflated"), caplog.at_level(logging.WARNING):
        folds = pooled_window_folds(features, n_folds=5, seed=0)
    assert "inflated" in caplog.text
    assert len(folds) == 5
    np.testing.assert_array_equal(np.sort(np.concatenate([f.test for f in folds])), np.arange(len(features)))
    leaking = 0
    for fold in folds:
        assert fold.subject is None
        try:
            check_no_leak(features, fold)
        except LeakError:
            leaking += 1
    assert leaking == 5  # every pooled fold shares trials between train and test
    with pytest.warns(LeakWarning):
        assert len(make_folds("pooled_windows", features)) == 5  # default k = 5


def test_make_folds_dispatches_and_rejects_unknown_protocols():
    features, labels = random_layout(np.random.default_rng(10), min_trials=20)
    n_subjects = len(np.unique(features.subjects))
    assert len(make_folds("subject_dependent", features, labels=labels)) == 10 * n_subjects  # default k = 10
    assert len(make_folds("subject_dependent", features, n_folds=3)) == 3 * n_subjects
    assert len(make_folds("loso", features)) == n_subjects
    with pytest.raises(ConfigError, match=r"evaluation\.protocol.*subject_dependent, loso, pooled_windows"):
        make_folds("kfold", features)
    assert PROTOCOLS == ("subject_dependent", "loso", "pooled_windows")


def test_folds_are_reproducible_by_seed():
    features, labels = random_layout(np.random.default_rng(11), min_trials=10)
    a = make_folds("subject_dependent", features, n_folds=3, seed=1, labels=labels)
    b = make_folds("subject_dependent", features, n_folds=3, seed=1, labels=labels)
    c = make_folds("subject_dependent", features, n_folds=3, seed=2, labels=labels)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_validation_split_moves_whole_trials():
    for seed in range(20):
        rng = np.random.default_rng(300 + seed)
        features, labels = random_layout(rng, min_trials=10)
        fold = make_folds("subject_dependent", features, n_folds=2, seed=seed)[0]
        train, val = validation_split(features, fold.train, fraction=0.4, seed=seed, labels=labels)
        np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.sort(fold.train))
        assert not set(features.groups[train]) & set(features.groups[val])
        trials, first = np.unique(features.groups[fold.train], return_index=True)
        n_val = max(1, round(0.4 * len(trials)))
        assert len(np.unique(features.groups[val])) == n_val
        if np.bincount(labels[fold.train][first]).min() >= 2 and n_val >= 2:
            assert set(labels[val]) == {0, 1}  # stratified: both classes validated
    # windows at random for the pooled protocol
    train, val = validation_split(features, np.arange(len(features)), fraction=0.1, grouped=False)
    assert len(val) == round(0.1 * len(features)) and len(np.intersect1d(train, val)) == 0
    for fraction in (0, 1, 1.5, True):
        with pytest.raises(ConfigError, match=r"evaluation\.validation_fraction"):
            validation_split(features, fold.train, fraction=fraction)
    with pytest.raises(DataError, match="window positions"):
        validation_split(features, np.array([len(features)]))


def test_check_no_leak_catches_a_split_trial():
    features, _ = random_layout(np.random.default_rng(12))
    windows = np.flatnonzero(features.groups == features.groups[np.argmax(np.bincount(features.groups))])
    others = np.setdiff1d(np.arange(len(features)), windows)
    check_no_leak(features, Fold("clean", others, windows))
    with pytest.raises(LeakError, match="trials have windows in both"):
        check_no_leak(features, Fold("split", np.concatenate([others, windows[:1]]), windows[1:]))
    with pytest.raises(LeakError, match="windows are in both"):
        check_no_leak(features, Fold("same", np.arange(len(features)), windows))
    with pytest.raises(DataError, match="window positions"):
        check_no_leak(features, Fold("bad", np.array([-1]), windows))
