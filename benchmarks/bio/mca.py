"""PaccMann MCA: CPU training throughput, and MCA vs the fingerprint baselines on synthetic data.

(a) Throughput: one optimiser step (forward, MSE, backward, Adam) of the paper's MCA (embedding 16,
    convolutions [3, 5, 11] x 64, heads [4, 4, 4, 4] x attention 64, gene attention over 2,128 genes,
    dense [1024, 512]) on a batch of 512 (drug, cell line) pairs with SMILES of ``--length`` tokens,
    median over ``--steps`` steps, with 1 and 2 threads; pairs/s = batch / median step time. The
    process CPU time per step is recorded too: on a shared machine wall time also measures the
    other jobs, CPU time does not.
(b) Comparison: MCA (``mca-synthetic``), MCA with the expression also fed to its dense head
    (``gene_to_dense``, an option of the reference code), the fingerprint MLP (``fp-mlp-synthetic``)
    and LightGBM (``fp-lightgbm-synthetic``) on the same synthetic data (NCI molecules x synthetic cell lines,
    planted substructure x driver-gene interactions) under the three splits: random pairs, held-out
    cell lines, held-out drugs (``--test-fraction`` of pairs / cell lines / drugs for test, the same
    for validation; selection on validation, test scored once). Test RMSE / R² / Pearson / Spearman
    on ln IC50, per split and model (mean ± sd over ``--seeds``). For MCA it also counts how many of
    the planted driver genes are among its 20 most attended genes.

Prints both tables and saves ``benchmarks/results/bio_mca.json`` and ``.png``. Defaults run in about
ten minutes on 2 idle cores (the comparison trains each model with 1 thread).

    python benchmarks/bio/mca.py [--threads 1 2] [--splits random cell_line drug] [--models mca fp-mlp]
        [--seeds 0 1] [--skip-throughput] [--skip-comparison]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import interplay.bio.drug  # noqa: F401  (registers the drug entries)
from interplay.bio.drug.data import synthetic_drug_dir
from interplay.bio.drug.model import MCA
from interplay.bio.drug.task import run_drug_experiment
from interplay.bio.registry import REGISTRY
from interplay.core.bench import save_results, time_call
from interplay.core.cli import format_table, load_experiment

# label -> (config, extra overrides); mca+genes is the reference's gene_to_dense option: the expression
# also feeds the dense head directly instead of only steering the SMILES attention
MODELS = {
    "mca": ("mca-synthetic", []),
    "mca+genes": ("mca-synthetic", ["model.params.gene_to_dense=true"]),
    "fp-mlp": ("fp-mlp-synthetic", []),
    "fp-lightgbm": ("fp-lightgbm-synthetic", []),
}
SPLITS = ("random", "cell_line", "drug")
METRICS = ("test/rmse", "test/r2", "test/pearson", "test/spearman")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def throughput(
    threads: list[int], batch: int, length: int, genes: int, steps: int, warmup: int
) -> list[dict]:
    rows = []
    vocabulary = 40
    for n in threads:
        torch.set_num_threads(n)
        torch.manual_seed(0)
        model = MCA(vocabulary, genes)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        smiles = torch.randint(4, vocabulary, (batch, length))
        smiles[:, length * 3 // 4 :] = 0  # a quarter of padding, as in a padded batch
        data = {"smiles": smiles, "expression": torch.randn(batch, genes)}
        target = torch.rand(batch)

        def step(model=model, optimizer=optimizer, data=data, target=target):
            loss = torch.nn.functional.mse_loss(model(data), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        cpu = _cpu_seconds()
        timing = time_call(step, warmup=0, repeats=steps)
        cpu_per_step = (_cpu_seconds() - cpu) / steps
        rows.append(
            {
                "study": "throughput",
                "threads": n,
                "batch": batch,
                "smiles_length": length,
                "genes": genes,
                "parameters": sum(p.numel() for p in model.parameters()),
                **timing,
                "cpu_s_per_step": cpu_per_step,
                "pairs_per_s": batch / timing["median_s"],
                "pairs_per_cpu_s": batch / cpu_per_step,
            }
        )
        print(
            f"threads={n}: {timing['median_s']:.3f} s/step, {batch / timing['median_s']:.0f} pairs/s "
            f"(CPU {cpu_per_step:.3f} s/step)",
            flush=True,
        )
    return rows


def _driver_hits(run_dir: Path, data_root: Path, params: dict) -> int | None:
    genes_csv = run_dir / "explanations" / "top_genes.csv"
    if not genes_csv.is_file():
        return None
    keys = (
        "n_drugs",
        "n_cell_lines",
        "n_genes",
        "n_pathways",
        "pair_fraction",
        "data_seed",
        "expression_format",
    )
    truth = json.loads(
        (
            synthetic_drug_dir(data_root, **{k: params[k] for k in keys if k in params}) / "truth.json"
        ).read_text()
    )
    import pandas as pd

    top = set(pd.read_csv(genes_csv)["gene"])
    return sum(gene in top for gene in truth["driver_genes"].values())


def comparison(
    splits: list[str], models: list[str], seeds: list[int], test_fraction: float, data_root: Path, runs: Path
) -> list[dict]:
    rows = []
    for split in splits:
        for label, (config, extra) in MODELS.items():
            if label not in models:
                continue
            for seed in seeds:
                overrides = [
                    *extra,
                    f"data.params.split={split}",
                    f"data.params.test_fraction={test_fraction}",
                    f"data.params.val_fraction={test_fraction}",
                    f"data.root={data_root}",
                    f"run_root={runs}",
                    f"seed={seed}",
                ]
                if label != "fp-lightgbm":
                    overrides.append("evaluation.threads=1")
                cfg = load_experiment(REGISTRY, config, overrides)
                start = time.perf_counter()
                result = run_drug_experiment(cfg, REGISTRY)
                row = {
                    "study": "comparison",
                    "split": split,
                    "model": label,
                    "seed": seed,
                    "seconds": round(time.perf_counter() - start, 1),
                    "epochs": result.metrics.get("epochs"),
                    **{k: result.metrics["test"][k] for k in METRICS},
                }
                if label.startswith("mca"):
                    row["driver_genes_in_top20"] = _driver_hits(result.run_dir, data_root, cfg.data.params)
                rows.append(row)
                print(
                    split, label, seed, {k: round(v, 3) for k, v in row.items() if k in METRICS}, flush=True
                )
    return rows


def previous_rows(path: Path, studies: list[str]) -> list[dict]:
    """Rows of ``studies`` from an earlier results file, each marked with that run's date."""
    if not path.is_file():
        return []
    previous = json.loads(path.read_text())
    return [
        {**row, "from_run": row.get("from_run", previous["date"])}
        for row in previous["rows"]
        if row["study"] in studies
    ]


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for split in dict.fromkeys(r["split"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows if r["split"] == split):
            chosen = [r for r in rows if r["split"] == split and r["model"] == model]
            entry = {"split": split, "model": model, "seeds": len(chosen)}
            for metric in METRICS:
                values = [r[metric] for r in chosen]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                entry[metric] = f"{statistics.fmean(values):.3f} ± {sd:.3f}"
            hits = [r["driver_genes_in_top20"] for r in chosen if r.get("driver_genes_in_top20") is not None]
            entry["drivers_in_top20"] = f"{statistics.fmean(hits):.1f}/5" if hits else "-"
            entry["seconds"] = round(statistics.fmean(r["seconds"] for r in chosen), 1)
            out.append(entry)
    return out


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    throughput_rows = [r for r in rows if r["study"] == "throughput"]
    compared = [r for r in rows if r["study"] == "comparison"]
    panels = (["throughput"] if throughput_rows else []) + (["test/rmse", "test/r2"] if compared else [])
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "throughput":
            labels = [f"{r['threads']} thr" for r in throughput_rows]
            ax.bar(labels, [r["pairs_per_s"] for r in throughput_rows], color="tab:blue", label="wall")
            ax.bar(
                labels,
                [r["pairs_per_cpu_s"] for r in throughput_rows],
                color="none",
                edgecolor="k",
                label="per CPU s",
            )
            ax.set_title(f"MCA training, batch {throughput_rows[0]['batch']}: pairs/s")
            ax.legend(fontsize=8)
            continue
        splits = list(dict.fromkeys(r["split"] for r in compared))
        models = list(dict.fromkeys(r["model"] for r in compared))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            means, sds = [], []
            for split in splits:
                values = [r[panel] for r in compared if r["split"] == split and r["model"] == model]
                means.append(statistics.fmean(values))
                sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.bar(
                [i + j * width for i in range(len(splits))], means, width, yerr=sds, capsize=2, label=model
            )
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(splits))], splits)
        ax.set_title(f"synthetic: {panel}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--length", type=int, default=128, help="SMILES tokens per pair (padded)")
    parser.add_argument("--genes", type=int, default=2128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-comparison", action="store_true")
    parser.add_argument(
        "--keep-skipped",
        action="store_true",
        help="carry the skipped studies' rows over from the existing results JSON (marked with its date)",
    )
    parser.add_argument("--data-root", help="where the synthetic files go (default: a temporary directory)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    rows: list[dict] = []
    if not args.skip_throughput:
        rows += throughput(args.threads, args.batch, args.length, args.genes, args.steps, args.warmup)
    if args.keep_skipped and args.skip_throughput:
        rows += previous_rows(Path(args.out) / "bio_mca.json", ["throughput"])
    summary: list[dict] = []
    if args.keep_skipped and args.skip_comparison:
        rows += previous_rows(Path(args.out) / "bio_mca.json", ["comparison"])
    if not args.skip_comparison:
        with tempfile.TemporaryDirectory() as scratch:
            data_root = Path(args.data_root) if args.data_root else Path(scratch) / "data"
            rows += comparison(
                args.splits, args.models, args.seeds, args.test_fraction, data_root, Path(scratch) / "runs"
            )
    if any(r["study"] == "comparison" for r in rows):
        summary = summarise([r for r in rows if r["study"] == "comparison"])

    measured = [r for r in rows if r["study"] == "throughput"]
    if measured:
        print("\nMCA training throughput (paper width, CPU)")
        table = [
            [
                r["threads"],
                r["batch"],
                r["smiles_length"],
                r["median_s"],
                round(r["pairs_per_s"]),
                r["cpu_s_per_step"],
            ]
            for r in measured
        ]
        print(format_table(table, ["threads", "batch", "tokens", "s/step", "pairs/s", "CPU s/step"]))
    if summary:
        print(f"\nsynthetic comparison (test split, ln IC50; seeds {args.seeds})")
        header = ["split", "model", *[m.split("/")[1] for m in METRICS], "drivers in top 20", "s"]
        table = [
            [s["split"], s["model"], *[s[m] for m in METRICS], s["drivers_in_top20"], s["seconds"]]
            for s in summary
        ]
        print(format_table(table, header))
    meta = {"args": vars(args), "summary": summary}
    path = save_results("bio_mca", rows, meta=meta, directory=args.out)
    plot(rows, Path(args.out) / "bio_mca.png")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
