"""Vision data: image-folder and CSV readers (errors name the file / row), the registered data modules,
batch transforms and Mixup / CutMix against their equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from interplay.core.errors import ConfigError, DataError
from interplay.vision.data import (
    SHAPES,
    BatchAugment,
    MixupCutmix,
    load_image,
    make_shapes,
    read_csv_manifest,
    resize_center_crop,
    scan_image_folder,
    smooth_one_hot,
    write_csv_manifest,
    write_shapes_folder,
)
from interplay.vision.data.transforms import cutmix_box
from interplay.vision.registry import REGISTRY


# -- readers ------------------------------------------------------------------------------------------------
def test_image_folder_reader(tmp_path):
    write_shapes_folder(tmp_path, n_per_class=3, size=16)
    samples, classes = scan_image_folder(tmp_path)
    assert classes == sorted(SHAPES)
    assert len(samples) == 9
    assert [s.label for s in samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(s.path.parent.name == classes[s.label] for s in samples)
    img = load_image(samples[0].path)
    assert img.mode == "RGB" and img.size == (16, 16)


def test_image_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-directories"):
        scan_image_folder(tmp_path)
    write_shapes_folder(tmp_path, n_per_class=2, size=8)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class holds no images"):
        scan_image_folder(tmp_path)
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"not a png")
    samples, _ = scan_image_folder(tmp_path)
    broken = next(s for s in samples if s.path.name == "broken.png")
    with pytest.raises(DataError, match="broken.png"):
        load_image(broken.path)
    with pytest.raises(DataError, match="class folders not in the training split: empty_class"):
        scan_image_folder(tmp_path, classes=list(SHAPES))


def test_grey_and_alpha_images_become_rgb(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "a.png")
    for name in ("g.png", "a.png"):
        assert load_image(tmp_path / name).mode == "RGB"
    assert load_image(tmp_path / "g.png").getpixel((0, 0)) == (7, 7, 7)


def test_csv_manifest_reader_and_its_errors(tmp_path):
    write_shapes_folder(tmp_path / "imgs", n_per_class=2, size=8)
    samples, classes = scan_image_folder(tmp_path / "imgs")
    samples = [type(s)(s.path, s.label, "train" if i % 2 else "val") for i, s in enumerate(samples)]
    csv_path = write_csv_manifest(tmp_path / "manifest.csv", samples, classes)
    assert "imgs/circle/00000.png" in csv_path.read_text()  # relative to the CSV
    read, read_classes = read_csv_manifest(csv_path)
    assert read_classes == classes
    assert [(s.path.resolve(), s.label, s.split) for s in read] == [
        (s.path.resolve(), s.label, s.split) for s in samples
    ]
    assert read[2].row == 3

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,colour\nimgs/circle/00000.png,circle,red\n")
    with pytest.raises(DataError, match="unknown column.*colour"):
        read_csv_manifest(bad)
    bad.write_text("path,split\nimgs/circle/00000.png,train\n")
    with pytest.raises(DataError, match="missing column.*label"):
        read_csv_manifest(bad)
    bad.write_text("path,label\nimgs/circle/00000.png,circle\nimgs/nope.png,square\n")
    with pytest.raises(DataError, match=r"row 2: image file .*nope.png does not exist"):
        read_csv_manifest(bad)
    bad.write_text("path,label,split\nimgs/circle/00000.png,circle,holdout\n")
    with pytest.raises(DataError, match="row 1: split 'holdout'"):
        read_csv_manifest(bad)
    first, second = (s.path.relative_to(tmp_path).as_posix() for s in samples[:2])
    bad.write_text(f"path,label\n{first},2\n{second},0\n")
    ints, int_classes = read_csv_manifest(bad)
    assert [s.label for s in ints] == [2, 0] and int_classes == ["0", "1", "2"]
    with pytest.raises(DataError, match="does not exist"):
        read_csv_manifest(tmp_path / "none.csv")


# -- data modules ---------------------------------------------------------------------------------------
def _sizes(dm):
    dm.setup()
    return {k: len(v) for k, v in dm.datasets.items()}


def test_bundled_and_synthetic_datasets():
    digits = REGISTRY.datasets.create("digits", batch_size=16)
    assert digits.info == {"num_classes": 10}
    assert _sizes(digits) == {"train": 1259, "val": 179, "test": 359}
    x, y = digits.datasets["train"][0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and torch.equal(x[0], x[2])

    lfw = REGISTRY.datasets.create("lfw-subset", image_size=24)
    assert lfw.classes == ["non-face", "face"]
    assert sum(_sizes(lfw).values()) == 200
    labels = torch.cat([lfw.datasets[s].tensors[1] for s in ("train", "val", "test")])
    assert int(labels.sum()) == 100

    shapes = REGISTRY.datasets.create("synthetic-shapes", n_per_class=10, image_size=16)
    assert _sizes(shapes) == {"train": 21, "val": 3, "test": 6}
    a, la = make_shapes(4, 16, seed=3)
    b, lb = make_shapes(4, 16, seed=3)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and a.shape == (12, 16, 16, 3)

    with pytest.raises(ConfigError, match="did you mean 'hflip'"):
        REGISTRY.datasets.create("digits", hflp=0.0)


def test_image_folder_and_csv_modules(tmp_path):
    flat = tmp_path / "flat"
    write_shapes_folder(flat, n_per_class=10, size=20)
    dm = REGISTRY.datasets.create("image-folder", root=str(flat), image_size=16, batch_size=4)
    assert dm.info == {"num_classes": 3}
    assert _sizes(dm) == {"train": 21, "val": 3, "test": 6}
    img, label = dm.datasets["val"][0]
    assert img.shape == (3, 16, 16) and img.dtype == torch.uint8
    assert dm.datasets["train"][0][0].shape == (3, 18, 18)  # 16 / 0.875, cropped on the batch later

    # ImageNet layout: val/ is scored once as the test split, selection on a part of train/
    split = tmp_path / "split"
    write_shapes_folder(split, n_per_class=10, size=16, splits=("train", "val"))
    dm = REGISTRY.datasets.create("image-folder", root=str(split), image_size=16)
    sizes = _sizes(dm)
    assert sizes["test"] == 30 and sizes["train"] + sizes["val"] == 30 and sizes["val"] == 3
    assert all("/val/" in str(s.path) for s in dm.splits["test"])
    with pytest.raises(ConfigError, match="needs data.root"):
        REGISTRY.datasets.create("image-folder")

    samples = [s for part in ("train", "val") for s in scan_image_folder(split / part)[0]]
    tagged = [type(s)(s.path, s.label, "train" if "/train/" in str(s.path) else "val") for s in samples]
    write_csv_manifest(split / "manifest.csv", tagged, sorted(SHAPES))
    dm = REGISTRY.datasets.create("image-csv", root=str(split), image_size=16)
    sizes = _sizes(dm)
    assert sizes["val"] == 30 and sizes["train"] + sizes["test"] == 30


def test_eval_batches_are_only_normalised_and_training_batches_augmented():
    dm = REGISTRY.datasets.create("synthetic-shapes", n_per_class=4, image_size=16)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out, labels = dm.on_after_batch_transfer((x, torch.arange(4)))  # no trainer: evaluation
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    flip = BatchAugment(16, scale=None, hflip=1.0, color_jitter=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    torch.testing.assert_close(flip(x, train=True), x.float().flip(-1) / 255)
    aug = BatchAugment(12, scale=(0.5, 1.0), hflip=0.5, color_jitter=0.4)
    assert aug(x, train=True).shape == (4, 3, 12, 12)
    assert aug(x, train=False).shape == (4, 3, 12, 12)


def test_resize_center_crop():
    img = Image.new("RGB", (300, 200))
    out = resize_center_crop(img, 224, 0.875)
    assert out.size == (224, 224)
    # 200 -> 256 on the shorter side, 300 -> 384: the crop keeps the middle
    marked = Image.new("RGB", (40, 20), (0, 0, 0))
    marked.putpixel((20, 10), (255, 255, 255))
    crop = resize_center_crop(marked, 10, 1.0)
    assert crop.size == (10, 10) and max(crop.getpixel((5, 5))) > 0


# -- Mixup / CutMix -------------------------------------------------------------------------------------
def test_smooth_one_hot():
    t = smooth_one_hot(torch.tensor([2, 0]), 4, 0.2)
    torch.testing.assert_close(t, torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]]))


def test_mixup_equation():
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 1])
    mix = MixupCutmix(3, mixup_alpha=0.4, cutmix_alpha=0.0, label_smoothing=0.1, rng=np.random.default_rng(0))
    out, soft = mix(x, y)
    lam = mix.last_lam
    assert mix.last_mode == "mixup" and 0 < lam < 1
    lam_ref = np.random.default_rng(0)
    lam_ref.random()
    assert lam == pytest.approx(lam_ref.beta(0.4, 0.4))
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    one = smooth_one_hot(y, 3, 0.1)
    torch.testing.assert_close(soft, lam * one + (1 - lam) * one.flip(0))
    torch.testing.assert_close(soft.sum(-1), torch.ones(4))


def test_cutmix_pastes_a_box_and_weights_labels_by_its_area():
    x = torch.arange(2 * 1 * 10 * 10, dtype=torch.float32).view(2, 1, 10, 10)
    y = torch.tensor([0, 1])
    mix = MixupCutmix(2, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, rng=np.random.default_rng(5))
    out, soft = mix(x, y)
    assert mix.last_mode == "cutmix"
    changed = out[0, 0] != x[0, 0]
    area = int(changed.sum())
    assert area > 0
    assert torch.equal(out[0, 0][changed], x[1, 0][changed])
    assert mix.last_lam == pytest.approx(1 - area / 100)
    torch.testing.assert_close(soft[0], torch.tensor([mix.last_lam, 1 - mix.last_lam]))
    y0, y1, x0, x1 = cutmix_box(10, 10, 0.75, np.random.default_rng(1))
    assert 0 <= y0 <= y1 <= 10 and 0 <= x0 <= x1 <= 10 and (y1 - y0) <= 5 and (x1 - x0) <= 5


def test_unmixed_batches_get_smoothed_targets():
    mix = MixupCutmix(5, mixup_alpha=1.0, cutmix_alpha=0.0, prob=0.0, label_smoothing=0.1)
    x = torch.randn(3, 3, 4, 4)
    out, soft = mix(x, torch.tensor([4, 0, 1]))
    assert out is x and mix.last_mode == "none"
    torch.testing.assert_close(soft, smooth_one_hot(torch.tensor([4, 0, 1]), 5, 0.1))
