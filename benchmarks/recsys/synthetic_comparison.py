"""Synthetic-data comparisons over seeds, with the LightGBM baseline in the same table.

1. Planted second-order interactions between heterogeneous fields (``synthetic-ctr``):
   Hiformer vs DNN vs DCN-v2 vs AutoInt vs LightGBM, test AUC (target: Hiformer > DNN).
2. Behaviour sequences with a long-tail user group (``synthetic-sequences``): AW-MoE with and
   without the contrastive loss, DIN, MoE and LightGBM, test AUC on long-tail users (<= 3
   behaviours; target: with > without).

Every neural run goes through the engine (selection on val/auc, test scored once); LightGBM uses
the same fitted features with early stopping on validation. Means and standard deviations over
``--seeds`` seeds (the data split is fixed; the seed changes initialisation and batch order).

    python benchmarks/recsys/synthetic_comparison.py [--seeds 0 1 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from interplay.core.bench import save_results
from interplay.core.cli import format_table, load_experiment
from interplay.core.train import build_experiment, train
from interplay.recsys.cli import _load
from interplay.recsys.gbdt import train_lightgbm
from interplay.recsys.registry import REGISTRY

STUDIES = {
    "interactions": (
        "hiformer-synthetic",
        [
            ("hiformer", []),
            ("dnn", ["model.name=dnn", "model.params={}"]),
            ("dcnv2", ["model.name=dcnv2", "model.params={}"]),
            ("autoint", ["model.name=autoint", "model.params={}"]),
        ],
    ),
    "long_tail": (
        "awmoe-synthetic",
        [
            ("awmoe + CL", []),
            ("awmoe (no CL)", ["model.params.use_contrastive=false"]),
            ("din", ["model.name=din", "model.params={}"]),
            ("moe", ["model.name=moe", "model.params={}"]),
        ],
    ),
}
METRICS = {
    "interactions": ["test/auc", "test/logloss"],
    "long_tail": ["test/auc", "test/auc_longtail", "test/gauc"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    _load()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for study, (config, variants) in STUDIES.items():
            for label, overrides in variants:
                for seed in args.seeds:
                    cfg = load_experiment(
                        REGISTRY,
                        config,
                        [*overrides, f"seed={seed}", f"run_root={runs}", "trainer.progress_bar=false"],
                    )
                    result = train(cfg, REGISTRY)
                    rows.append({"study": study, "model": label, "seed": seed, **result.metrics["test"]})
                    print(
                        study,
                        label,
                        seed,
                        {k: round(v, 4) for k, v in result.metrics["test"].items()},
                        flush=True,
                    )
            for seed in args.seeds:
                cfg = load_experiment(REGISTRY, config, [f"seed={seed}"])
                _, datamodule = build_experiment(cfg, REGISTRY)
                metrics = train_lightgbm(datamodule, seed=seed)
                rows.append(
                    {
                        "study": study,
                        "model": "lightgbm",
                        "seed": seed,
                        **{k: v for k, v in metrics.items() if k.startswith("test/")},
                    }
                )
                print(study, "lightgbm", seed, {k: round(v, 4) for k, v in metrics.items()}, flush=True)
    summary = []
    for study, metrics in METRICS.items():
        for model in dict.fromkeys(r["model"] for r in rows if r["study"] == study):
            sel = [r for r in rows if r["study"] == study and r["model"] == model]
            cells = []
            for m in metrics:
                values = [r[m] for r in sel if m in r]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):.4f} ± {sd:.4f}" if values else "-")
            summary.append([study, model, len(sel), *cells])
    print()
    for study, metrics in METRICS.items():
        print(format_table([r[1:] for r in summary if r[0] == study], ["model", "seeds", *metrics]))
        print()
    path = save_results("recsys_synthetic_comparison", rows, meta={"seeds": args.seeds}, directory=args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
