"""Readers for images on disk, and synthetic generators that write the same formats.

Two layouts:

- **image folder**: ``root/<class_name>/*.{jpg,jpeg,png,bmp,gif,webp,tif,tiff}``; classes are the
  sorted sub-directory names (:func:`scan_image_folder`). ImageNet's ``root/train/<class>/...`` +
  ``root/val/<class>/...`` is the same layout once per split (:func:`find_split_folders`).
- **CSV manifest**: a CSV with the columns ``path,label`` and optionally ``split`` (``train``, ``val``
  or ``test``); paths are relative to the CSV's directory (:func:`read_csv_manifest`). Labels are
  class names (sorted) or integers (used as they are).

Every problem a user can cause raises a :class:`~interplay.core.errors.DataError` naming the file
(and the CSV row): a missing root or file, a class folder without images, an unknown or missing CSV
column, an unknown split, an image Pillow cannot decode. :func:`write_shapes_folder` and
:func:`write_csv_manifest` write both layouts from the ``synthetic-shapes`` generator, so the readers
are tested without any download.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from interplay.core.data import atomic_write
from interplay.core.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "val", "test")
CSV_COLUMNS = ("path", "label", "split")
SHAPES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    split: str | None = None
    row: int | None = None  # the CSV row (1 = first data row) when read from a manifest


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike, *, row: int | None = None) -> Image.Image:
    """The image at ``path`` as RGB (grey, palette and alpha images are converted)."""
    where = f"{path}" + (f" (CSV row {row})" if row is not None else "")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file not found: {where}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {where}: {err}") from err


def scan_image_folder(
    root: str | os.PathLike, classes: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """The images of ``root/<class>/`` as samples, and the sorted class names.

    With ``classes`` (e.g. the training split's), every sub-directory must be one of them (a split may
    lack some classes); without, every sub-directory is a class and must hold at least one image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"image folder {root} has no class sub-directories (expected root/<class>/<image>)")
    names = [d.name for d in dirs]
    if classes is None:
        classes = names
    else:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(
                f"image folder {root} has class folders not in the training split: {', '.join(unknown[:10])}"
            )
    index = {name: i for i, name in enumerate(classes)}
    samples: list[Sample] = []
    for d in dirs:
        files = sorted(p for p in d.rglob("*") if is_image_file(p))
        if not files:
            raise DataError(f"class folder {d} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        samples.extend(Sample(p, index[d.name]) for p in files)
    return samples, list(classes)


def find_split_folders(root: str | os.PathLike) -> dict[str, Path]:
    """``{'train': root/train, ...}`` for the split folders present; empty when ``root`` holds class
    folders directly."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    return {s: root / s for s in SPLIT_NAMES if (root / s).is_dir()}


def read_csv_manifest(path: str | os.PathLike) -> tuple[list[Sample], list[str]]:
    """Samples of a ``path,label[,split]`` CSV and the class names (index = label)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV manifest {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if not columns:
            raise DataError(f"CSV manifest {path} is empty (expected a header path,label[,split])")
        unknown = [c for c in columns if c not in CSV_COLUMNS]
        if unknown:
            raise DataError(
                f"CSV manifest {path}: unknown column(s) {', '.join(unknown)} (expected path,label[,split])"
            )
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise DataError(f"CSV manifest {path}: missing column(s) {', '.join(missing)}")
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    if not rows:
        raise DataError(f"CSV manifest {path} has a header but no rows")
    labels = [r["label"] for r in rows]
    for i, (r, label) in enumerate(zip(rows, labels), start=1):
        if not r["path"] or not label:
            raise DataError(f"CSV manifest {path}, row {i}: empty path or label")
    numeric = all(lbl.lstrip("-").isdigit() for lbl in labels)
    if numeric:
        values = sorted({int(lbl) for lbl in labels})
        if values[0] < 0:
            raise DataError(f"CSV manifest {path}: integer labels must be >= 0, got {values[0]}")
        classes = [str(i) for i in range(values[-1] + 1)]
    else:
        classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    base = path.parent
    samples = []
    for i, r in enumerate(rows, start=1):
        split = r.get("split") or None
        if split is not None and split not in SPLIT_NAMES:
            raise DataError(
                f"CSV manifest {path}, row {i}: split '{split}' is not one of {', '.join(SPLIT_NAMES)}"
            )
        file = Path(r["path"])
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            raise DataError(f"CSV manifest {path}, row {i}: image file {file} does not exist")
        samples.append(Sample(file, index[r["label"]], split, i))
    return samples, classes


# -- synthetic generators --------------------------------------------------------------------------------
def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One ``size`` x ``size`` RGB image of a randomly placed, sized and coloured ``shape`` on a noisy
    background of another colour."""
    background = rng.integers(0, 256, 3)
    colour = (background + rng.integers(80, 176, 3)) % 256  # differs from the background in every channel
    noise = rng.normal(0, 12, (size, size, 3))
    pixels = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    fill = tuple(int(c) for c in colour)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        angle = rng.uniform(0, np.pi / 2)
        corners = [
            (cx + r * np.cos(angle + k * np.pi / 2), cy + r * np.sin(angle + k * np.pi / 2)) for k in range(4)
        ]
        draw.polygon(corners, fill=fill)
    elif shape == "triangle":
        angle = rng.uniform(0, 2 * np.pi)
        corners = [
            (cx + r * np.cos(angle + k * 2 * np.pi / 3), cy + r * np.sin(angle + k * 2 * np.pi / 3))
            for k in range(3)
        ]
        draw.polygon(corners, fill=fill)
    else:
        raise ValueError(f"unknown shape '{shape}' (choose from {', '.join(SHAPES)})")
    return img


def make_shapes(n_per_class: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 [N, size, size, 3]`` images of circles, squares and triangles and their labels (the shape's
    index in :data:`SHAPES`), classes interleaved."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n_per_class):
        for label, shape in enumerate(SHAPES):
            images.append(np.asarray(draw_shape(shape, size, rng)))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def write_shapes_folder(
    root: str | os.PathLike, n_per_class: int = 20, size: int = 32, seed: int = 0, splits: Sequence[str] = ()
) -> Path:
    """Write synthetic shapes as an image folder: ``root/<shape>/<i>.png``, or with ``splits`` (e.g.
    ``("train", "val")``) ``root/<split>/<shape>/<i>.png`` with ``n_per_class`` images per split."""
    root = Path(root)
    for s, split in enumerate(splits or [None]):
        images, labels = make_shapes(n_per_class, size, seed + s)
        base = root / split if split else root
        for i, (img, label) in enumerate(zip(images, labels)):
            target = base / SHAPES[label] / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target, "wb") as f:
                Image.fromarray(img).save(f, format="PNG")
    return root


def write_csv_manifest(
    csv_path: str | os.PathLike, samples: Sequence[Sample], classes: Sequence[str], *, with_split: bool = True
) -> Path:
    """Write ``path,label[,split]`` rows (paths relative to the CSV when they are below it)."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    base = csv_path.parent.resolve()
    with atomic_write(csv_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"] if with_split else ["path", "label"])
        for s in samples:
            p = s.path.resolve()
            rel = p.relative_to(base) if p.is_relative_to(base) else p
            row = [rel.as_posix(), classes[s.label]]
            writer.writerow([*row, s.split or ""] if with_split else row)
    return csv_path
