"""Run directories: ``runs/<domain>/<model>/<timestamp>/`` with everything needed to audit a run.

Layout::

    config.yaml      resolved configuration (after overrides)
    versions.json    python, torch, lightning and interplay package versions, git commit
    metrics.csv      per-epoch metrics (Lightning CSV logger)
    metrics.json     final figures: best validation metric, test metrics, timings
    checkpoints/     best-*.ckpt (on the validation monitor) and last.ckpt
    plots/           training curves
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from interplay.core.data import atomic_write

INTERPLAY_DISTRIBUTIONS = (
    "interplay-core",
    "interplay-recsys",
    "interplay-eeg",
    "interplay-bio",
    "interplay-vision",
    "interplay-tabular",
)
THIRD_PARTY = ("torch", "lightning", "torchmetrics", "numpy", "scikit-learn", "torch-geometric", "dgl")


def create_run_dir(root: str | os.PathLike, domain: str, model: str) -> Path:
    """A new, empty ``root/domain/model/<YYYYmmdd-HHMMSS>[-n]`` directory."""
    base = Path(root) / domain / model
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        (path / "checkpoints").mkdir()
        (path / "plots").mkdir()
        return path
    raise RuntimeError(f"could not create a fresh run directory under {base}")


@contextlib.contextmanager
def run_directory(
    cfg: Any, run_dir: str | os.PathLike | None = None, *, versions: dict[str, Any] | None = None
) -> Iterator[Path]:
    """The run directory of ``cfg`` (a fresh one under ``cfg.run_root`` unless ``run_dir`` is given) with
    ``config.yaml``, ``versions.json`` (plus ``versions``), ``checkpoints/`` and ``plots/`` written.

    Everything a run does before it starts belongs inside the ``with`` block (building the trainer, a
    quick fit): when that raises, a directory created here is removed, so a failed start leaves
    nothing half-written. Every runner (the engine, the cross-validation and replication runners of
    the domains) opens its directory through this one function.
    """
    from interplay.core.config import save_config

    created = run_dir is None
    path = (
        Path(run_dir)
        if run_dir is not None
        else create_run_dir(cfg.run_root, cfg.domain, cfg.name or cfg.model.name)
    )
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        (path / "plots").mkdir(parents=True, exist_ok=True)
        save_config(cfg, path / "config.yaml")
        write_json(path / "versions.json", {**collect_versions(), **(versions or {})})
        yield path
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def open_run_dir(
    cfg: Any, run_dir: str | os.PathLike | None = None, *, versions: dict[str, Any] | None = None
) -> Path:
    """:func:`run_directory` for runners with nothing to do before they start."""
    with run_directory(cfg, run_dir, versions=versions) as path:
        return path


def git_commit(start: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the repository containing ``start`` (or the cwd)."""
    cwd = Path(start) if start else Path.cwd()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"commit": head, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def collect_versions() -> dict[str, Any]:
    packages = {}
    for name in INTERPLAY_DISTRIBUTIONS + THIRD_PARTY:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "git": git_commit(Path(__file__).resolve().parent),
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a Lightning ``metrics.csv`` merged per epoch (train and val rows come separately)."""
    by_epoch: dict[int, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            merged = by_epoch.setdefault(epoch, {"epoch": epoch})
            for key, value in row.items():
                if value not in ("", None) and key not in ("epoch", "step"):
                    merged[key] = float(value)
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Training curves (loss and every other per-epoch metric, train vs val) as one PNG."""
    rows = read_metrics_csv(metrics_csv) if Path(metrics_csv).is_file() else []
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k.split("/", 1)[1] for r in rows for k in r if "/" in k and not k.startswith("test/")})
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for stage in ("train", "val"):
            pts = [(r["epoch"], r[f"{stage}/{name}"]) for r in rows if f"{stage}/{name}" in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=stage)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_write(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out_png
