"""Transformed rows on disk as memory-mapped ``.npy`` arrays, built chunk by chunk.

:func:`build_arrays` streams chunks through :meth:`FittedFeatures.transform` and appends each
array's rows to its ``.npy`` file as they come, so memory holds one chunk whatever the file size
(the 45M-row Criteo day file: ~100k rows at a time). The ``.npy`` header is written last (a
fixed-size header reserved up front), so no counting pass and no copy are needed. Everything is
written into a temporary directory next to the destination, which is renamed into place only when
complete: a reader never sees a half-built cache, and an interrupted build leaves nothing behind.

On disk (``<cache>/<name>-<key>/``): ``categorical.npy`` int32 ``[N, n_categorical]`` (int64 if a
vocabulary is larger than 2^31), ``numeric.npy`` float32 ``[N, n_numeric]``, ``label.npy`` float32
``[N]``, and when present ``sequence.npy`` int32 ``[N, L]``, ``sequence_length.npy`` int32 ``[N]``,
``user.npy`` int64 ``[N]``; ``meta.json`` describes them. :class:`CachedArrays` opens them with
``mmap_mode="r"`` and :meth:`CachedArrays.batch` gathers rows into the tensors of the batch contract
(int64 / float32).

:func:`cached_arrays` names the directory by a hash of the source files' identity (resolved path,
size, modification time), the fitted features (their digest covers the spec and every fitted
statistic) and the format version, and reuses it when it exists: a second run costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interplay.core.errors import DataError
from interplay.recsys.data.features import FittedFeatures

__all__ = ["CachedArrays", "build_arrays", "cache_key", "cached_arrays", "file_fingerprint"]

CACHE_FORMAT = "interplay.recsys.cache/1"
_HEADER_BYTES = 256  # reserved .npy header (format 1.0), a multiple of 64 as numpy aligns it
_INT_KEYS = ("categorical", "sequence", "sequence_length", "user")


def _storage_dtypes(fitted: FittedFeatures) -> dict[str, np.dtype]:
    layout = fitted.layout()
    sizes = [f.vocab_size for f in layout.categorical]
    ids = np.int32 if max(sizes, default=0) < 2**31 else np.int64
    dtypes = {"categorical": ids, "numeric": np.float32, "label": np.float32}
    if layout.sequence is not None:
        dtypes["sequence"] = ids
        dtypes["sequence_length"] = np.int32
    if fitted.spec.user:
        dtypes["user"] = np.int64
    return {k: np.dtype(v) for k, v in dtypes.items()}


class _NpyAppender:
    """Appends rows to a ``.npy`` file; the header with the final row count is written by ``close``."""

    def __init__(self, path: Path, dtype: np.dtype, tail: tuple[int, ...]) -> None:
        self.path, self.dtype, self.tail, self.rows = path, dtype, tail, 0
        self.handle = open(path, "wb")  # noqa: SIM115  (closed by close() / abort())
        self.handle.write(b"\0" * _HEADER_BYTES)

    def append(self, array: np.ndarray) -> None:
        if array.shape[1:] != self.tail:
            raise ValueError(f"{self.path.name}: rows of shape {array.shape[1:]}, expected {self.tail}")
        self.handle.write(np.ascontiguousarray(array, dtype=self.dtype).tobytes())
        self.rows += array.shape[0]

    def close(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.tail),
        }
        text = repr(header).encode("latin1")
        length = _HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
        if len(text) + 1 > length:
            raise ValueError(f"{self.path.name}: .npy header too long for the reserved space")
        self.handle.seek(0)
        self.handle.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + text.ljust(length - 1) + b"\n")
        self.handle.close()

    def abort(self) -> None:
        self.handle.close()


def build_arrays(
    chunks: Iterable[pd.DataFrame],
    fitted: FittedFeatures,
    out_dir: str | os.PathLike[str],
    *,
    meta: Mapping | None = None,
) -> CachedArrays:
    """Transform ``chunks`` with ``fitted`` into memory-mapped arrays under ``out_dir`` (atomically).

    If ``out_dir`` already holds a complete cache (another process finished first) it is kept and
    this build is discarded. ``meta`` is stored in ``meta.json`` (e.g. the source files).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{secrets.token_hex(4)}")
    staging.mkdir()
    dtypes = _storage_dtypes(fitted)
    layout = fitted.layout()
    tails = {
        "categorical": (layout.n_categorical,),
        "numeric": (layout.n_numeric,),
        "label": (),
        "sequence": (layout.max_sequence_length,),
        "sequence_length": (),
        "user": (),
    }
    writers: dict[str, _NpyAppender] = {}
    try:
        writers = {
            key: _NpyAppender(staging / f"{key}.npy", dtype, tails[key]) for key, dtype in dtypes.items()
        }
        for chunk in chunks:
            arrays = fitted.transform(chunk)
            for key, writer in writers.items():
                writer.append(arrays[key])
            del chunk, arrays  # one chunk in memory at a time
        for writer in writers.values():
            writer.close()
        rows = {writer.rows for writer in writers.values()}
        assert len(rows) == 1, rows
        info = {
            "format": CACHE_FORMAT,
            "n_rows": rows.pop(),
            "arrays": {
                key: {"dtype": str(w.dtype), "shape": [w.rows, *w.tail]} for key, w in writers.items()
            },
            "fitted_digest": fitted.digest(),
            **dict(meta or {}),
        }
        (staging / "meta.json").write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
        try:
            os.replace(staging, out_dir)
        except OSError:
            if not (out_dir / "meta.json").is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # a concurrent build won the race
    except BaseException:
        for writer in writers.values():
            writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CachedArrays(out_dir)


class CachedArrays:
    """The arrays of one cache directory, opened read-only as memory maps on first use.

    Pickling keeps only the path (a worker process re-opens the maps instead of copying them).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"incomplete or unreadable array cache {self.path}: {error}") from error
        if self.meta.get("format") != CACHE_FORMAT:
            raise DataError(
                f"array cache {self.path} has format {self.meta.get('format')!r}, expected {CACHE_FORMAT!r}"
            )
        self.n_rows = int(self.meta["n_rows"])
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def keys(self) -> list[str]:
        return sorted(self.meta["arrays"])

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            for key, info in self.meta["arrays"].items():
                file = self.path / f"{key}.npy"
                # numpy cannot map zero bytes: empty arrays are loaded (they cost nothing)
                mode = "r" if int(np.prod(info["shape"])) > 0 else None
                arrays[key] = np.load(file, mmap_mode=mode, allow_pickle=False)
            self._arrays = arrays
        return self._arrays

    def __len__(self) -> int:
        return self.n_rows

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def numpy(self, rows: np.ndarray | slice | Sequence[int]) -> dict[str, np.ndarray]:
        """Rows of every array (copies, in the order asked)."""
        out = {}
        for key, array in self.arrays.items():
            values = array[rows]
            # a slice of a memory map is a read-only view of the file: copy it (gathers already did)
            out[key] = values if values.flags.owndata and values.flags.writeable else np.array(values)
        return out

    def batch(self, rows: np.ndarray | slice | Sequence[int]) -> dict[str, Tensor]:
        """The batch contract's tensors for ``rows``: ids as int64, values as float32."""
        out = {}
        for key, values in self.numpy(rows).items():
            tensor = torch.from_numpy(values)
            out[key] = tensor.long() if key in _INT_KEYS else tensor.float()
        return out


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of a source file for cache keys: resolved path, size and modification time (ns)."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_arrays(
    name: str,
    sources: Sequence[str | os.PathLike[str]],
    chunks: Callable[[], Iterable[pd.DataFrame]],
    fitted: FittedFeatures,
    cache_dir: str | os.PathLike[str],
) -> CachedArrays:
    """The cache of ``sources`` transformed by ``fitted``: reused if built before, else built now.

    ``chunks`` is called only when a build is needed.
    """
    fingerprints = [file_fingerprint(s) for s in sources]
    key = cache_key(CACHE_FORMAT, fingerprints, fitted.digest())
    out_dir = Path(cache_dir) / f"{name}-{key}"
    if (out_dir / "meta.json").is_file():
        return CachedArrays(out_dir)
    return build_arrays(chunks(), fitted, out_dir, meta={"sources": fingerprints})
