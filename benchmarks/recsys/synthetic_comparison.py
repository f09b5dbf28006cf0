"""The recsys papers' claims on synthetic data, over seeds, with LightGBM in the same table.

Each study is a reproduction config (its model plus its ``baselines``, see ``reproduce``):

1. ``hiformer``: planted second-order interactions between heterogeneous fields (``synthetic-ctr``,
   100,000 rows): Hiformer vs DNN, DCN-v2, AutoInt and LightGBM, test AUC / logloss
   (target: Hiformer > DNN).
2. ``awmoe``: behaviour sequences with a long-tail user group and user segments
   (``synthetic-sequences``, 10,000 users): AW-MoE with and without the contrastive loss, DIN, MoE
   and LightGBM, test AUC on long-tail users (<= 3 behaviours; target: with > without).

Every neural run goes through the engine (selection on val/auc, test scored once); LightGBM uses
the same fitted features with early stopping on validation. Means and standard deviations over
``--seeds`` (the data and its split are fixed; the seed changes initialisation and batch order).
Prints one table per study, saves JSON and a bar plot.

    python benchmarks/recsys/synthetic_comparison.py [--seeds 0 1 2] [--studies hiformer awmoe]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from interplay.core.bench import save_results
from interplay.core.cli import format_table, load_experiment
from interplay.core.train import build_experiment, train
from interplay.recsys.cli import _load
from interplay.recsys.gbdt import train_lightgbm
from interplay.recsys.registry import REGISTRY

METRICS = {
    "hiformer": ["test/auc", "test/logloss"],
    "awmoe": ["test/auc", "test/auc_longtail", "test/gauc"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--studies", nargs="+", default=list(METRICS), choices=list(METRICS))
    parser.add_argument("--skip", nargs="*", default=[], help="baseline labels to leave out (e.g. autoint)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    _load()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for study in args.studies:
            base = load_experiment(REGISTRY, study)
            variants = {base.model.name: [], **base.baselines}
            for label, overrides in variants.items():
                if label in args.skip:
                    continue
                for seed in args.seeds:
                    cfg = load_experiment(
                        REGISTRY,
                        study,
                        [*overrides, f"seed={seed}", f"run_root={runs}", "trainer.progress_bar=false"],
                    )
                    result = train(cfg, REGISTRY)
                    rows.append({"study": study, "model": label, "seed": seed, **result.metrics["test"]})
                    print(study, label, seed, {k: round(v, 4) for k, v in result.metrics["test"].items()})
            _, datamodule = build_experiment(base, REGISTRY)
            for seed in args.seeds:
                metrics = train_lightgbm(datamodule, seed=seed)
                test = {k: v for k, v in metrics.items() if k.startswith("test/")}
                rows.append({"study": study, "model": "lightgbm", "seed": seed, **test})
                print(study, "lightgbm", seed, {k: round(v, 4) for k, v in test.items()}, flush=True)
    summary = summarise(rows, args.studies)
    print()
    for study in args.studies:
        table = [
            [s["model"], s["seeds"], *[s.get(m, "-") for m in METRICS[study]]]
            for s in summary
            if s["study"] == study
        ]
        print(f"{study} (mean ± sd over seeds {args.seeds})")
        print(format_table(table, ["model", "seeds", *METRICS[study]]))
        print()
    checks = claims(rows)
    for name, check in checks.items():
        print(
            f"{name}: {check['ours']:.4f} vs {check['baseline']:.4f}",
            "-> met" if check["met"] else "-> NOT met",
        )
    path = save_results(
        "recsys_synthetic_comparison",
        rows,
        meta={"seeds": args.seeds, "summary": summary, "claims": checks},
        directory=args.out,
    )
    plot(rows, args.studies, Path(args.out) / "recsys_synthetic_comparison.png")
    print(f"results: {path}")
    return 0


def _values(rows, study, model, metric):
    return [r[metric] for r in rows if r["study"] == study and r["model"] == model and metric in r]


def summarise(rows, studies):
    summary = []
    for study in studies:
        for model in dict.fromkeys(r["model"] for r in rows if r["study"] == study):
            entry = {"study": study, "model": model, "seeds": 0}
            for metric in METRICS[study]:
                values = _values(rows, study, model, metric)
                if values:
                    sd = statistics.stdev(values) if len(values) > 1 else 0.0
                    entry[metric] = f"{statistics.fmean(values):.4f} ± {sd:.4f}"
                    entry["seeds"] = len(values)
            summary.append(entry)
    return summary


def claims(rows):
    out = {}
    for name, (study, ours, baseline, metric) in {
        "Hiformer > DNN (test/auc)": ("hiformer", "hiformer", "dnn", "test/auc"),
        "AW-MoE + CL > AW-MoE without CL (test/auc_longtail)": (
            "awmoe",
            "awmoe",
            "no-CL",
            "test/auc_longtail",
        ),
    }.items():
        a, b = _values(rows, study, ours, metric), _values(rows, study, baseline, metric)
        if a and b:
            out[name] = {"ours": statistics.fmean(a), "baseline": statistics.fmean(b)}
            out[name]["met"] = out[name]["ours"] > out[name]["baseline"]
    return out


def plot(rows, studies, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, m) for s in studies for m in METRICS[s] if m != "test/logloss"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (study, metric) in zip(axes[0], panels):
        models = list(dict.fromkeys(r["model"] for r in rows if r["study"] == study))
        means, sds = [], []
        for model in models:
            values = _values(rows, study, model, metric) or [float("nan")]
            means.append(statistics.fmean(values))
            sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        ax.bar(models, means, yerr=sds, color="tab:blue", capsize=3)
        low = min(m - s for m, s in zip(means, sds))
        ax.set_ylim(max(0.0, low - 0.02), max(m + s for m, s in zip(means, sds)) + 0.01)
        ax.set_title(f"{study}: {metric}")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
