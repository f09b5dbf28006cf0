"""The vision model zoo. Every module of this package registers its models on import (one module per
family: ``eca.py``, ``davit.py``, ...); the shared contract is in ``base.py`` and ``factory.py``."""

import importlib
import pkgutil

from interplay.vision.models.base import (
    ClassifierHead,
    FeatureExtractor,
    FeatureInfo,
    VisionBackbone,
    checkpoint_seq,
)
from interplay.vision.models.factory import (
    MODEL_CFGS,
    count_gmacs,
    count_parameters,
    create_model,
    list_models,
    load_checkpoint,
    model_cfg,
    read_state_dict,
    register_model,
    resolve_weights_file,
    run_state_dict,
)

_SHARED = {"base", "factory", "layers"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _SHARED and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "MODEL_CFGS",
    "ClassifierHead",
    "FeatureExtractor",
    "FeatureInfo",
    "VisionBackbone",
    "checkpoint_seq",
    "count_gmacs",
    "count_parameters",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_cfg",
    "read_state_dict",
    "register_model",
    "resolve_weights_file",
    "run_state_dict",
]
