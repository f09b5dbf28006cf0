"""Pre-training of :class:`~interplay.tabular.icl.model.OrionMSP` on synthetic priors, resumable.

Orion-MSP (Bouadi et al., 2025) and TabICL (Qu et al., 2025) pre-train on batches
of synthetic tables (:mod:`interplay.tabular.icl.prior`): each step draws tables, uses their first
``T`` rows as context and minimises the cross-entropy of the other rows' labels (classes absent from a
table are masked out of its logits). Optimiser: AdamW, linear warm-up then cosine decay of the learning
rate (to ``min_lr_ratio * lr``), gradient-norm clipping, a tqdm progress bar.

Checkpoints (``save_every`` steps and at the end) hold the model weights and config, the optimiser and
scheduler states, the step, the loss history and the torch / numpy / Python RNG states, written
atomically (a crash never leaves a half-written file). ``resume=True`` continues from the checkpoint:
since batch ``k`` depends only on ``(seed, k)`` (:class:`~interplay.tabular.icl.prior.PriorSampler`)
and the RNG states are restored, a run stopped after ``m`` steps and resumed ends with the same
parameters as an uninterrupted run (``tests/tabular/test_orion_pretrain.py``).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplay.core.data import atomic_save
from interplay.core.errors import CheckpointError
from interplay.core.train.checkpoint import load_checkpoint
from interplay.tabular.icl.model import OrionMSP, OrionMSPConfig
from interplay.tabular.icl.prior import PriorConfig, PriorSampler

__all__ = ["PretrainConfig", "episode_loss", "load_pretrained", "pretrain", "warmup_cosine"]

CHECKPOINT_FORMAT = "interplay-orion-msp-v1"


@dataclass
class PretrainConfig:
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    save_every: int = 100
    time_limit_s: float | None = None  # stop (and save) early when this much wall time has passed
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.save_every < 1 or self.warmup_steps < 0:
            raise ValueError(
                f"need steps >= 1, save_every >= 1, warmup_steps >= 0; got {self.steps}, "
                f"{self.save_every}, {self.warmup_steps}"
            )
        if self.lr <= 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def episode_loss(model: OrionMSP, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the non-context rows and their accuracy (a tensor), for one prior batch."""
    device = next(model.parameters()).device
    x, y = batch["x"].to(device), batch["y"].to(device)
    train_size = batch["train_size"]
    logits = model(x, y[:, :train_size], n_classes=batch["n_classes"].to(device))
    target = y[:, train_size:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    accuracy = (logits.argmax(-1) == target).float().mean()
    return loss, accuracy


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    return atomic_save(lambda tmp: torch.save(state, tmp), path)


def pretrain(
    model: OrionMSP,
    sampler: PriorSampler,
    config: PretrainConfig,
    checkpoint_path: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Pre-train ``model`` on ``sampler``'s tables for ``config.steps`` optimiser steps.

    Saves ``checkpoint_path`` every ``config.save_every`` steps and at the end; with ``resume`` (and an
    existing checkpoint) continues from its step. Returns ``{"step", "history", "seconds",
    "stopped_early"}`` (``history``: per-step loss, accuracy and learning rate).
    """
    path = Path(checkpoint_path)
    model.to(device).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, config.warmup_steps, config.steps, config.min_lr_ratio)
    )
    step, history = 0, []
    if resume and path.is_file():
        state = load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not an Orion-MSP pre-training checkpoint")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise CheckpointError(f"weights in {path} do not match the model: {err}") from err
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), list(state["history"])
        _restore_rng(state["rng"])

    def snapshot() -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "history": history,
            "rng": _rng_states(),
            "prior": {**sampler.config.to_dict(), "batch_size": sampler.batch_size, "seed": sampler.seed},
            "pretrain": asdict(config),
        }

    from tqdm.auto import tqdm

    start = time.perf_counter()
    stopped_early = False
    bar = tqdm(total=config.steps, initial=step, desc="Orion-MSP pre-training", disable=not config.progress)
    while step < config.steps:
        loss, accuracy = episode_loss(model, sampler.batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        history.append(
            {"step": step, "loss": loss.item(), "accuracy": accuracy.item(), "lr": scheduler.get_last_lr()[0]}
        )
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", acc=f"{history[-1]['accuracy']:.3f}")
        out_of_time = config.time_limit_s is not None and time.perf_counter() - start > config.time_limit_s
        if step % config.save_every == 0 or step == config.steps or out_of_time:
            save_checkpoint(path, snapshot())
        if out_of_time and step < config.steps:
            stopped_early = True
            break
    bar.close()
    if step == 0 or not path.is_file():
        save_checkpoint(path, snapshot())
    return {
        "step": step,
        "history": history,
        "seconds": time.perf_counter() - start,
        "stopped_early": stopped_early,
    }


def load_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu") -> OrionMSP:
    """The model stored in a pre-training checkpoint, in eval mode."""
    state = load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT or "model_config" not in state:
        raise CheckpointError(f"{path} is not an Orion-MSP checkpoint (written by interplay's pretrain)")
    config = dict(state["model_config"])
    model = OrionMSP(OrionMSPConfig(**config))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"weights in {path} do not match their stored config: {err}") from err
    return model.to(device).eval()


def prior_sampler(params: dict[str, Any], batch_size: int, seed: int) -> PriorSampler:
    return PriorSampler(PriorConfig(**params), batch_size=batch_size, seed=seed)
