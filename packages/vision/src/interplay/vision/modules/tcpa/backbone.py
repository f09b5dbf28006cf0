"""Building a registry ViT for the task modules, with weights from a local file: official
timm / Hugging Face checkpoints (remapped by the model's ``checkpoint_filter_fn``) or the checkpoint
of an ``interplay-vision train`` run (a Lightning ``.ckpt`` whose keys start with ``model.``).

``pretrained_file`` may be a glob pattern (``runs/vision/tcpa-digits-upstream/*/checkpoints/best-*.ckpt``):
the last match in sorted order is used, i.e. the newest run, as run directories are timestamped."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from interplay.core.errors import ConfigError, DataError
from interplay.vision.models import create_model, load_checkpoint, model_cfg
from interplay.vision.models.vit import VisionTransformer


def _strip_run_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys of a task checkpoint (``model.blocks.0...``) -> the model's own keys (``blocks.0...``)."""
    if any(k.startswith("model.") for k in state):
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state


def resolve_weights(pattern: str | os.PathLike) -> Path:
    """``pattern`` itself, or the last (newest) file matching it when it holds ``*``, ``?`` or ``[``."""
    text = str(pattern)
    if not any(c in text for c in "*?["):
        return Path(text)
    matches = sorted(m for m in glob.glob(os.path.expanduser(text)) if os.path.isfile(m))
    if not matches:
        raise DataError(f"pretrained_file: no file matches '{text}' (train the upstream model first)")
    return Path(matches[-1])


def build_vit_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained_file: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    what: str = "this module",
) -> VisionTransformer:
    """``create_model(name, num_classes, **params)`` checked to be a plain ViT, with the weights of
    ``pretrained_file`` when given (a classifier of another class count is left at its init)."""
    model = create_model(name, num_classes=num_classes, **(params or {}))
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"{what} needs a plain ViT backbone (vit_*), got '{name}' ({type(model).__name__})")
    if pretrained_file is not None:
        official = model_cfg(name)["checkpoint_filter_fn"]

        def remap(state: dict[str, Tensor], target: nn.Module) -> dict[str, Tensor]:
            state = _strip_run_prefix(state)
            return official(state, target) if official is not None else state

        load_checkpoint(model, resolve_weights(pretrained_file), filter_fn=remap, num_classes=num_classes)
    return model
