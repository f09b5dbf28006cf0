"""``digits-classes``: scikit-learn's digits restricted to some classes (relabelled ``0..K-1``), so that
an offline demo can pre-train a backbone on one set of digits ("upstream") and prompt-tune it on
the others ("downstream") without either run seeing the other's classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from interplay.core.errors import ConfigError
from interplay.vision.data import DigitsImages
from interplay.vision.data.datasets import register_dataset


@register_dataset("digits-classes", "scikit-learn digits restricted to a list of classes (relabelled 0..K-1)")
class DigitsClasses(DigitsImages):
    """:class:`~interplay.vision.data.DigitsImages` keeping only ``classes`` (digit values 0-9)."""

    def __init__(self, *args, classes: Sequence[int] = (0, 1, 2, 3, 4), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        chosen = [int(c) for c in classes]
        if len(set(chosen)) != len(chosen) or any(not 0 <= c <= 9 for c in chosen):
            raise ConfigError(f"digits-classes: classes must be distinct digits 0-9, got {list(classes)}")
        self.digit_classes = chosen
        self._set_classes([str(c) for c in chosen])

    def load_arrays(self) -> tuple[Tensor, np.ndarray]:
        images, labels = super().load_arrays()
        labels = np.asarray(labels)
        keep = np.isin(labels, self.digit_classes)
        relabel = {c: i for i, c in enumerate(self.digit_classes)}
        new = np.array([relabel[int(c)] for c in labels[keep]], dtype=np.int64)
        return images[np.flatnonzero(keep)], new
