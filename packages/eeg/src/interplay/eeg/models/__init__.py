"""eeg models; importing this package registers them.

RBTransformer (:mod:`.rbtransformer`) and its baselines (:mod:`.baselines`): DGCNN, and logistic
regression / LightGBM on flattened band-DE features.
"""

from interplay.eeg.models import baselines, rbtransformer  # noqa: F401  (registers the entries)
from interplay.eeg.models.baselines import (
    DGCNN,
    SklearnBaseline,
    distance_adjacency,
    lightgbm_baseline,
    logistic_regression,
)
from interplay.eeg.models.rbtransformer import ElectrodeAttention, RBTransformer, RBTransformerBlock

__all__ = [
    "DGCNN",
    "ElectrodeAttention",
    "RBTransformer",
    "RBTransformerBlock",
    "SklearnBaseline",
    "distance_adjacency",
    "lightgbm_baseline",
    "logistic_regression",
]
