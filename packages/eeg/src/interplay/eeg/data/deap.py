"""DEAP (Koelstra et al., "DEAP: A Database for Emotion Analysis using Physiological Signals", IEEE
Transactions on Affective Computing 2012): readers for the preprocessed Python files and the raw BDF
recordings, and a generator of fake preprocessed files for tests.

**Preprocessed Python** (``data_preprocessed_python/s01.dat`` ... ``s32.dat``): each file is a
Python 2 pickle (read with ``encoding="latin1"``) of a dict with

* ``data``: ``(40 trials, 40 channels, 8064 samples)`` at 128 Hz; the first 3 s (384 samples) of every
  trial are the pre-trial baseline, the remaining 60 s the music video. Channels 1-32 are EEG in
  :data:`~interplay.eeg.data.montage.DEAP_CHANNELS` order (µV), 33-40 peripheral signals (EOG, EMG,
  GSR, respiration, plethysmograph, temperature), which are not read;
* ``labels``: ``(40, 4)`` self-assessed valence, arousal, dominance, liking on a continuous 1-9 scale.

:func:`read_deap` returns :class:`~interplay.eeg.data.base.EEGRecordings` with
``signals[i] = data[t, :32, 384:]`` and ``baselines[i] = data[t, :32, :384]``. Subjects carry
DEAP's own 1-based participant number (``s07.dat`` -> 7), sessions are 0 (one session each), trials
``0..39`` in file order (DEAP's preprocessed files are in video order, ``Experiment_id - 1``).

**Raw BDF** (``data_original/s01.bdf`` ...: BioSemi, 512 Hz, 48 channels including ``Status``):
:func:`read_deap_bdf` reads one through :func:`mne.io.read_raw_bdf`, picks the 32 DEAP electrodes by
name (in DEAP order), resamples to 128 Hz and sets the montage. :func:`deap_bdf_trials` cuts trials
and their 3 s pre-trial baselines out of a raw recording using the ``Status`` codes documented with
the dataset (``readme.html``):

====  ==========  ===========================================================================
code  duration    meaning
====  ==========  ===========================================================================
1     --          start of experiment / start of the 2-minute baseline / start of a rating screen
2     1 s         video synchronisation screen (before the first trial, around the break, at the end)
3     5 s         fixation cross before a trial
4     60 s        start of music video playback
5     3 s         fixation cross after the video
7     --          end of experiment
====  ==========  ===========================================================================

A trial starts at each code-4 onset and lasts 60 s; its baseline is the 3 s before, which lie in the
code-3 fixation (as in the preprocessed files). BioSemi sets status bits above the 16-bit trigger
word (CMS range, battery); they are masked off. The preprocessed files were also band-passed
4-45 Hz, EOG-cleaned, common-average referenced and reordered to video order; :func:`deap_bdf_trials`
does none of that (trials stay in presentation order and the signal unfiltered).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mne
import numpy as np

from interplay.core.data import atomic_write, require_file
from interplay.core.errors import DataError
from interplay.eeg.data.base import EEGRecordings
from interplay.eeg.data.montage import DEAP_CHANNELS, make_info, make_montage

__all__ = [
    "DEAP_BASELINE_SAMPLES",
    "DEAP_LABELS",
    "DEAP_SFREQ",
    "DEAP_STATUS_CODES",
    "deap_bdf_trials",
    "deap_files",
    "read_deap",
    "read_deap_bdf",
    "write_deap_file",
    "write_fake_deap",
]

DEAP_SFREQ = 128.0
DEAP_BASELINE_SAMPLES = 384  # 3 s at 128 Hz
DEAP_FILE_CHANNELS = 40  # 32 EEG + 8 peripheral
DEAP_LABELS: tuple[str, ...] = ("valence", "arousal", "dominance", "liking")
DEAP_STATUS_CODES: dict[str, int] = {
    "start_or_rating": 1,
    "video_sync": 2,
    "fixation_before": 3,
    "video": 4,
    "fixation_after": 5,
    "end": 7,
}
_FILE_PATTERN = re.compile(r"^s(\d+)\.dat$")


def deap_files(root: str | os.PathLike[str], subjects: Sequence[int] | None = None) -> dict[int, Path]:
    """``{participant: path}`` of the ``sNN.dat`` files in ``root`` (all, or those of ``subjects``)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"DEAP directory not found: {root} (expected data_preprocessed_python with s01.dat ...)"
        )
    found = {}
    for path in root.iterdir():
        match = _FILE_PATTERN.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    if subjects is None:
        if not found:
            raise DataError(f"{root}: no DEAP files s01.dat ... s32.dat")
        return dict(sorted(found.items()))
    missing = [f"s{int(s):02d}.dat" for s in subjects if int(s) not in found]
    if missing:
        raise DataError(f"{root}: missing DEAP file(s) {', '.join(missing)}")
    return {int(s): found[int(s)] for s in subjects}


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise DataError(f"{path}: not a DEAP pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise DataError(
            f"{path}: expected a dict with keys 'data' and 'labels', got {type(content).__name__}"
        )
    for key in ("data", "labels"):
        if key not in content:
            raise DataError(f"{path}: missing key {key!r} (has {', '.join(map(repr, content)) or 'no keys'})")
    return content


def _numeric(path: Path, key: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: field {key!r} has dtype {array.dtype}, expected numbers")
    return array


def _read_deap_file(path: Path, subject: int) -> EEGRecordings:
    content = _load_pickle(path)
    data = _numeric(path, "data", content["data"])
    labels = _numeric(path, "labels", content["labels"]).astype(np.float64)
    if data.ndim != 3 or data.shape[1] != DEAP_FILE_CHANNELS:
        raise DataError(
            f"{path}: field 'data' has shape {data.shape}, "
            f"expected (n_trials, {DEAP_FILE_CHANNELS} channels, n_samples)"
        )
    n_trials, _, n_samples = data.shape
    if n_samples <= DEAP_BASELINE_SAMPLES:
        raise DataError(
            f"{path}: field 'data' has {n_samples} samples per trial, expected more than the "
            f"{DEAP_BASELINE_SAMPLES}-sample (3 s at 128 Hz) baseline"
        )
    if labels.shape != (n_trials, len(DEAP_LABELS)):
        raise DataError(
            f"{path}: field 'labels' has shape {labels.shape}, expected ({n_trials}, {len(DEAP_LABELS)}) "
            f"({', '.join(DEAP_LABELS)} per trial)"
        )
    if not np.isfinite(labels).all():
        raise DataError(f"{path}: field 'labels' contains NaN or inf")
    if labels.min() < 1 or labels.max() > 9:
        raise DataError(
            f"{path}: field 'labels' has values in [{labels.min()}, {labels.max()}], expected 1-9"
        )
    eeg = data[:, : len(DEAP_CHANNELS)]
    finite = np.isfinite(eeg).all(axis=(1, 2))
    if not finite.all():
        raise DataError(f"{path}: field 'data' contains NaN or inf (trial {int(np.flatnonzero(~finite)[0])})")
    return EEGRecordings(
        dataset="deap",
        info=make_info(DEAP_CHANNELS, DEAP_SFREQ),
        # copies, so that the 40-channel array of the file can be freed
        signals=[np.array(eeg[t, :, DEAP_BASELINE_SAMPLES:]) for t in range(n_trials)],
        baselines=[np.array(eeg[t, :, :DEAP_BASELINE_SAMPLES]) for t in range(n_trials)],
        subjects=np.full(n_trials, subject),
        sessions=np.zeros(n_trials),
        trials=np.arange(n_trials),
        ratings={name: labels[:, k] for k, name in enumerate(DEAP_LABELS)},
        sources=[str(path)] * n_trials,
    )


def read_deap(root: str | os.PathLike[str], subjects: Sequence[int] | None = None) -> EEGRecordings:
    """Trials of DEAP's preprocessed Python files in ``root`` (all participants, or ``subjects``: 1-based)."""
    files = deap_files(root, subjects)
    return EEGRecordings.concatenate([_read_deap_file(path, subject) for subject, path in files.items()])


def write_fake_deap(
    root: str | os.PathLike[str],
    n_subjects: int = 2,
    n_trials: int = 40,
    n_samples: int = 8064,
    seed: int = 0,
) -> Path:
    """Write ``s01.dat`` ... in DEAP's preprocessed format (random µV data, ratings 1-9); return ``root``.

    Deterministic in ``seed``; each file is written atomically.
    """
    if n_samples <= DEAP_BASELINE_SAMPLES:
        raise ValueError(
            f"n_samples must exceed the {DEAP_BASELINE_SAMPLES}-sample baseline, got {n_samples}"
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    for subject in range(1, n_subjects + 1):
        data = rng.normal(0.0, 10.0, size=(n_trials, DEAP_FILE_CHANNELS, n_samples))
        labels = np.round(rng.uniform(1.0, 9.0, size=(n_trials, len(DEAP_LABELS))), 2)
        write_deap_file(root / f"s{subject:02d}.dat", data, labels)
    return root


def write_deap_file(path: str | os.PathLike[str], data: np.ndarray, labels: np.ndarray) -> Path:
    """Pickle ``{"data": data, "labels": labels}`` to ``path`` atomically, as DEAP's preprocessed files."""
    with atomic_write(path, "wb") as handle:
        pickle.dump({"labels": labels, "data": data}, handle, protocol=4)
    return Path(path)


# --------------------------------------------------------------------------- raw BDF


def _raw_source(raw: Any) -> str:
    filenames = [name for name in (getattr(raw, "filenames", None) or ()) if name]
    return str(filenames[0]) if filenames else "<Raw>"


def _pick_channels(raw: Any, channels: Sequence[str], source: str) -> Any:
    """``raw`` restricted to ``channels`` in that order; names match case-insensitively."""
    by_upper = {name.upper(): name for name in raw.ch_names}
    missing = [name for name in channels if name.upper() not in by_upper]
    if missing:
        raise DataError(
            f"{source}: missing electrode(s) {', '.join(missing)} (the file has {len(raw.ch_names)} channels)"
        )
    names = [by_upper[name.upper()] for name in channels]
    picked = raw.copy().pick(names)
    picked.reorder_channels(names)
    rename = {old: new for old, new in zip(names, channels) if old != new}
    if rename:
        picked.rename_channels(rename)
    picked.set_channel_types(dict.fromkeys(channels, "eeg"))
    picked.set_montage(make_montage(channels))
    return picked


def read_deap_bdf(
    path: str | os.PathLike[str],
    sfreq: float | None = DEAP_SFREQ,
    channels: Sequence[str] = DEAP_CHANNELS,
) -> Any:
    """A raw DEAP BDF recording as :class:`mne.io.Raw`: ``channels`` (DEAP's 32 electrodes by default)
    in that order, resampled to ``sfreq`` Hz (``None`` keeps the file's rate), with a montage, preloaded.

    The result has no ``Status`` channel: to cut trials, pass :func:`mne.io.read_raw_bdf`'s Raw to
    :func:`deap_bdf_trials`, which picks, resamples and segments in one go.
    """
    path = require_file(path, "BDF file")
    try:
        raw = mne.io.read_raw_bdf(path, preload=False, verbose="error")
    except Exception as error:  # mne raises many types for a corrupt header
        raise DataError(f"{path}: not a readable BDF file ({type(error).__name__}: {error})") from None
    picked = _pick_channels(raw, channels, str(path))
    picked.load_data(verbose="error")
    if sfreq is not None and picked.info["sfreq"] != sfreq:
        picked.resample(sfreq, verbose="error")
    return picked


def _ratings_dict(
    ratings: Mapping[str, Any] | np.ndarray | None, n_trials: int, source: str
) -> dict[str, np.ndarray]:
    if ratings is None:
        return {}
    if isinstance(ratings, Mapping):
        values = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in ratings.items()}
    else:
        array = np.asarray(ratings, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != len(DEAP_LABELS):
            raise DataError(
                f"{source}: ratings have shape {array.shape}, "
                f"expected (n_trials, 4) ({', '.join(DEAP_LABELS)})"
            )
        values = {name: array[:, k] for k, name in enumerate(DEAP_LABELS)}
    for name, value in values.items():
        if len(value) != n_trials:
            raise DataError(
                f"{source}: ratings[{name!r}] has {len(value)} values for {n_trials} trials found"
            )
    return values


def deap_bdf_trials(
    raw: Any,
    ratings: Mapping[str, Any] | np.ndarray | None = None,
    *,
    subject: int = 1,
    session: int = 0,
    sfreq: float = DEAP_SFREQ,
    channels: Sequence[str] = DEAP_CHANNELS,
    stim_channel: str = "Status",
    trial_seconds: float = 60.0,
    baseline_seconds: float = 3.0,
    video_code: int = DEAP_STATUS_CODES["video"],
    status_mask: int = 0xFFFF,
) -> EEGRecordings:
    """Trials (``trial_seconds`` from each ``video_code`` onset) and pre-trial baselines of a raw recording.

    ``raw`` is an :class:`mne.io.Raw` with the DEAP electrodes and the ``stim_channel`` (as
    :func:`mne.io.read_raw_bdf` returns it, at any sampling rate). Signals are ``channels`` in that
    order, resampled to ``sfreq``, in µV (the preprocessed files' unit). ``ratings`` are the
    participant's ratings in presentation order: a ``(n_trials, 4)`` array in DEAP's label order
    (valence, arousal, dominance, liking) or a dict of ``[n_trials]`` arrays; ``None`` gives no ratings.
    """
    source = _raw_source(raw)
    if stim_channel not in raw.ch_names:
        raise DataError(f"{source}: no status channel {stim_channel!r} (channels: {', '.join(raw.ch_names)})")
    events = mne.find_events(
        raw,
        stim_channel=stim_channel,
        consecutive=True,
        shortest_event=1,
        mask=status_mask,
        mask_type="and",
        verbose="error",
    )
    onsets = events[events[:, 2] == video_code, 0] - raw.first_samp
    if len(onsets) == 0:
        codes = sorted({int(code) for code in events[:, 2]})
        raise DataError(
            f"{source}: channel {stim_channel!r} has no video onset (code {video_code}); codes found: {codes}"
        )
    onset_seconds = onsets / raw.info["sfreq"]
    picked = _pick_channels(raw, channels, source)
    picked.load_data(verbose="error")
    if picked.info["sfreq"] != sfreq:
        picked.resample(sfreq, verbose="error")
    data = picked.get_data(units="uV")
    n_trial, n_baseline = round(trial_seconds * sfreq), round(baseline_seconds * sfreq)
    signals, baselines = [], []
    for k, seconds in enumerate(onset_seconds):
        start = round(seconds * sfreq)
        if start - n_baseline < 0 or start + n_trial > data.shape[1]:
            raise DataError(
                f"{source}: trial {k} (video onset at {seconds:.2f} s) needs {baseline_seconds:g} s "
                f"before and {trial_seconds:g} s after it, but the recording spans "
                f"0-{data.shape[1] / sfreq:.2f} s"
            )
        signals.append(data[:, start : start + n_trial].copy())
        baselines.append(data[:, start - n_baseline : start].copy())
    n = len(signals)
    return EEGRecordings(
        dataset="deap",
        info=make_info(channels, sfreq),
        signals=signals,
        baselines=baselines,
        subjects=np.full(n, subject),
        sessions=np.full(n, session),
        trials=np.arange(n),
        ratings=_ratings_dict(ratings, n, source),
        sources=[source] * n,
    )
