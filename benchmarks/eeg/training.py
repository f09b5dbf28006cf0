"""RBTransformer training cost on CPU, and the pooled-window leak as a number, on synthetic EEG.

(a) Step time: one optimiser step (forward, label-smoothed cross-entropy, backward, AdamW step) of
    the paper's RBTransformer (D 128, 4 blocks, 6 heads of 32; C = 32 electrodes x 4 bands) on a
    batch of 256 windows, median over ``--steps`` steps after ``--warmup``, with 1 and 2 threads.
(b) Protocols: RBTransformer, logistic regression and LightGBM through the cross-validation runner
    (``interplay-eeg train`` with the shipped ``*-synthetic`` configs) on the same synthetic
    DEAP-format EEG (``synthetic-deap``: mne.simulation head model, ratings drive band power, a
    per-trial fingerprint), binary valence, under
      * ``pooled_windows``: the RBTransformer reference's shuffled 5-fold over all windows (leaks),
      * ``subject_dependent``: trial-grouped k-fold within each subject,
      * ``loso``: leave one subject out.
    Mean ± std of test accuracy and macro-F1 over folds; the leak is pooled minus trial-grouped.

Prints both tables and saves ``benchmarks/results/eeg_training.json`` and ``.png``. Defaults run
in a few minutes on 2 idle cores (4 subjects x 30 trials x 30 s, class effect 3, the demo's small
RBTransformer, 15 epochs);
``--subjects 32 --trials 40 --seconds 60 --epochs 100`` approaches DEAP's size.

    python benchmarks/eeg/training.py [--threads 1 2] [--skip-protocols] [--models rbtransformer logreg]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from interplay.core.bench import save_results, time_call
from interplay.core.cli import format_table, load_experiment
from interplay.eeg.cli import _load
from interplay.eeg.evaluation import cross_validate
from interplay.eeg.models import RBTransformer
from interplay.eeg.registry import REGISTRY

CONFIGS = {
    "rbtransformer": "rbtransformer-synthetic",
    "logreg": "lr-synthetic",
    "lightgbm": "lightgbm-synthetic",
}
PROTOCOLS = {
    "pooled_windows": ["data.params.protocol=pooled_windows", "data.params.n_folds=5"],
    "subject_dependent": ["data.params.protocol=subject_dependent"],
    "loso": ["data.params.protocol=loso"],
}


def step_times(threads: list[int], batch: int, channels: int, steps: int, warmup: int) -> list[dict]:
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        torch.manual_seed(0)
        model = RBTransformer(n_channels=channels, num_classes=2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
        x = torch.randn(batch, channels, 4)
        y = torch.randint(0, 2, (batch,))

        def step(model=model, optimizer=optimizer, x=x, y=y):
            loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.12)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        timing = time_call(step, warmup=warmup, repeats=steps)
        rows.append(
            {
                "study": "step_time",
                "threads": n,
                "batch": batch,
                "channels": channels,
                "parameters": sum(p.numel() for p in model.parameters()),
                **timing,
                "windows_per_s": batch / timing["median_s"],
            }
        )
        print(f"threads {n}: median {timing['median_s'] * 1e3:.1f} ms per step of {batch}", flush=True)
    return rows


def protocol_runs(args: argparse.Namespace, runs: str) -> list[dict]:
    data = [
        f"data.params.n_subjects={args.subjects}",
        f"data.params.n_trials={args.trials}",
        f"data.params.seconds={args.seconds}",
        f"data.params.class_effect={args.class_effect}",
        f"data.params.n_folds={args.folds}",
        "data.params.progress=false",
        f"run_root={runs}",
        "trainer.progress_bar=false",
    ]
    rows = []
    for model in args.models:
        for protocol in args.protocols:
            overrides = [*data, *PROTOCOLS[protocol]]
            if model == "rbtransformer":
                overrides.append(f"trainer.max_epochs={args.epochs}")
            cfg = load_experiment(REGISTRY, CONFIGS[model], overrides)
            start = time.perf_counter()
            result = cross_validate(cfg, REGISTRY, progress=False)
            test = result.metrics["test"]
            rows.append(
                {
                    "study": "protocols",
                    "model": model,
                    "protocol": protocol,
                    "folds": result.metrics["n_folds"],
                    "windows": result.metrics["n_windows"],
                    "seconds": round(time.perf_counter() - start, 1),
                    **{k: round(v, 4) for k, v in test.items()},
                }
            )
            print(
                f"{model:13s} {protocol:17s} acc {test['test/acc']:.3f} ± {test['test/acc_std']:.3f} "
                f"({result.metrics['n_folds']} folds, {rows[-1]['seconds']} s)",
                flush=True,
            )
    return rows


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in rows if r["study"] == "step_time"]
    protocols = [r for r in rows if r["study"] == "protocols"]
    panels = int(bool(steps)) + int(bool(protocols))
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    if steps:
        ax = axes.pop(0)
        ax.bar([str(r["threads"]) for r in steps], [r["median_s"] * 1e3 for r in steps], color="tab:blue")
        ax.set_xlabel("CPU threads")
        ax.set_ylabel("ms per training step")
        ax.set_title(f"RBTransformer step, batch {steps[0]['batch']}, C={steps[0]['channels']}")
    if protocols:
        ax = axes.pop(0)
        models = list(dict.fromkeys(r["model"] for r in protocols))
        names = list(dict.fromkeys(r["protocol"] for r in protocols))
        width = 0.8 / len(names)
        colors = {"pooled_windows": "tab:red", "subject_dependent": "tab:green", "loso": "tab:olive"}
        for j, protocol in enumerate(names):
            picked = [
                next((r for r in protocols if r["model"] == m and r["protocol"] == protocol), None)
                for m in models
            ]
            ax.bar(
                [i + (j - (len(names) - 1) / 2) * width for i in range(len(models))],
                [r["test/acc"] if r else 0 for r in picked],
                width,
                yerr=[r["test/acc_std"] if r else 0 for r in picked],
                capsize=3,
                label=protocol,
                color=colors.get(protocol),
            )
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(models)), models)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy (mean ± sd over folds)")
        ax.set_title("synthetic DEAP, binary valence")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-step-time", action="store_true")
    parser.add_argument("--skip-protocols", action="store_true")
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--class-effect", type=float, default=3.0)
    parser.add_argument("--folds", type=int, default=3, help="trial-grouped folds per subject")
    parser.add_argument("--epochs", type=int, default=15, help="RBTransformer epochs per fold")
    parser.add_argument("--protocol-threads", type=int, default=1, help="torch threads for the protocol runs")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    _load()
    warnings.filterwarnings("ignore")  # the pooled protocol's leak warning is the point of (b)
    logging.getLogger("interplay.eeg.protocols").setLevel(logging.ERROR)
    rows: list[dict] = []
    if not args.skip_step_time:
        rows += step_times(args.threads, args.batch, args.channels, args.steps, args.warmup)
    if not args.skip_protocols:
        torch.set_num_threads(args.protocol_threads)
        with tempfile.TemporaryDirectory() as runs:
            rows += protocol_runs(args, runs)

    steps = [r for r in rows if r["study"] == "step_time"]
    if steps:
        print("\n(a) RBTransformer training step (forward + backward + AdamW), CPU")
        print(
            format_table(
                [[r["threads"], r["batch"], r["median_s"] * 1e3, r["windows_per_s"]] for r in steps],
                ["threads", "batch", "median ms", "windows/s"],
            )
        )
    protocols = [r for r in rows if r["study"] == "protocols"]
    leaks = {}
    if protocols:
        print("\n(b) test accuracy / macro-F1 by protocol (mean ± sd over folds)")
        print(
            format_table(
                [
                    [
                        r["model"],
                        r["protocol"],
                        r["folds"],
                        f"{r['test/acc']:.3f} ± {r['test/acc_std']:.3f}",
                        f"{r['test/f1_macro']:.3f} ± {r['test/f1_macro_std']:.3f}",
                        r["seconds"],
                    ]
                    for r in protocols
                ],
                ["model", "protocol", "folds", "accuracy", "macro-F1", "seconds"],
            )
        )
        for model in dict.fromkeys(r["model"] for r in protocols):
            acc = {r["protocol"]: r["test/acc"] for r in protocols if r["model"] == model}
            if "pooled_windows" in acc and "subject_dependent" in acc:
                leaks[model] = round(acc["pooled_windows"] - acc["subject_dependent"], 4)
                print(f"leak ({model}): pooled - trial-grouped = {leaks[model]:+.3f} accuracy")
        if leaks:
            print(f"mean leak over models: {statistics.fmean(leaks.values()):+.3f}")
    meta = {k: v for k, v in vars(args).items() if k != "out"} | {"leak": leaks}
    path = save_results("eeg_training", rows, meta=meta, directory=args.out)
    plot(rows, Path(args.out) / "eeg_training.png")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
