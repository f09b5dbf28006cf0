"""Segmentation metrics: Dice and HD95 (95th-percentile symmetric Hausdorff distance), as the Synapse
benchmark (TransUNet's ``test_single_volume`` with ``medpy.metric.binary``) computes them.

* ``dice(pred, gt) = 2 |P ∩ G| / (|P| + |G|)`` for boolean masks.
* ``hd95(pred, gt)``: the surface of a mask is its voxels minus its erosion by the cross-shaped (face-
  connected) structuring element; the distances from every surface voxel of one mask to the nearest
  surface voxel of the other (Euclidean distance transform, ``spacing`` per axis) in both directions
  are pooled and their 95th percentile (numpy's linear interpolation) returned. Works in 2-D and 3-D
  (the Synapse figures are 3-D, per volume, in voxel units).
* :func:`case_metrics` applies the benchmark's per-class rule (TransUNet ``calculate_metric_percase``):
  both masks non-empty -> (Dice, HD95); prediction non-empty but ground truth empty -> (1, 0);
  otherwise (0, 0). The last case also scores an organ that is present but missed as HD95 = 0; we
  keep the convention so that our figures compare with the published ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchmetrics
from scipy import ndimage
from torch import Tensor


def _as_bool(mask) -> np.ndarray:
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool)


def dice(pred, gt) -> float:
    """``2 |P ∩ G| / (|P| + |G|)``; 1 when both masks are empty."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * int((p & g).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface voxels: ``mask`` minus its erosion by the face-connected structuring element
    (voxels on the array's edge count as surface)."""
    footprint = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def surface_distances(a, b, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distance from each surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    a, b = _as_bool(a), _as_bool(b)
    if not a.any() or not b.any():
        raise ValueError("surface distances need two non-empty masks")
    distance_to_b = ndimage.distance_transform_edt(~surface(b), sampling=spacing)
    return distance_to_b[surface(a)]


def hd95(pred, gt, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the pooled symmetric surface distances (both masks must be non-empty)."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    both = np.concatenate([surface_distances(p, g, spacing), surface_distances(g, p, spacing)])
    return float(np.percentile(both, 95))


def case_metrics(pred, gt, num_classes: int, spacing: Sequence[float] | None = None) -> np.ndarray:
    """``[num_classes - 1, 2]``: (Dice, HD95) of every foreground class of one case (label maps)."""
    p, g = np.asarray(pred), np.asarray(gt)
    if isinstance(pred, Tensor):
        p = pred.detach().cpu().numpy()
    if isinstance(gt, Tensor):
        g = gt.detach().cpu().numpy()
    out = np.zeros((num_classes - 1, 2))
    for c in range(1, num_classes):
        pc, gc = p == c, g == c
        if pc.any() and gc.any():
            out[c - 1] = dice(pc, gc), hd95(pc, gc, spacing)
        elif pc.any():
            out[c - 1] = 1.0, 0.0
    return out


class CaseMetrics(torchmetrics.Metric):
    """Mean per-class Dice and HD95 over the cases passed to ``update(pred, gt)`` (one label map per call,
    :func:`case_metrics`); ``compute()`` returns ``{"dice", "hd95", "dice_per_class", "hd95_per_class"}``."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + classes), got {num_classes}")
        self.num_classes = num_classes
        self.add_state(
            "sums", default=torch.zeros(num_classes - 1, 2, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("cases", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor) -> None:
        values = case_metrics(pred, gt, self.num_classes)
        self.sums += torch.as_tensor(values, dtype=torch.float64, device=self.sums.device)
        self.cases += 1

    def compute(self) -> dict[str, Tensor]:
        per_class = (self.sums / self.cases.clamp_min(1)).float()
        return {
            "dice": per_class[:, 0].mean(),
            "hd95": per_class[:, 1].mean(),
            "dice_per_class": per_class[:, 0],
            "hd95_per_class": per_class[:, 1],
        }


class OverlapDice(torchmetrics.Metric):
    """Dice per foreground class pooled over every pixel seen (``2 sum TP / (sum |P| + sum |G|)``), and its
    mean over the classes present: a cheap validation score on 2-D slices."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state(
            "intersection", default=torch.zeros(num_classes - 1, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "total", default=torch.zeros(num_classes - 1, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, pred: Tensor, gt: Tensor) -> None:
        classes = torch.arange(1, self.num_classes, device=pred.device).view(-1, *([1] * pred.dim()))
        p, g = pred.unsqueeze(0) == classes, gt.unsqueeze(0) == classes
        dims = tuple(range(1, p.dim()))
        self.intersection += (p & g).sum(dims).double()
        self.total += (p.sum(dims) + g.sum(dims)).double()

    def compute(self) -> Tensor:
        present = self.total > 0
        if not present.any():
            return torch.tensor(0.0)
        per_class = 2 * self.intersection[present] / self.total[present]
        return per_class.mean().float()
