"""Character-level (byte-level) text available offline: the Python standard library's own source.

:func:`stdlib_corpus` reads the ``*.py`` files under ``sysconfig.get_paths()["stdlib"]`` (``site-packages``
left out: it differs between environments) in a deterministic order — sorted paths, then shuffled
with a fixed seed so that a budget of a few megabytes samples the whole library rather than its
first packages alphabetically — until ``budget_bytes`` are read. Files are split between train and
validation by file (every ``round(1 / val_fraction)``-th file goes to validation), never inside a file.
``val_fraction`` of the budget goes to validation, the rest to training (the last file of each
split is cut at its budget). The vocabulary is the 256 byte values; bits per character are bits per
byte.

:class:`RandomWindows` draws training windows of ``seq_len + 1`` bytes at random offsets (seeded);
:func:`eval_windows` cuts the validation bytes into non-overlapping windows for a deterministic
validation loss.
"""

from __future__ import annotations

import hashlib
import os
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from interplay.core.errors import DataError

__all__ = ["Corpus", "RandomWindows", "eval_windows", "stdlib_corpus", "stdlib_root"]

DEFAULT_BUDGET_BYTES = 3_000_000
FILE_ORDER_SEED = 0


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


@dataclass
class Corpus:
    """Train and validation bytes (``uint8`` tensors) and the files each came from."""

    train: Tensor
    val: Tensor
    train_files: list[str]
    val_files: list[str]
    root: str

    def describe(self) -> dict:
        digest = hashlib.sha256(self.train.numpy().tobytes() + self.val.numpy().tobytes()).hexdigest()
        return {
            "root": self.root,
            "train_bytes": int(self.train.numel()),
            "val_bytes": int(self.val.numel()),
            "train_files": len(self.train_files),
            "val_files": len(self.val_files),
            "sha256": digest,
        }


def _source_files(root: Path) -> list[Path]:
    files = [
        p
        for p in root.rglob("*.py")
        if "site-packages" not in p.relative_to(root).parts and "dist-packages" not in p.parts
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_corpus(
    root: str | os.PathLike | None = None,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    val_fraction: float = 0.1,
    seed: int = FILE_ORDER_SEED,
) -> Corpus:
    """Bytes of the ``*.py`` files under ``root`` (default: :func:`stdlib_root`), split by file.

    Raises :class:`~interplay.core.errors.DataError` when ``root`` is missing, holds no ``.py`` file, or
    the split leaves the train or validation part empty.
    """
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 1:
        raise DataError(f"budget_bytes must be a positive integer, got {budget_bytes!r}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    root = Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise DataError(f"text directory not found: {root} (expected Python source files, *.py)")
    files = _source_files(root)
    if not files:
        raise DataError(f"no *.py files under {root}")
    random.Random(seed).shuffle(files)
    every = max(2, round(1.0 / val_fraction))
    budget = {"val": max(1, round(budget_bytes * val_fraction))}
    budget["train"] = max(1, budget_bytes - budget["val"])
    parts: dict[str, list[bytes]] = {"train": [], "val": []}
    names: dict[str, list[str]] = {"train": [], "val": []}
    used = {"train": 0, "val": 0}
    for index, path in enumerate(files):
        split = "val" if index % every == every - 1 else "train"
        room = budget[split] - used[split]
        if room <= 0:
            if all(used[s] >= budget[s] for s in budget):
                break
            continue
        try:
            data = path.read_bytes()[:room]
        except OSError:  # unreadable files (permissions, broken links) are skipped
            continue
        if not data:
            continue
        parts[split].append(data)
        names[split].append(path.relative_to(root).as_posix())
        used[split] += len(data)
    for split in ("train", "val"):
        if not parts[split]:
            raise DataError(
                f"{root}: the {split} split is empty ({len(files)} files, budget {budget_bytes} bytes); "
                "raise budget_bytes"
            )

    def tensor(chunks: list[bytes]) -> Tensor:
        return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)

    return Corpus(tensor(parts["train"]), tensor(parts["val"]), names["train"], names["val"], str(root))


class RandomWindows(torch.utils.data.IterableDataset):
    """Endless batches ``[batch_size, seq_len + 1]`` (int64) of windows at random offsets (seeded)."""

    def __init__(self, data: Tensor, seq_len: int, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        if data.dim() != 1 or data.numel() < seq_len + 2:
            raise DataError(
                f"training text has {data.numel()} bytes, fewer than one window of "
                f"seq_len + 1 = {seq_len + 1}"
            )
        self.data, self.seq_len, self.batch_size, self.seed = data, seq_len, batch_size, seed

    def __iter__(self) -> Iterator[Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        span = torch.arange(self.seq_len + 1)
        high = self.data.numel() - self.seq_len - 1
        while True:
            starts = torch.randint(0, high + 1, (self.batch_size, 1), generator=gen)
            yield self.data[starts + span].long()


def eval_windows(data: Tensor, seq_len: int, max_tokens: int | None = None) -> Tensor:
    """Non-overlapping windows ``[N, seq_len + 1]`` (consecutive windows share one byte) covering at
    most ``max_tokens`` predicted bytes from the start of ``data``."""
    n = (data.numel() - 1) // seq_len
    if max_tokens is not None:
        n = min(n, max(1, max_tokens // seq_len))
    if n < 1:
        raise DataError(
            f"validation text has {data.numel()} bytes, fewer than one window of seq_len + 1 = {seq_len + 1}"
        )
    starts = torch.arange(n)[:, None] * seq_len
    return data[starts + torch.arange(seq_len + 1)].long()
