"""Benchmark helpers: timing, machine description, result JSON.

Times use CUDA events on GPU (after a synchronise) and ``time.perf_counter`` on CPU. Results go to
``benchmarks/results/<name>.json`` together with the machine description, so that ratios quoted
in issues and docs come from one side-by-side run.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from interplay.core.train.runs import collect_versions, write_json


def synchronize(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5, device: str | None = None) -> dict:
    """Wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return summarize(times)


def summarize(times: Sequence[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "repeats": len(times),
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save_results(
    name: str,
    rows: list[dict],
    *,
    meta: dict | None = None,
    directory: str | os.PathLike = "benchmarks/results",
) -> Path:
    path = Path(directory) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "benchmark": name,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine(),
            "versions": collect_versions()["packages"],
            "meta": meta or {},
            "rows": rows,
        },
    )
    return path


def rss_bytes() -> int:
    """The process's resident set size in bytes (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class PeakRSS:
    """Peak resident-memory growth of a block, sampled from a thread every ``interval`` seconds::

        with PeakRSS() as mem:
            run()
        mem.peak  # bytes above the resident size at entry

    The C library keeps freed memory resident, so measure one configuration per fresh process (or
    after ``malloc_trim``) when earlier work may have left pages behind."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.base = self.peak_abs = self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.base = rss_bytes()
        self.peak_abs = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak_abs = max(self.peak_abs, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak_abs = max(self.peak_abs, rss_bytes())
        self.peak = self.peak_abs - self.base
