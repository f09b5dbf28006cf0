"""`make demo`: run one short job per domain through the command line and print a results table.

Each job is the exact console command a user would type; its figures are read back from the run
directory's metrics.json. Later domains append their job to JOBS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# (domain, console command, metric to report, target it must reach, time budget in seconds[, env])
JOBS = [
    ("core", ["interplay-core", "train", "--config", "digits-transformer"], "test/acc", 0.95, 120.0),
    # synthetic Criteo-format data with planted interactions (generated locally, no download)
    ("recsys", ["interplay-recsys", "train", "--config", "hiformer-synthetic"], "test/auc", 0.60, 60.0),
    # KGAT on synthetic KGAT-format data whose attribute entities drive preferences (generated
    # locally); full ranking of all items, selection on val/recall@20 (BPR-MF reaches about 0.22)
    # (one thread: its many small sparse products slow down when two threads share the CI cores)
    (
        "recsys",
        ["interplay-recsys", "train", "--config", "kgat-synthetic"],
        "test/recall@20",
        0.18,
        60.0,
        {"OMP_NUM_THREADS": "1"},
    ),
]


def run_job(command: list[str], env: dict[str, str] | None = None) -> tuple[dict, float]:
    exe = shutil.which(command[0], path=str(BIN)) or command[0]
    print("$ " + " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), *command]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [exe, *command[1:]], cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    seconds = time.perf_counter() - start
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo job failed ({proc.returncode}): {' '.join(command)}")
    run_dir = Path(proc.stdout.split("run directory: ")[1].split()[0])
    return json.loads((ROOT / run_dir / "metrics.json").read_text()), seconds


def main() -> int:
    from interplay.core.cli import format_table

    rows, ok = [], True
    for domain, command, metric, target, budget, *env in JOBS:
        metrics, seconds = run_job(command, *env)
        value = metrics.get("test", {}).get(metric)
        passed = value is not None and value >= target and seconds <= budget
        ok &= passed
        rows.append(
            [
                domain,
                command[3] if len(command) > 3 else command[-1],
                metric,
                value,
                target,
                round(seconds, 1),
                "yes" if passed else "NO",
            ]
        )
    print("Interplay demo results")
    print(format_table(rows, ["domain", "config", "metric", "ours", "target", "seconds", "met"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
