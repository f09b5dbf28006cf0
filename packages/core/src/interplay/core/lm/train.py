"""Training the byte-level language model: Lightning, AdamW with warm-up and cosine decay, bits per byte.

:func:`train_lm` trains :class:`~interplay.core.lm.model.CausalLM` with the named mixer on
:func:`~interplay.core.lm.data.stdlib_corpus` for a fixed number of optimiser steps (random windows
of ``seq_len + 1`` bytes), then scores the validation windows once with the final weights and writes a
run directory (:func:`~interplay.core.train.runs.run_directory`)::

    runs/lm/<mixer>/<timestamp>/
        config.yaml  versions.json  metrics.csv  metrics.json  checkpoints/last.ckpt

``metrics.json`` holds ``val_bpc`` (validation bits per character = mean next-byte cross-entropy in
nats / ln 2), the parameter count, the training time and throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from interplay.core.config import from_dict, to_dict
from interplay.core.errors import CheckpointError, ConfigError
from interplay.core.lm.data import DEFAULT_BUDGET_BYTES, RandomWindows, eval_windows, stdlib_corpus
from interplay.core.lm.mixers import layer_mixers
from interplay.core.lm.model import CausalLM, ModelSpec, build_model
from interplay.core.train.checkpoint import AtomicCheckpointIO
from interplay.core.train.runs import run_directory, write_json

__all__ = ["DataSpec", "LMConfig", "LMResult", "LMTask", "load_model", "train_lm"]

for _pattern in (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*is not using a GPU.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*smaller than the logging interval.*",
    ".*exists and is not empty.*",
    ".*Total length of .* across ranks is zero.*",
):
    warnings.filterwarnings("ignore", _pattern)


@dataclass
class DataSpec:
    """Where the text comes from and how much of it is used."""

    root: str | None = None  # default: the running interpreter's standard library
    budget_bytes: int = DEFAULT_BUDGET_BYTES
    val_fraction: float = 0.1
    val_tokens: int = 65536  # validation bytes scored (non-overlapping windows from the start)

    def __post_init__(self) -> None:
        if self.budget_bytes < 1:
            raise ValueError(f"budget_bytes must be positive, got {self.budget_bytes}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_tokens < 1:
            raise ValueError(f"val_tokens must be positive, got {self.val_tokens}")


@dataclass
class LMConfig:
    """One language-model run (YAML or ``interplay lm train`` flags plus ``key=value`` overrides)."""

    mixer: str = "softmax"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 256
    eval_batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, ...] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_every: int = 0  # also score validation every this many steps (0: only at the end)
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    accelerator: str = "auto"
    precision: str = "32-true"
    progress_bar: bool = True
    domain: str = "lm"
    name: str | None = None  # run name (directory under runs/lm/), default: the mixer
    run_root: str = "runs"

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "seq_len", "eval_batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError("warmup_steps and eval_every must be >= 0")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {list(self.betas)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        layer_mixers(self.mixer, self.model.depth)  # unknown names fail here, naming the mixer


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LMTask(pl.LightningModule):
    """Next-byte cross-entropy; validation logs bits per byte (``val/bpc``)."""

    def __init__(self, model: CausalLM, cfg: LMConfig) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self.model.loss(batch)
        # every window predicts seq_len bytes, so the batch-size-weighted mean is the per-byte mean
        self.log("val/loss", loss, on_epoch=True, batch_size=batch.shape[0])
        self.log("val/bpc", loss / math.log(2.0), on_epoch=True, prog_bar=True, batch_size=batch.shape[0])

    def configure_optimizers(self):
        cfg = self.cfg
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=tuple(cfg.betas),
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["interplay_lm_config"] = to_dict(self.cfg)


@dataclass
class LMResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: CausalLM


def run_name(mixer: str) -> str:
    """Directory-safe mixer name: ``hybrid:linear@softmax=0,3`` -> ``hybrid-linear-softmax-0-3``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", mixer).strip("-")


@contextlib.contextmanager
def _threads(n: int | None):
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_lm(cfg: LMConfig, *, run_dir: str | Path | None = None, corpus=None) -> LMResult:
    """Train ``cfg`` and write its run directory; returns the metrics and the trained model.

    ``corpus``: an already-loaded :class:`~interplay.core.lm.data.Corpus` (benchmarks reuse one).
    """
    if not isinstance(cfg, LMConfig):
        raise TypeError(f"train_lm expects an LMConfig, got {type(cfg).__name__}")
    if cfg.name is None:
        cfg = dataclasses.replace(cfg, name=run_name(cfg.mixer))
    if corpus is None:
        corpus = stdlib_corpus(
            cfg.data.root, budget_bytes=cfg.data.budget_bytes, val_fraction=cfg.data.val_fraction
        )
    val = eval_windows(corpus.val, cfg.seq_len, cfg.data.val_tokens)
    train_data = RandomWindows(corpus.train, cfg.seq_len, cfg.batch_size, seed=cfg.seed)
    with _threads(cfg.threads):
        pl.seed_everything(cfg.seed, verbose=False)
        model = build_model(cfg.mixer, cfg.model)
        task = LMTask(model, cfg)
        train_loader = torch.utils.data.DataLoader(train_data, batch_size=None)
        val_loader = torch.utils.data.DataLoader(val, batch_size=cfg.eval_batch_size)
        versions = {"data": corpus.describe()}
        with run_directory(cfg, run_dir, versions=versions) as path:
            try:
                trainer = pl.Trainer(
                    max_steps=cfg.steps,
                    max_epochs=-1,
                    accelerator=cfg.accelerator,
                    devices=1,
                    precision=cfg.precision,
                    gradient_clip_val=cfg.grad_clip,
                    logger=CSVLogger(save_dir=str(path), name="", version=""),
                    log_every_n_steps=max(1, min(10, cfg.steps)),
                    val_check_interval=cfg.eval_every if cfg.eval_every else None,
                    check_val_every_n_epoch=None,
                    num_sanity_val_steps=0,
                    enable_checkpointing=False,
                    enable_model_summary=False,
                    enable_progress_bar=cfg.progress_bar,
                    plugins=[AtomicCheckpointIO()],
                    default_root_dir=str(path),
                )
            except (ValueError, TypeError) as err:
                raise ConfigError(f"invalid trainer settings: {err}") from err
        start = time.perf_counter()
        with warnings.catch_warnings():
            # without eval_every the validation windows are scored once, after fit
            warnings.filterwarnings("ignore", ".*`validation_step` but have no `val_dataloader`.*")
            trainer.fit(
                task, train_dataloaders=train_loader, val_dataloaders=val_loader if cfg.eval_every else None
            )
        train_seconds = time.perf_counter() - start
        final_loss = trainer.callback_metrics.get("train/loss")
        start = time.perf_counter()
        scores = trainer.validate(task, dataloaders=val_loader, verbose=False)[0]
        eval_seconds = time.perf_counter() - start
        trainer.save_checkpoint(path / "checkpoints" / "last.ckpt", weights_only=False)
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    metrics = {
        "mixer": cfg.mixer,
        "layer_mixers": model.layer_mixers,
        "val_bpc": float(scores["val/bpc"]),
        "val_loss_nats": float(scores["val/loss"]),
        "val_tokens": int(val.shape[0] * cfg.seq_len),
        "params": model.num_parameters(),
        "steps": trainer.global_step,
        "tokens_seen": tokens,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "tokens_per_second": round(tokens / train_seconds, 1),
        "threads": torch.get_num_threads() if cfg.threads is None else cfg.threads,
        "device": str(next(model.parameters()).device),
    }
    if final_loss is not None:
        metrics["last_train_loss"] = float(final_loss)
    write_json(path / "metrics.json", metrics)
    return LMResult(path, metrics, model.cpu())


def load_model(checkpoint: str | Path) -> tuple[CausalLM, LMConfig]:
    """The model and config stored in a ``last.ckpt`` written by :func:`train_lm`."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "interplay_lm_config" not in ckpt:
        raise CheckpointError(f"{path} is not an Interplay language-model checkpoint")
    cfg = from_dict(LMConfig, ckpt["interplay_lm_config"], source=str(path))
    model = build_model(cfg.mixer, cfg.model)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(state)
    return model, cfg
