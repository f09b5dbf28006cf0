"""Serving latency and training throughput of the CTR models on CPU.

A Criteo-like layout (26 categorical fields with 1,000-id vocabularies + 13 numeric fields; with
Hiformer's task token that is 40 feature tokens). Latency: median of ``--repeats`` calls under
``torch.inference_mode`` at batch 1 and batch 1024 on one thread (``--threads``), for Hiformer full,
low-rank (r_k = r_v = 64), low-rank + pruned last layer, AutoInt and DCN-v2. Throughput: training
samples per second (forward + backward + Adam step, batch 1024). Targets (issue 4): low-rank +
pruned at least 2x faster than full Hiformer, and within 1.5x of DCN-v2.

    python benchmarks/recsys/latency.py [--repeats 50] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from interplay.core.bench import save_results
from interplay.core.cli import format_table
from interplay.recsys.cli import _load
from interplay.recsys.layout import FeatureLayout, FieldInfo, random_batch
from interplay.recsys.registry import REGISTRY

LAYOUT = FeatureLayout(
    categorical=tuple(FieldInfo(f"C{i}", "categorical", 1000) for i in range(1, 27)),
    numeric=tuple(FieldInfo(f"I{i}", "numeric") for i in range(1, 14)),
)
HIFORMER = dict(dim=16, layers=2, heads=2, d_k=8, d_v=8, dense_tokens=13)
MODELS = {
    "hiformer (full)": ("hiformer", HIFORMER),
    "hiformer (low-rank 64)": ("hiformer", {**HIFORMER, "rank_k": 64, "rank_v": 64}),
    "hiformer (low-rank 64 + pruned)": (
        "hiformer",
        {**HIFORMER, "rank_k": 64, "rank_v": 64, "prune_last": True},
    ),
    "autoint": ("autoint", {}),
    "dcnv2": ("dcnv2", {}),
}


def latency(model, batch, repeats):
    with torch.inference_mode():
        for _ in range(3):
            model(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(model, batch, steps=10):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["label"].shape[0] / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one serving core)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _load()
    torch.manual_seed(0)
    small, large = random_batch(LAYOUT, 1, with_user=False), random_batch(LAYOUT, 1024, with_user=False)
    rows = []
    for label, (name, params) in MODELS.items():
        model = REGISTRY.models.create(name, layout=LAYOUT, **params).eval()
        n_params = sum(p.numel() for p in model.parameters())
        row = {
            "model": label,
            "params": n_params,
            "latency_b1_ms": 1e3 * latency(model, small, args.repeats),
            "latency_b1024_ms": 1e3 * latency(model, large, max(5, args.repeats // 5)),
        }
        row["train_samples_per_s"] = throughput(model, large)
        rows.append(row)
        print(
            f"{label:<34} b1 {row['latency_b1_ms']:8.3f} ms  b1024 {row['latency_b1024_ms']:9.2f} ms  "
            f"train {row['train_samples_per_s']:9.0f}/s",
            flush=True,
        )
    by = {r["model"]: r for r in rows}
    full, pruned, dcn = by["hiformer (full)"], by["hiformer (low-rank 64 + pruned)"], by["dcnv2"]
    checks = {}
    for b in ("b1", "b1024"):
        key = f"latency_{b}_ms"
        checks[f"pruned_speedup_vs_full_{b}"] = full[key] / pruned[key]
        checks[f"pruned_over_dcnv2_{b}"] = pruned[key] / dcn[key]
    print()
    print(
        format_table(
            [
                [
                    r["model"],
                    r["params"],
                    r["latency_b1_ms"],
                    r["latency_b1024_ms"],
                    round(r["train_samples_per_s"]),
                ]
                for r in rows
            ],
            ["model", "params", "b=1 ms", "b=1024 ms", "train samples/s"],
        )
    )
    print({k: round(v, 2) for k, v in checks.items()})
    path = save_results(
        "recsys_latency",
        rows,
        meta={"checks": checks, "layout": "26 cat x 1000 + 13 numeric", "threads": args.threads},
        directory=args.out,
    )
    plot(rows, Path(args.out) / "recsys_latency.png")
    print(f"results: {path}")
    return 0


def plot(rows, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = [r["model"] for r in rows]
    for ax, key, title in (
        (axes[0], "latency_b1_ms", "batch 1"),
        (axes[1], "latency_b1024_ms", "batch 1024"),
    ):
        ax.barh(names, [r[key] for r in rows], color="tab:blue")
        ax.set_xlabel("median latency (ms)")
        ax.set_title(f"CPU inference, {title}")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
