"""DREAMER (Katsigiannis & Ramzan, "DREAMER: A Database for Emotion Recognition Through EEG and ECG
Signals from Wireless Low-cost Off-the-Shelf Devices", IEEE JBHI 2018): reader of ``DREAMER.mat``
and a generator of fake files with the same layout.

``DREAMER.mat`` (MATLAB v5) holds one struct ``DREAMER`` with ``EEG_SamplingRate`` (128),
``ECG_SamplingRate`` (256), ``EEG_Electrodes`` (1 x 14 cell, Emotiv EPOC order),
``noOfSubjects`` (23), ``noOfVideoSequences`` (18) and ``Data``, a 1 x 23 struct array. Subject
``s`` (0-based) has ``Age``, ``Gender``, ``ECG`` and

* ``Data[0, s].EEG.stimuli``: 18 x 1 cell; cell ``[t, 0]`` is ``(n_t samples, 14 channels)`` at
  128 Hz (samples first), one film clip (``n_t`` differs per clip);
* ``Data[0, s].EEG.baseline``: 18 x 1 cell of ``(7808, 14)``: the 61 s neutral clip shown before each
  stimulus;
* ``ScoreValence``, ``ScoreArousal``, ``ScoreDominance``: 18 x 1, self-assessment on 1-5.

:func:`read_dreamer` reads it with :func:`scipy.io.loadmat` (records as structured arrays, nothing
squeezed, so a 1 x 1 struct stays indexable the same way for 1 or 23 subjects) and returns
:class:`~interplay.eeg.data.base.EEGRecordings` (``dataset="dreamer"``) with signals and baselines
transposed to ``[14, n]``, subjects numbered 1-23 (``Data[0, s]`` -> ``s + 1``), session 0 and
trials ``0..17``. Errors name the file and the field path, e.g.
``DREAMER.mat: Data[0, 3].EEG.stimuli[5, 0] has shape (100, 13), expected (n_samples, 14)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from interplay.core.data import atomic_save, require_file
from interplay.core.errors import DataError
from interplay.eeg.data.base import EEGRecordings
from interplay.eeg.data.montage import DREAMER_CHANNELS, make_info
from interplay.eeg.data.seed import load_mat

__all__ = [
    "DREAMER_BASELINE_SAMPLES",
    "DREAMER_SCORES",
    "DREAMER_SFREQ",
    "read_dreamer",
    "write_fake_dreamer",
]

DREAMER_SFREQ = 128.0
DREAMER_BASELINE_SAMPLES = 7808  # 61 s at 128 Hz
#: rating name -> field of the subject struct
DREAMER_SCORES: dict[str, str] = {
    "valence": "ScoreValence",
    "arousal": "ScoreArousal",
    "dominance": "ScoreDominance",
}


class _Fields:
    """Navigates loadmat's nested structured arrays, naming the field path in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str) -> DataError:
        return DataError(f"{self.source}: {path} {problem}")

    @staticmethod
    def unwrap(node: Any) -> Any:
        # MATLAB stores a scalar struct or a cell's content as a 1 x 1 array around it.
        while isinstance(node, np.ndarray) and node.size == 1 and (node.dtype == object or node.dtype.names):
            node = node.reshape(-1)[0]
        return node

    def field(self, node: Any, name: str, path: str) -> Any:
        node = self.unwrap(node)
        names = getattr(getattr(node, "dtype", None), "names", None) or ()
        if name not in names:
            raise self.error(
                f"{path}.{name}" if path else name, f"is missing (found {', '.join(names) or 'no fields'})"
            )
        return node[name]

    def cell(self, node: Any, path: str, length: int | None = None) -> list[Any]:
        """The entries of an n x 1 (or 1 x n) cell array."""
        array = node if isinstance(node, np.ndarray) else np.asarray(node)
        if array.dtype != object or array.ndim != 2 or 1 not in array.shape:
            raise self.error(path, f"is not an n x 1 cell array (shape {array.shape}, dtype {array.dtype})")
        entries = list(array.reshape(-1))
        if length is not None and len(entries) != length:
            raise self.error(path, f"has {len(entries)} entries, expected {length}")
        return entries

    def matrix(self, node: Any, path: str, columns: int, rows: int | None = None) -> np.ndarray:
        array = np.asarray(
            self.unwrap(node) if isinstance(node, np.ndarray) and node.dtype == object else node
        )
        if array.ndim != 2 or array.shape[1] != columns or not np.issubdtype(array.dtype, np.number):
            raise self.error(
                path, f"has shape {array.shape} ({array.dtype}), expected (n_samples, {columns})"
            )
        if rows is not None and array.shape[0] != rows:
            raise self.error(path, f"has {array.shape[0]} samples, expected {rows}")
        if not np.isfinite(array).all():
            raise self.error(path, "contains NaN or inf")
        return array

    def scalar(self, node: Any, path: str) -> float:
        array = np.asarray(self.unwrap(node))
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            raise self.error(path, f"is not a number (shape {array.shape}, dtype {array.dtype})")
        return float(array.reshape(-1)[0])


def _electrode_names(fields: _Fields, dreamer: Any) -> list[str] | None:
    names = dreamer.dtype.names or ()
    if "EEG_Electrodes" not in names:
        return None
    cells = np.asarray(dreamer["EEG_Electrodes"]).reshape(-1)
    return [str(np.asarray(fields.unwrap(cell)).reshape(-1)[0]) if np.size(cell) else "" for cell in cells]


def _read_subject(fields: _Fields, record: Any, index: int) -> tuple[list, list, dict[str, np.ndarray]]:
    path = f"Data[0, {index}]"
    eeg = fields.field(record, "EEG", path)
    stimuli = fields.cell(fields.field(eeg, "stimuli", f"{path}.EEG"), f"{path}.EEG.stimuli")
    n = len(stimuli)
    baselines = fields.cell(fields.field(eeg, "baseline", f"{path}.EEG"), f"{path}.EEG.baseline", n)
    channels = len(DREAMER_CHANNELS)
    signals = [fields.matrix(s, f"{path}.EEG.stimuli[{t}, 0]", channels).T for t, s in enumerate(stimuli)]
    base = [
        fields.matrix(b, f"{path}.EEG.baseline[{t}, 0]", channels, DREAMER_BASELINE_SAMPLES).T
        for t, b in enumerate(baselines)
    ]
    ratings = {}
    for name, key in DREAMER_SCORES.items():
        scores = np.asarray(fields.field(record, key, path))
        if not np.issubdtype(scores.dtype, np.number) or scores.size != n:
            raise fields.error(f"{path}.{key}", f"has shape {scores.shape}, expected ({n}, 1) scores")
        scores = scores.reshape(-1).astype(np.float64)
        if not np.isfinite(scores).all() or scores.min() < 1 or scores.max() > 5:
            raise fields.error(f"{path}.{key}", f"has values outside 1-5: {sorted(set(scores.tolist()))}")
        ratings[name] = scores
    return signals, base, ratings


def read_dreamer(path: str | os.PathLike[str], subjects: Sequence[int] | None = None) -> EEGRecordings:
    """Trials of ``DREAMER.mat`` (all subjects, or ``subjects``: 1-based, ``Data[0, s - 1]``)."""
    path = require_file(path, "DREAMER.mat")
    fields = _Fields(path.name if path.name == "DREAMER.mat" else str(path))
    content = load_mat(path)
    if "DREAMER" not in content:
        keys = [k for k in content if not k.startswith("__")]
        raise DataError(f"{path}: missing variable 'DREAMER' (has {', '.join(keys) or 'no variables'})")
    dreamer = fields.unwrap(content["DREAMER"])
    if not getattr(getattr(dreamer, "dtype", None), "names", None):
        raise fields.error("DREAMER", "is not a struct")
    if "EEG_SamplingRate" in dreamer.dtype.names:
        rate = fields.scalar(dreamer["EEG_SamplingRate"], "DREAMER.EEG_SamplingRate")
        if rate != DREAMER_SFREQ:
            raise fields.error("DREAMER.EEG_SamplingRate", f"is {rate:g} Hz, expected {DREAMER_SFREQ:g}")
    electrodes = _electrode_names(fields, dreamer)
    if electrodes is not None and [e.upper() for e in electrodes] != [e.upper() for e in DREAMER_CHANNELS]:
        raise fields.error(
            "DREAMER.EEG_Electrodes",
            f"is {electrodes}, expected the 14 Emotiv electrodes {list(DREAMER_CHANNELS)}",
        )
    data = np.asarray(fields.field(dreamer, "Data", "DREAMER"))
    if data.dtype.names is None:
        raise fields.error("DREAMER.Data", "is not a struct array")
    records = list(data.reshape(-1))
    wanted = range(1, len(records) + 1) if subjects is None else [int(s) for s in subjects]
    for subject in wanted:
        if not 1 <= subject <= len(records):
            raise fields.error("DREAMER.Data", f"has {len(records)} subjects, no subject {subject}")
    parts = []
    info = make_info(DREAMER_CHANNELS, DREAMER_SFREQ)
    for subject in wanted:
        signals, baselines, ratings = _read_subject(fields, records[subject - 1], subject - 1)
        n = len(signals)
        parts.append(
            EEGRecordings(
                dataset="dreamer",
                info=info,
                signals=signals,
                baselines=baselines,
                subjects=np.full(n, subject),
                sessions=np.zeros(n),
                trials=np.arange(n),
                ratings=ratings,
                sources=[str(path)] * n,
            )
        )
    return EEGRecordings.concatenate(parts)


def _cell(entries: Sequence[Any]) -> np.ndarray:
    """An n x 1 MATLAB cell array (assigned one by one so numpy does not stack equal-shaped arrays)."""
    cell = np.empty((len(entries), 1), dtype=object)
    for k, entry in enumerate(entries):
        cell[k, 0] = entry
    return cell


def _struct(**fields: Any) -> np.ndarray:
    """A 1 x 1 MATLAB struct with ``fields``."""
    struct = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, value in fields.items():
        struct[0, 0][name] = value
    return struct


def write_fake_dreamer(
    path: str | os.PathLike[str],
    n_subjects: int = 2,
    n_stimuli: int = 18,
    seconds: float = 2.0,
    seed: int = 0,
    baseline_samples: int = DREAMER_BASELINE_SAMPLES,
) -> Path:
    """Write a ``DREAMER.mat`` with DREAMER's struct layout (random EEG, scores 1-5); return its path.

    Stimulus ``t`` lasts about ``seconds`` (a few samples more per clip, as the real clips differ in
    length); baselines have ``baseline_samples`` rows (DREAMER's 7808 unless a test wants a wrong
    one); ECG is a short two-lead stub at 256 Hz. Deterministic in ``seed``; written atomically.
    """
    rng = np.random.default_rng(seed)
    channels = len(DREAMER_CHANNELS)
    data = np.empty(
        (1, n_subjects),
        dtype=[(name, object) for name in ("Age", "Gender", "EEG", "ECG", *DREAMER_SCORES.values())],
    )
    for s in range(n_subjects):
        stimuli = [
            rng.normal(0.0, 10.0, (round(seconds * DREAMER_SFREQ) + 3 * t, channels))
            for t in range(n_stimuli)
        ]
        baselines = [rng.normal(0.0, 10.0, (baseline_samples, channels)) for _ in range(n_stimuli)]
        ecg = [rng.normal(0.0, 100.0, (256, 2)) for _ in range(n_stimuli)]
        record = data[0, s]
        record["Age"] = str(int(rng.integers(22, 34)))
        record["Gender"] = "male" if s % 2 else "female"
        record["EEG"] = _struct(baseline=_cell(baselines), stimuli=_cell(stimuli))
        record["ECG"] = _struct(baseline=_cell(ecg), stimuli=_cell(ecg))
        for key in DREAMER_SCORES.values():
            record[key] = rng.integers(1, 6, size=(n_stimuli, 1)).astype(np.float64)
    electrodes = np.empty((1, channels), dtype=object)
    for k, name in enumerate(DREAMER_CHANNELS):
        electrodes[0, k] = name
    dreamer = _struct(
        Data=data,
        EEG_SamplingRate=DREAMER_SFREQ,
        ECG_SamplingRate=256.0,
        EEG_Electrodes=electrodes,
        noOfSubjects=float(n_subjects),
        noOfVideoSequences=float(n_stimuli),
        Disclaimer="fake DREAMER.mat written by interplay.eeg for tests",
        Provider="interplay",
        Version="1.0.2",
        Acknowledgement="",
    )
    path = Path(path)
    atomic_save(lambda temp: scipy.io.savemat(str(temp), {"DREAMER": dreamer}, format="5"), path)
    return path
