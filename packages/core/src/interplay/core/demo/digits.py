"""scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) as a data module.

The data ships with scikit-learn, so this needs no download. Pixels are scaled to [0, 1]; the
split is stratified and fixed by ``split_seed`` (independent of the training seed).
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from interplay.core.datamodules import SplitDataModule, stratified_split
from interplay.core.demo.registry import REGISTRY


@REGISTRY.datasets.register(
    "digits", "scikit-learn handwritten digits: 1,797 8x8 images, 10 classes (bundled)"
)
class DigitsDataModule(SplitDataModule):
    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        root: str | None = None,  # unused: the data ships with scikit-learn
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.info = {"num_classes": 10, "image_size": 8, "in_channels": 1}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        splits = stratified_split(digits.target, self.val_fraction, self.test_fraction, self.split_seed)
        self.datasets = {s: TensorDataset(images[idx], labels[idx]) for s, idx in splits.items()}

    @staticmethod
    def download(root: str | None = None) -> str:
        return "digits ships with scikit-learn: nothing to download"
