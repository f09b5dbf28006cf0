"""MOTCat's OT co-attention: time and peak memory vs bag size, core's torch Sinkhorn vs POT.

One patient: ``N`` patch tokens (1k, 10k, 100k; post-ReLU, as MOTCat's ``wsi_net`` output) and
``M = 6`` genomic tokens, ``d = 256``, float32. Every method computes MOTCat's pipeline (Xu & Chen,
ICCV 2023, Eq. 2-5): min-shifted tokens, cost ``cdist^2 / max`` (detached), unbalanced Sinkhorn
(``eps = 0.05``, ``tau = 0.5``), co-attended tokens ``plan^T P``:

* ``torch``: :func:`interplay.core.attention.transport.ot_coattention` (core's batched solver,
  100 iterations at most, early stop at 1e-9);
* ``pot``: the same call with ``backend="pot"`` (POT's ``sinkhorn_knopp_unbalanced`` on torch
  tensors, same iteration budget, POT's own stopping rule);
* ``motcat-reference``: the official code's call (cost to float64 numpy, POT with its defaults:
  up to 1000 iterations, ``stopThr=1e-6``, plan back to float32 torch);
* ``torch (baseline)``: with ``--baseline-transport FILE``, ``ot_coattention`` of another version of
  ``transport.py`` (e.g. ``git show <rev>:packages/core/src/interplay/core/attention/transport.py``),
  timed in the same run for before / after ratios.

Modes: ``forward`` (under ``torch.no_grad``) and ``forward+backward`` (the tokens require grad and
``coattended.sum()`` is back-propagated; the plan is detached, so the backward is the aggregation's).
Time: median (and min) of ``--repeats`` calls after one warm-up (one call when the warm-up exceeds
5 s). Peak memory: on CPU the peak resident-set growth over the inputs during one call (after a
small warm-up), measured in one fresh process with every block >= 64 KiB mmapped (RSS sampled every
millisecond); on CUDA ``max_memory_allocated`` growth.
CUDA rows are added when a GPU is present. Target (issue 7): 100k patches under 1 s per forward on
CPU (``--threads`` intra-op threads, 1 by default).

    python benchmarks/bio/ot_coattention.py [--sizes 1000 10000 100000] [--threads 1] [--repeats 3]
        [--baseline-transport old_transport.py] [--no-memory] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from interplay.core.bench import PeakRSS, save_results, summarize
from interplay.core.cli import format_table
from interplay.core.data import atomic_save

GROUPS, DIM, REG, TAU, ITERS = 6, 256, 0.05, 0.5, 100
TARGET_S = 1.0
SLOW_WARMUP_S = 5.0


def make_inputs(n: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Post-ReLU patch tokens and ELU genomic tokens, filled in place (no temporary copies)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    patches = torch.empty(n, DIM, device=device).normal_(generator=generator).relu_()
    genes = torch.nn.functional.elu(torch.empty(GROUPS, DIM, device=device).normal_(generator=generator))
    return patches, genes


def load_transport(path: str):
    spec = importlib.util.spec_from_file_location("baseline_transport", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def motcat_reference(patches: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """The official ``OT_Attn_assem`` + aggregation (models/model_motcat.py, impl 'pot-uot-l2')."""
    import ot

    p = (patches - patches.min(-1)[0].unsqueeze(-1)).detach()
    g = genes - genes.min(-1)[0].unsqueeze(-1)
    cost = torch.cdist(p, g) ** 2
    cost = cost / cost.max()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")  # POT's reg_type / convergence notices
        flow = ot.unbalanced.sinkhorn_knopp_unbalanced(
            ot.unif(p.shape[0]), ot.unif(g.shape[0]), cost.double().cpu().numpy(), REG, TAU
        )
    plan = torch.from_numpy(flow).float().to(patches.device)
    return plan.T @ patches


def methods(baseline: str | None) -> dict:
    from interplay.core.attention.transport import ot_coattention

    table = {
        "torch": lambda p, g: ot_coattention(p, g, reg=REG, reg_m=TAU, n_iters=ITERS, shift_by_min=True)[0],
        "pot": lambda p, g: ot_coattention(
            p, g, reg=REG, reg_m=TAU, n_iters=ITERS, backend="pot", shift_by_min=True
        )[0],
        "motcat-reference": motcat_reference,
    }
    if baseline:
        old = load_transport(baseline)
        table["torch (baseline)"] = lambda p, g: old.ot_coattention(
            p, g, reg=REG, reg_m=TAU, n_iters=ITERS, shift_by_min=True
        )[0]
    return table


def run_once(fn, patches, genes, mode: str) -> None:
    if mode == "forward":
        with torch.no_grad():
            fn(patches, genes)
    else:
        leaf = patches.requires_grad_(True)
        fn(leaf, genes).sum().backward()
        leaf.grad = None
        leaf.requires_grad_(False)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_row(fn, patches, genes, mode: str, device: str, repeats: int) -> dict:
    start = time.perf_counter()
    run_once(fn, patches, genes, mode)  # warm-up
    synchronize(device)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(1 if warmup > SLOW_WARMUP_S else repeats):
        start = time.perf_counter()
        run_once(fn, patches, genes, mode)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return summarize(times)


# ---------------------------------------------------------------------------- peak memory


def _memory_child(queue, configs, threads: int, baseline: str | None) -> None:
    torch.set_num_threads(threads)
    table = methods(baseline)
    small = make_inputs(64, "cpu")
    for name in {method for _, method, _ in configs}:  # imports and one-time set-up, not measured
        for mode in ("forward", "forward+backward"):
            run_once(table[name], *small, mode)
    results = {}
    for n, method, mode in configs:
        patches, genes = make_inputs(n, "cpu")
        with PeakRSS(interval=0.001) as mem:
            run_once(table[method], patches, genes, mode)
        results[(n, method, mode)] = mem.peak / 2**20
        del patches, genes
    queue.put(results)


def cpu_peaks_mb(configs: list, threads: int, baseline: str | None) -> dict:
    """Peak RSS growth per ``(n, method, mode)``, all measured in one fresh process.

    glibc's malloc is pinned to mmap every block >= 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so freed
    tensors leave the resident set at once and each call's peak is measured from its own inputs.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        child = context.Process(target=_memory_child, args=(queue, configs, threads, baseline))
        child.start()
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous
    try:
        results = queue.get(timeout=3600)
    except Exception:  # the child died (out of memory): report no figures rather than fail the run
        results = {}
    child.join()
    return results


def cuda_peak_mb(fn, patches, genes, mode: str) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run_once(fn, patches, genes, mode)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


# ---------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="subset of the methods (default: all)")
    parser.add_argument(
        "--baseline-transport", default=None, help="another transport.py to time side by side"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = methods(args.baseline_transport)
    names = args.methods or list(table)
    unknown = [m for m in names if m not in table]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(table)}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for n in args.sizes:
            patches, genes = make_inputs(n, device)
            for name in names:
                for mode in ("forward", "forward+backward"):
                    stats = time_row(table[name], patches, genes, mode, device, args.repeats)
                    peak = None
                    if device == "cuda" and not args.no_memory:
                        peak = cuda_peak_mb(table[name], patches, genes, mode)
                    row = {
                        "device": device,
                        "patches": n,
                        "method": name,
                        "mode": mode,
                        "median_s": stats["median_s"],
                        "min_s": stats["min_s"],
                        "repeats": stats["repeats"],
                        "peak_mb": peak,
                    }
                    rows.append(row)
                    print(
                        f"{device:<4} N={n:>6} {name:<18} {mode:<16} median {row['median_s']:8.3f} s"
                        f"  min {row['min_s']:8.3f} s",
                        flush=True,
                    )
            del patches, genes
    if not args.no_memory:
        configs = [(r["patches"], r["method"], r["mode"]) for r in rows if r["device"] == "cpu"]
        peaks = cpu_peaks_mb(configs, args.threads, args.baseline_transport)
        for row in rows:
            if row["device"] == "cpu":
                row["peak_mb"] = peaks.get((row["patches"], row["method"], row["mode"]))
    checks = target_checks(rows)
    print()
    print(
        format_table(
            [
                [
                    r["device"],
                    r["patches"],
                    r["method"],
                    r["mode"],
                    f"{r['median_s']:.4f}",
                    f"{r['min_s']:.4f}",
                    "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}",
                ]
                for r in rows
            ],
            ["device", "patches", "method", "mode", "median s", "min s", "peak MB"],
        )
    )
    print()
    for line in checks["lines"]:
        print(line)
    path = save_results(
        "bio_ot_coattention",
        rows,
        meta={
            "groups": GROUPS,
            "dim": DIM,
            "reg": REG,
            "reg_m": TAU,
            "n_iters": ITERS,
            "threads": args.threads,
            "baseline_transport": args.baseline_transport,
            "target_s": TARGET_S,
            "checks": {k: v for k, v in checks.items() if k != "lines"},
        },
        directory=args.out,
    )
    plot(rows, Path(args.out) / "bio_ot_coattention.png")
    print(f"results: {path}")
    return 0


def target_checks(rows: list[dict]) -> dict:
    """100k-patch CPU forward under 1 s, and speed-ups of torch over the others at the largest N."""
    cpu = [r for r in rows if r["device"] == "cpu"]
    if not cpu:
        return {"lines": []}
    largest = max(r["patches"] for r in cpu)
    by = {(r["method"], r["mode"]): r for r in cpu if r["patches"] == largest}
    out: dict = {"largest_patches": largest, "lines": []}
    torch_forward = by.get(("torch", "forward"))
    if torch_forward is not None:
        met = largest >= 100_000 and torch_forward["median_s"] < TARGET_S
        out["target_met"] = bool(met)
        out["lines"].append(
            f"target (100k patches, forward < {TARGET_S:.0f} s on CPU): torch median "
            f"{torch_forward['median_s']:.3f} s at N={largest} -> {'met' if met else 'NOT met'}"
        )
    for other in ("pot", "motcat-reference", "torch (baseline)"):
        for mode in ("forward", "forward+backward"):
            mine, theirs = by.get(("torch", mode)), by.get((other, mode))
            if mine and theirs:
                ratio = theirs["median_s"] / mine["median_s"]
                out[f"{other} / torch, {mode}"] = ratio
                out["lines"].append(f"{other} / torch ({mode}, N={largest}): {ratio:.2f}x")
    return out


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    series = sorted({(r["device"], r["method"], r["mode"]) for r in rows})
    for device, method, mode in series:
        points = sorted(
            (r["patches"], r["median_s"], r["peak_mb"])
            for r in rows
            if (r["device"], r["method"], r["mode"]) == (device, method, mode)
        )
        label = f"{method}, {mode}" + (f" ({device})" if device != "cpu" else "")
        style = "-" if mode == "forward" else "--"
        axes[0].loglog([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
        memory = [(p[0], p[2]) for p in points if p[2] is not None and p[2] > 0]
        if memory:
            axes[1].loglog([p[0] for p in memory], [p[1] for p in memory], style, marker="o", label=label)
    axes[0].axhline(TARGET_S, color="grey", linewidth=0.8, linestyle=":")
    axes[0].set_xlabel("patches N (6 genomic tokens, d 256)")
    axes[0].set_ylabel("median seconds per call")
    axes[0].set_title("OT co-attention time")
    axes[1].set_xlabel("patches N")
    axes[1].set_ylabel("peak memory growth (MB)")
    axes[1].set_title("OT co-attention peak memory")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_save(lambda temp: fig.savefig(temp, dpi=100), png)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
