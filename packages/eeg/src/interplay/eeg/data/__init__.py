"""eeg readers, one per on-disk format, each with a synthetic generator writing the same format.

* :mod:`.base`: :class:`EEGRecordings` / :class:`WindowFeatures`, the band table and rating targets;
* :mod:`.montage`: DEAP / DREAMER / SEED electrode orders and :func:`make_info` (Info with positions);
* :mod:`.deap`: DEAP's preprocessed pickles (:func:`read_deap`, :func:`write_fake_deap`) and raw BDF
  (:func:`read_deap_bdf`, :func:`deap_bdf_trials`);
* :mod:`.seed`: SEED's ``Preprocessed_EEG`` .mat files (:func:`read_seed`, :func:`write_fake_seed`);
* :mod:`.dreamer`: ``DREAMER.mat`` (:func:`read_dreamer`, :func:`write_fake_dreamer`);
* :mod:`.synthetic`: EEG simulated on an MNE sphere head model with planted rating effects, subject
  variation and per-trial fingerprints, written as DEAP files (:func:`write_synthetic_deap`).
"""

from interplay.eeg.data.base import BANDS, RATING_SCALES, EEGRecordings, WindowFeatures, make_targets
from interplay.eeg.data.deap import (
    DEAP_LABELS,
    DEAP_SFREQ,
    DEAP_STATUS_CODES,
    deap_bdf_trials,
    read_deap,
    read_deap_bdf,
    write_fake_deap,
)
from interplay.eeg.data.dreamer import DREAMER_SFREQ, read_dreamer, write_fake_dreamer
from interplay.eeg.data.montage import (
    DEAP_CHANNELS,
    DREAMER_CHANNELS,
    SEED_CHANNELS,
    make_info,
    make_montage,
)
from interplay.eeg.data.seed import SEED_SFREQ, read_seed, write_fake_seed
from interplay.eeg.data.synthetic import SyntheticDEAPConfig, write_synthetic_deap

__all__ = [
    "BANDS",
    "DEAP_CHANNELS",
    "DEAP_LABELS",
    "DEAP_SFREQ",
    "DEAP_STATUS_CODES",
    "DREAMER_CHANNELS",
    "DREAMER_SFREQ",
    "EEGRecordings",
    "RATING_SCALES",
    "SEED_CHANNELS",
    "SEED_SFREQ",
    "SyntheticDEAPConfig",
    "WindowFeatures",
    "deap_bdf_trials",
    "make_info",
    "make_montage",
    "make_targets",
    "read_deap",
    "read_deap_bdf",
    "read_dreamer",
    "read_seed",
    "write_fake_deap",
    "write_fake_dreamer",
    "write_fake_seed",
    "write_synthetic_deap",
]
