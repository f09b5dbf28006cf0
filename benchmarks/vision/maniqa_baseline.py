"""How learnable is the ``maniqa-synthetic`` IQA set? A hand-feature baseline on the same split.

The set (``synthetic-iqa``: 60 references x blur / noise / JPEG x 5 severities, 32x32 as in the demo
config, MOS by severity only) is read with the MANIQA reader and split by reference image exactly as
the demo config splits it (70 / 10 / 20, ``split_seed`` 0). Per image, 12 no-reference features of the
grey image (one of them on the chroma):

- sharpness: log variance and log mean absolute value of the Laplacian, the 10 / 50 / 90 % quantiles of
  the gradient magnitude (log), the share of the variance above a Gaussian (sigma 1) low-pass;
- noise: Immerkaer's estimate (the 3x3 second-difference mask) on the grey image and on the R - G
  chroma (the synthetic noise is drawn per channel, natural images are nearly grey in R - G detail);
- JPEG: blockiness, the mean absolute step across the 8-pixel block boundaries over the mean step
  elsewhere (rows and columns), and the share of 8x8 blocks whose AC energy is almost zero;
- the image's own contrast (grey standard deviation), so that a model can tell flat content from blur.

Two regressors are fitted on the training split (train + validation for the final fit: the models have
no early stopping) and scored by SRCC / PLCC on the test split: ridge on standardised features, and
gradient-boosted trees (scikit-learn's ``HistGradientBoostingRegressor``). Prints a table and writes
``benchmarks/results/vision_maniqa_baseline.json``::

    INTERPLAY_DATA=/tmp/idata OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vision/maniqa_baseline.py
    .venv/bin/python benchmarks/vision/maniqa_baseline.py --image-size 48 --crop 32   # the old 48 px set
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import pearsonr, spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from interplay.core.data import dataset_dir
from interplay.vision.modules.maniqa import read_iqa_csv, split_by_reference, write_synthetic_iqa

FEATURES = (
    "log_lap_var",
    "log_lap_abs",
    "log_grad_q10",
    "log_grad_q50",
    "log_grad_q90",
    "hf_share",
    "log_noise_grey",
    "log_noise_chroma",
    "block_ratio_cols",
    "block_ratio_rows",
    "flat_blocks",
    "log_contrast",
)
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def _noise_sigma(x: np.ndarray) -> float:
    """Immerkaer (1996): ``sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |x * M|``."""
    r = ndimage.convolve(x, _IMMERKAER, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(r).mean() / 6.0)


def _block_ratio(x: np.ndarray, axis: int) -> float:
    """Mean |step| across the 8-pixel block boundaries / mean |step| elsewhere, along ``axis``."""
    d = np.abs(np.diff(x, axis=axis))  # step i is between pixel i and i + 1
    idx = np.arange(d.shape[axis])
    boundary = (idx % 8) == 7
    on = np.take(d, idx[boundary], axis=axis).mean()
    off = np.take(d, idx[~boundary], axis=axis).mean()
    return float(on / (off + 1e-3))


def _flat_blocks(x: np.ndarray) -> float:
    """Share of the (aligned) 8x8 blocks whose pixel standard deviation is below 1 grey level."""
    h, w = (x.shape[0] // 8) * 8, (x.shape[1] // 8) * 8
    blocks = x[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    return float((blocks.std(axis=1) < 1.0).mean())


def features(rgb: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one ``[H, W, 3]`` uint8 image."""
    x = rgb.astype(np.float64)
    grey = x @ np.array([0.299, 0.587, 0.114])
    lap = ndimage.laplace(grey, mode="reflect")
    grad = np.hypot(ndimage.sobel(grey, 0, mode="reflect"), ndimage.sobel(grey, 1, mode="reflect"))
    q10, q50, q90 = np.quantile(grad, [0.1, 0.5, 0.9])
    low = ndimage.gaussian_filter(grey, 1.0, mode="reflect")
    eps = 1e-3
    return np.array(
        [
            np.log(lap.var() + eps),
            np.log(np.abs(lap).mean() + eps),
            np.log(q10 + eps),
            np.log(q50 + eps),
            np.log(q90 + eps),
            (grey - low).var() / (grey.var() + eps),
            np.log(_noise_sigma(grey) + eps),
            np.log(_noise_sigma(x[..., 0] - x[..., 1]) + eps),
            _block_ratio(grey, 1),
            _block_ratio(grey, 0),
            _flat_blocks(grey),
            np.log(grey.std() + eps),
        ]
    )


def _table(samples, crop: int | None) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for s in samples:
        img = np.asarray(Image.open(s.path).convert("RGB"))
        if crop:
            top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            img = img[top : top + crop, left : left + crop]
        rows.append(features(img))
    return np.stack(rows), np.array([s.score for s in samples])


def run(
    n_references: int = 60,
    image_size: int = 32,
    levels: int = 5,
    data_seed: int = 0,
    split_seed: int = 0,
    crop: int | None = None,
    root: str | None = None,
) -> dict:
    """Fit both baselines on the demo set's split and return their test SRCC / PLCC."""
    if root is None:
        root = str(dataset_dir(f"synthetic-iqa-{n_references}x{levels}-{image_size}px-seed{data_seed}"))
    table = write_synthetic_iqa(
        root, n_references=n_references, image_size=image_size, levels=levels, seed=data_seed
    )
    splits = split_by_reference(read_iqa_csv(table), 0.1, 0.2, split_seed)
    fit_x, fit_y = _table(splits["train"] + splits["val"], crop)
    test_x, test_y = _table(splits["test"], crop)
    models = {
        "ridge": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
        "boosted_trees": HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0),
    }
    out = {
        "data": Path(root).name,
        "split_seed": split_seed,
        "crop": crop,
        "n_fit": len(fit_y),
        "n_test": len(test_y),
        "features": list(FEATURES),
        "models": {},
    }
    for name, model in models.items():
        pred = model.fit(fit_x, fit_y).predict(test_x)
        out["models"][name] = {
            "test_srcc": float(spearmanr(pred, test_y).statistic),
            "test_plcc": float(pearsonr(pred, test_y).statistic),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=None, help="score only the centre crop of this size")
    parser.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--root", default=None, help="the synthetic set's folder (default under $INTERPLAY_DATA)"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "results" / "vision_maniqa_baseline.json")
    )
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    results = []
    start = time.perf_counter()
    print(f"{'split seed':>10} {'crop':>5} {'model':>14} {'test SRCC':>10} {'test PLCC':>10}")
    for seed in args.split_seeds:
        res = run(image_size=args.image_size, split_seed=seed, crop=args.crop, root=args.root)
        results.append(res)
        for name, m in res["models"].items():
            crop = args.crop or "full"
            print(f"{seed:>10} {crop!s:>5} {name:>14} {m['test_srcc']:>10.3f} {m['test_plcc']:>10.3f}")
    print(f"({time.perf_counter() - start:.1f} s)")
    if not args.no_save:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"runs": results}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
