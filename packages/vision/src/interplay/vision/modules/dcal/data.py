"""Re-identification data: identity-balanced (``P x K``) training batches and query / gallery
evaluation splits.

==================  ======================================================================================
``digits-reid``     offline: scikit-learn's handwritten digits, each in ``views`` random affine views
                    (rotation, scale, shift, contrast); the identity is the digit class (closed set)
                    or the digit image itself (``identity: instance``: disjoint training and test
                    identities, like real re-ID); view 0 of every evaluation digit is the query, the
                    other views the gallery.
``reid-folder``     ``data.root`` in the Market-1501 layout (``bounding_box_train/``, ``query/``,
                    ``bounding_box_test/``, names ``<pid>_c<cam>...jpg``; pid -1 = junk, skipped) or the
                    MSMT17 layout (``list_train.txt``, ``list_val.txt``, ``list_query.txt``,
                    ``list_gallery.txt`` of ``<path> <pid>`` lines under ``train/`` / ``test/``).
                    ``val_identities`` training identities are held out for model selection.
==================  ======================================================================================

Training batches are ``(uint8 images [B, 3, H, W], pid)`` with pids relabelled ``0..P-1`` (``info``'s
``num_classes``); evaluation batches are ``(images, pid, cam, is_query)``. Training transforms
(flip, zero-padding + random crop, random erasing: TransReID's) and normalisation run on the device in
:meth:`ReIDDataModule.on_after_batch_transfer`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import ConfigError, DataError
from interplay.vision.data.datasets import register_dataset
from interplay.vision.data.readers import is_image_file, load_image
from interplay.vision.data.transforms import IMAGENET_MEAN, IMAGENET_STD, pil_to_uint8


class ReIDTransform(nn.Module):
    """Training: horizontal flip, zero-pad ``pad`` and random crop back to ``(H, W)``, random erasing;
    then (always) ``[0, 1]`` float and normalisation."""

    def __init__(
        self,
        size: tuple[int, int],
        *,
        hflip: float = 0.5,
        pad: int = 10,
        erase: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if not 0 <= hflip <= 1 or not 0 <= erase <= 1 or pad < 0:
            raise ConfigError(
                f"re-ID augmentation: hflip and erase must be in [0, 1], pad >= 0 ({hflip}, {erase}, {pad})"
            )
        ops: list[nn.Module] = []
        if hflip > 0:
            ops.append(K.RandomHorizontalFlip(p=hflip))
        if pad > 0:
            ops.append(K.RandomCrop(tuple(size), padding=pad, fill=0.0))
        if erase > 0:
            ops.append(K.RandomErasing(p=erase))
        self.size = tuple(size)
        self.augment = nn.Sequential(*ops)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, train: bool = False) -> Tensor:
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if train and len(self.augment):
            x = self.augment(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class IdentityBatchSampler(Sampler[list[int]]):
    """Batches of ``P`` distinct identities x ``K`` images (``P = min(batch_size // K, #identities)``;
    an identity with fewer than ``K`` images is sampled with replacement); an epoch has
    ``#images // (P K)`` batches. A new draw every epoch, fixed by ``seed``."""

    def __init__(self, pids: Sequence[int], batch_size: int, instances: int, seed: int = 0) -> None:
        if instances < 1 or batch_size < instances:
            raise ConfigError(f"batch_size ({batch_size}) must be >= instances_per_id ({instances}) >= 1")
        self.by_id: dict[int, list[int]] = {}
        for i, pid in enumerate(pids):
            self.by_id.setdefault(int(pid), []).append(i)
        if len(self.by_id) < 2:
            raise DataError(f"re-ID training needs at least 2 identities, found {len(self.by_id)}")
        self.ids = np.array(sorted(self.by_id))
        self.instances = instances
        self.per_batch = max(2, min(batch_size // instances, len(self.ids)))
        self.num_images = len(pids)
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return max(1, self.num_images // (self.per_batch * self.instances))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        for _ in range(len(self)):
            batch: list[int] = []
            for pid in rng.choice(self.ids, self.per_batch, replace=False):
                pool = self.by_id[int(pid)]
                batch += rng.choice(pool, self.instances, replace=len(pool) < self.instances).tolist()
            yield batch


class ReIDDataModule(SplitDataModule):
    """Base of the re-ID data modules (see the module docstring). Subclasses fill ``self.datasets``
    (``train``: ``(image, pid)``; ``val`` / ``test``: ``(image, pid, cam, is_query)``) in ``setup``
    and set ``info`` through :meth:`_set_identities` in ``__init__``.

    Args:
        height, width: the model's input size.
        instances_per_id: ``K`` images per identity in a training batch (``batch_size = P K``).
        augment, hflip, pad, erase: training transforms.
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        height: int = 256,
        width: int = 128,
        instances_per_id: int = 4,
        augment: bool = True,
        hflip: float = 0.5,
        pad: int = 10,
        erase: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if height < 1 or width < 1:
            raise ConfigError(f"height and width must be >= 1, got {height} x {width}")
        self.height, self.width = height, width
        self.instances_per_id = instances_per_id
        self.augment = augment
        self.transform = ReIDTransform((height, width), hflip=hflip, pad=pad, erase=erase, mean=mean, std=std)

    def _set_identities(self, num_train_ids: int) -> None:
        if num_train_ids < 2:
            raise DataError(f"re-ID training needs at least 2 identities, found {num_train_ids}")
        self.info = {"num_classes": num_train_ids}

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            self.setup(None)
        dataset = self.datasets["train"]
        pids = dataset.tensors[1].tolist() if isinstance(dataset, TensorDataset) else dataset.pids
        sampler = IdentityBatchSampler(pids, self.batch_size, self.instances_per_id, self.seed)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, *rest = batch
        training = self.trainer is not None and self.trainer.training
        return (self.transform(images, train=training and self.augment), *rest)


# -- digits-reid ----------------------------------------------------------------------------------------
def random_views(
    images: Tensor, views: int, size: int, generator: torch.Generator, strength: float = 1.0
) -> Tensor:
    """``views`` random affine views of each grey image ``[N, h, w]`` in ``[0, 1]``: ``uint8
    [N, views, 3, size, size]`` (rotation +-20 deg, scale 0.85-1.15, shift +-10 %, contrast 0.7-1.0;
    ranges times ``strength``)."""
    n = images.shape[0]
    up = F.interpolate(images.unsqueeze(1).float(), size=(size, size), mode="bilinear", align_corners=False)
    up = up.repeat_interleave(views, dim=0)
    m = n * views

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(m, generator=generator)

    angle = uniform(-20.0, 20.0) * strength * math.pi / 180.0
    scale = 1.0 + uniform(-0.15, 0.15) * strength
    shift = torch.stack([uniform(-0.2, 0.2), uniform(-0.2, 0.2)], dim=1) * strength  # grid units: 0.2 = 10 %
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(up.shape), align_corners=False)
    out = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out * (1.0 - uniform(0.0, 0.3) * strength).view(m, 1, 1, 1)
    out = out.mul(255.0).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    return out.reshape(n, views, 3, size, size)


@register_dataset(
    "digits-reid", "offline re-ID: digits in random affine views; identity = class or the digit itself"
)
class DigitsReID(ReIDDataModule):
    """Handwritten digits (scikit-learn) in ``views`` random affine views each.

    Args:
        identity: ``class`` (the digit's class, 10 identities seen in training: closed-set retrieval,
            the default) or ``instance`` (each digit image is its own identity; training, validation
            and test identities are disjoint: open-set, like real re-ID, and much harder).
        train_digits, val_digits, test_digits: disjoint numbers of source digits per split
            (stratified by class).
        views: views per digit; in evaluation view 0 of every digit is a query (camera 0) and the
            other views form the gallery (camera = view index).
        image_size: ``H = W``; view_strength: scales the affine ranges; data_seed: digits and views.
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        identity: str = "class",
        train_digits: int = 600,
        val_digits: int = 150,
        test_digits: int = 300,
        views: int = 3,
        image_size: int = 16,
        view_strength: float = 1.0,
        data_seed: int = 0,
        pad: int = 2,
        hflip: float = 0.0,
        erase: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(
            batch_size,
            eval_batch_size,
            num_workers,
            seed,
            height=image_size,
            width=image_size,
            pad=pad,
            hflip=hflip,
            erase=erase,
            **kwargs,
        )
        if identity not in ("class", "instance"):
            raise ConfigError(f"digits-reid: identity must be 'class' or 'instance', got '{identity}'")
        total = train_digits + val_digits + test_digits
        if min(train_digits, val_digits, test_digits) < 2 or total > 1797:
            raise ConfigError(
                f"digits-reid: need >= 2 digits per split and at most 1797 in all, got {train_digits}, "
                f"{val_digits}, {test_digits}"
            )
        if views < 2:
            raise ConfigError(f"digits-reid: views must be >= 2 (a query and a gallery view), got {views}")
        self.identity = identity
        self.counts = (train_digits, val_digits, test_digits)
        self.views, self.image_size = views, image_size
        self.view_strength, self.data_seed = view_strength, data_seed
        self._set_identities(10 if identity == "class" else train_digits)

    @staticmethod
    def download(root: str | None = None) -> str:
        return "bundled with scikit-learn: nothing to download"

    def split_digits(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Disjoint source-digit indices per split, of exactly the requested sizes and stratified by
        class (the classes are interleaved in proportion before the splits are cut), fixed by
        ``data_seed``."""
        rng = np.random.default_rng(self.data_seed)
        key = np.empty(len(labels))
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            key[idx] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
        order = np.argsort(key, kind="stable")
        bounds = np.cumsum([0, *self.counts])
        return {s: np.sort(order[a:b]) for s, a, b in zip(("train", "val", "test"), bounds[:-1], bounds[1:])}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images / 16.0, dtype=torch.float32)
        labels = np.asarray(digits.target)
        gen = torch.Generator().manual_seed(self.data_seed)
        v = self.views
        for split, idx in self.split_digits(labels).items():
            rendered = random_views(images[idx], v, self.image_size, gen, self.view_strength).flatten(0, 1)
            ids = torch.as_tensor(labels[idx]) if self.identity == "class" else torch.arange(len(idx))
            pids = ids.repeat_interleave(v)
            if split == "train":
                self.datasets[split] = TensorDataset(rendered, pids)
            else:
                cams = torch.arange(v).repeat(len(idx))  # view k = "camera" k
                self.datasets[split] = TensorDataset(rendered, pids, cams, cams == 0)


# -- reid-folder ----------------------------------------------------------------------------------------
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class ReIDFileDataset(Dataset):
    """Images on disk resized to ``(H, W)``; items ``(uint8 image, pid)`` or with ``(cam, is_query)``."""

    def __init__(
        self,
        paths: Sequence[Path],
        pids: Sequence[int],
        cams: Sequence[int],
        size: tuple[int, int],
        is_query: Sequence[bool] | None = None,
    ) -> None:
        self.paths, self.pids, self.cams = list(paths), [int(p) for p in pids], [int(c) for c in cams]
        self.size, self.is_query = size, None if is_query is None else list(is_query)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i]).resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC)
        x = pil_to_uint8(img)
        if self.is_query is None:
            return x, self.pids[i]
        return x, self.pids[i], self.cams[i], self.is_query[i]


def parse_market_folder(folder: Path, *, keep_distractors: bool) -> list[tuple[Path, int, int]]:
    """``(path, pid, cam)`` of the images of a Market-1501 folder (pid -1 junk skipped; pid 0, the
    gallery distractors, kept when ``keep_distractors``)."""
    if not folder.is_dir():
        raise DataError(f"re-ID folder {folder} does not exist (Market-1501 layout expected)")
    out = []
    for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
        match = MARKET_NAME.match(path.name)
        if match is None:
            raise DataError(f"{path}: file name does not start with '<pid>_c<camera>' (Market-1501 naming)")
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid == -1 or (pid == 0 and not keep_distractors):
            continue
        out.append((path, pid, cam))
    if not out:
        raise DataError(f"re-ID folder {folder} holds no usable image")
    return out


def parse_msmt_list(root: Path, list_name: str, image_dir: str) -> list[tuple[Path, int, int]]:
    """``(path, pid, cam)`` from an MSMT17 list file of ``<relative path> <pid>`` lines (the camera is
    the third ``_`` field of the file name)."""
    path = root / list_name
    if not path.is_file():
        raise DataError(f"MSMT17 list file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path} line {n}: expected '<path> <pid>', got '{line}'")
        fields = Path(parts[0]).name.split("_")
        try:
            pid, cam = int(parts[1]), int(fields[2])
        except (ValueError, IndexError):
            raise DataError(f"{path} line {n}: cannot read the pid / camera of '{line}'") from None
        out.append((root / image_dir / parts[0], pid, cam))
    return out


@register_dataset("reid-folder", "re-ID images in the Market-1501 or MSMT17 layout (data.root)")
class ReIDFolder(ReIDDataModule):
    """A re-ID benchmark on disk (see the module docstring).

    Args:
        root: the dataset folder. layout: ``market1501`` or ``msmt17``.
        val_identities: training identities held out for validation (one query image each, the rest
            gallery), so that model selection never sees the test query / gallery.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        layout: str = "market1501",
        val_identities: int = 50,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed, **kwargs)
        if root is None:
            raise ConfigError("dataset 'reid-folder' needs data.root=<Market-1501 or MSMT17 folder>")
        self.root = Path(root).expanduser()
        if layout == "market1501":
            train = parse_market_folder(self.root / "bounding_box_train", keep_distractors=False)
            query = parse_market_folder(self.root / "query", keep_distractors=False)
            gallery = parse_market_folder(self.root / "bounding_box_test", keep_distractors=True)
        elif layout == "msmt17":
            train = parse_msmt_list(self.root, "list_train.txt", "train")
            if (self.root / "list_val.txt").is_file():
                train += parse_msmt_list(self.root, "list_val.txt", "train")
            query = parse_msmt_list(self.root, "list_query.txt", "test")
            gallery = parse_msmt_list(self.root, "list_gallery.txt", "test")
        else:
            raise ConfigError(f"reid-folder layout must be 'market1501' or 'msmt17', got '{layout}'")
        ids = sorted({pid for _, pid, _ in train})
        if val_identities < 1 or val_identities >= len(ids) - 1:
            raise ConfigError(
                f"val_identities must be in [1, {len(ids) - 2}] for {len(ids)} training identities"
            )
        rng = np.random.default_rng(split_seed)
        held = set(rng.choice(ids, val_identities, replace=False).tolist())
        self.samples = {
            "train": [s for s in train if s[1] not in held],
            "val": [s for s in train if s[1] in held],
            "query": query,
            "gallery": gallery,
        }
        self.train_ids = sorted({pid for _, pid, _ in self.samples["train"]})
        self._set_identities(len(self.train_ids))

    @staticmethod
    def download(root: str | None = None) -> str:
        return (
            "Market-1501 and MSMT17 are distributed by their authors under their own terms (no public "
            "checksummed URL): obtain them there and pass data.root=<extracted folder>"
        )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        size = (self.height, self.width)
        relabel = {pid: i for i, pid in enumerate(self.train_ids)}
        train = self.samples["train"]
        self.datasets["train"] = ReIDFileDataset(
            [p for p, _, _ in train], [relabel[pid] for _, pid, _ in train], [c for _, _, c in train], size
        )
        val, first = [], set()
        for path, pid, cam in self.samples["val"]:
            val.append((path, pid, cam, pid not in first))
            first.add(pid)
        test = [(*s, True) for s in self.samples["query"]] + [(*s, False) for s in self.samples["gallery"]]
        for split, rows in (("val", val), ("test", test)):
            self.datasets[split] = ReIDFileDataset(
                [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], size, [r[3] for r in rows]
            )
