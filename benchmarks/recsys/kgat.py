"""KGAT (Wang et al., KDD 2019) on CPU at Last-FM scale, and KGAT vs BPR-MF on KG-driven synthetic data.

1. **Epoch at Last-FM scale.** A synthetic KGAT-format dataset with Last-FM's sizes (23,566 users,
   48,123 items, 106,389 entities, 464,567 triples, 9 relations; train.txt sized so that 1.29M
   interactions remain for training after the 10% validation carve-out) is generated once into the
   data cache. One epoch of KGAT (pyg backend, paper settings: embed 64, layers [64, 32, 16], batch
   1024, KG batch ``n_triples // (n_train // 1024)``) = CF phase (``n_train // 1024 + 1`` BPR steps)
   + KG phase (``n_ckg_edges // kg_batch + 1`` TransR steps) + attention refresh, run exactly as the
   ``topk`` task runs it. ``--cf-steps N`` times N CF steps and extrapolates the phase (the row says
   so); ``--cf-steps 0`` runs the whole phase. The same epoch is also run in full with the released
   code's Last-FM batch (10240; KG batch 3716). Peak memory is the peak RSS of a fresh process.
2. **Full-ranking evaluation** of every test user (chunks of 1024 users), time and peak RSS.
3. **PyG vs DGL**: the same weights; seconds per CF step (after one untimed step that builds the
   sparse matrices), per KG step (TransR: no backend involved) and per refresh; ratio dgl / pyg.
4. **Comparison** on synthetic KG-driven data: the shipped configs kgat-, bprmf-, cke- and
   lightgcn-synthetic through the engine (selection on val/recall@20, test scored once) over
   ``--seeds``; test recall@20 and NDCG@20 mean ± sd.

    python benchmarks/recsys/kgat.py [--threads 1] [--cf-steps 150] [--seeds 0 1 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

LASTFM = dict(
    n_users=23_566,
    n_items=48_123,
    n_attributes=106_389 - 48_123,
    n_relations=9,
    n_triples=464_567,
    # 76 per user -> ~1.43M train.txt pairs; 1.29M remain after the 10% validation carve-out
    interactions_per_user=76.0,
    seed=0,
)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def lastfm_dir(directory: str | None) -> Path:
    from interplay.recsys.data.datamodule import default_cache_dir
    from interplay.recsys.data.kg_synthetic import write_synthetic_kg

    folder = Path(directory) if directory else default_cache_dir().parent / "synthetic" / "kg-lastfm-scale"
    if not (folder / "train.txt").is_file():
        start = time.perf_counter()
        write_synthetic_kg(folder, **LASTFM)
        print(f"generated {folder} in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def _setup(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _build(folder: str, backend: str, batch_size: int, seed: int = 0):
    import torch

    from interplay.core.train import OptimizerConfig
    from interplay.recsys.data.kg import KGDataModule, read_kgat
    from interplay.recsys.models.kgat import KGAT
    from interplay.recsys.ranking import TopKTask

    # import the backend's library now, so that no step below pays for it
    if backend == "dgl":
        from interplay.core.compat import import_dgl

        import_dgl()
    else:
        import torch_geometric.utils  # noqa: F401
    data = read_kgat(folder)
    module = KGDataModule(data, batch_size=batch_size, eval_batch_size=1024, seed=seed)
    torch.manual_seed(seed)
    model = KGAT(module.graph, backend=backend)  # paper settings are the defaults
    task = TopKTask(model, OptimizerConfig(name="adam", lr=1e-4))
    optimizers = task.configure_optimizers()
    return data, module, model, task, optimizers


def _step(task, optimizers, batch) -> None:
    """One optimisation step exactly as TopKTask.training_step takes it (without Lightning)."""
    if batch["phase"] == "kg":
        loss, _ = task.model.kg_loss(batch)
        active = optimizers[1:]
        task._attention_stale = True
    else:
        task.refresh_attention()
        loss, _ = task.model.cf_loss(batch)
        active = optimizers[:1]
    for optimizer in active:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in active:
        optimizer.step()


def epoch_job(
    folder: str,
    backend: str,
    batch_size: int,
    cf_steps: int,
    kg_steps: int,
    threads: int | None,
    warmup: int = 0,
) -> dict:
    """Time one epoch (phases possibly sampled and extrapolated) in this fresh process; ``warmup`` CF
    steps run untimed first (the backend comparison excludes the one-off sparse-matrix build)."""
    _setup(threads)
    start = time.perf_counter()
    data, module, model, task, optimizers = _build(folder, backend, batch_size)
    stream = module.train_dataloader().dataset
    for batch in itertools.islice(iter(stream), warmup):
        _step(task, optimizers, batch)
    setup_s = time.perf_counter() - start
    n_cf, n_kg = stream.n_cf_batches, stream.n_kg_batches
    cf_run = n_cf if cf_steps <= 0 else min(cf_steps, n_cf)
    kg_run = n_kg if kg_steps <= 0 else min(kg_steps, n_kg)
    times = {"cf": 0.0, "kg": 0.0}
    done = {"cf": 0, "kg": 0}
    for batch in stream:
        phase = batch["phase"]
        if done[phase] >= (cf_run if phase == "cf" else kg_run):
            continue
        tick = time.perf_counter()
        _step(task, optimizers, batch)
        times[phase] += time.perf_counter() - tick
        done[phase] += 1
    tick = time.perf_counter()
    task.refresh_attention()
    refresh_s = time.perf_counter() - tick
    cf_phase = times["cf"] / max(done["cf"], 1) * n_cf
    kg_phase = times["kg"] / max(done["kg"], 1) * n_kg
    return {
        "backend": backend,
        "batch_size": batch_size,
        "kg_batch_size": module.kg_batch_size,
        "n_train": len(data.train),
        "n_ckg_edges": module.graph.n_edges,
        "cf_steps": n_cf,
        "cf_steps_timed": done["cf"],
        "kg_steps": n_kg,
        "kg_steps_timed": done["kg"],
        "s_per_cf_step": times["cf"] / max(done["cf"], 1),
        "s_per_kg_step": times["kg"] / max(done["kg"], 1),
        "cf_phase_s": cf_phase,
        "kg_phase_s": kg_phase,
        "refresh_s": refresh_s,
        "epoch_s": cf_phase + kg_phase + refresh_s,
        "measured": done["cf"] == n_cf and done["kg"] == n_kg,
        "setup_s": setup_s,
        "peak_rss_gb": peak_rss_gb(),
    }


def eval_job(folder: str, threads: int | None) -> dict:
    _setup(threads)
    from interplay.recsys.ranking import evaluate_full_ranking

    _, module, model, task, _ = _build(folder, "pyg", 1024)
    model.refresh_attention()
    start = time.perf_counter()
    metrics = evaluate_full_ranking(model, module, "test", kgat_compat=True)
    seconds = time.perf_counter() - start
    users = sum(len(batch["users"]) for batch in module.evaluation_users("test"))
    return {
        "eval_s": seconds,
        "users": users,
        "recall@20": metrics["recall@20"],
        "peak_rss_gb": peak_rss_gb(),
    }


def compare_job(seeds: list[int], threads: int | None) -> list[dict]:
    _setup(threads)
    from interplay.core.cli import load_experiment
    from interplay.core.train import train
    from interplay.recsys.cli import _load
    from interplay.recsys.registry import REGISTRY

    _load()
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for config in ("kgat-synthetic", "bprmf-synthetic", "cke-synthetic", "lightgcn-synthetic"):
            for seed in seeds:
                overrides = [
                    f"seed={seed}",
                    f"run_root={runs}",
                    "trainer.progress_bar=false",
                    "trainer.tensorboard=false",
                ]
                result = train(load_experiment(REGISTRY, config, overrides), REGISTRY)
                test = result.metrics["test"]
                row = {
                    "model": config.split("-")[0],
                    "seed": seed,
                    "recall@20": test["test/recall@20"],
                    "ndcg@20": test["test/ndcg@20"],
                    "fit_s": result.metrics["fit_seconds"],
                }
                rows.append(row)
                print("compare", row, flush=True)
    return rows


def run(fn, *args):
    """``fn(*args)`` in a fresh process, so that its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


SECTION_OF_SKIP = {
    "epoch": ("epoch", "paper batch 1024"),
    "released": ("epoch", "released Last-FM batch 10240"),
}


def previous_rows(path: Path, skipped: list[str]) -> list[dict]:
    """Rows of the ``skipped`` sections from an earlier results file, each marked with that run's date."""
    import json

    if not path.is_file():
        return []
    previous = json.loads(path.read_text())
    kept = []
    for row in previous["rows"]:
        for skip in skipped:
            section, setting = SECTION_OF_SKIP.get(skip, ("backends" if skip == "parity" else skip, None))
            if row["section"] == section and (setting is None or row.get("setting") == setting):
                kept.append({**row, "from_run": row.get("from_run", previous["date"])})
    return kept


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="Last-FM-scale synthetic data (default: generated into the cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cf-steps", type=int, default=150, help="CF steps timed at batch 1024 (0: all)")
    parser.add_argument("--parity-cf-steps", type=int, default=6)
    parser.add_argument("--parity-kg-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["epoch", "released", "eval", "parity", "compare"]
    )
    parser.add_argument(
        "--keep-skipped",
        action="store_true",
        help="carry the skipped sections' rows over from the existing results JSON (marked with its date)",
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    from interplay.core.bench import save_results
    from interplay.core.cli import format_table

    folder = str(lastfm_dir(args.data_dir))
    rows: list[dict] = []
    if "epoch" not in args.skip:
        row = run(epoch_job, folder, "pyg", 1024, args.cf_steps, 0, args.threads)
        rows.append({"section": "epoch", "setting": "paper batch 1024", **row})
        print(row, flush=True)
    if "released" not in args.skip:
        row = run(epoch_job, folder, "pyg", 10240, 0, 0, args.threads)
        rows.append({"section": "epoch", "setting": "released Last-FM batch 10240", **row})
        print(row, flush=True)
    if "eval" not in args.skip:
        row = run(eval_job, folder, args.threads)
        rows.append({"section": "eval", **row})
        print(row, flush=True)
    if "parity" not in args.skip:
        for backend in ("pyg", "dgl"):
            steps = (args.parity_cf_steps, args.parity_kg_steps)
            row = run(epoch_job, folder, backend, 1024, *steps, args.threads, 1)
            rows.append({"section": "backends", **row})
            print(row, flush=True)
    if "compare" not in args.skip:
        rows += [{"section": "compare", **r} for r in run(compare_job, args.seeds, args.threads)]
    if args.keep_skipped:
        rows += previous_rows(Path(args.out) / "recsys_kgat.json", args.skip)

    print()
    epochs = [r for r in rows if r["section"] == "epoch"]
    if epochs:
        print("KGAT epoch at Last-FM scale (CPU, pyg backend)")
        header = ["setting", "CF steps", "s/CF step", "KG steps", "ms/KG step", "refresh s", "epoch min"]
        table = []
        for r in epochs:
            minutes = f"{r['epoch_s'] / 60:.1f}" + ("" if r["measured"] else " (extrapolated)")
            ok = "yes" if r["epoch_s"] < 600 and r["peak_rss_gb"] < 6 else "NO"
            table.append(
                [r["setting"], r["cf_steps"], f"{r['s_per_cf_step']:.3f}", r["kg_steps"]]
                + [f"{r['s_per_kg_step'] * 1e3:.1f}", f"{r['refresh_s']:.1f}", minutes]
                + [f"{r['peak_rss_gb']:.2f}", ok]
            )
        print(format_table(table, [*header, "peak GB", "< 10 min and < 6 GB"]))
        print()
    for r in (r for r in rows if r["section"] == "eval"):
        peak = f"peak {r['peak_rss_gb']:.2f} GB"
        print(f"full-ranking evaluation of {r['users']} test users: {r['eval_s']:.1f} s, {peak}")
        print()
    backends = {r["backend"]: r for r in rows if r["section"] == "backends"}
    if len(backends) == 2:
        table = []
        for key, label in (
            ("s_per_cf_step", "s per CF step"),
            ("s_per_kg_step", "s per KG step"),
            ("refresh_s", "s per refresh"),
        ):
            table.append(
                [
                    label,
                    f"{backends['pyg'][key]:.4f}",
                    f"{backends['dgl'][key]:.4f}",
                    f"{backends['dgl'][key] / backends['pyg'][key]:.2f}",
                ]
            )
        print("PyG vs DGL backend (same weights, Last-FM scale)")
        print(format_table(table, ["", "pyg", "dgl", "dgl / pyg"]))
        print()
    compare = [r for r in rows if r["section"] == "compare"]
    if compare:
        summary = []
        for model in dict.fromkeys(r["model"] for r in compare):
            sel = [r for r in compare if r["model"] == model]
            summary.append(
                [
                    model,
                    len(sel),
                    mean_sd([r["recall@20"] for r in sel]),
                    mean_sd([r["ndcg@20"] for r in sel]),
                ]
            )
        print(f"synthetic KG-driven data, test split, seeds {args.seeds}")
        print(format_table(summary, ["model", "seeds", "recall@20", "ndcg@20"]))
    meta = {
        "threads": args.threads,
        "cf_steps_timed": args.cf_steps,
        "load_average": os.getloadavg(),
        "lastfm": LASTFM,
    }
    path = save_results("recsys_kgat", rows, meta=meta, directory=args.out)
    plot(rows, Path(args.out) / "recsys_kgat.png")
    print(f"results: {path}")
    return 0


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r for r in rows if r["section"] == "epoch"]
    compare = [r for r in rows if r["section"] == "compare"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    if epochs:
        labels = [r["setting"] for r in epochs]
        bottom = [0.0] * len(epochs)
        for key, name in (("cf_phase_s", "CF phase"), ("kg_phase_s", "KG phase"), ("refresh_s", "refresh")):
            values = [r[key] / 60 for r in epochs]
            axes[0].barh(labels, values, left=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, values)]
        axes[0].axvline(10, color="k", ls="--", lw=1, label="10 min target")
        axes[0].set_xlabel("minutes per epoch (Last-FM scale, CPU)")
        axes[0].legend(fontsize=8)
    if compare:
        models = list(dict.fromkeys(r["model"] for r in compare))
        means = [statistics.fmean(r["recall@20"] for r in compare if r["model"] == m) for m in models]
        sds = [statistics.pstdev([r["recall@20"] for r in compare if r["model"] == m]) for m in models]
        axes[1].bar(models, means, yerr=sds, capsize=4, color=["C3", "C0", "C1", "C2"][: len(models)])
        axes[1].set_ylabel("test recall@20 (synthetic, mean ± sd)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
