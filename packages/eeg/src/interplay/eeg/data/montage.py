"""Electrode lists of DEAP, DREAMER and SEED in each dataset's own order, and MNE Info with positions.

* DEAP (Koelstra et al., IEEE TAC 2012): 32 BioSemi electrodes in the order of the preprocessed
  ``data_preprocessed_python`` files (Twente order).
* DREAMER (Katsigiannis & Ramzan, IEEE JBHI 2018): the 14 Emotiv EPOC electrodes in the order of
  ``DREAMER.EEG_Electrodes``.
* SEED (Zheng & Lu, IEEE TAMD 2015): the 62-channel ESI NeuroScan cap in the order of the
  ``Preprocessed_EEG`` arrays (``Channel Order.xlsx``), with upper-case names (``FP1``, ``FPZ``,
  ``CZ``...).

:func:`make_info` builds an :class:`mne.Info` whose montage takes positions from MNE's 10-05 template
(``colin27_1005``, which MNE 1.13 introduced under that name for the deprecated ``standard_1005``;
the coordinates are identical), matching names case-insensitively so that a dataset keeps its own
spelling (SEED's ``FPZ``) while the position comes from the template's ``Fpz``.

SEED's ``CB1`` / ``CB2`` are NeuroScan's cerebellar electrodes, which no 10-05 template names. They
sit one 10 % step of the nasion-inion arc below ``O1`` / ``O2``, on the inion row, which is where the
10-05 system places ``I1`` / ``I2``; they take those positions (posterior and inferior to ``O1`` /
``O2``, left and right of the midline). :data:`CUSTOM_POSITIONS` holds that mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import mne
import numpy as np

from interplay.core.errors import DataError

__all__ = [
    "CUSTOM_POSITIONS",
    "DEAP_CHANNELS",
    "DREAMER_CHANNELS",
    "SEED_CHANNELS",
    "STANDARD_MONTAGE",
    "channel_positions",
    "make_info",
    "make_montage",
]

DEAP_CHANNELS: tuple[str, ...] = (
    "Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1", "Oz", "Pz",
    "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2", "P4", "P8", "PO4", "O2",
)  # fmt: skip

DREAMER_CHANNELS: tuple[str, ...] = (
    "AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4",
)  # fmt: skip

SEED_CHANNELS: tuple[str, ...] = (
    "FP1", "FPZ", "FP2", "AF3", "AF4", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8",
    "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8",
    "T7", "C5", "C3", "C1", "CZ", "C2", "C4", "C6", "T8",
    "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8",
    "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8",
    "PO7", "PO5", "PO3", "POZ", "PO4", "PO6", "PO8",
    "CB1", "O1", "OZ", "O2", "CB2",
)  # fmt: skip

#: Electrodes in no 10-05 template -> the template electrode whose position they take (see above).
CUSTOM_POSITIONS: dict[str, str] = {"CB1": "I1", "CB2": "I2"}


def _template_name() -> str:
    # 'standard_1005' is deprecated in MNE 1.13 (removed in 1.14); older MNE only has that name.
    builtin = mne.channels.get_builtin_montages()
    return "colin27_1005" if "colin27_1005" in builtin else "standard_1005"


STANDARD_MONTAGE: str = _template_name()


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """The 10-05 template's positions (``ch_pos`` keyed by upper-case name) and fiducials."""
    positions = mne.channels.make_standard_montage(STANDARD_MONTAGE).get_positions()
    by_upper = {name.upper(): np.asarray(pos, dtype=float) for name, pos in positions["ch_pos"].items()}
    return {
        "ch_pos": by_upper,
        "nasion": positions["nasion"],
        "lpa": positions["lpa"],
        "rpa": positions["rpa"],
        "coord_frame": positions["coord_frame"],
    }


def channel_positions(ch_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Template position (metres, template frame) of each name, case-insensitively; custom ones included.

    Raises :class:`DataError` naming every electrode that has no known position.
    """
    template = _template()["ch_pos"]
    positions, unknown = {}, []
    for name in ch_names:
        key = name.upper()
        key = CUSTOM_POSITIONS.get(key, key)
        if key not in template:
            unknown.append(name)
            continue
        positions[name] = template[key].copy()
    if unknown:
        raise DataError(
            f"no electrode position known for {', '.join(unknown)} "
            f"(not in MNE's {STANDARD_MONTAGE} template nor in CUSTOM_POSITIONS)"
        )
    if len({name.upper() for name in ch_names}) != len(ch_names):
        raise DataError(f"duplicate electrode names in {list(ch_names)}")
    return positions


def make_montage(ch_names: Sequence[str]) -> Any:
    """:class:`mne.channels.DigMontage` of ``ch_names`` (kept as spelled) with the template's fiducials."""
    template = _template()
    return mne.channels.make_dig_montage(
        ch_pos=channel_positions(ch_names),
        nasion=template["nasion"],
        lpa=template["lpa"],
        rpa=template["rpa"],
        coord_frame=template["coord_frame"],
    )


def make_info(ch_names: Sequence[str], sfreq: float, ch_types: str = "eeg") -> Any:
    """:class:`mne.Info` of EEG channels ``ch_names`` at ``sfreq`` Hz with a montage (module docstring)."""
    if not sfreq or not np.isfinite(sfreq) or sfreq <= 0:
        raise DataError(f"sampling rate must be a positive number of Hz, got {sfreq!r}")
    info = mne.create_info(list(ch_names), float(sfreq), ch_types)
    info.set_montage(make_montage(ch_names))
    return info
