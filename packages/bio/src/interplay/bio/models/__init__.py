"""bio models, one module per paper model; importing this package registers them.

MOTCat (OT co-attention survival) with its baselines SNN, ABMIL, MCAT and an elastic-net Cox model
on omics (:class:`CoxOmicsBaseline`, scikit-survival; not a torch model, so not in the registry).
"""

from interplay.bio.models import motcat, survival_baselines  # noqa: F401  (registers the models)
from interplay.bio.models.motcat import MOTCat, MultimodalCoAttentionSurvival, survival_outputs
from interplay.bio.models.survival_baselines import ABMIL, MCAT, SNN, CoxOmicsBaseline

__all__ = [
    "ABMIL",
    "MCAT",
    "MOTCat",
    "SNN",
    "CoxOmicsBaseline",
    "MultimodalCoAttentionSurvival",
    "survival_outputs",
]
