"""Evaluation protocols (train / test splits) for EEG emotion recognition on window features.

Windows cut from one trial overlap (RBTransformer: 512-sample windows every 117 samples, 77%
overlap) and share the trial's stimulus, label and slow drifts, so a window and its neighbour are
near-duplicates. The protocols here differ in what they keep apart:

* ``subject_dependent`` (:func:`subject_dependent_folds`): for each subject, k-fold over that
  subject's *trials* (``WindowFeatures.groups``), stratified by the trial's label when labels are
  given (``StratifiedGroupKFold``); a model is trained and tested on one subject, and no trial has
  windows on both sides.
* ``loso`` (:func:`leave_one_subject_out`): train on all subjects but one, test on that one.
* ``pooled_windows`` (:func:`pooled_window_folds`): the RBTransformer reference's protocol, all
  windows of all subjects shuffled into k folds. Nearly every test window has overlapping
  neighbours from its own trial in the training set, so accuracy measures recall of trials, not
  generalisation to new ones; it is kept only to reproduce the paper's figures and it warns
  (:class:`LeakWarning` and a logged warning) every time it is used.

:func:`validation_split` carves whole trials out of a fold's training part for model selection
(the test part is scored once, at the end), and :func:`check_no_leak` verifies a fold.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, train_test_split

from interplay.core.errors import ConfigError, DataError, InterplayError
from interplay.eeg.data.base import WindowFeatures

__all__ = [
    "PROTOCOLS",
    "Fold",
    "LeakError",
    "LeakWarning",
    "check_no_leak",
    "leave_one_subject_out",
    "make_folds",
    "pooled_window_folds",
    "subject_dependent_folds",
    "validation_split",
]

logger = logging.getLogger(__name__)

PROTOCOLS = ("subject_dependent", "loso", "pooled_windows")
DEFAULT_FOLDS = {"subject_dependent": 10, "pooled_windows": 5}

_LEAK_MESSAGE = (
    "evaluation.protocol = pooled_windows shuffles all windows of all subjects into folds: windows of one "
    "trial (overlapping, same stimulus and label) land on both sides of every split, so the test score is "
    "inflated and does not measure generalisation to new trials; use subject_dependent or loso for honest "
    "figures"
)


class LeakWarning(UserWarning):
    """A protocol puts windows of one trial in both the training and the test part."""


class LeakError(InterplayError):
    """A fold that must keep trials apart has windows of one trial on both sides."""


@dataclass
class Fold:
    """One train / test split: window indices into a :class:`WindowFeatures`.

    ``subject`` is the subject the fold belongs to (subject-dependent: the subject trained and
    tested on; LOSO: the held-out subject) or ``None`` (pooled).
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    subject: int | None = None


def _check_n_folds(n_folds, key: str = "evaluation.n_folds") -> int:
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ConfigError(f"{key} must be an integer >= 2, got {n_folds!r}")
    return int(n_folds)


def _window_labels(features: WindowFeatures, labels) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (len(features),):
        raise DataError(
            f"{features.dataset}: labels have shape {labels.shape}, "
            f"expected one per window ({len(features)},)"
        )
    return labels


def _trial_labels(
    features: WindowFeatures, labels: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Unique trials (groups) among the windows ``index`` and each one's label; every window of a
    trial must carry the same label (labels are per trial)."""
    groups = features.groups[index]
    trials, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    trial_label = labels[index][first]
    mismatch = labels[index] != trial_label[inverse.reshape(-1)]
    if mismatch.any():
        bad = int(groups[np.argmax(mismatch)])
        raise DataError(
            f"{features.dataset}: windows of trial group {bad} carry different labels; "
            "labels must be per trial"
        )
    return trials, trial_label


def _shuffled_group_kfold(groups: np.ndarray, n_folds: int, seed: int):
    """(train, test) positions of a k-fold over the unique ``groups`` in random order: every group
    wholly on one side. (``GroupKFold(shuffle=True)`` needs scikit-learn >= 1.6.)"""
    trials, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    for train_trials, _ in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(trials):
        in_train = np.isin(inverse, train_trials)
        yield np.flatnonzero(in_train), np.flatnonzero(~in_train)


def subject_dependent_folds(
    features: WindowFeatures,
    n_folds: int = 10,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> list[Fold]:
    """For each subject, ``n_folds`` folds over that subject's trials (training on the same subject).

    With ``labels`` (one per window, constant within a trial) the folds are stratified by the trial's
    label (:class:`~sklearn.model_selection.StratifiedGroupKFold`). Without labels, or when a class
    has fewer trials than folds for a subject (then with a warning), the subject gets a shuffled
    k-fold over its trials, grouped but not stratified. No trial has windows on both sides, and each
    of a subject's windows is tested exactly once.
    """
    n_folds = _check_n_folds(n_folds)
    labels = _window_labels(features, labels)
    folds = []
    for subject in np.unique(features.subjects):
        index = np.flatnonzero(features.subjects == subject)
        groups = features.groups[index]
        n_trials = len(np.unique(groups))
        if n_trials < n_folds:
            raise ConfigError(
                f"evaluation.n_folds = {n_folds}: subject {subject} of {features.dataset} has only "
                f"{n_trials} trials, and each fold needs at least one test trial"
            )
        splits = None
        if labels is not None:
            _, trial_label = _trial_labels(features, labels, index)
            classes, counts = np.unique(trial_label, return_counts=True)
            if counts.min() >= n_folds:
                splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                splits = splitter.split(index, labels[index], groups)
            else:
                message = (
                    f"{features.dataset}: subject {subject} has only {counts.min()} trials of class "
                    f"{classes[np.argmin(counts)]} for {n_folds} folds; its folds are grouped by trial but "
                    "not stratified by label"
                )
                warnings.warn(message, UserWarning, stacklevel=2)
                logger.warning(message)
        if splits is None:
            splits = _shuffled_group_kfold(groups, n_folds, seed)
        for k, (train, test) in enumerate(splits):
            folds.append(Fold(f"subject{subject}-fold{k}", index[train], index[test], int(subject)))
    return folds


def leave_one_subject_out(features: WindowFeatures) -> list[Fold]:
    """One fold per subject: test on all its windows, train on every other subject's."""
    subjects = np.unique(features.subjects)
    if len(subjects) < 2:
        raise ConfigError(
            f"evaluation.protocol = loso needs at least 2 subjects, {features.dataset} has {len(subjects)}"
        )
    folds = []
    for subject in subjects:
        held_out = features.subjects == subject
        folds.append(
            Fold(f"loso-subject{subject}", np.flatnonzero(~held_out), np.flatnonzero(held_out), int(subject))
        )
    return folds


def pooled_window_folds(features: WindowFeatures, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """The RBTransformer reference's protocol: every window of every subject shuffled into ``n_folds``.

    Leaks (see the module docstring): warns with :class:`LeakWarning` and logs a warning.
    """
    n_folds = _check_n_folds(n_folds)
    if len(features) < n_folds:
        raise ConfigError(
            f"evaluation.n_folds = {n_folds} exceeds the {len(features)} windows of {features.dataset}"
        )
    warnings.warn(_LEAK_MESSAGE, LeakWarning, stacklevel=2)
    logger.warning(_LEAK_MESSAGE)
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [
        Fold(f"pooled-fold{k}", train, test, None)
        for k, (train, test) in enumerate(splitter.split(np.arange(len(features))))
    ]


def make_folds(
    protocol: str,
    features: WindowFeatures,
    *,
    n_folds: int | None = None,
    seed: int = 0,
    labels: np.ndarray | None = None,
) -> list[Fold]:
    """Folds of ``protocol`` (one of :data:`PROTOCOLS`); ``n_folds=None`` takes the protocol's default
    (subject-dependent 10, pooled 5; LOSO has one fold per subject and ignores it)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"evaluation.protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if protocol == "loso":
        return leave_one_subject_out(features)
    n_folds = DEFAULT_FOLDS[protocol] if n_folds is None else n_folds
    if protocol == "subject_dependent":
        return subject_dependent_folds(features, n_folds=n_folds, seed=seed, labels=labels)
    return pooled_window_folds(features, n_folds=n_folds, seed=seed)


def validation_split(
    features: WindowFeatures,
    train_index: np.ndarray,
    fraction: float = 0.1,
    seed: int = 0,
    grouped: bool = True,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training windows into ``(train, validation)`` for model selection.

    ``grouped=True`` moves whole trials (``round(fraction * n_trials)``, at least one, at least one
    left for training), stratified by the trial's label when ``labels`` are given and every class
    has two or more trials; no trial has windows in both parts. ``grouped=False`` draws windows at
    random and is meant only for the ``pooled_windows`` protocol, whose folds already mix trials.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(
            f"evaluation.validation_fraction must be between 0 and 1 (exclusive), got {fraction!r}"
        )
    train_index = np.asarray(train_index, dtype=np.int64)
    if train_index.ndim != 1 or (
        train_index.size and (train_index.min() < 0 or train_index.max() >= len(features))
    ):
        raise DataError(
            f"{features.dataset}: training indices must be window positions in 0..{len(features) - 1}"
        )
    labels = _window_labels(features, labels)
    if not grouped:
        rng = np.random.default_rng(seed)
        if len(train_index) < 2:
            raise DataError(f"{features.dataset}: {len(train_index)} training windows cannot be split")
        n_val = min(max(1, round(fraction * len(train_index))), len(train_index) - 1)
        chosen = np.zeros(len(train_index), dtype=bool)
        chosen[rng.permutation(len(train_index))[:n_val]] = True
        return train_index[~chosen], train_index[chosen]

    if labels is None:
        trials = np.unique(features.groups[train_index])
        trial_label = np.zeros(len(trials), dtype=np.int64)
    else:
        trials, trial_label = _trial_labels(features, labels, train_index)
    if len(trials) < 2:
        raise DataError(
            f"{features.dataset}: the training part has {len(trials)} trial(s); "
            "a grouped validation split needs 2"
        )
    n_val = min(max(1, round(fraction * len(trials))), len(trials) - 1)
    n_classes = len(np.unique(trial_label))
    stratify = (
        labels is not None
        and np.unique(trial_label, return_counts=True)[1].min() >= 2
        and n_classes <= n_val <= len(trials) - n_classes
    )
    _, val_trials = train_test_split(
        trials, test_size=n_val, random_state=seed, stratify=trial_label if stratify else None
    )
    in_val = np.isin(features.groups[train_index], val_trials)
    return train_index[~in_val], train_index[in_val]


def check_no_leak(features: WindowFeatures, fold: Fold) -> None:
    """Raise :class:`LeakError` if a trial has windows in both ``fold.train`` and ``fold.test`` (or a
    window is in both); :class:`DataError` if an index is not a window of ``features``."""
    for part in ("train", "test"):
        index = np.asarray(getattr(fold, part))
        if index.ndim != 1 or (index.size and (index.min() < 0 or index.max() >= len(features))):
            raise DataError(
                f"fold {fold.name}: {part} indices must be window positions in 0..{len(features) - 1}"
            )
    shared_windows = np.intersect1d(fold.train, fold.test)
    if shared_windows.size:
        raise LeakError(f"fold {fold.name}: {shared_windows.size} windows are in both train and test")
    shared = np.intersect1d(features.groups[fold.train], features.groups[fold.test])
    if shared.size:
        raise LeakError(
            f"fold {fold.name}: {shared.size} trials have windows in both train and test "
            f"(e.g. group {int(shared[0])}); the test score would be inflated"
        )
