"""Checkpoint I/O that never leaves a half-written file.

Lightning writes a checkpoint over the previous one; a crash (or a full disk) while writing
would corrupt ``last.ckpt``. :class:`AtomicCheckpointIO` writes to a temporary file in the same
directory, fsyncs it, then renames it onto the target, so the previous checkpoint survives any
failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from interplay.core.data import atomic_save
from interplay.core.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(lambda tmp: torch.save(checkpoint, tmp), path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on CPU, with an error that names the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"checkpoint {path} could not be read: {err}") from err
