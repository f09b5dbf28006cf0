"""IHDP benchmark: out-of-sample sqrt(PEHE) of TransTEE, TARNet, DragonNet and a LightGBM T-learner.

Protocol (the LightGBM reference in the issue): CEVAE's IHDP replications 1-10
(``ihdp_npci_<k>.csv``, x14 shifted to {0, 1}), a 90/10 split with
``train_test_split(..., test_size=0.1, random_state=1)``; the neural models hold out 10% of the
training part for selection (lowest validation factual MSE; the test part is scored once, at the
end); LightGBM (300 trees, learning rate 0.05, 15 leaves) fits the whole training part. Each model
runs exactly as ``interplay-tabular train --config <model>-ihdp`` (same configs, same runner), so
the figures here are the CLI's. Target (issue 9): TransTEE's median below the LightGBM T-learner's.

    python benchmarks/tabular/ihdp.py [--data ../shared/data/tabular/ihdp] [--replications 10]
        [--models transtee tarnet dragonnet lgbm-t-learner] [--epochs N] [--threads 1]

Writes ``benchmarks/results/tabular_ihdp.{json,png}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from interplay.core.bench import save_results
from interplay.core.cli import format_table, load_experiment
from interplay.core.train.runs import write_json  # noqa: F401  (keeps the results helper's import light)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tabular" / "ihdp"
MODELS = ("transtee", "tarnet", "dragonnet", "lgbm-t-learner")
LABELS = {
    "transtee": "TransTEE",
    "tarnet": "TARNet",
    "dragonnet": "DragonNet",
    "lgbm-t-learner": "LightGBM T-learner",
}


def run_model(name: str, data: Path, replications: int, epochs: int | None, run_root: Path) -> dict:
    import interplay.tabular.causal  # noqa: F401  (registers the entries)
    from interplay.tabular.causal.runner import train_replications
    from interplay.tabular.registry import REGISTRY

    overrides = [
        f"data.root={data}",
        f"data.params.replications={list(range(1, replications + 1))}",
        f"run_root={run_root}",
        "evaluation.progress=false",
    ]
    if epochs is not None and name != "lgbm-t-learner":
        overrides.append(f"trainer.max_epochs={epochs}")
    cfg = load_experiment(REGISTRY, f"{name}-ihdp", overrides)
    start = time.perf_counter()
    result = train_replications(cfg, REGISTRY)
    seconds = time.perf_counter() - start
    rows = result.metrics["replications"]
    return {
        "model": name,
        "config": f"{name}-ihdp",
        "epochs": cfg.trainer.max_epochs if name != "lgbm-t-learner" else None,
        "seconds": round(seconds, 1),
        "sqrt_pehe_out": {str(r["replication"]): r["sqrt_pehe_out"] for r in rows},
        "sqrt_pehe_in": {str(r["replication"]): r["sqrt_pehe_in"] for r in rows},
        "ate_error_out": {str(r["replication"]): r["ate_error_out"] for r in rows},
        "best_epoch": {str(r["replication"]): r.get("best_epoch") for r in rows},
        "run_dir": str(result.run_dir),
    }


def summary(values: dict[str, float]) -> tuple[float, float]:
    v = list(values.values())
    return statistics.fmean(v), statistics.median(v)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interplay.core.data import atomic_write

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    reps = sorted(int(k) for k in results[0]["sqrt_pehe_out"])
    for i, res in enumerate(results):
        xs = [r + (i - (len(results) - 1) / 2) * width for r in reps]
        ys = [res["sqrt_pehe_out"][str(r)] for r in reps]
        mean, median = summary(res["sqrt_pehe_out"])
        ax.bar(xs, ys, width, label=f"{LABELS[res['model']]} (mean {mean:.2f}, median {median:.2f})")
    ax.set_yscale("log")
    ax.set_xticks(reps)
    ax.set_xlabel("IHDP replication (ihdp_npci_<k>.csv)")
    ax.set_ylabel("out-of-sample sqrt(PEHE), log scale")
    ax.set_title("IHDP, 90/10 split (random_state 1)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with ihdp_npci_<k>.csv")
    parser.add_argument("--replications", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' epoch budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not any(args.data.glob("ihdp_npci_*.csv")):
        print(f"no IHDP CSVs in {args.data} (pass --data)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="ihdp-bench-") as tmp:
        for name in args.models:
            print(f"{name}: {args.replications} replications ...", flush=True)
            results.append(run_model(name, args.data, args.replications, args.epochs, Path(tmp)))
            print(f"  {results[-1]['seconds']} s", flush=True)
    reps = sorted(int(k) for k in results[0]["sqrt_pehe_out"])
    header = ["model", "epochs", *[f"rep {r}" for r in reps], "mean", "median", "in mean", "seconds"]
    rows = []
    for res in results:
        mean, median = summary(res["sqrt_pehe_out"])
        rows.append(
            [
                LABELS[res["model"]],
                res["epochs"] or "-",
                *[f"{res['sqrt_pehe_out'][str(r)]:.2f}" for r in reps],
                f"{mean:.3f}",
                f"{median:.3f}",
                f"{summary(res['sqrt_pehe_in'])[0]:.3f}",
                f"{res['seconds']:.0f}",
            ]
        )
    print("\nIHDP out-of-sample sqrt(PEHE) (replications 1-10, 90/10 split, random_state 1)")
    print(format_table(rows, header))
    by_model = {res["model"]: summary(res["sqrt_pehe_out"]) for res in results}
    met = None
    if "transtee" in by_model and "lgbm-t-learner" in by_model:
        met = by_model["transtee"][1] < by_model["lgbm-t-learner"][1]
        print(f"\ntarget: TransTEE median {by_model['transtee'][1]:.3f} < LightGBM T-learner median "
              f"{by_model['lgbm-t-learner'][1]:.3f}: {'met' if met else 'NOT met'}")  # fmt: skip
    for res in results:
        res.pop("run_dir")
    path = save_results(
        "tabular_ihdp",
        results,
        meta={
            "data": str(args.data),
            "protocol": "IHDP CEVAE replications, 90/10 train_test_split random_state 1; neural models "
            "select on 10% of the training part (validation factual MSE); LightGBM fits the whole "
            "training part",
            "metric": "out-of-sample sqrt(PEHE)",
            "summary": {m: {"mean": v[0], "median": v[1]} for m, v in by_model.items()},
            "target": "TransTEE median < LightGBM T-learner median",
            "target_met": met,
            "threads": args.threads,
        },
        directory=args.out,
    )
    plot(results, path.with_suffix(".png"))
    print(f"results: {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
