"""Orion-MSP on CPU: block-sparse row attention vs dense, and accuracy vs LightGBM after a short
pre-training run.

Bouadi et al., "Orion-MSP: Multi-Scale Sparse Attention for Tabular In-Context Learning" (2025).

1. ``attention``: one row-interaction attention call over ``[CLS x4 | GLOBAL x2 | F features]``
   (scale 1, the longest sequence), F in {100, 250, 500, 1000, 2000}, a batch of 64 rows, 4 heads of
   16 channels (width 64), fp32. Methods:

   * ``banded``: the exact gather path (:func:`interplay.core.attention.banded.block_sparse_attention`),
     window 4, 2 random links;
   * ``sdpa-masked``: SDPA with the same pattern as a dense boolean mask (what ``attend`` does on CPU);
   * ``sdpa-dense``: SDPA without a mask (full attention, the cost the sparsity avoids);
   * ``flex``: compiled FlexAttention with the ``BlockMask`` (inference only: no CPU backward).

   Median wall time of ``forward`` (no grad) and ``forward+backward`` (sum of outputs), and the peak
   resident-memory growth of one call, measured in a fresh process (glibc malloc pinned to mmap
   blocks >= 64 KiB, so freed tensors leave the resident set and each call is measured on its own;
   not for flex, whose first call at each length compiles).
2. ``accuracy``: pre-train ``orion-msp-prior`` (the CLI's config; ``--minutes`` caps it) or load
   ``--checkpoint``, then stratified 5-fold cross-validation on breast cancer, wine and digits of
   the in-context classifier (4 ensemble members) and of LightGBM (100 trees, default parameters).

    python benchmarks/tabular/orion_msp.py [--sections attention accuracy] [--threads 1]
        [--checkpoint PATH] [--minutes 38]

Prints one table per section, saves ``benchmarks/results/tabular_orion_msp.{json,png}`` (rows of
sections not run this time are kept from the previous file) and the pre-trained weights as
``tabular_orion_msp_weights.pt`` when they are under 5 MB.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from interplay.core.attention import attend, block_sparse
from interplay.core.attention.banded import block_sparse_attention
from interplay.core.bench import PeakRSS, save_results, time_call
from interplay.core.cli import format_table, load_experiment

SECTIONS = ("attention", "accuracy")
FEATURES = (100, 250, 500, 1000, 2000)
N_SPECIAL, WINDOW, N_RANDOM = 6, 4, 2  # 4 CLS + 2 global tokens
ROWS, HEADS, HEAD_DIM = 64, 4, 16
METHODS = ("banded", "sdpa-masked", "sdpa-dense", "flex")
MODES = ("forward", "forward+backward")
WEIGHTS_LIMIT = 5 * 2**20


# ---------------------------------------------------------------------------- attention
def make_inputs(features: int, grad: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    length = N_SPECIAL + features
    return tuple(
        torch.randn(ROWS, HEADS, length, HEAD_DIM, generator=gen).requires_grad_(grad) for _ in range(3)
    )


def call(method: str, q, k, v) -> torch.Tensor:
    if method == "banded":
        return block_sparse_attention(q, k, v, n_global=N_SPECIAL, window=WINDOW, n_random=N_RANDOM)
    if method == "sdpa-masked":
        return attend(q, k, v, mask=block_sparse(N_SPECIAL, WINDOW, N_RANDOM), backend="sdpa")
    if method == "sdpa-dense":
        return F.scaled_dot_product_attention(q, k, v)
    return attend(q, k, v, mask=block_sparse(N_SPECIAL, WINDOW, N_RANDOM), backend="flex")


def run_once(method: str, features: int, mode: str, inputs=None) -> None:
    grad = mode == "forward+backward"
    q, k, v = inputs if inputs is not None else make_inputs(features, grad)
    if grad:
        call(method, q, k, v).sum().backward()
    else:
        with torch.no_grad():
            call(method, q, k, v)


def supported(method: str, mode: str) -> bool:
    return not (method == "flex" and mode == "forward+backward")  # no FlexAttention backward on CPU


def attention_times(args) -> list[dict]:
    rows = []
    flex_ok = "flex" in args.methods
    for features in FEATURES:
        for mode in MODES:
            inputs = make_inputs(features, mode == "forward+backward")
            for method in args.methods:
                if not supported(method, mode) or (method == "flex" and not flex_ok):
                    continue
                repeats = args.repeats if features <= 1000 else max(2, args.repeats // 2)
                try:
                    timing = time_call(
                        lambda m=method, f=features, o=mode, x=inputs: run_once(m, f, o, x), repeats=repeats
                    )
                except Exception as err:  # compiled flex needs a working C++ toolchain on CPU
                    if method != "flex":
                        raise
                    print(f"flex unavailable on this CPU: {type(err).__name__}: {err}", flush=True)
                    flex_ok = False
                    continue
                rows.append(
                    {
                        "section": "attention",
                        "features": features,
                        "tokens": N_SPECIAL + features,
                        "method": method,
                        "mode": mode,
                        "median_s": timing["median_s"],
                        "min_s": timing["min_s"],
                        "repeats": timing["repeats"],
                    }
                )
                print(rows[-1], flush=True)
    return rows


def _memory_child(queue, configs, threads: int) -> None:
    torch.set_num_threads(threads)
    for method in {m for _, m, _ in configs}:  # one-time set-up (caches, compilation) is not measured
        for mode in MODES:
            if supported(method, mode):
                run_once(method, 20, mode)
    results = {}
    for features, method, mode in configs:
        inputs = make_inputs(features, mode == "forward+backward")
        try:
            with PeakRSS(interval=0.001) as mem:
                run_once(method, features, mode, inputs)
            results[(features, method, mode)] = mem.peak / 2**20
        except Exception:
            results[(features, method, mode)] = None
        del inputs
    queue.put(results)


def attention_peaks_mb(configs: list, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        child = context.Process(target=_memory_child, args=(queue, configs, threads))
        child.start()
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous
    try:
        results = queue.get(timeout=3600)
    except Exception:  # the child died (out of memory): no figures rather than a failed run
        results = {}
    child.join()
    return results


# ---------------------------------------------------------------------------- accuracy
def pretrained_checkpoint(args, registry) -> tuple[Path, dict]:
    from interplay.tabular.icl.runner import run_orion

    if args.checkpoint:
        info = {"checkpoint": args.checkpoint, "pretrained_here": False}
        # a checkpoint from `interplay-tabular train --config orion-msp-prior`: its run's figures
        metrics_file = Path(args.checkpoint).resolve().parent.parent / "metrics.json"
        if metrics_file.is_file():
            import json

            metrics = json.loads(metrics_file.read_text())
            info.update(
                steps=metrics.get("epochs"),
                pretrain_seconds=metrics.get("fit_seconds"),
                stopped_early=metrics.get("stopped_early"),
                prior_val=metrics.get("last_val"),
                parameters=metrics.get("parameters"),
            )
        return Path(args.checkpoint), info
    overrides = [
        f"run_root={args.run_root}",
        "evaluation.progress=false",
        f"evaluation.threads={args.threads}",
    ]
    if args.minutes is not None:
        overrides.append(f"evaluation.time_limit_minutes={args.minutes}")
    cfg = load_experiment(registry, "orion-msp-prior", overrides)
    result = run_orion(cfg, registry)
    info = {
        "checkpoint": str(result.last_checkpoint),
        "pretrained_here": True,
        "steps": result.metrics["epochs"],
        "pretrain_seconds": result.metrics["fit_seconds"],
        "stopped_early": result.metrics["stopped_early"],
        "prior_val": result.metrics["last_val"],
        "parameters": result.metrics["parameters"],
    }
    return Path(result.last_checkpoint), info


def keep_weights(checkpoint: Path, out: Path) -> str | None:
    """A weights-only copy of the checkpoint in ``out`` when it is under 5 MB."""
    from interplay.core.data import atomic_save

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    slim = {
        k: state[k] for k in ("format", "model", "model_config", "step", "prior", "pretrain") if k in state
    }
    target = out / "tabular_orion_msp_weights.pt"
    atomic_save(lambda tmp: torch.save(slim, tmp), target)
    if target.stat().st_size >= WEIGHTS_LIMIT:
        target.unlink()
        return None
    return str(target)


def accuracy(args) -> tuple[list[dict], dict]:
    import interplay.tabular.icl  # noqa: F401  (registers the entries)
    from interplay.tabular.icl import OrionMSPClassifier, cross_validate, sklearn_tables
    from interplay.tabular.registry import REGISTRY

    checkpoint, info = pretrained_checkpoint(args, REGISTRY)
    info["weights_kept"] = keep_weights(checkpoint, Path(args.out))
    tables = sklearn_tables()
    makers = {
        "orion-msp": lambda: OrionMSPClassifier(checkpoint=str(checkpoint), n_estimators=4, random_state=0),
        "lightgbm": lambda: REGISTRY.models.create("lightgbm-classifier", n_estimators=100, n_jobs=1),
    }
    rows = []
    for name, make in makers.items():
        start = time.perf_counter()
        for row in cross_validate(make, tables, folds=5, seed=0):
            rows.append({"section": "accuracy", "model": name, **row})
        print(name, f"{time.perf_counter() - start:.0f} s", flush=True)
    # the floor: always predict the training folds' majority class
    from sklearn.dummy import DummyClassifier

    for row in cross_validate(lambda: DummyClassifier(), tables, folds=5, seed=0):
        rows.append({"section": "accuracy", "model": "majority", **row})
    return rows, info


# ---------------------------------------------------------------------------- report
def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attention = [r for r in rows if r["section"] == "attention"]
    acc = [r for r in rows if r["section"] == "accuracy"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for mode, ax in zip(MODES, axes[:2]):
        for method in METHODS:
            points = [
                (r["features"], r["median_s"])
                for r in attention
                if r["method"] == method and r["mode"] == mode
            ]
            if points:
                ax.plot(*zip(*points), marker="o", label=method)
        ax.set(xscale="log", yscale="log", xlabel="features F (tokens = F + 6)", ylabel="seconds", title=mode)
        ax.legend()
    if acc:
        models = list(dict.fromkeys(r["model"] for r in acc))
        tables = list(dict.fromkeys(r["table"] for r in acc))
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            means = [
                np.mean([r["accuracy"] for r in acc if r["model"] == model and r["table"] == t])
                for t in tables
            ]
            axes[2].bar(np.arange(len(tables)) + i * width, means, width, label=model)
        axes[2].set_xticks(np.arange(len(tables)) + width * (len(models) - 1) / 2, tables)
        axes[2].set(ylabel="accuracy (5-fold mean)", ylim=(0, 1), title="accuracy")
        axes[2].legend()
    fig.suptitle(f"Orion-MSP row attention ({ROWS} rows x {HEADS} heads x {HEAD_DIM} ch, CPU) and accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_tables(rows: list[dict], info: dict) -> None:
    attention = [r for r in rows if r["section"] == "attention"]
    if attention:
        for mode in MODES:
            methods = [m for m in METHODS if any(r["method"] == m and r["mode"] == mode for r in attention)]
            table = []
            for features in FEATURES:
                line = [features]
                for m in methods:
                    hit = [
                        r
                        for r in attention
                        if r["features"] == features and r["method"] == m and r["mode"] == mode
                    ]
                    line.append(hit[0]["median_s"] if hit else None)
                    line.append(hit[0].get("peak_mb") if hit else None)
                table.append(line)
            header = ["F"] + [f"{m} {unit}" for m in methods for unit in ("s", "MB")]
            print(f"\nrow attention, {mode} (median s, peak MB)")
            print(format_table(table, header))
    acc = [r for r in rows if r["section"] == "accuracy"]
    if acc:
        models = list(dict.fromkeys(r["model"] for r in acc))
        tables = list(dict.fromkeys(r["table"] for r in acc))
        table = []
        for model in models:
            line, means = [model], []
            for t in tables:
                values = [r["accuracy"] for r in acc if r["model"] == model and r["table"] == t]
                line.append(f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}")
                means.append(np.mean(values))
            line.append(f"{np.mean(means):.3f}")
            table.append(line)
        print("\naccuracy, stratified 5-fold (mean ± sd over folds)")
        print(format_table(table, ["model", *tables, "mean"]))
        print({k: v for k, v in info.items() if k != "prior_val"}, info.get("prior_val"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory process")
    parser.add_argument("--checkpoint", help="evaluate this pre-training checkpoint instead of pre-training")
    parser.add_argument(
        "--minutes", type=float, default=None, help="cap of the pre-training run (default: the config's, 38)"
    )
    parser.add_argument("--run-root", default="runs", help="where the pre-training run directory goes")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows: list[dict] = []
    info: dict = {}
    if "attention" in args.sections:
        rows += attention_times(args)
        if not args.no_memory:
            # compiled flex is left out: each new length recompiles, which would dominate its peak
            configs = [
                (r["features"], r["method"], r["mode"])
                for r in rows
                if r["section"] == "attention" and r["method"] != "flex"
            ]
            peaks = attention_peaks_mb(configs, args.threads)
            for r in rows:
                if r["section"] == "attention":
                    r["peak_mb"] = peaks.get((r["features"], r["method"], r["mode"]))
    if "accuracy" in args.sections:
        acc_rows, info = accuracy(args)
        rows += acc_rows
    print_tables(rows, info)
    meta = {
        "rows_per_batch": ROWS,
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "special_tokens": N_SPECIAL,
        "window": WINDOW,
        "random_links": N_RANDOM,
        "threads": args.threads,
        "accuracy": info,
        "protocol": "stratified 5-fold CV (shuffle, random_state 0) per table; LightGBM 100 trees",
    }
    out = Path(args.out)
    previous = out / "tabular_orion_msp.json"
    if previous.is_file():  # keep the sections not run this time
        import json

        kept = json.loads(previous.read_text())
        rows = [r for r in kept["rows"] if r["section"] not in args.sections] + rows
        if "accuracy" not in args.sections:
            meta["accuracy"] = kept.get("meta", {}).get("accuracy", {})
    path = save_results("tabular_orion_msp", rows, meta=meta, directory=out)
    plot(rows, out / "tabular_orion_msp.png")
    print(f"saved {path} and {out / 'tabular_orion_msp.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
