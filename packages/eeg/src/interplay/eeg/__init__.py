"""Interplay eeg. EEG emotion recognition: RBTransformer and readers for DEAP, SEED and DREAMER.

Importing the package registers the models, datasets and the ``emotion`` task; heavy readers (MNE,
SciPy) load lazily when a dataset is used.
"""

from interplay.eeg import tasks
from interplay.eeg.data import datasets
from interplay.eeg.evaluation import EEGDataModule, cross_validate, oversample_smote
from interplay.eeg.models import DGCNN, RBTransformer, lightgbm_baseline, logistic_regression
from interplay.eeg.registry import REGISTRY
from interplay.eeg.tasks import EmotionClassificationTask

__all__ = [
    "DGCNN",
    "REGISTRY",
    "EEGDataModule",
    "EmotionClassificationTask",
    "RBTransformer",
    "cross_validate",
    "datasets",
    "lightgbm_baseline",
    "logistic_regression",
    "oversample_smote",
    "tasks",
]
