"""Discrete-time survival labels: bin edges from the quartiles of the uncensored survival times.

MCAT (Chen et al., ICCV 2021) and MOTCat (Xu & Chen, ICCV 2023) turn follow-up times into ``n_bins``
(4) ordinal classes for the discrete-time NLL loss (Zadeh & Schmid, "Bias in Cross-Entropy-Based
Training of Deep Survival Networks", TPAMI 2020, Eq. 3; see :func:`interplay.bio.survival.nll_survival_loss`):

1. ``pd.qcut`` of the UNCENSORED patients' times into ``n_bins`` quantile bins gives the inner edges;
2. the outer edges are widened to ``min(time) - eps`` and ``max(time) + eps`` over ALL patients (so
   censored patients beyond the last death still fall in a bin);
3. ``pd.cut(..., right=False)``: bin ``k`` is ``[edges[k], edges[k + 1])``.

The reference computes the edges on the whole cohort, validation patients included. Here the
default is to fit them on the training patients only (:func:`fit_cohort_bins` with
``fit_on="train"``); patients outside the fitted range are clipped into the first / last bin.
``fit_on="all"`` reproduces the reference for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from interplay.bio.data.base import SurvivalCohort
from interplay.core.errors import ConfigError, DataError

__all__ = ["assign_bins", "fit_cohort_bins", "fit_time_bins"]

#: MCAT's widening of the outer edges (``eps=1e-6`` in ``Generic_WSI_Survival_Dataset``)
EDGE_EPS = 1e-6


def fit_time_bins(
    times: Sequence[float] | np.ndarray,
    censorship: Sequence[float] | np.ndarray,
    n_bins: int = 4,
    *,
    eps: float = EDGE_EPS,
    what: str = "cohort",
) -> np.ndarray:
    """Bin edges ``[n_bins + 1]``: quantiles of the uncensored ``times``, outer edges widened.

    ``censorship`` is 1 for censored patients (TCGA convention). Raises :class:`DataError` when no
    patient has an observed event, or when the uncensored times have too few distinct values to give
    ``n_bins`` distinct quantiles (``pd.qcut`` would fail there too).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    censorship = np.asarray(censorship, dtype=np.float64).reshape(-1)
    if times.shape != censorship.shape:
        raise DataError(f"{what}: times ({times.size}) and censorship ({censorship.size}) differ in length")
    if times.size == 0:
        raise DataError(f"{what}: no patients to fit the time bins on")
    if not (np.isfinite(times).all() and np.isfinite(censorship).all()):
        raise DataError(f"{what}: times and censorship must be finite to fit the time bins")
    uncensored = times[censorship < 1]
    if uncensored.size == 0:
        raise DataError(
            f"{what}: no uncensored patients (every censorship is 1), so the time bins, which are "
            "quantiles of the observed death times, are undefined"
        )
    # np.quantile's default (linear) is what pd.qcut uses.
    edges = np.quantile(uncensored, np.linspace(0.0, 1.0, int(n_bins) + 1))
    edges[0] = times.min() - eps
    edges[-1] = times.max() + eps
    # Only inner edges can coincide (the outer ones were just moved outside the data); pd.qcut fails
    # on such ties in the reference, here the error says why.
    if not (np.diff(edges) > 0).all():
        raise DataError(
            f"{what}: the {uncensored.size} uncensored times have too few distinct values for "
            f"{n_bins} quantile bins (edges {np.round(edges, 4).tolist()})"
        )
    return edges


def assign_bins(times: Sequence[float] | np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bin index (int64) of each time: ``k`` where ``edges[k] <= t < edges[k + 1]``.

    Times below the first edge go to bin 0 and times at or beyond the last edge to the last bin
    (edges fitted on training patients need not cover validation patients).
    """
    edges = np.asarray(edges, dtype=np.float64).reshape(-1)
    if edges.size < 2 or not (np.diff(edges) > 0).all():
        raise DataError(f"time-bin edges must be at least 2 increasing values, got {edges.tolist()}")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.isfinite(times).all():
        raise DataError("cannot assign time bins to missing or infinite times")
    labels = np.searchsorted(edges, times, side="right") - 1
    return np.clip(labels, 0, edges.size - 2).astype(np.int64)


def fit_cohort_bins(
    cohort: SurvivalCohort,
    train_index: Sequence[int] | np.ndarray | None = None,
    *,
    n_bins: int = 4,
    fit_on: Literal["train", "all"] = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, labels)`` for every patient of ``cohort``.

    ``fit_on="train"`` (default) fits the edges on ``cohort``'s patients at ``train_index``;
    ``fit_on="all"`` on the whole cohort, as MCAT / MOTCat do (validation patients then shape the
    bins their own labels come from).
    """
    if fit_on not in ("train", "all"):
        raise ConfigError(f"fit_on must be 'train' or 'all', got {fit_on!r}")
    if fit_on == "train":
        if train_index is None:
            raise ConfigError("fit_on='train' needs train_index (the training patients' positions)")
        index = np.arange(len(cohort))[np.asarray(train_index, dtype=np.int64)]
        what = f"{cohort.source} (training patients)"
    else:
        index = np.arange(len(cohort))
        what = cohort.source
    edges = fit_time_bins(cohort.times[index], cohort.censorship[index], n_bins, what=what)
    return edges, assign_bins(cohort.times, edges)
