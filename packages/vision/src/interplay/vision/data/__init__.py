"""Vision data: readers (image folder, CSV manifest) with synthetic generators writing the same
formats, batch transforms (kornia, Mixup / CutMix) and the registered data modules (``digits``,
``lfw-subset``, ``synthetic-shapes``, ``image-folder``, ``image-csv``)."""

from interplay.vision.data.datasets import (
    DigitsImages,
    ImageCSV,
    ImageDataModule,
    ImageFileDataset,
    ImageFolder,
    LFWSubsetImages,
    SyntheticShapes,
)
from interplay.vision.data.readers import (
    SHAPES,
    Sample,
    load_image,
    make_shapes,
    read_csv_manifest,
    scan_image_folder,
    write_csv_manifest,
    write_shapes_folder,
)
from interplay.vision.data.transforms import BatchAugment, MixupCutmix, resize_center_crop, smooth_one_hot

__all__ = [
    "SHAPES",
    "BatchAugment",
    "DigitsImages",
    "ImageCSV",
    "ImageDataModule",
    "ImageFileDataset",
    "ImageFolder",
    "LFWSubsetImages",
    "MixupCutmix",
    "Sample",
    "SyntheticShapes",
    "load_image",
    "make_shapes",
    "read_csv_manifest",
    "resize_center_crop",
    "scan_image_folder",
    "smooth_one_hot",
    "write_csv_manifest",
    "write_shapes_folder",
]
