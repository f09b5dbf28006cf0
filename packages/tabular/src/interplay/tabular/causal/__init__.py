"""Treatment-effect estimation: TransTEE (Zhang et al., TMLR 2023) and baselines.

Importing this package registers in :data:`interplay.tabular.registry.REGISTRY` the models
``transtee``, ``tarnet``, ``dragonnet``, ``vcnet``, ``lgbm-s-learner``, ``lgbm-t-learner``,
``econml-drlearner``, ``econml-causal-forest``; the datasets ``ihdp-csv``, ``ihdp-npz``,
``ihdp-continuous``, ``synthetic-ihdp``, ``synthetic-continuous``, ``synthetic-categorical``,
``synthetic-dosage``; and the task ``treatment-effect``. The datasets carry the replication runner
(:func:`~interplay.tabular.causal.runner.train_replications`) that the tabular CLI uses for them.
"""

from interplay.tabular.causal import datasets as _datasets
from interplay.tabular.causal.base import CausalModel, PropensityHead
from interplay.tabular.causal.baselines import (
    DragonNet,
    EconMLCausalForest,
    EconMLDRLearner,
    LightGBMSLearner,
    LightGBMTLearner,
    TARNet,
    VCNet,
)
from interplay.tabular.causal.data import (
    CausalData,
    CausalInputError,
    IHDPReplications,
    make_synthetic_categorical,
    make_synthetic_dosage,
    make_synthetic_ihdp,
    read_ihdp_csv,
    read_ihdp_npz,
    simulate_ihdp_continuous,
    simulate_vcnet,
    write_ihdp_csv,
    write_ihdp_npz,
    write_synthetic_ihdp,
)
from interplay.tabular.causal.estimator import (
    DragonNetRegressor,
    TARNetRegressor,
    TransTEERegressor,
    VCNetRegressor,
)
from interplay.tabular.causal.metrics import adrf_amse, ate_error, pehe, sqrt_pehe
from interplay.tabular.causal.runner import train_replications
from interplay.tabular.causal.tasks import CausalDataModule, TreatmentEffectTask
from interplay.tabular.causal.transtee import TransTEE
from interplay.tabular.registry import REGISTRY as _REGISTRY

# the tabular CLI trains datasets that carry a runner with it (one fit per replication)
for _entry in _REGISTRY.datasets:
    if "causal" in _entry.tags:
        _entry.factory.runner = train_replications  # type: ignore[attr-defined]

__all__ = [
    "CausalData",
    "CausalDataModule",
    "CausalInputError",
    "CausalModel",
    "DragonNet",
    "DragonNetRegressor",
    "EconMLCausalForest",
    "EconMLDRLearner",
    "IHDPReplications",
    "LightGBMSLearner",
    "LightGBMTLearner",
    "PropensityHead",
    "TARNet",
    "TARNetRegressor",
    "TransTEE",
    "TransTEERegressor",
    "TreatmentEffectTask",
    "VCNet",
    "VCNetRegressor",
    "adrf_amse",
    "ate_error",
    "make_synthetic_categorical",
    "make_synthetic_dosage",
    "make_synthetic_ihdp",
    "pehe",
    "read_ihdp_csv",
    "read_ihdp_npz",
    "simulate_ihdp_continuous",
    "simulate_vcnet",
    "sqrt_pehe",
    "train_replications",
    "write_ihdp_csv",
    "write_ihdp_npz",
    "write_synthetic_ihdp",
]
del _datasets
