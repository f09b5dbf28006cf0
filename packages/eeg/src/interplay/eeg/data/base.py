"""The two in-memory forms every EEG reader, feature extractor, protocol and model share.

* :class:`EEGRecordings`: the trials of one dataset as read from disk (one signal array per trial,
  its baseline when the dataset records one, who / which stimulus / which session, the raw
  self-assessment ratings), with an :class:`mne.Info` that carries channel names, the real sampling
  rate and electrode positions (a montage).
* :class:`WindowFeatures`: one row per window (``[n_windows, n_channels, n_bands]`` band features)
  with the bookkeeping that honest splits need: every window keeps the subject, session and trial
  it came from, and ``groups`` names its trial uniquely across the whole dataset.

:func:`make_targets` turns ratings into class labels as the RBTransformer paper does (DEAP binary
``>= 5``, 9-class ``int(r) - 1``; DREAMER binary ``>= 3``, 5-class; SEED ``label + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interplay.core.errors import ConfigError, DataError

__all__ = ["BANDS", "EEGRecordings", "WindowFeatures", "make_targets"]

#: Frequency bands (Hz) of the band differential entropy, in the paper's order.
BANDS: dict[str, tuple[float, float]] = {
    "theta": (4.0, 8.0),
    "alpha": (8.0, 14.0),
    "beta": (14.0, 31.0),
    "gamma": (31.0, 49.0),
}

#: rating scale and binary threshold per dataset (SEED has classes, not ratings)
RATING_SCALES: dict[str, tuple[float, float, float]] = {
    "deap": (1.0, 9.0, 5.0),
    "dreamer": (1.0, 5.0, 3.0),
    "synthetic": (1.0, 9.0, 5.0),  # written in DEAP's format
}


@dataclass
class EEGRecordings:
    """Trials of one dataset.

    ``signals[i]`` is ``[n_channels, n_samples_i]`` (float, in the units the file stores; trials may
    differ in length), ``baselines[i]`` the trial's pre-stimulus baseline ``[n_channels, n_b]`` or
    ``None``. ``info`` lists exactly the channels of ``signals`` (in that order) at the real
    sampling rate, with a montage set. ``subjects`` / ``sessions`` / ``trials`` are ``[n_trials]``
    integers (``trials`` numbers the stimulus within a subject's session); ``ratings`` maps a target
    name (``valence``, ``arousal``, ``dominance``, ``liking`` or SEED's ``emotion``) to ``[n_trials]``
    floats; ``sources[i]`` is the file trial ``i`` was read from (for error messages).
    """

    dataset: str
    info: Any  # mne.Info
    signals: list[np.ndarray]
    baselines: list[np.ndarray | None]
    subjects: np.ndarray
    sessions: np.ndarray
    trials: np.ndarray
    ratings: dict[str, np.ndarray]
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subjects = np.asarray(self.subjects, dtype=np.int64)
        self.sessions = np.asarray(self.sessions, dtype=np.int64)
        self.trials = np.asarray(self.trials, dtype=np.int64)
        self.ratings = {k: np.asarray(v, dtype=np.float64) for k, v in self.ratings.items()}
        if not self.sources:
            self.sources = [self.dataset] * len(self.signals)
        self.validate()

    @property
    def n_trials(self) -> int:
        return len(self.signals)

    @property
    def sfreq(self) -> float:
        return float(self.info["sfreq"])

    @property
    def ch_names(self) -> list[str]:
        return list(self.info["ch_names"])

    @property
    def groups(self) -> np.ndarray:
        """One integer per trial, unique for each (subject, session, trial) in the dataset."""
        keys = np.stack([self.subjects, self.sessions, self.trials], 1)
        return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

    def validate(self) -> None:
        n, channels = len(self.signals), len(self.info["ch_names"])
        for name in ("baselines", "sources"):
            if len(getattr(self, name)) != n:
                raise DataError(
                    f"{self.dataset}: {name} has {len(getattr(self, name))} entries for {n} trials"
                )
        for name in ("subjects", "sessions", "trials", *(f"ratings[{k}]" for k in self.ratings)):
            values = self.ratings[name[8:-1]] if name.startswith("ratings") else getattr(self, name)
            if values.shape != (n,):
                raise DataError(f"{self.dataset}: {name} has shape {values.shape}, expected ({n},)")
        for i, (signal, baseline) in enumerate(zip(self.signals, self.baselines)):
            for what, array in (("signal", signal), ("baseline", baseline)):
                if array is None:
                    continue
                if array.ndim != 2 or array.shape[0] != channels:
                    raise DataError(
                        f"{self.sources[i]}: trial {i} {what} has shape {array.shape}, "
                        f"expected ({channels}, n_samples)"
                    )
                if not np.isfinite(array).all():
                    raise DataError(f"{self.sources[i]}: trial {i} {what} contains NaN or inf")

    def select(self, index: Sequence[int] | np.ndarray) -> EEGRecordings:
        """The trials at ``index`` (integer positions or a boolean mask)."""
        index = np.arange(self.n_trials)[np.asarray(index)]
        return EEGRecordings(
            dataset=self.dataset,
            info=self.info,
            signals=[self.signals[i] for i in index],
            baselines=[self.baselines[i] for i in index],
            subjects=self.subjects[index],
            sessions=self.sessions[index],
            trials=self.trials[index],
            ratings={k: v[index] for k, v in self.ratings.items()},
            sources=[self.sources[i] for i in index],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[EEGRecordings]) -> EEGRecordings:
        """Trials of several readers' outputs (same dataset and channels) in one object."""
        if not parts:
            raise DataError("no EEG recordings to concatenate")
        first = parts[0]
        for part in parts[1:]:
            if part.ch_names != first.ch_names or part.sfreq != first.sfreq:
                raise DataError(
                    f"{part.sources[0] if part.sources else part.dataset}: channels or sampling rate "
                    f"differ from {first.sources[0] if first.sources else first.dataset}"
                )
            if set(part.ratings) != set(first.ratings):
                raise DataError(f"{part.dataset}: ratings {sorted(part.ratings)} != {sorted(first.ratings)}")
        return cls(
            dataset=first.dataset,
            info=first.info,
            signals=[s for p in parts for s in p.signals],
            baselines=[b for p in parts for b in p.baselines],
            subjects=np.concatenate([p.subjects for p in parts]),
            sessions=np.concatenate([p.sessions for p in parts]),
            trials=np.concatenate([p.trials for p in parts]),
            ratings={k: np.concatenate([p.ratings[k] for p in parts]) for k in first.ratings},
            sources=[s for p in parts for s in p.sources],
        )


@dataclass
class WindowFeatures:
    """Per-window features ``[n_windows, n_channels, n_bands]`` and where each window came from.

    ``groups[w]`` is the trial of window ``w`` (unique across the dataset: the value of
    :attr:`EEGRecordings.groups`), ``start[w]`` its first sample within the trial.
    """

    dataset: str
    features: np.ndarray
    bands: tuple[str, ...]
    info: Any  # mne.Info of the channels
    subjects: np.ndarray
    sessions: np.ndarray
    trials: np.ndarray
    groups: np.ndarray
    start: np.ndarray
    ratings: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        n = len(self.features)
        if self.features.ndim != 3 or self.features.shape[2] != len(self.bands):
            raise DataError(
                f"{self.dataset}: features have shape {self.features.shape}, "
                f"expected (n_windows, n_channels, {len(self.bands)})"
            )
        for name in ("subjects", "sessions", "trials", "groups", "start"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
            if getattr(self, name).shape != (n,):
                raise DataError(
                    f"{self.dataset}: {name} has shape {getattr(self, name).shape}, expected ({n},)"
                )
        self.ratings = {k: np.asarray(v, dtype=np.float64) for k, v in self.ratings.items()}

    def __len__(self) -> int:
        return len(self.features)

    @property
    def ch_names(self) -> list[str]:
        return list(self.info["ch_names"])

    def select(self, index: Sequence[int] | np.ndarray) -> WindowFeatures:
        index = np.arange(len(self))[np.asarray(index)]
        return WindowFeatures(
            dataset=self.dataset,
            features=self.features[index],
            bands=self.bands,
            info=self.info,
            subjects=self.subjects[index],
            sessions=self.sessions[index],
            trials=self.trials[index],
            groups=self.groups[index],
            start=self.start[index],
            ratings={k: v[index] for k, v in self.ratings.items()},
        )


def make_targets(dataset: str, ratings: dict[str, np.ndarray], target: str, n_classes: int) -> np.ndarray:
    """Class labels ``[n]`` (int64) from raw ratings, as the RBTransformer paper defines them.

    DEAP-scale ratings (1-9): ``n_classes=2`` -> ``rating >= 5``; ``n_classes=9`` -> ``int(r) - 1``
    (clipped to 0..8). DREAMER (1-5): 2 -> ``rating >= 3``; 5 -> ``int(r) - 1``. SEED: target
    ``emotion`` with 3 classes, ``label + 1``.
    """
    if target not in ratings:
        raise ConfigError(
            f"data.target: {dataset} has no target {target!r} (has {', '.join(sorted(ratings))})"
        )
    values = ratings[target]
    if dataset == "seed" or target == "emotion":
        if n_classes != 3:
            raise ConfigError(f"data.n_classes: SEED's emotion labels have 3 classes, got {n_classes}")
        labels = np.rint(values).astype(np.int64) + 1
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 2:
            raise DataError(f"{dataset}: emotion labels must be in {{-1, 0, 1}}")
        return labels
    if dataset not in RATING_SCALES:
        raise ConfigError(f"data.dataset: no rating scale known for {dataset!r}")
    low, high, threshold = RATING_SCALES[dataset]
    if n_classes == 2:
        return (values >= threshold).astype(np.int64)
    levels = int(high - low + 1)
    if n_classes != levels:
        raise ConfigError(f"data.n_classes: {dataset} ratings support 2 or {levels} classes, got {n_classes}")
    return np.clip(values.astype(np.int64) - 1, 0, levels - 1)
