"""Registered EEG datasets: ``deap``, ``dreamer``, ``seed`` and ``synthetic-deap``.

Each factory reads the recordings with its reader (imported lazily: MNE and SciPy load only when a
dataset is used), extracts band differential entropy windows (:func:`interplay.eeg.features.extract_features`,
cached on disk by a hash of recordings and config) and returns an
:class:`~interplay.eeg.evaluation.EEGDataModule` for one fold of the configured protocol. Within a
process the extracted windows are also kept in memory, so the cross-validation runner's one data
module per fold costs the folds' bookkeeping only.

``data.root`` is where the dataset's files are (DEAP: the folder of ``s01.dat`` ... ``s32.dat``;
DREAMER: ``DREAMER.mat`` or its folder; SEED: the ``Preprocessed_EEG`` folder with ``label.mat``).
Without it, ``<data root>/eeg/<dataset>`` is tried (the data root is ``$INTERPLAY_DATA`` or
``~/.cache/interplay``). The datasets are licensed: nothing is downloaded, and a missing folder is
a :class:`DataError` that says where to get the files and where to put them. ``synthetic-deap`` is
generated on first use (mne.simulation, DEAP's file format) under ``<data root>/eeg/synthetic/``.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from interplay.core.data import data_root
from interplay.core.errors import ConfigError, DataError
from interplay.eeg.registry import REGISTRY

__all__ = [
    "deap",
    "dreamer",
    "feature_config",
    "load_windows",
    "seed_dataset",
    "synthetic_deap",
    "synthetic_deap_dir",
]

PathLike = str | os.PathLike[str]

SOURCES = {
    "deap": (
        "DEAP's preprocessed python files (data_preprocessed_python: s01.dat ... s32.dat) need its EULA "
        "signed at https://www.eecs.qmul.ac.uk/mmv/datasets/deap/"
    ),
    "dreamer": "DREAMER.mat is distributed on request through https://zenodo.org/record/546113",
    "seed": (
        "SEED's Preprocessed_EEG folder (<subject>_<date>.mat files and label.mat) needs the licence "
        "agreement at https://bcmi.sjtu.edu.cn/home/seed/"
    ),
}

_WINDOWS: OrderedDict[tuple, Any] = OrderedDict()  # in-process cache of extracted windows
_WINDOWS_KEPT = 2


def _root(root: PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else data_root()


def _dataset_path(name: str, root: PathLike | None, expected: str) -> Path:
    """``root`` (the dataset's own folder or file) or ``<data root>/eeg/<name>``; DataError if absent."""
    candidate = Path(root).expanduser() if root is not None else data_root() / "eeg" / name
    if not candidate.exists():
        where = f"data.root={candidate} does not exist" if root is not None else "data.root is not set"
        raise DataError(
            f"{name}: {where}; {SOURCES[name]}, then put {expected} in {data_root() / 'eeg' / name} "
            f"or pass data.root=<folder>"
        )
    return candidate


def feature_config(features: dict[str, Any] | None) -> Any:
    """:class:`~interplay.eeg.features.FeatureConfig` from the ``data.params.features`` mapping."""
    from interplay.eeg.features import FeatureConfig

    features = dict(features or {})
    known = [f.name for f in dataclasses.fields(FeatureConfig)]
    unknown = [k for k in features if k not in known]
    if unknown:
        raise ConfigError(
            f"data.params.features: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(known)})"
        )
    return FeatureConfig(**features)


def load_windows(
    key: tuple,
    read: Callable[[], Any],
    features: dict[str, Any] | None,
    *,
    cache_dir: PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Any:
    """Windows of the recordings ``read()`` returns, memoised in process by ``key`` and the config."""
    from interplay.eeg.features import extract_features

    config = feature_config(features)
    memo_key = (*key, repr(config), str(cache_dir))
    if memo_key in _WINDOWS:
        _WINDOWS.move_to_end(memo_key)
        return _WINDOWS[memo_key]
    windows = extract_features(read(), config, cache_dir=cache_dir, workers=workers, progress=progress)
    _WINDOWS[memo_key] = windows
    while len(_WINDOWS) > _WINDOWS_KEPT:
        _WINDOWS.popitem(last=False)
    return windows


def _module(windows: Any, split: dict[str, Any], loader: dict[str, Any]) -> Any:
    from interplay.eeg.evaluation import EEGDataModule

    return EEGDataModule(windows, **split, **loader)


def _subjects(subjects: Sequence[int] | None) -> tuple[int, ...] | None:
    if subjects is None:
        return None
    try:
        return tuple(int(s) for s in subjects)
    except (TypeError, ValueError):
        raise ConfigError(
            f"data.params.subjects must be a list of subject numbers, got {subjects!r}"
        ) from None


def _make(
    name: str,
    key: tuple,
    read: Callable[[], Any],
    *,
    target: str,
    n_classes: int,
    features: dict[str, Any] | None,
    cache_dir: PathLike | None,
    workers: int | None,
    progress: bool,
    split: dict[str, Any],
    loader: dict[str, Any],
) -> Any:
    windows = load_windows(
        (name, *key), read, features, cache_dir=cache_dir, workers=workers, progress=progress
    )
    return _module(windows, {"target": target, "n_classes": n_classes, **split}, loader)


@REGISTRY.datasets.register(
    "deap", "DEAP preprocessed python (.dat, 32 subjects x 40 trials, 128 Hz): band-DE windows"
)
def deap(
    root: PathLike | None = None,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    subjects: Sequence[int] | None = None,
    target: str = "valence",
    n_classes: int = 2,
    features: dict[str, Any] | None = None,
    protocol: str = "subject_dependent",
    n_folds: int | None = None,
    fold: int = 0,
    val_fraction: float = 0.1,
    smote: bool = False,
    standardize: bool = True,
    split_seed: int = 0,
    cache_dir: PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Any:
    """DEAP: ``target`` valence / arousal / dominance / liking, binary (``>= 5``) or 9 classes."""
    path = _dataset_path("deap", root, "s01.dat ... s32.dat")
    subject_list = _subjects(subjects)

    def read():
        from interplay.eeg.data.deap import read_deap

        return read_deap(path, subjects=list(subject_list) if subject_list else None)

    split = dict(
        protocol=protocol,
        n_folds=n_folds,
        fold=fold,
        val_fraction=val_fraction,
        smote=smote,
        standardize=standardize,
        split_seed=split_seed,
    )
    loader = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
    return _make(
        "deap",
        (str(path.resolve()), subject_list),
        read,
        target=target,
        n_classes=n_classes,
        features=features,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        split=split,
        loader=loader,
    )


deap.download = lambda root=None: (  # type: ignore[attr-defined]
    f"{SOURCES['deap']}; put the files in {_root(root) / 'eeg' / 'deap'} (or pass data.root=<folder>)"
)


@REGISTRY.datasets.register(
    "dreamer", "DREAMER.mat (23 subjects x 18 clips, 14 channels, 128 Hz): band-DE windows"
)
def dreamer(
    root: PathLike | None = None,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    subjects: Sequence[int] | None = None,
    target: str = "valence",
    n_classes: int = 2,
    features: dict[str, Any] | None = None,
    protocol: str = "subject_dependent",
    n_folds: int | None = None,
    fold: int = 0,
    val_fraction: float = 0.1,
    smote: bool = False,
    standardize: bool = True,
    split_seed: int = 0,
    cache_dir: PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Any:
    """DREAMER: ``target`` valence / arousal / dominance, binary (``>= 3``) or 5 classes."""
    path = _dataset_path("dreamer", root, "DREAMER.mat")
    if path.is_dir():
        path = path / "DREAMER.mat"
        if not path.is_file():
            raise DataError(f"dreamer: {path} not found; {SOURCES['dreamer']}")
    subject_list = _subjects(subjects)

    def read():
        from interplay.eeg.data.dreamer import read_dreamer

        return read_dreamer(path, subjects=list(subject_list) if subject_list else None)

    split = dict(
        protocol=protocol,
        n_folds=n_folds,
        fold=fold,
        val_fraction=val_fraction,
        smote=smote,
        standardize=standardize,
        split_seed=split_seed,
    )
    loader = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
    return _make(
        "dreamer",
        (str(path.resolve()), subject_list),
        read,
        target=target,
        n_classes=n_classes,
        features=features,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        split=split,
        loader=loader,
    )


dreamer.download = lambda root=None: (  # type: ignore[attr-defined]
    f"{SOURCES['dreamer']}; put DREAMER.mat in {_root(root) / 'eeg' / 'dreamer'} (or pass data.root=<file>)"
)


@REGISTRY.datasets.register(
    "seed", "SEED preprocessed .mat (15 subjects x 3 sessions x 15 films, 62 ch, 200 Hz)"
)
def seed_dataset(
    root: PathLike | None = None,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    subjects: Sequence[int] | None = None,
    target: str = "emotion",
    n_classes: int = 3,
    features: dict[str, Any] | None = None,
    protocol: str = "subject_dependent",
    n_folds: int | None = None,
    fold: int = 0,
    val_fraction: float = 0.1,
    smote: bool = False,
    standardize: bool = True,
    split_seed: int = 0,
    cache_dir: PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Any:
    """SEED: 3 classes (negative, neutral, positive = label + 1)."""
    path = _dataset_path("seed", root, "the Preprocessed_EEG .mat files and label.mat")
    subject_list = _subjects(subjects)

    def read():
        from interplay.eeg.data.seed import read_seed

        return read_seed(path, subjects=list(subject_list) if subject_list else None)

    split = dict(
        protocol=protocol,
        n_folds=n_folds,
        fold=fold,
        val_fraction=val_fraction,
        smote=smote,
        standardize=standardize,
        split_seed=split_seed,
    )
    loader = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
    return _make(
        "seed",
        (str(path.resolve()), subject_list),
        read,
        target=target,
        n_classes=n_classes,
        features=features,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        split=split,
        loader=loader,
    )


seed_dataset.download = lambda root=None: (  # type: ignore[attr-defined]
    f"{SOURCES['seed']}; put Preprocessed_EEG in {_root(root) / 'eeg' / 'seed'} (or pass data.root=<folder>)"
)


def synthetic_deap_dir(
    root: PathLike | None = None,
    n_subjects: int = 4,
    n_trials: int = 40,
    seconds: float = 60,
    data_seed: int = 0,
    **strengths: float,
) -> Path:
    """The synthetic DEAP-format folder for these parameters, generated on first use.

    ``strengths`` are :func:`~interplay.eeg.data.synthetic.write_synthetic_deap`'s effect sizes
    (``class_effect``, ``subject_effect``, ``fingerprint``, ``trial_noise``); the folder name
    holds every parameter and the generator's version, so a change never reuses old files.
    """
    from interplay.eeg.data.synthetic import SYNTHETIC_VERSION, write_synthetic_deap

    extra = "".join(f"-{key}{value:g}" for key, value in sorted(strengths.items()))
    folder = (
        _root(root)
        / "eeg"
        / "synthetic"
        / f"deap-v{SYNTHETIC_VERSION}-n{n_subjects}-t{n_trials}-s{seconds:g}-seed{data_seed}{extra}"
    )
    done = folder / ".complete"
    if not done.is_file():
        written = Path(
            write_synthetic_deap(
                folder, n_subjects=n_subjects, n_trials=n_trials, seconds=seconds, seed=data_seed, **strengths
            )
        )
        if written.resolve() != folder.resolve():
            raise DataError(f"synthetic DEAP files went to {written}, expected {folder}")
        done.write_text("complete\n")  # marks a finished generation: an interrupted one is redone
    return folder


@REGISTRY.datasets.register(
    "synthetic-deap", "synthetic DEAP-format EEG (mne.simulation, ratings drive band power; generated)"
)
def synthetic_deap(
    root: PathLike | None = None,
    batch_size: int = 256,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    n_subjects: int = 4,
    n_trials: int = 40,
    seconds: float = 60,
    data_seed: int = 0,
    class_effect: float = 1.0,
    subject_effect: float = 1.0,
    fingerprint: float = 1.0,
    trial_noise: float = 0.35,
    target: str = "valence",
    n_classes: int = 2,
    features: dict[str, Any] | None = None,
    protocol: str = "subject_dependent",
    n_folds: int | None = None,
    fold: int = 0,
    val_fraction: float = 0.1,
    smote: bool = False,
    standardize: bool = True,
    split_seed: int = 0,
    cache_dir: PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Any:
    """Generates ``n_subjects`` x ``n_trials`` DEAP-format trials of ``seconds`` once, then reads them.

    ``class_effect`` scales how strongly the ratings drive band power, ``subject_effect`` the
    per-subject variation, ``fingerprint`` the per-trial signature that makes pooled windows leak,
    ``trial_noise`` the trial-to-trial variation (see :mod:`interplay.eeg.data.synthetic`).
    """
    strengths = dict(
        class_effect=class_effect,
        subject_effect=subject_effect,
        fingerprint=fingerprint,
        trial_noise=trial_noise,
    )
    defaults = dict(class_effect=1.0, subject_effect=1.0, fingerprint=1.0, trial_noise=0.35)
    changed = {k: v for k, v in strengths.items() if v != defaults[k]}  # default sets keep short names
    folder = synthetic_deap_dir(root, n_subjects, n_trials, seconds, data_seed, **changed)

    def read():
        from interplay.eeg.data.deap import read_deap

        return read_deap(folder)

    split = dict(
        protocol=protocol,
        n_folds=n_folds,
        fold=fold,
        val_fraction=val_fraction,
        smote=smote,
        standardize=standardize,
        split_seed=split_seed,
    )
    loader = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed)
    if cache_dir is None:  # beside the generated files, not in the default data root
        cache_dir = _root(root) / "eeg" / "features"
    return _make(
        "synthetic-deap",
        (str(folder.resolve()),),
        read,
        target=target,
        n_classes=n_classes,
        features=features,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        split=split,
        loader=loader,
    )


synthetic_deap.download = lambda root=None: synthetic_deap_dir(root)  # type: ignore[attr-defined]
