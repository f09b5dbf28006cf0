"""Serving latency and training throughput of the CTR models on CPU.

A Criteo-like layout (26 categorical fields with 1,000-id vocabularies + 13 numeric fields; with
Hiformer's task token that is 40 feature tokens). Latency: median of ``--repeats`` calls under
``torch.inference_mode`` at batch 1 and batch 1024 on one thread (``--threads``), for Hiformer full,
low-rank (r_k = r_v = 64), low-rank + pruned last layer, AutoInt and DCN-v2, each run eagerly and
compiled with ``torch.compile`` (Inductor, static shapes; how a CPU serving stack would run them).
Throughput: training samples per second (forward + backward + Adam step, batch 1024, eager) for
every registered CTR model; the behaviour-sequence models (DIN, MoE, AW-MoE) get the same layout
plus a 50-item behaviour sequence sharing C1's vocabulary.

Targets (issue 4): low-rank + pruned at least 2x faster than full Hiformer, and within 1.5x of
DCN-v2. The checks are printed for every (mode, batch) pair.

    python benchmarks/recsys/latency.py [--repeats 50] [--no-compile] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
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
SEQUENCE_LAYOUT = dataclasses.replace(
    LAYOUT,
    sequence=FieldInfo("history", "sequence", 1000, shares_with="C1"),
    max_sequence_length=50,
)
HIFORMER = dict(dim=16, layers=2, heads=2, d_k=8, d_v=8, dense_tokens=13)
SERVING = {
    "hiformer (full)": ("hiformer", HIFORMER),
    "hiformer (low-rank 64)": ("hiformer", {**HIFORMER, "rank_k": 64, "rank_v": 64}),
    "hiformer (low-rank 64 + pruned)": (
        "hiformer",
        {**HIFORMER, "rank_k": 64, "rank_v": 64, "prune_last": True},
    ),
    "autoint": ("autoint", {}),
    "dcnv2": ("dcnv2", {}),
}
TRAIN_ONLY = {"dnn": ("dnn", {}), "din": ("din", {}), "moe": ("moe", {}), "awmoe": ("awmoe", {})}
SEQUENCE_MODELS = {"din", "moe", "awmoe"}
BATCHES = (1, 1024)


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
        if hasattr(model, "training_step_outputs"):
            logits, aux = model.training_step_outputs(batch)
        else:
            logits, aux = model(batch), {}
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["label"])
        loss = loss + sum(aux.values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["label"].shape[0] / (time.perf_counter() - start)


def inputs(layout, batch):
    return {k: v for k, v in random_batch(layout, batch, with_user=False).items() if k != "label"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one serving core)")
    parser.add_argument("--no-compile", action="store_true", help="eager latency only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _load()
    torch.manual_seed(0)
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]
    rows = []
    for label, (name, params) in {**SERVING, **TRAIN_ONLY}.items():
        layout = SEQUENCE_LAYOUT if name in SEQUENCE_MODELS else LAYOUT
        model = REGISTRY.models.create(name, layout=layout, **params).eval()
        row = {"model": label, "params": sum(p.numel() for p in model.parameters())}
        if label in SERVING:
            for mode in modes:
                for b in BATCHES:
                    # a fresh compile per batch size: static shapes, as a serving graph would be
                    fn = torch.compile(model, dynamic=False) if mode == "compiled" else model
                    repeats = args.repeats if b == 1 else max(5, args.repeats // 5)
                    row[f"{mode}_b{b}_ms"] = 1e3 * latency(fn, inputs(LAYOUT, b), repeats)
                torch._dynamo.reset()
        train_batch = random_batch(layout, 1024, with_user=False)
        row["train_samples_per_s"] = throughput(model, train_batch)
        rows.append(row)
        print(
            f"{label:<34}",
            "  ".join(f"{k} {v:8.3f}" for k, v in row.items() if k.endswith("_ms")),
            f"train {row['train_samples_per_s']:7.0f}/s",
            flush=True,
        )
    by = {r["model"]: r for r in rows}
    full, pruned, dcn = by["hiformer (full)"], by["hiformer (low-rank 64 + pruned)"], by["dcnv2"]
    checks = {}
    for mode in modes:
        for b in BATCHES:
            key = f"{mode}_b{b}_ms"
            speedup, over = full[key] / pruned[key], pruned[key] / dcn[key]
            checks[f"{mode} b={b}"] = {
                "pruned_speedup_vs_full": speedup,
                "pruned_over_dcnv2": over,
                "met": bool(speedup >= 2.0 and over <= 1.5),
            }
    print()
    keys = [f"{m}_b{b}_ms" for m in modes for b in BATCHES]
    print(
        format_table(
            [
                [
                    r["model"],
                    r["params"],
                    *[r.get(k, "-") for k in keys],
                    round(r["train_samples_per_s"]),
                ]
                for r in rows
            ],
            ["model", "params", *[k.replace("_ms", " ms") for k in keys], "train samples/s"],
        )
    )
    print()
    print(
        format_table(
            [
                [k, round(v["pruned_speedup_vs_full"], 2), round(v["pruned_over_dcnv2"], 2), v["met"]]
                for k, v in checks.items()
            ],
            ["mode, batch", "full / pruned (>= 2)", "pruned / DCN-v2 (<= 1.5)", "target met"],
        )
    )
    path = save_results(
        "recsys_latency",
        rows,
        meta={
            "checks": checks,
            "layout": "26 cat x 1000 + 13 numeric (+ 50-item sequence for din/moe/awmoe)",
            "threads": args.threads,
        },
        directory=args.out,
    )
    plot(rows, keys, Path(args.out) / "recsys_latency.png")
    print(f"results: {path}")
    return 0


def plot(rows, keys, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    serving = [r for r in rows if keys[0] in r]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.2 * (len(keys) + 1), 3.6))
    names = [r["model"] for r in serving]
    for ax, key in zip(axes, keys):
        ax.barh(names, [r[key] for r in serving], color="tab:blue")
        ax.set_xlabel("median latency (ms)")
        ax.set_title(key.replace("_ms", "").replace("_b", ", batch "))
        ax.invert_yaxis()
    for ax in axes[1:-1]:
        ax.set_yticklabels([])
    axes[-1].barh([r["model"] for r in rows], [r["train_samples_per_s"] for r in rows], color="tab:green")
    axes[-1].set_xlabel("training samples / s (batch 1024)")
    axes[-1].invert_yaxis()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
