"""Engine overhead: per-epoch time of TaskModule + Lightning Trainer vs a plain PyTorch loop.

Both train the digits reference model (``digits-transformer`` config) on exactly the same batches
(materialised once), with the same optimiser, schedule, loss and gradient clipping. Epochs
alternate between the two so that machine noise hits both alike. Validation is off in both: this
times the training loop only. Target (issue 2): the engine costs at most 15% more.

    python benchmarks/core/engine.py [--epochs 6] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from interplay.core.bench import save_results
from interplay.core.cli import format_table, load_experiment
from interplay.core.demo import REGISTRY
from interplay.core.train import build_experiment, build_trainer
from interplay.core.train.task import build_optimizer, lr_lambda


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


class Interleave(pl.Callback):
    """Runs one plain-loop epoch after each Lightning epoch and records its time."""

    def __init__(self, run_epoch) -> None:
        self.run_epoch = run_epoch
        self.times: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(self.run_epoch())


def plain_epoch(model, optimizer, scheduler, batches, smoothing, clip) -> float:
    start = time.perf_counter()
    model.train()
    correct = total = 0
    for images, labels in batches:
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        correct += (logits.argmax(-1) == labels).sum().item()
        total += labels.numel()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per side (after 1 warm-up)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    cfg = load_experiment(REGISTRY, "digits-transformer", ["trainer.progress_bar=false"])
    pl.seed_everything(0, verbose=False)
    task, dm = build_experiment(cfg, REGISTRY)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    # the Lightning side iterates a loader over the same materialised batches
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    plain_model = copy.deepcopy(task.model)

    total_epochs = args.epochs + 1
    steps = len(batches) * total_epochs
    smoothing = cfg.task.params.get("label_smoothing", 0.0)

    max_norm = cfg.trainer.gradient_clip_val or float("inf")
    timer = EpochTimer()
    cfg.trainer.max_epochs = 1
    trainer_cfg = copy.deepcopy(cfg.trainer)
    rows = []
    for configuration, progress in (("engine", False), ("engine + progress bar", True)):
        trainer_cfg.progress_bar = progress
        timer.times = []
        plain_times = []
        lightning_task = copy.deepcopy(task)
        trainer = build_trainer(
            trainer_cfg,
            None,
            callbacks=[timer],
            max_epochs=total_epochs,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
        # interleave: one Lightning epoch, then one plain epoch, through a callback
        plain_model_copy = copy.deepcopy(plain_model)
        p_opt = build_optimizer(plain_model_copy.parameters(), cfg.optimizer)
        p_sched = torch.optim.lr_scheduler.LambdaLR(p_opt, lr_lambda(cfg.optimizer, len(batches), steps))
        interleave = Interleave(
            lambda m=plain_model_copy, o=p_opt, s=p_sched: plain_epoch(m, o, s, batches, smoothing, max_norm)
        )
        plain_times = interleave.times
        trainer.callbacks.append(interleave)
        trainer.fit(lightning_task, train_dataloaders=loader)
        engine = statistics.median(timer.times[1:])
        plain = statistics.median(plain_times[1:])
        rows.append(
            {
                "configuration": configuration,
                "batches_per_epoch": len(batches),
                "epochs_timed": args.epochs,
                "engine_epoch_s": engine,
                "plain_epoch_s": plain,
                "overhead": engine / plain - 1,
                "engine_epochs_s": timer.times,
                "plain_epochs_s": plain_times,
            }
        )

    print(
        format_table(
            [
                [
                    r["configuration"],
                    r["batches_per_epoch"],
                    r["engine_epoch_s"],
                    r["plain_epoch_s"],
                    f"{100 * r['overhead']:+.1f}%",
                ]
                for r in rows
            ],
            ["configuration", "batches", "engine s/epoch", "plain s/epoch", "overhead"],
        )
    )
    path = save_results(
        "engine", rows, meta={"config": "digits-transformer", "target_overhead": 0.15}, directory=args.out
    )
    plot(rows, Path(args.out) / "engine.png")
    print(f"results: {path}")
    worst = max(r["overhead"] for r in rows if r["configuration"] == "engine")
    return 0 if worst <= 0.15 else 1


def plot(rows, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, r in enumerate(rows):
        ax.scatter(
            [i - 0.1] * len(r["plain_epochs_s"][1:]),
            r["plain_epochs_s"][1:],
            color="tab:blue",
            label="plain loop" if i == 0 else None,
        )
        ax.scatter(
            [i + 0.1] * len(r["engine_epochs_s"][1:]),
            r["engine_epochs_s"][1:],
            color="tab:orange",
            label="TaskModule + Trainer" if i == 0 else None,
        )
    ax.set_xticks(range(len(rows)), [r["configuration"] for r in rows])
    ax.set_ylabel("seconds per epoch")
    ax.set_title("digits-transformer: training epoch time")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
