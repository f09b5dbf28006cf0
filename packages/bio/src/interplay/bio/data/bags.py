"""Whole-slide patch-feature bags, one file per slide, loaded lazily and concatenated per patient.

MCAT / MOTCat (Chen et al., ICCV 2021; Xu & Chen, ICCV 2023) represent a whole-slide image by the
``[N, 1024]`` ResNet-50 features of its ``N`` tissue patches, extracted with CLAM (Lu et al., "Data-
efficient and weakly supervised computational pathology on whole-slide images", Nat. Biomed. Eng.
2021). CLAM writes ``pt_files/<slide>.pt`` (a float tensor) and ``h5_files/<slide>.h5`` (datasets
``features`` and ``coords``); a patient with several slides gets the concatenation of their bags
(MCAT's ``torch.cat(path_features, dim=0)``). The CSV's ``slide_id`` carries the ``.svs`` extension;
the bag file is named after the stem.

:class:`PatchBags` indexes the available files at construction (no feature is read) and loads a bag
only when asked. ``.pt`` files may also hold a dict with a ``"features"`` tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from interplay.core.errors import DataError

__all__ = ["BAG_SUFFIXES", "PatchBags", "slide_stem"]

#: bag file suffixes in order of preference when a slide has both
BAG_SUFFIXES: tuple[str, ...] = (".pt", ".h5")
# Whole-slide image extensions stripped from a slide id to get the bag's file stem. (MCAT's
# ``slide_id.rstrip('.svs')`` strips characters, not a suffix: 'X.svs'.rstrip('.svs') works, but an
# id ending in 's' or 'v' would lose letters.)
_WSI_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".bif")
# CLAM's output sub-directories, searched when the root itself holds no bag.
_CLAM_SUBDIRS = ("pt_files", "h5_files")


def slide_stem(slide_id: str) -> str:
    """The bag file stem of a slide id: the id without its whole-slide image extension."""
    slide_id = str(slide_id).strip()
    lowered = slide_id.lower()
    for extension in _WSI_EXTENSIONS:
        if lowered.endswith(extension):
            return slide_id[: -len(extension)]
    return slide_id


class PatchBags:
    """Patch-feature bags under ``root`` (``<stem>.pt`` / ``<stem>.h5``, or CLAM's ``pt_files/`` and
    ``h5_files/`` sub-directories), each ``[N, dim]``.

    Construction lists the files only. :meth:`load` reads one slide, :meth:`load_case` a patient's
    slides concatenated along the patch axis; both return float32 CPU tensors and raise
    :class:`DataError` for a missing file, an empty bag, a wrong feature size or non-finite values.
    """

    def __init__(self, root: str | os.PathLike[str], dim: int = 1024) -> None:
        self.root = Path(root).expanduser()
        self.dim = int(dim)
        if not self.root.is_dir():
            raise DataError(f"patch-feature directory not found: {self.root}")
        self._files: dict[str, Path] = {}
        directories = [self.root] + [self.root / sub for sub in _CLAM_SUBDIRS if (self.root / sub).is_dir()]
        for suffix in BAG_SUFFIXES:  # earlier suffixes win
            for directory in directories:
                for file in sorted(directory.glob(f"*{suffix}")):
                    if file.is_file() and not file.name.startswith("."):
                        self._files.setdefault(file.name[: -len(suffix)], file)

    def __len__(self) -> int:
        return len(self._files)

    def __repr__(self) -> str:
        return f"PatchBags(root={str(self.root)!r}, dim={self.dim}, slides={len(self)})"

    @property
    def slide_stems(self) -> list[str]:
        return sorted(self._files)

    def has(self, slide_id: str) -> bool:
        return slide_stem(slide_id) in self._files

    def path_of(self, slide_id: str) -> Path:
        stem = slide_stem(slide_id)
        if stem not in self._files:
            raise DataError(
                f"no patch-feature file for slide {slide_id!r} under {self.root} "
                f"(looked for {stem}{' or '.join(BAG_SUFFIXES)}, also in {'/, '.join(_CLAM_SUBDIRS)}/)"
            )
        return self._files[stem]

    def missing(self, slide_ids: Iterable[str]) -> list[str]:
        """The slide ids that have no bag file (to check a cohort before training)."""
        return [s for s in slide_ids if not self.has(s)]

    def load(self, slide_id: str) -> torch.Tensor:
        """One slide's bag, ``[N, dim]`` float32."""
        return torch.from_numpy(self._load_array(slide_id))

    def load_case(self, slide_ids: Iterable[str]) -> torch.Tensor:
        """A patient's bags concatenated along the patch axis: ``[sum N, dim]`` float32."""
        slide_ids = list(slide_ids)
        if not slide_ids:
            raise DataError(f"no slides given to load from {self.root} (the case has no slide_id)")
        bags = [self._load_array(s) for s in slide_ids]
        return torch.from_numpy(bags[0] if len(bags) == 1 else np.concatenate(bags, axis=0))

    def _load_array(self, slide_id: str) -> np.ndarray:
        # Conversions and checks run in numpy: torch's multi-threaded element-wise kernels are up to
        # 20x slower on a few cores shared with other processes (DataLoader workers, other jobs).
        path = self.path_of(slide_id)
        features = _read_h5(path) if path.suffix == ".h5" else _read_pt(path)
        if features.ndim == 3 and features.shape[0] == 1:  # some extractors keep a batch axis
            features = features[0]
        if features.ndim != 2:
            raise DataError(
                f"{path}: expected a [N, {self.dim}] feature matrix, got shape {tuple(features.shape)}"
            )
        if features.shape[0] == 0:
            raise DataError(f"{path}: empty bag (0 patches) for slide {slide_id!r}")
        if features.shape[1] != self.dim:
            raise DataError(
                f"{path}: patch features have {features.shape[1]} dimensions, expected {self.dim} "
                f"(set dim= to the feature extractor's output size)"
            )
        features = np.ascontiguousarray(features, dtype=np.float32)
        finite = np.isfinite(features)
        if not finite.all():
            bad = int((~finite).any(axis=1).sum())
            raise DataError(f"{path}: {bad} patches of slide {slide_id!r} hold NaN or infinite features")
        return features


def _read_pt(path: Path) -> np.ndarray:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign pickles
        raise DataError(f"{path}: cannot load as a torch tensor file: {error}") from error
    if isinstance(obj, dict):
        if "features" not in obj:
            raise DataError(f"{path}: a dict without a 'features' key (keys: {', '.join(map(str, obj))})")
        obj = obj["features"]
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if not isinstance(obj, torch.Tensor) or not obj.is_floating_point():
        raise DataError(f"{path}: expected a float tensor of patch features, got {type(obj).__name__}")
    obj = obj.detach()
    return (obj.float() if obj.dtype == torch.bfloat16 else obj).numpy()  # numpy has no bfloat16


def _read_h5(path: Path) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "features" not in handle:
                raise DataError(f"{path}: no 'features' dataset (datasets: {', '.join(handle.keys())})")
            values = handle["features"][()]
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{path}: cannot read as HDF5: {error}") from error
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        raise DataError(f"{path}: 'features' must be floating point, got {values.dtype}")
    return values
