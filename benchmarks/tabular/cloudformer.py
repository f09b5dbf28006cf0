"""CloudFormer on CPU: training throughput, per-run inference latency, and the unseen-application
comparison with its baselines on synthetic data.

Shahbazinia et al., "CloudFormer" (arXiv:2509.03394, 2025).

1. ``throughput``: optimiser steps (forward, log-cosh loss, backward, Adam) on random padded batches
   of runs with lengths drawn from [T/2, T]: runs per second at ``--batch`` for the paper-size model
   (width 64, 4 x 16 heads, FFN 256, 4 blocks: 231,005 parameters) and the narrower synthetic-config
   model (width 32, 2 blocks).
2. ``latency``: one run at a time (batch 1, eval mode, no padding), T in {60, 300, 1200} seconds,
   for both CloudFormers and the LSTM baseline.
3. ``comparison``: ``reproduce cloudformer``'s runs (config ``cloudformer``: cloud-synthetic,
   train on 7 applications, test on 4, ``--partitions`` random partitions) for CloudFormer, random
   forest, LightGBM, LSTM and linear regression, plus the training-mean predictor; MAE / MSE in
   percentage points, mean +- sample std over partitions.

    python benchmarks/tabular/cloudformer.py [--sections throughput latency comparison]
        [--partitions 6] [--threads 1]

Prints one table per section, saves ``benchmarks/results/tabular_cloudformer.{json,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from interplay.core.bench import save_results, time_call
from interplay.core.cli import format_table, load_experiment
from interplay.tabular.cloud import CloudFormer, RunLSTM, count_parameters, log_cosh, run_cloud_protocol
from interplay.tabular.cloud.evaluation import build_datamodule
from interplay.tabular.cloud.tasks import percentage_point_errors
from interplay.tabular.registry import REGISTRY

SECTIONS = ("throughput", "latency", "comparison")
MODELS = {
    "cloudformer-paper": dict(dim=64, heads=4, depth=4, ffn_dim=256, fusion_hidden=128),
    "cloudformer-synthetic": dict(dim=32, heads=2, depth=2, ffn_dim=64, fusion_hidden=64),
}
LENGTHS = (60, 300, 1200)
CONFIG = "cloudformer"


def make_model(name: str) -> torch.nn.Module:
    if name == "lstm":
        return RunLSTM(hidden=64, layers=2)
    return CloudFormer(**MODELS[name])


def random_batch(batch: int, max_len: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    lengths = torch.randint(max_len // 2, max_len + 1, (batch,), generator=generator)
    lengths[0] = max_len
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    metrics = torch.randn(batch, max_len, 206, generator=generator) * mask[..., None]
    return metrics, mask, torch.rand(batch, generator=generator) * 0.6 + 0.4


def throughput(args) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for name in [*MODELS, "lstm"]:
        model = make_model(name).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        metrics, mask, target = random_batch(args.batch, args.length, generator)

        def step(model=model, optimizer=optimizer, metrics=metrics, mask=mask, target=target):
            optimizer.zero_grad(set_to_none=True)
            log_cosh(model(metrics, mask), target).mean().backward()
            optimizer.step()

        timing = time_call(step, warmup=2, repeats=args.repeats)
        rows.append(
            {
                "section": "throughput",
                "model": name,
                "parameters": count_parameters(model),
                "batch": args.batch,
                "max_len": args.length,
                "step_s": timing["median_s"],
                "runs_per_s": args.batch / timing["median_s"],
                "seconds_per_s": float(mask.sum()) / timing["median_s"],
            }
        )
        print(rows[-1], flush=True)
    return rows


@torch.no_grad()
def latency(args) -> list[dict]:
    rows = []
    for name in [*MODELS, "lstm"]:
        model = make_model(name).eval()
        for length in LENGTHS:
            metrics = torch.randn(1, length, 206)
            mask = torch.ones(1, length, dtype=torch.bool)
            timing = time_call(lambda f=model, m=metrics, k=mask: f(m, k), warmup=2, repeats=args.repeats)
            rows.append(
                {
                    "section": "latency",
                    "model": name,
                    "parameters": count_parameters(model),
                    "length": length,
                    "latency_ms": 1000 * timing["median_s"],
                    "latency_min_ms": 1000 * timing["min_s"],
                }
            )
            print(rows[-1], flush=True)
    return rows


def comparison(args) -> list[dict]:
    base = load_experiment(REGISTRY, CONFIG)
    variants = {"cloudformer": [], **base.baselines}
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        common = [
            f"run_root={runs}",
            f"evaluation.n_partitions={args.partitions}",
            "trainer.progress_bar=false",
        ]
        for label, overrides in variants.items():
            cfg = load_experiment(REGISTRY, CONFIG, [*overrides, *common])
            start = time.perf_counter()
            result = run_cloud_protocol(cfg, REGISTRY, progress=False)
            seconds = time.perf_counter() - start
            for part in result.metrics["partitions"]:
                rows.append(
                    {
                        "section": "comparison",
                        "model": label,
                        "partition": part["partition"],
                        "test_applications": part["test_applications"],
                        "test/mae_pp": part["test/mae_pp"],
                        "test/mse_pp": part["test/mse_pp"],
                        "fit_seconds": part["fit_seconds"],
                    }
                )
            print(
                label,
                {k: round(v, 3) for k, v in result.metrics["test"].items()},
                f"{seconds:.0f} s",
                flush=True,
            )
        # the floor any model must clear: predict every test run's P as the training runs' mean
        cfg = load_experiment(REGISTRY, CONFIG, common)
        for index in range(args.partitions):
            cfg.data.params["partition"] = index
            cfg.data.params["n_partitions"] = args.partitions
            module = build_datamodule(cfg, REGISTRY)
            mean = float(np.mean([r.target for r in module.split("train")]))
            targets = [r.target for r in module.split("test")]
            errors = percentage_point_errors(np.full(len(targets), mean), targets)
            rows.append(
                {
                    "section": "comparison",
                    "model": "train-mean",
                    "partition": index,
                    "test_applications": list(module.partition.test),
                    "test/mae_pp": errors["mae_pp"],
                    "test/mse_pp": errors["mse_pp"],
                    "fit_seconds": 0.0,
                }
            )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows if r["section"] == "comparison"):
        entry = {"model": model}
        for metric in ("test/mae_pp", "test/mse_pp", "fit_seconds"):
            values = [r[metric] for r in rows if r["section"] == "comparison" and r["model"] == model]
            entry[metric] = statistics.fmean(values)
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["partitions"] = len(values)
        out.append(entry)
    return out


def plot(rows: list[dict], summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    latency_rows = [r for r in rows if r["section"] == "latency"]
    for model in dict.fromkeys(r["model"] for r in latency_rows):
        points = [(r["length"], r["latency_ms"]) for r in latency_rows if r["model"] == model]
        axes[0].plot(*zip(*points), marker="o", label=model)
    axes[0].set(xlabel="run length T (s)", ylabel="latency per run (ms, batch 1)", title="CPU inference")
    axes[0].set_xscale("log")
    axes[0].legend()
    if summary:
        names = [s["model"] for s in summary]
        axes[1].bar(names, [s["test/mae_pp"] for s in summary], yerr=[s["test/mae_pp_std"] for s in summary])
        axes[1].set(ylabel="test MAE (pp), mean ± sd", title="unseen applications (synthetic)")
        axes[1].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=120, help="longest run of a training batch (s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import interplay.tabular.cloud  # noqa: F401  (registers the entries)

    rows: list[dict] = []
    if "throughput" in args.sections:
        rows += throughput(args)
    if "latency" in args.sections:
        rows += latency(args)
    if "comparison" in args.sections:
        rows += comparison(args)
    summary = summarise(rows)

    if "throughput" in args.sections:
        table = [
            [r["model"], r["parameters"], r["batch"], r["max_len"], r["step_s"], r["runs_per_s"]]
            for r in rows
            if r["section"] == "throughput"
        ]
        print(f"\ntraining throughput (CPU, {args.threads} thread(s))")
        print(format_table(table, ["model", "parameters", "batch", "max T", "s / step", "runs / s"]))
    if "latency" in args.sections:
        models = list(dict.fromkeys(r["model"] for r in rows if r["section"] == "latency"))
        table = [
            [
                m,
                *[
                    next(r["latency_ms"] for r in rows if r.get("length") == t and r["model"] == m)
                    for t in LENGTHS
                ],
            ]
            for m in models
        ]
        print(f"\nper-run inference latency, batch 1 (ms, CPU, {args.threads} thread(s))")
        print(format_table(table, ["model", *[f"T={t}" for t in LENGTHS]]))
    if summary:
        table = [
            [
                s["model"],
                f"{s['test/mae_pp']:.2f} ± {s['test/mae_pp_std']:.2f}",
                f"{s['test/mse_pp']:.1f} ± {s['test/mse_pp_std']:.1f}",
                round(s["fit_seconds"], 1),
            ]
            for s in summary
        ]
        print(f"\nunseen applications, synthetic data ({args.partitions} partitions; mean ± sd)")
        print(format_table(table, ["model", "MAE (pp)", "MSE (pp^2)", "fit s / partition"]))
    path = save_results(
        "tabular_cloudformer",
        rows,
        meta={
            "threads": args.threads,
            "batch": args.batch,
            "max_len": args.length,
            "partitions": args.partitions,
            "config": CONFIG,
            "sections": args.sections,
            "summary": summary,
            "paper_parameters": 228_000,
        },
        directory=args.out,
    )
    plot(rows, summary, Path(args.out) / "tabular_cloudformer.png")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
