"""Image classification data modules registered in ``interplay.vision.registry.REGISTRY.datasets``.

==================  ======================================================================================
``digits``          scikit-learn's 1,797 handwritten 8x8 digits, upsampled to ``image_size`` RGB (bundled)
``lfw-subset``      scikit-image's ``lfw_subset``: 100 faces vs 100 non-faces, 25x25 grey (bundled)
``synthetic-shapes`` random circles / squares / triangles, class = shape (generated in memory)
``image-folder``    ``data.root``: ``<class>/<images>`` or ``train/ val/ [test/]`` of class folders
``image-csv``       ``data.root``: a ``path,label[,split]`` CSV (or a folder holding ``manifest.csv``)
==================  ======================================================================================

Every module is a :class:`~interplay.core.datamodules.SplitDataModule` whose datasets yield
``(uint8 [3, S, S], label)``; the batch transforms (:class:`~interplay.vision.data.transforms.
BatchAugment`: kornia RandomResizedCrop, flip, ColorJitter on training batches, Normalize on all) run
in :meth:`ImageDataModule.on_after_batch_transfer`, i.e. on the training device. ``info`` holds
``num_classes`` (read by the engine to size the classifier); the class names are in ``classes``.

Splits without a split of their own are stratified and fixed by ``split_seed`` (independent of the
training seed). An image folder with ``train/`` and ``val/`` but no ``test/`` (ImageNet's layout)
scores ``val/`` once as the test split and selects on ``val_fraction`` of ``train/``, so that model
selection never sees the split that is reported.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from interplay.core.datamodules import SplitDataModule, stratified_split
from interplay.core.errors import ConfigError, DataError
from interplay.vision.data.readers import (
    SHAPES,
    Sample,
    find_split_folders,
    load_image,
    make_shapes,
    read_csv_manifest,
    scan_image_folder,
)
from interplay.vision.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    pil_to_uint8,
    resize_batch_uint8,
    resize_center_crop,
)
from interplay.vision.registry import REGISTRY


def _full_signature(cls: type) -> inspect.Signature:
    """The keyword parameters of ``cls.__init__`` and of the ``__init__`` it forwards ``**kwargs`` to,
    so that the registry rejects a misspelt ``data.params`` key with a ConfigError naming it (instead
    of a TypeError deep in the constructors) and the engine passes ``root`` only to who takes it."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif p.kind is not p.VAR_POSITIONAL:
                params.setdefault(p.name, p.replace(kind=p.KEYWORD_ONLY))
        if not forwards:
            break
    return inspect.Signature(list(params.values()))


def register_dataset(name: str, description: str) -> Callable[[type], type]:
    """Register a data module class under ``name`` with its full keyword signature."""

    def decorator(cls: type) -> type:
        cls.__signature__ = _full_signature(cls)
        return REGISTRY.datasets.register(name, description)(cls)

    return decorator


class ImageFileDataset(Dataset):
    """Images read from disk with Pillow (RGB), resized (shorter side ``size / crop_pct``) and centre-
    cropped to ``size`` x ``size``; items are ``(uint8 [3, size, size], label)``."""

    def __init__(self, samples: Sequence[Sample], size: int, crop_pct: float = 1.0) -> None:
        self.samples = list(samples)
        self.size, self.crop_pct = size, crop_pct

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        s = self.samples[index]
        img = resize_center_crop(load_image(s.path, row=s.row), self.size, self.crop_pct)
        return pil_to_uint8(img), s.label

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]


class ImageDataModule(SplitDataModule):
    """Base of the image data modules: batch transforms, splits, ``info``.

    Args:
        image_size: the model's input size ``S``.
        augment: random training transforms on (``False``: training batches are only normalised).
        scale, ratio: RandomResizedCrop's area and aspect ranges (``scale: null`` skips the crop).
        hflip: horizontal-flip probability (0 for digits and other chiral data).
        color_jitter: brightness = contrast = saturation jitter (0 skips it).
        mean, std: normalisation (ImageNet's by default).
        val_fraction, test_fraction, split_seed: stratified splits where the data has none.
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        image_size: int = 224,
        augment: bool = True,
        scale: Sequence[float] | None = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {image_size}")
        self.image_size = image_size
        self.augment = augment
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.transform = BatchAugment(
            image_size, scale=scale, ratio=ratio, hflip=hflip, color_jitter=color_jitter, mean=mean, std=std
        )
        self.classes: list[str] = []

    def _set_classes(self, classes: Sequence[str]) -> None:
        if len(classes) < 2:
            raise DataError(
                f"image classification needs at least 2 classes, found {len(classes)}: {list(classes)}"
            )
        self.classes = list(classes)
        # only what every model / task factory may take: info keys reach **kwargs of model factories
        self.info = {"num_classes": len(self.classes)}

    def split_indices(self, labels: Sequence[int] | np.ndarray, *, val: bool = True, test: bool = True):
        return stratified_split(
            np.asarray(labels),
            self.val_fraction if val else 0.0,
            self.test_fraction if test else 0.0,
            self.split_seed,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform(images, train=training and self.augment), labels


class InMemoryImageDataModule(ImageDataModule):
    """Images held as one ``uint8 [N, 3, S, S]`` tensor, split stratified."""

    def load_arrays(self) -> tuple[Tensor, np.ndarray]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        images, labels = self.load_arrays()
        targets = torch.as_tensor(labels, dtype=torch.long)
        splits = self.split_indices(labels)
        self.datasets = {s: TensorDataset(images[idx], targets[idx]) for s, idx in splits.items()}

    @staticmethod
    def download(root: str | None = None) -> str:
        return "bundled with its library or generated locally: nothing to download"


def _grey_to_uint8_rgb(images: np.ndarray, size: int) -> Tensor:
    """Float grey images in ``[0, 1]`` ``[N, h, w]`` -> ``uint8 [N, 3, size, size]``."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1).mul(255.0).round().clamp(0, 255)
    return resize_batch_uint8(x.to(torch.uint8), size).expand(-1, 3, -1, -1).contiguous()


@register_dataset("digits", "scikit-learn handwritten digits (1,797 8x8, 10 classes) upsampled to RGB")
class DigitsImages(InMemoryImageDataModule):
    """scikit-learn's digits as ``image_size`` RGB images (no flips: digits are chiral)."""

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        image_size: int = 32,
        scale: Sequence[float] | None = (0.7, 1.0),
        ratio: Sequence[float] = (0.85, 1.18),
        hflip: float = 0.0,
        color_jitter: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(
            batch_size,
            eval_batch_size,
            num_workers,
            seed,
            image_size=image_size,
            scale=scale,
            ratio=ratio,
            hflip=hflip,
            color_jitter=color_jitter,
            **kwargs,
        )
        self._set_classes([str(i) for i in range(10)])

    def load_arrays(self) -> tuple[Tensor, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return _grey_to_uint8_rgb(digits.images / 16.0, self.image_size), digits.target


@register_dataset("lfw-subset", "scikit-image lfw_subset: 100 faces vs 100 non-faces, 25x25 (bundled)")
class LFWSubsetImages(InMemoryImageDataModule):
    """scikit-image's ``lfw_subset`` (the first 100 images are faces, the last 100 are not):
    class 0 ``non-face``, class 1 ``face``."""

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        image_size: int = 32,
        scale: Sequence[float] | None = (0.6, 1.0),
        color_jitter: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(
            batch_size,
            eval_batch_size,
            num_workers,
            seed,
            image_size=image_size,
            scale=scale,
            color_jitter=color_jitter,
            **kwargs,
        )
        self._set_classes(["non-face", "face"])

    def load_arrays(self) -> tuple[Tensor, np.ndarray]:
        from skimage.data import lfw_subset

        images = lfw_subset()
        if images.dtype == np.uint8:  # documented as uint8, returned as float in [0, 1] by scikit-image 0.2x
            images = images / 255.0
        labels = np.r_[np.ones(100, dtype=np.int64), np.zeros(len(images) - 100, dtype=np.int64)]
        return _grey_to_uint8_rgb(images, self.image_size), labels


@register_dataset("synthetic-shapes", "random circles, squares and triangles (class = shape), generated")
class SyntheticShapes(InMemoryImageDataModule):
    """``n_per_class`` images per shape, drawn with ``data_seed`` (see :func:`~interplay.vision.data.
    readers.make_shapes`; :func:`~interplay.vision.data.readers.write_shapes_folder` writes them as an
    image folder)."""

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        n_per_class: int = 300,
        data_seed: int = 0,
        image_size: int = 32,
        scale: Sequence[float] | None = (0.6, 1.0),
        **kwargs,
    ) -> None:
        super().__init__(
            batch_size, eval_batch_size, num_workers, seed, image_size=image_size, scale=scale, **kwargs
        )
        if n_per_class < 2:
            raise ConfigError(f"n_per_class must be >= 2, got {n_per_class}")
        self.n_per_class, self.data_seed = n_per_class, data_seed
        self._set_classes(list(SHAPES))

    def load_arrays(self) -> tuple[Tensor, np.ndarray]:
        images, labels = make_shapes(self.n_per_class, self.image_size, self.data_seed)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


class FileImageDataModule(ImageDataModule):
    """Data read from files: ``splits`` maps each split to its samples (filled in ``__init__``, so
    that ``num_classes`` is known before the model is built). Training images are loaded at
    ``image_size / crop_pct`` and cropped by RandomResizedCrop; evaluation images are resized and
    centre-cropped (``crop_pct``) with Pillow."""

    def __init__(self, *args, crop_pct: float = 0.875, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0 < crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.crop_pct = crop_pct
        self.splits: dict[str, list[Sample]] = {}

    def _assign(self, train: list[Sample], val: list[Sample] | None, test: list[Sample] | None) -> None:
        """Fill ``splits``, carving the missing val / test splits out of ``train`` (stratified)."""
        if val is None or test is None:
            idx = self.split_indices([s.label for s in train], val=val is None, test=test is None)
            if val is None:
                val = [train[i] for i in idx["val"]]
            if test is None:
                test = [train[i] for i in idx["test"]]
            train = [train[i] for i in idx["train"]]
        for name, part in (("train", train), ("val", val), ("test", test)):
            if not part:
                raise DataError(
                    f"{type(self).__name__}: the {name} split is empty (too few images for "
                    f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction}?)"
                )
        self.splits = {"train": train, "val": val, "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train_size = round(self.image_size / self.crop_pct) if self.augment else self.image_size
        self.datasets = {
            "train": ImageFileDataset(
                self.splits["train"], train_size, 1.0 if self.augment else self.crop_pct
            ),
            "val": ImageFileDataset(self.splits["val"], self.image_size, self.crop_pct),
            "test": ImageFileDataset(self.splits["test"], self.image_size, self.crop_pct),
        }


def _require_root(root: str | None, what: str, hint: str) -> Path:
    if root is None:
        raise ConfigError(f"dataset '{what}' needs data.root={hint}")
    return Path(root).expanduser()


@register_dataset("image-folder", "images in root/<class>/ or root/{train,val,test}/<class>/ (Pillow)")
class ImageFolder(FileImageDataModule):
    """An image folder (see the module docstring for how its splits are used)."""

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed, **kwargs)
        self.root = _require_root(
            root, "image-folder", "<folder of class folders, or of train/ val/ [test/]>"
        )
        folders = find_split_folders(self.root)
        if "train" not in folders:
            if folders:
                raise DataError(
                    f"image folder {self.root} has {', '.join(folders)} folders but no train/ folder"
                )
            samples, classes = scan_image_folder(self.root)
            self._set_classes(classes)
            self._assign(samples, None, None)
            return
        train, classes = scan_image_folder(folders["train"])
        self._set_classes(classes)
        val = scan_image_folder(folders["val"], classes)[0] if "val" in folders else None
        test = scan_image_folder(folders["test"], classes)[0] if "test" in folders else None
        if val is not None and test is None:
            test, val = val, None  # ImageNet layout: report on val/, select on a part of train/
        self._assign(train, val, test)


@register_dataset("image-csv", "images listed in a path,label[,split] CSV manifest (Pillow)")
class ImageCSV(FileImageDataModule):
    """Images listed in a CSV manifest; ``data.root`` is the CSV file or a folder holding ``manifest``.
    Rows with a ``split`` go to that split; splits nobody names are carved out of ``train``."""

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        manifest: str = "manifest.csv",
        **kwargs,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed, **kwargs)
        path = _require_root(root, "image-csv", "<manifest CSV, or the folder holding it>")
        self.manifest = path / manifest if path.is_dir() else path
        samples, classes = read_csv_manifest(self.manifest)
        self._set_classes(classes)
        parts: dict[str | None, list[Sample]] = {}
        for s in samples:
            parts.setdefault(s.split, []).append(s)
        if None in parts and len(parts) > 1:
            rows = [s.row for s in parts[None]][:5]
            raise DataError(f"CSV manifest {self.manifest}: rows {rows} have no split while others do")
        if None in parts:
            self._assign(parts[None], None, None)
            return
        if "train" not in parts:
            raise DataError(f"CSV manifest {self.manifest}: no row has split 'train'")
        self._assign(parts["train"], parts.get("val"), parts.get("test"))
