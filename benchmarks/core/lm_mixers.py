"""Every token mixer of ``interplay.core.lm`` trained at equal parameters and steps: validation bpc.

Each mixer trains the same byte-level decoder (:class:`~interplay.core.lm.model.CausalLM`: pre-norm,
RMSNorm, GELU feed-forward resized so that every model has the softmax model's parameter count, tied
embeddings) on the same text (the Python standard library's sources, split by file), with the same
seed, batches, optimiser (AdamW, warm-up + cosine) and number of steps; validation bits per character
are scored once, after training, on the same validation windows. Prints a table and writes
``benchmarks/results/lm_mixers.json`` and ``.png`` (bar plot); each run also writes its run directory
under ``--run-root``.

    python benchmarks/core/lm_mixers.py                 # d=128, 4 layers, seq 256, batch 8, 300 steps
    python benchmarks/core/lm_mixers.py --quick         # d=64, 4 layers, seq 256, batch 4, 200 steps
    python benchmarks/core/lm_mixers.py --mixers softmax rat --steps 50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from interplay.core.bench import save_results
from interplay.core.cli import format_table
from interplay.core.lm import DataSpec, LMConfig, ModelSpec, mixer_names, stdlib_corpus, train_lm
from interplay.core.lm.mixers import MixerOptions
from interplay.core.lm.train import run_name

HYBRIDS = ["hybrid:linear@softmax=0,3", "hybrid:shift@softmax=3"]
PRESETS = {
    "standard": dict(dim=128, depth=4, heads=4, seq_len=256, batch_size=8, steps=300),
    "quick": dict(dim=64, depth=4, heads=2, seq_len=256, batch_size=4, steps=200),
}
FAMILIES = {
    "softmax": "full attention",
    "mla": "full attention",
    "cmha": "full attention",
    "window": "local / sparse",
    "moba": "local / sparse",
    "chunked": "local / sparse",
    "linear": "linear / recurrent",
    "nala": "linear / recurrent",
    "rat": "linear / recurrent",
    "shift": "content-independent",
    "fixed": "content-independent",
}
COLOURS = {
    "full attention": "tab:blue",
    "local / sparse": "tab:orange",
    "linear / recurrent": "tab:green",
    "content-independent": "tab:gray",
    "hybrid": "tab:purple",
}


def family(mixer: str) -> str:
    return "hybrid" if mixer.startswith("hybrid:") else FAMILIES.get(mixer, "other")


def plot(rows: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["val_bpc"])
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(rows)), 4.5))
    colours = [COLOURS.get(family(r["mixer"]), "black") for r in rows]
    bars = ax.bar(range(len(rows)), [r["val_bpc"] for r in rows], color=colours)
    for bar, r in zip(bars, rows):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{r['val_bpc']:.3f}", ha="center",
                va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(rows)), [r["mixer"].replace("hybrid:", "hybrid:\n") for r in rows], rotation=45,
                  ha="right", fontsize=8)  # fmt: skip
    low = min(r["val_bpc"] for r in rows)
    high = max(r["val_bpc"] for r in rows)
    ax.set_ylim(max(0.0, low - 0.15 * (high - low + 0.1)), high + 0.1 * (high - low + 0.1))
    ax.set_ylabel("validation bits per character (lower is better)")
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    ax.legend(handles, list(COLOURS), fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller preset (fits ~15 min on 2 cores)")
    parser.add_argument("--mixers", nargs="+", help="default: every mixer and two hybrids")
    for name in ("dim", "depth", "heads", "seq_len", "batch_size", "steps"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest on a busy box)")
    parser.add_argument("--budget-bytes", type=int, default=3_000_000)
    parser.add_argument("--val-tokens", type=int, default=65536)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    settings = dict(PRESETS["quick" if args.quick else "standard"])
    settings.update({k: getattr(args, k) for k in settings if getattr(args, k) is not None})
    mixers = args.mixers or [*mixer_names(), *HYBRIDS]

    torch.set_num_threads(args.threads)
    corpus = stdlib_corpus(budget_bytes=args.budget_bytes)
    print(f"corpus: {corpus.describe()}", flush=True)
    spec = ModelSpec(
        dim=settings["dim"], depth=settings["depth"], heads=settings["heads"], options=MixerOptions()
    )
    rows, start = [], time.perf_counter()
    for mixer in mixers:
        cfg = LMConfig(
            mixer=mixer,
            model=spec,
            data=DataSpec(budget_bytes=args.budget_bytes, val_tokens=args.val_tokens),
            steps=settings["steps"],
            batch_size=settings["batch_size"],
            seq_len=settings["seq_len"],
            lr=args.lr,
            seed=args.seed,
            threads=args.threads,
            accelerator=args.accelerator,
            progress_bar=False,
            name=f"bench-{run_name(mixer)}",
            run_root=args.run_root,
        )
        result = train_lm(cfg, corpus=corpus)
        m = result.metrics
        row = {
            "mixer": mixer,
            "family": family(mixer),
            "layer_mixers": m["layer_mixers"],
            "params": m["params"],
            "val_bpc": m["val_bpc"],
            "last_train_loss_nats": m.get("last_train_loss"),
            "train_seconds": m["train_seconds"],
            "tokens_per_second": m["tokens_per_second"],
            "run_dir": str(result.run_dir),
        }
        rows.append(row)
        print(
            f"{mixer:<28} params {m['params']:>8}  val bpc {m['val_bpc']:.4f}  "
            f"train {m['train_seconds']:7.1f} s  {m['tokens_per_second']:8.0f} tok/s",
            flush=True,
        )
    total = time.perf_counter() - start

    softmax = next((r["val_bpc"] for r in rows if r["mixer"] == "softmax"), None)
    table = [
        [
            r["mixer"],
            r["family"],
            r["params"],
            f"{r['val_bpc']:.3f}",
            "-" if softmax is None else f"{r['val_bpc'] - softmax:+.3f}",
            f"{r['train_seconds']:.0f}",
            f"{r['tokens_per_second']:.0f}",
        ]
        for r in sorted(rows, key=lambda r: r["val_bpc"])
    ]
    header = ["mixer", "family", "params", "val bpc", "vs softmax", "train s", "tokens/s"]
    print()
    print(format_table(table, header))
    params = [r["params"] for r in rows]
    print(f"\nparameter spread max/min: {max(params) / min(params):.4f}; total {total / 60:.1f} min")
    print("\nmarkdown:\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in table:
        print("| " + " | ".join(str(c) for c in row) + " |")

    meta = {
        "settings": {**settings, "lr": args.lr, "threads": args.threads, "seed": args.seed},
        "preset": "quick" if args.quick else "standard",
        "corpus": corpus.describe(),
        "python": sys.version.split()[0],
        "total_seconds": round(total, 1),
        "load_average": os.getloadavg(),
        "param_spread": max(params) / min(params),
    }
    path = save_results("lm_mixers", rows, meta=meta, directory=args.out)
    title = (
        f"byte-level LM on the Python stdlib: d={settings['dim']}, {settings['depth']} layers, seq "
        f"{settings['seq_len']}, batch {settings['batch_size']}, {settings['steps']} steps, "
        f"~{params[0] / 1e3:.0f}k params each"
    )
    plot(rows, Path(args.out) / "lm_mixers.png", title)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
