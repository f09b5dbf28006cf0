"""IQA data: a reader for KADID-10k / PIPAL style score tables, a synthetic offline IQA set written in
KADID-10k's layout, and the data modules ``iqa-csv`` (``data.root``) and ``synthetic-iqa``.

KADID-10k ships ``dmos.csv`` (``dist_img,ref_img,dmos,var``; file names such as ``I01_01_01.png``) next
to an ``images/`` folder. PIPAL's label files are header-less ``name,score`` lines. The reader takes
either: a header naming an image column (``dist_img``, ``dis_img``, ``image``, ``path``, ...), a score
column (``dmos``, ``mos``, ``score``, ``elo``) and optionally a reference column (``ref_img``,
``ref``); or no header and two columns ``image,score``. Image paths are relative to the CSV's folder,
or to its ``images/`` sub-folder when that is where they are (KADID-10k), or to ``image_dir``.

Splits follow the reference (pristine) image, as the released code splits KADID-10k by scene, so no
content is seen in two splits; tables without a reference column are split per image.

Training draws one random ``crop_size`` crop per image (plus a horizontal flip); validation and test
average the predictions of ``eval_crops`` crops (1: the centre; 5: the four corners and the centre,
the released ``five_point_crop``). Images smaller than the crop are first resized up (shorter side).
Scores are min-max normalised to ``[0, 1]`` with the training split's range (the released
``normalization``; SRCC and PLCC do not change under it).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset

from interplay.core.data import dataset_dir
from interplay.core.datamodules import SplitDataModule
from interplay.core.errors import ConfigError, DataError
from interplay.vision.data import load_image
from interplay.vision.data.datasets import register_dataset
from interplay.vision.data.transforms import pil_to_uint8

IMAGE_COLUMNS = ("dist_img", "dis_img", "distorted", "dist", "image", "img", "image_name", "filename", "path")
SCORE_COLUMNS = ("dmos", "mos", "score", "elo", "mos_zscore")
REFERENCE_COLUMNS = ("ref_img", "ref", "reference", "ref_image")
DISTORTIONS = ("blur", "noise", "jpeg")
# scikit-image's bundled images (no download) that are textured over most of their area, so that every
# crop shows the distortions (page, text, moon, hubble_deep_field and colorwheel are mostly flat)
SKIMAGE_SOURCES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "immunohistochemistry",
    "grass",
    "gravel",
    "brick",
    "cat",
    "stereo_motorcycle",
)


@dataclass(frozen=True)
class IQASample:
    path: Path
    score: float
    reference: str | None
    row: int  # 1 = the first data row of the table


def _pick(
    header: list[str], names: Sequence[str], given: str | None, what: str, csv_path: Path
) -> int | None:
    lowered = [h.strip().lower() for h in header]
    if given is not None:
        if given.lower() not in lowered:
            raise DataError(f"IQA table {csv_path}: no column '{given}' for the {what} (columns: {header})")
        return lowered.index(given.lower())
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_iqa_csv(
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    image_column: str | None = None,
    score_column: str | None = None,
    reference_column: str | None = None,
) -> list[IQASample]:
    """Rows of a KADID-10k / PIPAL style table (see the module docstring), every image checked to exist.

    Raises DataError naming the file (and row) for a missing table, a missing column, an unreadable or
    non-finite score, or an image that is not on disk.
    """
    csv_path = Path(path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"IQA table not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"IQA table {csv_path} is empty")
    headerless = len(rows[0]) >= 2 and _is_number(rows[0][1]) and not _is_number(rows[0][0])
    if headerless:
        image_idx, score_idx, ref_idx, data = 0, 1, None, rows
    else:
        header, data = rows[0], rows[1:]
        image_idx = _pick(header, IMAGE_COLUMNS, image_column, "image", csv_path)
        score_idx = _pick(header, SCORE_COLUMNS, score_column, "score", csv_path)
        ref_idx = _pick(header, REFERENCE_COLUMNS, reference_column, "reference", csv_path)
        if image_idx is None or score_idx is None:
            raise DataError(
                f"IQA table {csv_path}: need an image column (one of {', '.join(IMAGE_COLUMNS)}) and a score "
                f"column (one of {', '.join(SCORE_COLUMNS)}); found columns {header}"
            )
    if not data:
        raise DataError(f"IQA table {csv_path} has a header but no rows")
    base = Path(image_dir).expanduser() if image_dir is not None else None
    if base is None:
        first = data[0][image_idx].strip()
        base = csv_path.parent
        if not (base / first).is_file() and (base / "images" / first).is_file():
            base = base / "images"
    samples = []
    width = max(image_idx, score_idx, ref_idx if ref_idx is not None else 0) + 1
    for row_number, row in enumerate(data, start=1):
        if len(row) < width:
            raise DataError(f"IQA table {csv_path}, row {row_number}: expected {width} columns, got {row}")
        name, text = row[image_idx].strip(), row[score_idx].strip()
        try:
            score = float(text)
        except ValueError:
            raise DataError(
                f"IQA table {csv_path}, row {row_number}: score '{text}' is not a number"
            ) from None
        if not math.isfinite(score):
            raise DataError(f"IQA table {csv_path}, row {row_number}: score is {text} (must be finite)")
        image = base / name
        if not image.is_file():
            raise DataError(f"IQA table {csv_path}, row {row_number}: image file not found: {image}")
        reference = row[ref_idx].strip() if ref_idx is not None else None
        samples.append(IQASample(image, score, reference or None, row_number))
    return samples


def split_by_reference(
    samples: Sequence[IQASample], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[IQASample]]:
    """Disjoint train / val / test lists; every reference image's distortions stay in one split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) and sum < 1"
        )
    groups: dict[str, list[IQASample]] = {}
    for s in samples:
        groups.setdefault(s.reference if s.reference is not None else str(s.path), []).append(s)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    n_test = int(round(test_fraction * len(keys)))
    n_val = int(round(val_fraction * len(keys)))
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    out = {name: [s for i in sorted(idx) for s in groups[keys[i]]] for name, idx in parts.items()}
    for name, part in out.items():
        wanted = {"val": val_fraction, "test": test_fraction}.get(name, 1.0)
        if wanted > 0 and not part:
            raise DataError(
                f"IQA split '{name}' is empty: {len(keys)} reference images are too few for "
                f"val_fraction={val_fraction}, test_fraction={test_fraction}"
            )
    return out


def crop_positions(height: int, width: int, size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the evaluation crops: 1 = centre; 5 = four corners then centre (the released
    ``five_point_crop`` order)."""
    centre = ((height - size) // 2, (width - size) // 2)
    if count == 1:
        return [centre]
    if count == 5:
        return [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), centre]
    raise ConfigError(f"eval_crops must be 1 or 5, got {count}")


class IQAImageDataset(Dataset):
    """Items ``(uint8 crop [3, S, S], score)`` in training, ``(uint8 crops [K, 3, S, S], score)`` else."""

    def __init__(self, samples: Sequence[IQASample], scores: np.ndarray, crop_size: int, *, train: bool,
                 eval_crops: int = 5, hflip: float = 0.5) -> None:  # fmt: skip
        self.samples, self.scores = list(samples), np.asarray(scores, dtype=np.float32)
        self.crop_size, self.train, self.eval_crops, self.hflip = crop_size, train, eval_crops, hflip

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> Tensor:
        s = self.samples[index]
        img = load_image(s.path, row=s.row)
        short = min(img.size)
        if short < self.crop_size:
            factor = self.crop_size / short
            size = (
                max(self.crop_size, round(img.width * factor)),
                max(self.crop_size, round(img.height * factor)),
            )
            img = img.resize(size, Image.Resampling.BICUBIC)
        return pil_to_uint8(img)

    def __getitem__(self, index: int) -> tuple[Tensor, float]:
        img, c = self._load(index), self.crop_size
        _, h, w = img.shape
        score = float(self.scores[index])
        if self.train:
            top = int(torch.randint(0, h - c + 1, ()).item())
            left = int(torch.randint(0, w - c + 1, ()).item())
            crop = img[:, top : top + c, left : left + c]
            if self.hflip > 0 and torch.rand(()).item() < self.hflip:
                crop = crop.flip(-1)
            return crop.contiguous(), score
        crops = [img[:, t : t + c, l : l + c] for t, l in crop_positions(h, w, c, self.eval_crops)]
        return torch.stack(crops), score


class IQADataModule(SplitDataModule):
    """Images with subjective scores, read with :func:`read_iqa_csv` (registered as ``iqa-csv``).

    Args:
        root: the score table, or the folder holding ``csv_name`` (``data.root``).
        crop_size: the model's input size (224 for ViT-B/8 MANIQA).
        eval_crops: crops averaged at validation and test (1 or 5).
        hflip: horizontal-flip probability of training crops.
        normalize_scores: min-max normalise with the training split's range.
        mean, std: input normalisation ((0.5, 0.5, 0.5) as the released code and timm's ViT-B/8).
        val_fraction, test_fraction, split_seed: split over reference images.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        *,
        csv_name: str = "dmos.csv",
        image_dir: str | None = None,
        image_column: str | None = None,
        score_column: str | None = None,
        reference_column: str | None = None,
        crop_size: int = 224,
        eval_crops: int = 5,
        hflip: float = 0.5,
        normalize_scores: bool = True,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if crop_size < 1:
            raise ConfigError(f"crop_size must be >= 1, got {crop_size}")
        crop_positions(crop_size, crop_size, crop_size, eval_crops)  # validates eval_crops
        if not 0 <= hflip <= 1:
            raise ConfigError(f"hflip must be a probability, got {hflip}")
        self.crop_size, self.eval_crops, self.hflip = crop_size, eval_crops, hflip
        self.normalize_scores = normalize_scores
        self._set_normalisation(mean, std)
        self.csv_path = self.resolve_table(root, csv_name)
        samples = read_iqa_csv(
            self.csv_path,
            image_dir=image_dir,
            image_column=image_column,
            score_column=score_column,
            reference_column=reference_column,
        )
        self.splits = split_by_reference(samples, val_fraction, test_fraction, split_seed)
        train_scores = np.array([s.score for s in self.splits["train"]])
        low, high = float(train_scores.min()), float(train_scores.max())
        if normalize_scores and high <= low:
            raise DataError(f"IQA table {self.csv_path}: every training score equals {low}; nothing to learn")
        self.score_range = (low, high) if normalize_scores else (0.0, 1.0)
        self.info = {}

    def _set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"mean and std need 3 values each (std > 0), got {list(mean)} and {list(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @staticmethod
    def resolve_table(root: str | None, csv_name: str) -> Path:
        if root is None:
            raise ConfigError("dataset 'iqa-csv' needs data.root=<score table CSV, or the folder holding it>")
        path = Path(root).expanduser()
        return path / csv_name if path.is_dir() else path

    def normalised(self, scores: Sequence[float]) -> np.ndarray:
        low, high = self.score_range
        return (np.asarray(scores, dtype=np.float64) - low) / (high - low)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for name, part in self.splits.items():
            self.datasets[name] = IQAImageDataset(
                part,
                self.normalised([s.score for s in part]),
                self.crop_size,
                train=name == "train",
                eval_crops=self.eval_crops,
                hflip=self.hflip,
            )

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        images, scores = batch
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        if images.dim() == 5:
            mean, std = mean.unsqueeze(1), std.unsqueeze(1)
        images = (images.float() / 255.0 - mean) / std
        return images, scores.float()

    @staticmethod
    def download(root: str | None = None) -> str:
        return (
            "KADID-10k: download kadid10k.zip from http://database.mmsp-kn.de/kadid-10k-database.html, "
            "unzip, and pass data.root=<folder holding dmos.csv and images/>"
        )


register_dataset("iqa-csv", "IQA images with MOS/DMOS from a KADID-10k / PIPAL style CSV (data.root)")(
    IQADataModule
)


# -- synthetic IQA set ---------------------------------------------------------------------------------
def _source_images() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in SKIMAGE_SOURCES:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(1e-12, float(img.max())))).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]))
    return out


def severities(distortion: str, levels: int) -> np.ndarray:
    """The ``levels`` parameters of one distortion, mildest first: Gaussian-blur sigma 0.7 -> 3 px,
    Gaussian-noise sigma 8 -> 64 grey levels, JPEG quality 40 -> 4 (geometric steps)."""
    if distortion == "blur":
        return np.geomspace(0.7, 3.0, levels)
    if distortion == "noise":
        return np.geomspace(8.0, 64.0, levels)
    if distortion == "jpeg":
        return np.round(np.geomspace(40.0, 4.0, levels)).astype(int)
    raise ConfigError(f"unknown distortion '{distortion}' (choose from {', '.join(DISTORTIONS)})")


def distort(image: Image.Image, distortion: str, parameter: float, rng: np.random.Generator) -> Image.Image:
    """``image`` (RGB) with one distortion: ``blur`` (sigma), ``noise`` (sigma) or ``jpeg`` (quality)."""
    if distortion == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=float(parameter)))
    if distortion == "noise":
        arr = np.asarray(image, dtype=np.float64) + rng.normal(
            0.0, float(parameter), (image.height, image.width, 3)
        )
        return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))
    if distortion == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(parameter))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")
    raise ConfigError(f"unknown distortion '{distortion}' (choose from {', '.join(DISTORTIONS)})")


def synthetic_mos(level: int, levels: int) -> float:
    """MOS of severity ``level`` (1 = mildest .. ``levels``): 4.6 down to 1.4 in equal steps, the same
    for every distortion type."""
    return round(4.6 - 3.2 * (level - 1) / max(1, levels - 1), 4)


def write_synthetic_iqa(
    root: str | os.PathLike,
    *,
    n_references: int = 40,
    image_size: int = 48,
    levels: int = 5,
    distortions: Sequence[str] = DISTORTIONS,
    seed: int = 0,
) -> Path:
    """Write a synthetic IQA set in KADID-10k's layout and return the path of its ``dmos.csv``.

    Reference ``k`` is a random square crop (35-90 % of the shorter side) of one of scikit-image's
    bundled images, resized to ``image_size``; each gets every distortion at ``levels`` severities
    (:func:`severities`) with MOS :func:`synthetic_mos`. Files: ``images/I{k}.png`` (references),
    ``images/I{k}_{d}_{l}.png`` (distortion ``d``, level ``l``, 1-based as in KADID), ``dmos.csv``.
    The folder is written elsewhere first and moved into place, so a half-written set never appears.
    """
    if n_references < 2 or image_size < 8 or levels < 2:
        raise ConfigError(
            f"synthetic IQA needs n_references >= 2, image_size >= 8 and levels >= 2, got {n_references}, "
            f"{image_size}, {levels}"
        )
    for d in distortions:
        severities(d, levels)
    root = Path(root).expanduser()
    table = root / "dmos.csv"
    if table.is_file():
        return table
    rng = np.random.default_rng(seed)
    sources = _source_images()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (staging / "images").mkdir()
        rows = [["dist_img", "ref_img", "dmos", "var"]]
        for k in range(n_references):
            src = sources[k % len(sources)]
            h, w = src.shape[:2]
            side = int(rng.uniform(0.35, 0.9) * min(h, w))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            ref = Image.fromarray(src[top : top + side, left : left + side]).resize(
                (image_size, image_size), Image.Resampling.LANCZOS
            )
            ref_name = f"I{k + 1:03d}.png"
            ref.save(staging / "images" / ref_name)
            for d_index, d in enumerate(distortions, start=1):
                for level, parameter in enumerate(severities(d, levels), start=1):
                    name = f"I{k + 1:03d}_{d_index:02d}_{level:02d}.png"
                    distort(ref, d, parameter, rng).save(staging / "images" / name)
                    rows.append([name, ref_name, f"{synthetic_mos(level, levels)}", "0"])
        with open(staging / "dmos.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        try:
            os.replace(staging, root)
        except OSError as err:
            if not table.is_file():  # else a concurrent writer finished the same set first
                raise DataError(
                    f"cannot write the synthetic IQA set to {root}: it exists and holds no dmos.csv ({err})"
                ) from err
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return table


@register_dataset(
    "synthetic-iqa", "skimage images with blur / noise / JPEG at known severities (KADID layout)"
)
class SyntheticIQA(IQADataModule):
    """:func:`write_synthetic_iqa` into ``data.root`` (default ``$INTERPLAY_DATA/synthetic-iqa-...``) when
    it holds no ``dmos.csv`` yet, then read back as ``iqa-csv`` would."""

    def __init__(
        self,
        root: str | None = None,
        *args,
        n_references: int = 40,
        image_size: int = 48,
        levels: int = 5,
        data_seed: int = 0,
        **kwargs,
    ) -> None:
        if root is None:
            root = str(dataset_dir(f"synthetic-iqa-{n_references}x{levels}-{image_size}px-seed{data_seed}"))
        write_synthetic_iqa(
            root, n_references=n_references, image_size=image_size, levels=levels, seed=data_seed
        )
        kwargs.pop("csv_name", None)
        super().__init__(root, *args, **kwargs)

    @staticmethod
    def download(root: str | None = None) -> str:
        return "generated locally from scikit-image's bundled images: nothing to download"
