"""Building a registry ViT for the task modules (TCPA, DCAL), with weights from a local file: an
official timm / Hugging Face checkpoint or the checkpoint of an ``interplay-vision train`` run, given
as a path or a glob pattern (see :func:`interplay.vision.models.create_model`)."""

from __future__ import annotations

import os
from typing import Any

from interplay.core.errors import ConfigError
from interplay.vision.models import create_model
from interplay.vision.models.vit import VisionTransformer


def build_vit_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained_file: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    what: str = "this module",
) -> VisionTransformer:
    """``create_model(name, num_classes, pretrained_file=..., **params)`` checked to be a plain ViT (a
    classifier of another class count in the checkpoint is left at its init)."""
    model = create_model(name, num_classes=num_classes, pretrained_file=pretrained_file, **(params or {}))
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"{what} needs a plain ViT backbone (vit_*), got '{name}' ({type(model).__name__})")
    return model
