"""SEED (Zheng & Lu, "Investigating Critical Frequency Bands and Channels for EEG-based Emotion
Recognition with Deep Neural Networks", IEEE TAMD 2015): reader of the ``Preprocessed_EEG`` folder
and a generator of fake files in the same format.

``Preprocessed_EEG`` holds one MATLAB v5 file per subject and session, named
``<subject>_<yyyymmdd>.mat`` (15 subjects x 3 sessions, e.g. ``1_20131027.mat``). Each holds the 15
film-clip trials as ``<prefix>_eeg1`` ... ``<prefix>_eeg15``, where ``<prefix>`` is the subject's
initials (``djc_eeg1``): arrays ``(62 channels, n samples)`` at 200 Hz (about 4 minutes; ``n``
differs per clip) in :data:`~interplay.eeg.data.montage.SEED_CHANNELS` order. ``label.mat`` holds
``label`` ``(1, 15)``: each clip's emotion, -1 negative, 0 neutral, 1 positive, the same for every
session.

:func:`read_seed` returns :class:`~interplay.eeg.data.base.EEGRecordings` (``dataset="seed"``) with
no baselines (SEED records none), subjects numbered as the files are (1-15), sessions ``0, 1, 2`` in
the order of the recording dates of each subject, trials ``0..14`` and ratings ``{"emotion": label}``.
The files carry no sampling rate; it is SEED's documented 200 Hz.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from interplay.core.data import atomic_save
from interplay.core.errors import DataError
from interplay.eeg.data.base import EEGRecordings
from interplay.eeg.data.montage import SEED_CHANNELS, make_info

__all__ = ["SEED_LABELS", "SEED_SFREQ", "load_mat", "read_seed", "seed_files", "write_fake_seed"]

SEED_SFREQ = 200.0
#: label.mat of SEED: the emotion of clips 1-15 (-1 negative, 0 neutral, 1 positive).
SEED_LABELS: tuple[int, ...] = (1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1)
_FIRST_DATE = datetime.date(2013, 4, 1)  # of the fake files
_FILE_PATTERN = re.compile(r"^(\d+)_(\d{8})\.mat$")
_TRIAL_KEY = re.compile(r"^([A-Za-z0-9]+)_eeg(\d+)$")


def load_mat(path: Path, **kwargs: Any) -> dict[str, Any]:
    """``scipy.io.loadmat(path)`` with errors a user can act on (MATLAB v7.3 files, corrupt files)."""
    try:
        major, _ = scipy.io.matlab.matfile_version(str(path))
    except Exception as error:  # scipy raises ValueError / MatReadError / TypeError on non-MAT bytes
        raise DataError(f"{path}: not a MATLAB .mat file ({type(error).__name__}: {error})") from None
    if major == 2:
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) file, which this reader cannot parse (it needs h5py and the "
            "published files are MATLAB v5); re-save it in MATLAB with save(name, '-v7')"
        )
    try:
        return scipy.io.loadmat(str(path), **kwargs)
    except Exception as error:
        raise DataError(f"{path}: unreadable .mat file ({type(error).__name__}: {error})") from None


def seed_files(
    root: str | os.PathLike[str], subjects: Sequence[int] | None = None
) -> list[tuple[int, int, Path]]:
    """``(subject, session, path)`` of the ``<subject>_<date>.mat`` files, sessions ordered by date."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"SEED directory not found: {root} (expected Preprocessed_EEG with 1_20131027.mat ...)"
        )
    by_subject: dict[int, list[tuple[str, Path]]] = {}
    for path in root.iterdir():
        match = _FILE_PATTERN.match(path.name)
        if match and path.is_file():
            by_subject.setdefault(int(match.group(1)), []).append((match.group(2), path))
    if not by_subject:
        raise DataError(f"{root}: no SEED files <subject>_<yyyymmdd>.mat")
    if subjects is not None:
        missing = [int(s) for s in subjects if int(s) not in by_subject]
        if missing:
            raise DataError(f"{root}: no SEED files for subject(s) {', '.join(map(str, missing))}")
        by_subject = {int(s): by_subject[int(s)] for s in subjects}
    return [
        (subject, session, path)
        for subject in sorted(by_subject)
        for session, (_, path) in enumerate(sorted(by_subject[subject]))
    ]


def _read_labels(root: Path) -> np.ndarray:
    path = root / "label.mat"
    if not path.is_file():
        raise DataError(f"{root}: label.mat not found (SEED's clip labels, key 'label')")
    content = load_mat(path)
    if "label" not in content:
        keys = [k for k in content if not k.startswith("__")]
        raise DataError(f"{path}: missing key 'label' (has {', '.join(keys) or 'no variables'})")
    labels = np.asarray(content["label"])
    if not np.issubdtype(labels.dtype, np.number) or labels.ndim > 2 or 1 not in labels.shape[:2]:
        raise DataError(
            f"{path}: field 'label' has shape {labels.shape} ({labels.dtype}), expected (1, 15) numbers"
        )
    labels = labels.reshape(-1).astype(np.float64)
    bad = sorted({float(v) for v in labels if v not in (-1.0, 0.0, 1.0)})
    if bad:
        raise DataError(f"{path}: field 'label' has values {bad}, expected only -1, 0, 1")
    return labels


def _read_session(path: Path, subject: int, session: int, labels: np.ndarray) -> EEGRecordings:
    content = load_mat(path)
    prefixes = {m.group(1) for key in content if (m := _TRIAL_KEY.match(key))}
    if not prefixes:
        raise DataError(f"{path}: no trial arrays '<prefix>_eeg1' ... '<prefix>_eeg{len(labels)}'")
    if len(prefixes) > 1:
        raise DataError(f"{path}: trial arrays with several prefixes {sorted(prefixes)}, expected one")
    prefix = prefixes.pop()
    signals = []
    for k in range(1, len(labels) + 1):
        key = f"{prefix}_eeg{k}"
        if key not in content:
            raise DataError(f"{path}: missing key {key!r} (label.mat lists {len(labels)} trials)")
        array = np.asarray(content[key])
        if (
            array.ndim != 2
            or array.shape[0] != len(SEED_CHANNELS)
            or not np.issubdtype(array.dtype, np.number)
        ):
            raise DataError(
                f"{path}: field {key!r} has shape {array.shape}, "
                f"expected ({len(SEED_CHANNELS)} channels, n_samples)"
            )
        if not np.isfinite(array).all():
            raise DataError(f"{path}: field {key!r} contains NaN or inf")
        signals.append(array)
    n = len(signals)
    return EEGRecordings(
        dataset="seed",
        info=make_info(SEED_CHANNELS, SEED_SFREQ),
        signals=signals,
        baselines=[None] * n,
        subjects=np.full(n, subject),
        sessions=np.full(n, session),
        trials=np.arange(n),
        ratings={"emotion": labels},
        sources=[str(path)] * n,
    )


def read_seed(root: str | os.PathLike[str], subjects: Sequence[int] | None = None) -> EEGRecordings:
    """Trials of SEED's ``Preprocessed_EEG`` folder ``root`` (all subjects, or ``subjects``: 1-15)."""
    files = seed_files(root, subjects)
    labels = _read_labels(Path(root).expanduser())
    return EEGRecordings.concatenate([_read_session(path, s, k, labels) for s, k, path in files])


def write_fake_seed(
    root: str | os.PathLike[str],
    n_subjects: int = 2,
    n_sessions: int = 1,
    n_trials: int = 15,
    seconds: float = 4.0,
    seed: int = 0,
) -> Path:
    """Write ``label.mat`` and ``<subject>_<date>.mat`` in SEED's ``Preprocessed_EEG``; return ``root``.

    Trials are random µV-scale noise of about ``seconds`` (each a little longer than the last, as
    SEED's clips differ in length); labels cycle through SEED's label sequence. Dates are made up,
    increasing with the session. Deterministic in ``seed``; each file is written atomically.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = np.array([SEED_LABELS[k % len(SEED_LABELS)] for k in range(n_trials)], dtype=np.int16)
    _savemat(root / "label.mat", {"label": labels.reshape(1, -1)})
    for subject in range(1, n_subjects + 1):
        prefix = "".join(chr(ord("a") + int(c)) for c in rng.integers(0, 26, size=3))
        for session in range(n_sessions):
            date = (_FIRST_DATE + datetime.timedelta(days=subject + 30 * session)).strftime("%Y%m%d")
            arrays = {
                f"{prefix}_eeg{k + 1}": rng.normal(
                    0.0, 10.0, (len(SEED_CHANNELS), round(seconds * SEED_SFREQ) + 7 * k)
                )
                for k in range(n_trials)
            }
            _savemat(root / f"{subject}_{date}.mat", arrays)
    return root


def _savemat(path: Path, variables: dict[str, Any]) -> None:
    atomic_save(lambda temp: scipy.io.savemat(str(temp), variables, format="5"), path)
