"""MOTCat training-epoch time on CPU: 400 synthetic patients with 5k patches each.

One epoch as MOTCat trains (Xu & Chen, ICCV 2023; ``trainer/mb_trainer.py``): batch size 1, the
discrete-time NLL (:func:`interplay.bio.survival.nll_survival_loss`) divided by the accumulation
count, ``backward`` per patient and an Adam step (lr 2e-4, weight decay 1e-5) every 32 patients.
Settings compared side by side in one process: 1 and 2 intra-op threads, each with the whole bag
transported at once and with mini-batch OT (``ot_micro_batch=256``, the official ``--bs_micro``).

The cohort lives in memory and needs no data module: six genomic groups of the TCGA signature
sizes' order of magnitude, random labels and censorship, and bags of ``--patches`` x 1024 features.
Patient ``i`` reads bag ``i mod --bag-pool`` from a pool of distinct random bags (400 x 5k x 1024
float32 would be 8 GB), which costs the model exactly what distinct bags cost.
``--timed-patients K`` times the first ``K`` patients of each epoch and scales to the cohort
(the table says so); by default the whole epoch is timed.

    python benchmarks/bio/motcat_epoch.py [--patients 400] [--patches 5000] [--threads 1 2]
        [--micro-batch 256] [--timed-patients K] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from interplay.bio.models import MOTCat
from interplay.bio.survival import nll_survival_loss
from interplay.core.bench import save_results
from interplay.core.cli import format_table
from interplay.core.data import atomic_save

# group sizes of the same order as BLCA's six signature groups after gene matching
OMIC_SIZES = [82, 323, 511, 451, 1496, 429]
ACCUMULATION = 32
LR, WEIGHT_DECAY = 2e-4, 1e-5


def make_cohort(patients: int, patches: int, bag_pool: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    bags = [torch.rand(patches, 1024, generator=generator) for _ in range(min(bag_pool, patients))]
    omics = [[torch.randn(size, generator=generator) for size in OMIC_SIZES] for _ in range(patients)]
    labels = torch.randint(0, 4, (patients,), generator=generator)
    censorship = (torch.rand(patients, generator=generator) < 0.6).float()
    return {"bags": bags, "omics": omics, "labels": labels, "censorship": censorship}


def run_epoch(model, optimizer, cohort: dict, timed_patients: int) -> tuple[float, int]:
    """Seconds for the first ``timed_patients`` patients of one epoch (forward, backward, steps)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for index in range(timed_patients):
        item = {
            "path": cohort["bags"][index % len(cohort["bags"])],
            "omics": cohort["omics"][index],
        }
        out = model(item)
        loss = nll_survival_loss(
            out["hazards"], cohort["labels"][index : index + 1], cohort["censorship"][index : index + 1]
        )
        (loss / ACCUMULATION).backward()
        if (index + 1) % ACCUMULATION == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    optimizer.step()  # the epoch's last partial accumulation, as a trainer flushing it would
    return time.perf_counter() - start, timed_patients


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--patches", type=int, default=5000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--micro-batch", type=int, default=256, help="ot_micro_batch of the mini-batch rows")
    parser.add_argument("--bag-pool", type=int, default=16, help="distinct random bags the patients cycle")
    parser.add_argument("--timed-patients", type=int, default=None, help="time this many, scale to the epoch")
    parser.add_argument("--warmup-patients", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    timed = min(args.timed_patients or args.patients, args.patients)
    cohort = make_cohort(args.patients, args.patches, args.bag_pool)
    settings = [(threads, micro) for threads in args.threads for micro in (None, args.micro_batch)]
    rows = []
    for threads, micro in settings:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = MOTCat(OMIC_SIZES, ot_reg=0.05, ot_tau=0.5, ot_micro_batch=micro)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        run_epoch(model, optimizer, cohort, min(args.warmup_patients, args.patients))  # allocator, threads
        seconds, count = run_epoch(model, optimizer, cohort, timed)
        epoch_s = seconds * args.patients / count
        row = {
            "threads": threads,
            "ot_micro_batch": micro,
            "patients": args.patients,
            "patches": args.patches,
            "timed_patients": count,
            "epoch_s": epoch_s,
            "s_per_patient": seconds / count,
            "extrapolated": count < args.patients,
        }
        rows.append(row)
        note = ", extrapolated" if row["extrapolated"] else ""
        print(
            f"threads {threads}  micro-batch {micro or 'whole bag':>9}  epoch {epoch_s:8.1f} s"
            f"  ({1e3 * row['s_per_patient']:.0f} ms / patient{note})",
            flush=True,
        )
    reference = rows[0]["epoch_s"]
    print()
    print(
        format_table(
            [
                [
                    r["threads"],
                    r["ot_micro_batch"] or "whole bag",
                    f"{r['epoch_s']:.1f}",
                    f"{1e3 * r['s_per_patient']:.0f}",
                    f"{reference / r['epoch_s']:.2f}",
                    f"{r['timed_patients']}/{r['patients']}",
                ]
                for r in rows
            ],
            ["threads", "OT", "epoch s", "ms / patient", "speed-up vs first row", "timed patients"],
        )
    )
    path = save_results(
        "bio_motcat_epoch",
        rows,
        meta={
            "omic_sizes": OMIC_SIZES,
            "accumulation": ACCUMULATION,
            "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "bag_pool": args.bag_pool,
            "ot": {"reg": 0.05, "tau": 0.5, "iters": 100},
        },
        directory=args.out,
    )
    plot(rows, Path(args.out) / "bio_motcat_epoch.png")
    print(f"results: {path}")
    return 0


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = [
        f"{r['threads']} thr, "
        + (f"mini-batch OT {r['ot_micro_batch']}" if r["ot_micro_batch"] else "whole-bag OT")
        for r in rows
    ]
    ax.barh(
        labels,
        [r["epoch_s"] for r in rows],
        color=["tab:blue" if r["ot_micro_batch"] is None else "tab:orange" for r in rows],
    )
    ax.set_xlabel(f"epoch seconds ({rows[0]['patients']} patients x {rows[0]['patches']} patches)")
    ax.set_title("MOTCat training epoch on CPU")
    ax.invert_yaxis()
    fig.tight_layout()
    atomic_save(lambda temp: fig.savefig(temp, dpi=100), png)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
