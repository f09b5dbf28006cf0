"""Plots of RBTransformer's learned electrode x electrode attention (matplotlib, Agg backend).

* :func:`plot_attention_heatmap`: the ``C x C`` matrix (rows: query electrodes, whose weights sum
  to 1; columns: the electrodes they attend to) with electrode names on both axes;
* :func:`plot_attention_topomap`: the attention each electrode *receives* (column sums, so the
  values average to 1 over electrodes) on the scalp with :func:`mne.viz.plot_topomap` and the
  Info's montage.

The cross-validation runner passes the last block's attention averaged over heads and over the
test windows of every fold. Files are written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from interplay.core.data import atomic_write
from interplay.core.errors import DataError

__all__ = ["plot_attention_heatmap", "plot_attention_topomap", "received_attention", "save_attention_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check(matrix: np.ndarray, n_names: int) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != n_names:
        raise DataError(f"attention matrix has shape {matrix.shape}, expected ({n_names}, {n_names})")
    if not np.isfinite(matrix).all():
        raise DataError("attention matrix contains NaN or inf")
    return matrix


def received_attention(matrix: np.ndarray) -> np.ndarray:
    """Attention each electrode receives: the column sums of a row-stochastic ``C x C`` matrix."""
    return np.asarray(matrix, dtype=np.float64).sum(axis=0)


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_attention_heatmap(
    matrix: np.ndarray, ch_names: list[str], path: str | os.PathLike, title: str = "electrode attention"
) -> Path:
    """Heat map of ``matrix`` (``C x C``) labelled with ``ch_names``, saved as PNG at ``path``."""
    matrix = _check(matrix, len(ch_names))
    plt = _pyplot()
    size = max(5.0, 0.22 * len(ch_names) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(matrix, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(ch_names)), ch_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ch_names)), ch_names, fontsize=7)
    ax.set_xlabel("attended electrode (key)")
    ax.set_ylabel("query electrode")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return _save(fig, Path(path))


def plot_attention_topomap(
    matrix: np.ndarray, info: Any, path: str | os.PathLike, title: str = "attention received"
) -> Path:
    """Topomap of the attention each electrode receives, positioned by ``info``'s montage."""
    import mne

    matrix = _check(matrix, len(info["ch_names"]))
    if info.get_montage() is None:
        raise DataError("the channels' mne.Info has no montage: cannot place electrodes on a topomap")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    received = received_attention(matrix)
    # MNE starts the colour scale at 0 for non-negative data; the contrast lies around 1
    image, _ = mne.viz.plot_topomap(
        received,
        info,
        axes=ax,
        show=False,
        cmap="viridis",
        names=info["ch_names"],
        vlim=(float(received.min()), float(received.max())),
    )
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="sum of attention weights")
    return _save(fig, Path(path))


def save_attention_plots(matrix: np.ndarray, info: Any, directory: str | os.PathLike) -> list[Path]:
    """``attention_heatmap.png`` and (when ``info`` has a montage) ``attention_topomap.png``."""
    directory = Path(directory)
    paths = [plot_attention_heatmap(matrix, list(info["ch_names"]), directory / "attention_heatmap.png")]
    if info.get_montage() is not None:
        paths.append(plot_attention_topomap(matrix, info, directory / "attention_topomap.png"))
    return paths
