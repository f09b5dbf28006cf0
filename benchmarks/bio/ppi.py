"""PPI affinity heads (Alsamkary et al., arXiv:2505.20036): throughput and the HP / PAD > EC claim.

1. Throughput on CPU, for each architecture, over 1,000 synthetic complexes whose per-chain (and,
   for SC, joint) features are already in the embedding store's memory cache (what a frozen-PLM
   run sees from its second epoch on): complexes/s of the head alone on pre-padded inputs, of the
   whole frozen-mode forward (store lookup + padding + head), both in inference, and of a training
   step (forward, backward, AdamW), batch 32.
2. Accuracy on synthetic PPB-Affinity-format data whose pKd depends on cross-chain motif pairs
   (``ppi-{ec,sc,hp,pad}-synthetic`` configs: 800 complexes, whole identity clusters split 70/15/15,
   frozen random PLM, ConvBERT heads): every run goes through the engine (selection and early
   stopping on validation Spearman, test scored once); mean ± sd of test Spearman over ``--seeds``
   (the data and split are fixed; the seed changes initialisation and batch order). Target: HP and
   PAD above EC (and SC).

Runs are spread over ``--jobs`` processes of one thread each. Prints both tables and writes
``benchmarks/results/bio_ppi.json`` and ``.png``.

    python benchmarks/bio/ppi.py [--seeds 0 1 2] [--jobs 2] [--skip-training] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ARCHS = ["ec", "sc", "hp", "pad"]


def _registry():
    import interplay.bio.ppi  # noqa: F401  (registers the PPI entries)
    from interplay.bio.registry import REGISTRY

    return REGISTRY


def throughput(n_complexes: int = 1000, batch_size: int = 32, repeats: int = 3) -> list[dict]:
    from interplay.bio.ppi.data import read_ppb_affinity, write_synthetic_ppb_affinity
    from interplay.bio.ppi.task import collate_complexes

    registry = _registry()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_ppb_affinity(tmp, n_complexes=n_complexes, n_families=n_complexes // 10)
        complexes = read_ppb_affinity(data.csv)
    batches = [collate_complexes(complexes[i : i + batch_size]) for i in range(0, n_complexes, batch_size)]
    for arch in ARCHS:
        torch.manual_seed(0)
        model = registry.models.create(f"ppi-{arch}", plm="random", plm_params={"dim": 32}, target_mean=7.0)
        row = {"section": "throughput", "model": arch, "complexes": n_complexes, "batch_size": batch_size}
        row.update(_measure(model, batches, repeats))
        rows.append(row)
        print(
            f"throughput {arch}: head {row['head_per_s']:.0f}/s, "
            f"cached forward {row['cached_forward_per_s']:.0f}/s, train {row['train_step_per_s']:.0f}/s",
            flush=True,
        )
    return rows


def _measure(model: torch.nn.Module, batches: list[dict], repeats: int) -> dict:
    """Complexes/s of the head, of the cached frozen forward and of a training pass over ``batches``."""
    from interplay.core.bench import time_call

    n = sum(len(b["target"]) for b in batches)
    model.eval()
    with torch.no_grad():
        inputs = [model.encode(b) for b in batches]  # fills the store's memory cache
    computed = model.provider.stats["computed"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def head() -> None:
        with torch.no_grad():
            for x in inputs:
                model.forward_head(x)

    def cached_forward() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def train_pass() -> None:
        model.train()
        for b in batches:
            loss = torch.nn.functional.mse_loss(model(b), b["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()

    out: dict = {"parameters": sum(p.numel() for p in model.parameters())}
    for label, fn, warmup, times in (
        ("head", head, 1, repeats),
        ("cached_forward", cached_forward, 1, repeats),
        ("train_step", train_pass, 0, 1),  # one pass: every batch already repeats the same work
    ):
        timing = time_call(fn, warmup=warmup, repeats=times)
        out[f"{label}_per_s"] = n / timing["median_s"]
        out[f"{label}_median_s"] = timing["median_s"]
    assert model.provider.stats["computed"] == computed, "the timed passes must not compute embeddings"
    return out


def train_one(arch: str, seed: int, runs: str, overrides: list[str]) -> dict:
    torch.set_num_threads(1)
    from interplay.core.cli import load_experiment
    from interplay.core.train import train

    registry = _registry()
    cfg = load_experiment(
        registry,
        f"ppi-{arch}-synthetic",
        [f"seed={seed}", f"run_root={runs}", "trainer.tensorboard=false", f"data.root={runs}", *overrides],
    )
    start, cpu = time.perf_counter(), time.process_time()
    result = train(cfg, registry)
    return {
        "section": "accuracy",
        "model": arch,
        "seed": seed,
        "epochs": result.metrics["epochs"],
        "best_val_spearman": result.metrics["best_val"],
        "wall_s": round(time.perf_counter() - start, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        **result.metrics["test"],
    }


def accuracy(seeds: list[int], jobs: int, overrides: list[str]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        # generate the synthetic data once, before the workers race for it
        from interplay.core.cli import load_experiment
        from interplay.core.train import build_experiment

        registry = _registry()
        build_experiment(
            load_experiment(registry, "ppi-hp-synthetic", [f"data.root={runs}", *overrides]), registry
        )
        tasks = [(arch, seed) for seed in seeds for arch in ARCHS]
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {
                pool.submit(train_one, arch, seed, runs, overrides): (arch, seed) for arch, seed in tasks
            }
            for future in futures:
                row = future.result()
                rows.append(row)
                print(
                    f"accuracy {row['model']} seed {row['seed']}: test spearman {row['test/spearman']:.4f} "
                    f"(val {row['best_val_spearman']:.4f}, {row['epochs']} epochs, {row['wall_s']} s wall, "
                    f"{row['cpu_s']} s cpu)",
                    flush=True,
                )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for arch in ARCHS:
        runs = [r for r in rows if r["model"] == arch]
        if not runs:
            continue
        entry = {"section": "accuracy_summary", "model": arch, "seeds": len(runs)}
        for metric in ("test/spearman", "test/pearson", "test/rmse"):
            values = [r[metric] for r in runs]
            entry[metric] = statistics.fmean(values)
            entry[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def plot(throughput_rows: list[dict], summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interplay.core.data import atomic_write

    panels = [p for p in (throughput_rows, summary) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    axes = list(axes[0])
    if throughput_rows:
        ax = axes.pop(0)
        labels = [r["model"].upper() for r in throughput_rows]
        width = 0.27
        for k, (key, name) in enumerate(
            (
                ("head_per_s", "head only"),
                ("cached_forward_per_s", "cached forward"),
                ("train_step_per_s", "train step"),
            )
        ):
            ax.bar(
                [i + (k - 1) * width for i in range(len(labels))],
                [r[key] for r in throughput_rows],
                width,
                label=name,
            )
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yscale("log")
        ax.set_ylabel("complexes / s (CPU, batch 32)")
        ax.set_title(f"throughput, {throughput_rows[0]['complexes']} cached complexes")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    if summary:
        ax = axes.pop(0)
        labels = [s["model"].upper() for s in summary]
        ax.bar(
            labels,
            [s["test/spearman"] for s in summary],
            yerr=[s["test/spearman_sd"] for s in summary],
            capsize=4,
        )
        ax.set_ylabel("test Spearman (mean ± sd)")
        ax.set_title(f"synthetic cross-chain affinity, {summary[0]['seeds']} seeds")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="training processes (one thread each)")
    parser.add_argument("--complexes", type=int, default=1000, help="complexes timed for throughput")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="config overrides for the training runs (key=value)")
    args = parser.parse_args(argv)
    from interplay.core.bench import save_results
    from interplay.core.cli import format_table

    start = time.perf_counter()
    torch.set_num_threads(1)
    speed = [] if args.skip_throughput else throughput(args.complexes)
    runs = [] if args.skip_training else accuracy(args.seeds, args.jobs, args.overrides)
    summary = summarise(runs)
    if speed:
        print("\nthroughput (complexes/s, CPU, one thread, batch 32, features cached)")
        print(
            format_table(
                [
                    [
                        r["model"],
                        r["head_per_s"],
                        r["cached_forward_per_s"],
                        r["train_step_per_s"],
                        r["parameters"],
                    ]
                    for r in speed
                ],
                ["model", "head", "cached forward", "train step", "parameters"],
            )
        )
    if summary:
        print(f"\nsynthetic cross-chain affinity, test (mean ± sd over seeds {args.seeds})")
        print(
            format_table(
                [
                    [
                        s["model"],
                        f"{s['test/spearman']:.4f} ± {s['test/spearman_sd']:.4f}",
                        f"{s['test/pearson']:.4f} ± {s['test/pearson_sd']:.4f}",
                        f"{s['test/rmse']:.4f} ± {s['test/rmse_sd']:.4f}",
                    ]
                    for s in summary
                ],
                ["model", "spearman", "pearson", "rmse"],
            )
        )
        means = {s["model"]: s["test/spearman"] for s in summary}
        if {"ec", "hp", "pad"} <= set(means):
            verdict = means["hp"] > means["ec"] and means["pad"] > means["ec"]
            print(f"HP and PAD beat EC: {'yes' if verdict else 'NO'}")
    elapsed = time.perf_counter() - start
    print(f"total {elapsed:.0f} s")
    path = save_results(
        "bio_ppi",
        [*speed, *runs, *summary],
        meta={
            "seeds": args.seeds,
            "jobs": args.jobs,
            "overrides": args.overrides,
            "total_s": round(elapsed, 1),
        },
        directory=args.out,
    )
    plot(speed, summary, path.with_suffix(".png"))
    print(f"results: {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
