"""Synapse-style segmentation data: readers for the TransUNet preprocessing of the Synapse multi-organ
CT set, a synthetic shapes set written in the same layout, and the data modules ``synapse``
(``data.root``) and ``synthetic-seg-shapes`` (offline).

Layout (TransUNet's ``data/Synapse``; 9 classes: background + 8 organs)::

    <root>/train_npz/case0005_slice000.npz     keys 'image' [H, W] float (CT clipped to [-125, 275]
                                                and scaled to [0, 1]) and 'label' [H, W] (0..8)
    <root>/test_vol_h5/case0001.npy.h5         datasets 'image' and 'label', [D, H, W]
    <root>/lists/lists_Synapse/train.txt       slice names (``case0005_slice000``), one per line
    <root>/lists/lists_Synapse/test_vol.txt    volume names (``case0001``)

The lists may also sit in ``<root>/lists_Synapse/`` or ``<root>/``; without a list, every file of the
folder is used. Validation slices come from whole training cases (``val_fraction`` of the cases, by
``split_seed``), so no case is in two splits; the test split is the h5 volumes, scored per volume.

Training slices are resized to ``image_size`` (bilinear image, nearest label) and augmented as
TransUNet's ``RandomGenerator``: with probability 1/2 a random 90-degree rotation plus a flip, else with
probability 1/2 a random rotation in [-20, 20] degrees (labels nearest).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor
from torch.utils.data import Dataset

from interplay.core.data import dataset_dir
from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import ConfigError, DataError
from interplay.vision.data.datasets import register_dataset
from interplay.vision.modules.transdae.model import SYNAPSE_CLASSES

SHAPE_CLASSES = ("background", "ellipse", "rectangle", "triangle")
# typical (row, column) centre of each shape class, as fractions of the side
SHAPE_CENTERS = ((0.3, 0.3), (0.35, 0.7), (0.7, 0.5))
LIST_FOLDERS = ("lists/lists_Synapse", "lists_Synapse", ".")


def _check_pair(image: np.ndarray, label: np.ndarray, where: str, ndim: int) -> None:
    if image.ndim != ndim or label.shape != image.shape:
        raise DataError(
            f"{where}: 'image' and 'label' must both be {ndim}-D of one shape, got {image.shape} and "
            f"{label.shape}"
        )
    if not np.isfinite(image).all():
        raise DataError(f"{where}: 'image' holds NaN or inf values")
    if np.any(label < 0) or not np.all(np.equal(np.mod(label, 1), 0)):
        raise DataError(f"{where}: 'label' must hold non-negative integer class ids")


def read_npz_slice(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 [H, W], label int64 [H, W])`` of one Synapse training slice."""
    path = Path(path)
    try:
        with np.load(path) as data:
            missing = [k for k in ("image", "label") if k not in data.files]
            if missing:
                raise DataError(f"slice {path}: missing key(s) {missing} (has {data.files})")
            image, label = np.asarray(data["image"]), np.asarray(data["label"])
    except FileNotFoundError:
        raise DataError(f"slice file not found: {path}") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read slice {path}: {err}") from err
    _check_pair(image, label, f"slice {path}", 2)
    return image.astype(np.float32), label.astype(np.int64)


def read_h5_volume(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 [D, H, W], label int64 [D, H, W])`` of one Synapse test volume."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"volume file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise DataError(f"volume {path}: missing dataset(s) {missing} (has {list(f.keys())})")
            image, label = np.asarray(f["image"][()]), np.asarray(f["label"][()])
    except OSError as err:
        raise DataError(f"cannot read volume {path}: {err}") from err
    _check_pair(image, label, f"volume {path}", 3)
    return image.astype(np.float32), label.astype(np.int64)


def _read_list(root: Path, name: str) -> list[str] | None:
    for folder in LIST_FOLDERS:
        path = root / folder / name
        if path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def synapse_files(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """The training slices and test volumes of a Synapse-style folder (every listed file must exist)."""
    root = Path(root).expanduser()
    train_dir, test_dir = root / "train_npz", root / "test_vol_h5"
    for folder in (train_dir, test_dir):
        if not folder.is_dir():
            raise DataError(
                f"Synapse folder {root}: no {folder.name}/ (expected train_npz/ and test_vol_h5/)"
            )
    names = _read_list(root, "train.txt")
    slices = [train_dir / f"{n}.npz" for n in names] if names is not None else sorted(train_dir.glob("*.npz"))
    names = _read_list(root, "test_vol.txt")
    volumes = (
        [test_dir / f"{n}.npy.h5" for n in names] if names is not None else sorted(test_dir.glob("*.h5"))
    )
    for kind, files in (("training slice", slices), ("test volume", volumes)):
        if not files:
            raise DataError(f"Synapse folder {root}: no {kind}s found")
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(f"Synapse folder {root}: listed {kind} file(s) not found: {missing[:5]}")
    return slices, volumes


def case_of(path: Path) -> str:
    """``case0005`` of ``case0005_slice012.npz``."""
    return path.stem.split("_slice")[0]


def resize_pair(image: Tensor, label: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Resize ``image [..., H, W]`` (bilinear) and ``label`` (nearest) to ``size x size``."""
    if tuple(image.shape[-2:]) == (size, size):
        return image, label
    shape = image.shape
    img = F.interpolate(
        image.reshape(-1, 1, *shape[-2:]), size=(size, size), mode="bilinear", align_corners=False
    )
    lab = F.interpolate(label.reshape(-1, 1, *shape[-2:]).float(), size=(size, size), mode="nearest")
    return img.reshape(*shape[:-2], size, size), lab.reshape(*shape[:-2], size, size).long()


class SliceDataset(Dataset):
    """2-D slices ``(image float [1, S, S], label long [S, S])``, augmented when ``augment``."""

    def __init__(self, files: Sequence[Path], size: int, *, augment: bool) -> None:
        self.files, self.size, self.augment = list(files), size, augment

    def __len__(self) -> int:
        return len(self.files)

    def _augment(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if torch.rand(()).item() > 0.5:
            k = int(torch.randint(0, 4, ()).item())
            image, label = np.rot90(image, k), np.rot90(label, k)
            axis = int(torch.randint(0, 2, ()).item())
            image, label = np.flip(image, axis), np.flip(label, axis)
        elif torch.rand(()).item() > 0.5:
            angle = float(torch.empty(()).uniform_(-20, 20).item())
            image = ndimage.rotate(image, angle, order=0, reshape=False)
            label = ndimage.rotate(label, angle, order=0, reshape=False)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = read_npz_slice(self.files[index])
        if self.augment:
            image, label = self._augment(image, label)
        img, lab = resize_pair(torch.from_numpy(image)[None], torch.from_numpy(label)[None], self.size)
        return img, lab[0]


class VolumeDataset(Dataset):
    """Whole volumes ``(image float [D, H, W], label long [D, H, W])`` at their own resolution."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = read_h5_volume(self.files[index])
        return torch.from_numpy(image), torch.from_numpy(label)


class SynapseDataModule(SplitDataModule):
    """Synapse-style slices and volumes (registered as ``synapse``; see the module docstring).

    Args:
        root: the folder holding ``train_npz/`` and ``test_vol_h5/`` (``data.root``).
        image_size: the network's input size (224 in the paper).
        num_classes: classes including background (9 for Synapse), checked against the labels read.
        class_names: names of the classes (Synapse's organs by default).
        augment: TransUNet's random rotation / flip on training slices.
        val_fraction, split_seed: the share of training *cases* held out for validation.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 24,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        image_size: int = 224,
        num_classes: int = 9,
        class_names: Sequence[str] | None = None,
        augment: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if root is None:
            raise ConfigError(
                "dataset 'synapse' needs data.root=<folder holding train_npz/ and test_vol_h5/>"
            )
        if image_size < 32 or image_size % 32:
            raise ConfigError(
                f"image_size must be a positive multiple of 32 (TransDAE's stride), got {image_size}"
            )
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        names = list(class_names) if class_names is not None else list(SYNAPSE_CLASSES[:num_classes])
        if len(names) != num_classes:
            raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
        self.root, self.image_size, self.augment = Path(root).expanduser(), image_size, augment
        self.num_classes, self.class_names = num_classes, names
        slices, self.volumes = synapse_files(self.root)
        cases = sorted({case_of(p) for p in slices})
        if len(cases) < 2:
            raise DataError(
                f"Synapse folder {self.root}: need >= 2 training cases to hold one out, got {cases}"
            )
        order = np.random.default_rng(split_seed).permutation(len(cases))
        n_val = min(len(cases) - 1, max(1, int(round(val_fraction * len(cases)))))
        val_cases = {cases[i] for i in order[:n_val]}
        self.train_slices = [p for p in slices if case_of(p) not in val_cases]
        self.val_slices = [p for p in slices if case_of(p) in val_cases]
        # read by the task (class names of the per-class metrics, the size volumes' slices are resized to)
        self.info = {"num_classes": num_classes, "class_names": names, "image_size": image_size}
        self.predict_split = "test"

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.datasets = {
            "train": SliceDataset(self.train_slices, self.image_size, augment=self.augment),
            "val": SliceDataset(self.val_slices, self.image_size, augment=False),
            "test": VolumeDataset(self.volumes),
        }

    def test_dataloader(self):
        from torch.utils.data import DataLoader

        if not self.datasets:
            self.setup()
        return DataLoader(self.datasets["test"], batch_size=1, shuffle=False, num_workers=self.num_workers)

    def predict_dataloader(self):
        if self.predict_split == "test":
            return self.test_dataloader()
        return super().predict_dataloader()

    @staticmethod
    def download(root: str | None = None) -> str:
        return (
            "Synapse (BTCV abdomen): register at https://www.synapse.org/#!Synapse:syn3193805, download "
            "RawData, and preprocess as TransUNet does (or use its released data/Synapse): train_npz/, "
            "test_vol_h5/, lists/lists_Synapse/; then pass data.root=<that folder>"
        )


register_dataset("synapse", "Synapse multi-organ CT: TransUNet npz slices + h5 test volumes (data.root)")(
    SynapseDataModule
)


# -- synthetic shapes in the Synapse layout ----------------------------------------------------------
def _draw(
    label: np.ndarray, image: np.ndarray, cls: int, center, radius, angle: float, intensity: float
) -> None:
    from skimage.draw import ellipse, polygon

    size = label.shape[0]
    cy, cx = center
    ry, rx = radius
    if cls == 1:
        rr, cc = ellipse(cy, cx, ry, rx, shape=label.shape, rotation=angle)
    else:
        if cls == 2:
            corners = np.array([[-ry, -rx], [-ry, rx], [ry, rx], [ry, -rx]], dtype=float)
        else:
            corners = np.array([[-ry, 0.0], [ry, rx], [ry, -rx]], dtype=float)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = corners @ rot.T + np.array([cy, cx])
        rr, cc = polygon(np.clip(pts[:, 0], 0, size - 1), np.clip(pts[:, 1], 0, size - 1), shape=label.shape)
    label[rr, cc] = cls
    image[rr, cc] = intensity


def make_shapes_volume(
    depth: int, size: int, rng: np.random.Generator, *, noise: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """A ``[D, S, S]`` volume on a noisy, shaded background with one ellipse (class 1), one rectangle (2)
    and one triangle (3), each of random bright intensity, random size and orientation, near a typical
    position of its own (as organs have: :data:`SHAPE_CENTERS`, jittered by up to 10 % of the side),
    present on a contiguous run of slices through which it grows, shrinks and drifts slowly."""
    image = np.empty((depth, size, size), np.float32)
    label = np.zeros((depth, size, size), np.int64)
    yy, xx = np.mgrid[0:size, 0:size] / size
    shade = rng.uniform(0.1, 0.3) + 0.15 * (rng.uniform(-1, 1) * yy + rng.uniform(-1, 1) * xx)
    objects = []
    for cls in (1, 2, 3):
        start = int(rng.integers(0, max(1, depth // 3)))
        stop = int(rng.integers(min(depth, start + depth // 2), depth + 1))
        objects.append(
            dict(
                cls=cls,
                start=start,
                stop=max(stop, start + 1),
                center=(np.array(SHAPE_CENTERS[cls - 1]) + rng.uniform(-0.1, 0.1, 2)) * size,
                drift=rng.uniform(-0.08, 0.08, 2) * size,
                radius=rng.uniform(0.09, 0.17, 2) * size,
                angle=float(rng.uniform(0, np.pi)),
                intensity=float(rng.uniform(0.55, 0.9)),
            )
        )
    order = rng.permutation(3)
    for d in range(depth):
        slice_image = shade + rng.normal(0.0, noise, (size, size))
        slice_label = label[d]
        for i in order:
            o = objects[i]
            if not o["start"] <= d < o["stop"]:
                continue
            t = (d - o["start"] + 0.5) / (o["stop"] - o["start"])
            grow = 0.45 + 0.55 * np.sin(np.pi * t)  # small at both ends, largest mid-run
            center = o["center"] + (t - 0.5) * o["drift"]
            _draw(slice_label, slice_image, o["cls"], center, o["radius"] * grow, o["angle"], o["intensity"])
        noisy = np.where(slice_label > 0, slice_image + rng.normal(0.0, noise, (size, size)), slice_image)
        image[d] = np.clip(noisy, 0.0, 1.0)
    return image, label


def write_synthetic_synapse(
    root: str | os.PathLike,
    *,
    n_train_cases: int = 12,
    n_test_cases: int = 4,
    depth: int = 16,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write synthetic shapes volumes in the Synapse layout (training cases as npz slices, test cases as
    h5 volumes, both lists) and return ``root``; nothing is written when ``root/test_vol_h5`` exists.
    The folder is assembled elsewhere and moved into place."""
    import h5py

    if n_train_cases < 2 or n_test_cases < 1 or depth < 2 or size < 32:
        raise ConfigError(
            f"synthetic Synapse needs >= 2 training cases, >= 1 test case, depth >= 2 and size >= 32, got "
            f"{n_train_cases}, {n_test_cases}, {depth}, {size}"
        )
    root = Path(root).expanduser()
    if (root / "test_vol_h5").is_dir():
        return root
    rng = np.random.default_rng(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for folder in ("train_npz", "test_vol_h5", "lists/lists_Synapse"):
            (staging / folder).mkdir(parents=True)
        train_names, test_names = [], []
        for case in range(n_train_cases + n_test_cases):
            name = f"case{case + 1:04d}"
            image, label = make_shapes_volume(depth, size, rng)
            if case < n_train_cases:
                for d in range(depth):
                    slice_name = f"{name}_slice{d:03d}"
                    np.savez(
                        staging / "train_npz" / f"{slice_name}.npz",
                        image=image[d],
                        label=label[d].astype(np.uint8),
                    )
                    train_names.append(slice_name)
            else:
                with h5py.File(staging / "test_vol_h5" / f"{name}.npy.h5", "w") as f:
                    f.create_dataset("image", data=image)
                    f.create_dataset("label", data=label.astype(np.uint8))
                test_names.append(name)
        (staging / "lists/lists_Synapse/train.txt").write_text("\n".join(train_names) + "\n")
        (staging / "lists/lists_Synapse/test_vol.txt").write_text("\n".join(test_names) + "\n")
        try:
            os.replace(staging, root)
        except OSError as err:
            if not (root / "test_vol_h5").is_dir():
                raise DataError(f"cannot write the synthetic Synapse set to {root}: {err}") from err
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


@register_dataset(
    "synthetic-seg-shapes", "noisy ellipses / rectangles / triangles volumes in Synapse's layout"
)
class SyntheticShapesSegmentation(SynapseDataModule):
    """:func:`write_synthetic_synapse` into ``data.root`` (default ``$INTERPLAY_DATA/synthetic-seg-shapes-
    ...``) when it is not there yet, then read back as ``synapse`` (4 classes: background, ellipse,
    rectangle, triangle)."""

    def __init__(
        self,
        root: str | None = None,
        *args,
        n_train_cases: int = 12,
        n_test_cases: int = 4,
        depth: int = 16,
        size: int = 64,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        if root is None:
            name = f"synthetic-seg-shapes-{n_train_cases}+{n_test_cases}x{depth}-{size}px-seed{data_seed}"
            root = str(dataset_dir(name))
        write_synthetic_synapse(
            root,
            n_train_cases=n_train_cases,
            n_test_cases=n_test_cases,
            depth=depth,
            size=size,
            seed=data_seed,
        )
        kwargs.setdefault("image_size", size)
        kwargs.setdefault("num_classes", len(SHAPE_CLASSES))
        kwargs.setdefault("class_names", SHAPE_CLASSES)
        super().__init__(root, *args, **kwargs)

    @staticmethod
    def download(root: str | None = None) -> str:
        return "generated locally: nothing to download"
