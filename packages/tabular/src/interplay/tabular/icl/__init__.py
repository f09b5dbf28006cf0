"""Tabular in-context learning: Orion-MSP (Bouadi et al., Lexsi Labs, arXiv:2511.02818, 2025).

Importing this package registers in :data:`interplay.tabular.registry.REGISTRY` the models
``orion-msp`` and ``lightgbm-classifier``, the datasets ``orion-prior`` (synthetic MLP-SCM / tree-SCM
tables) and ``sklearn-tables`` (breast cancer, wine, digits) and the task ``tabular-icl``. Both
datasets carry :func:`~interplay.tabular.icl.runner.run_orion` as ``runner``: ``interplay-tabular
train --config orion-msp-prior`` pre-trains, ``--config orion-msp`` (and ``reproduce orion-msp``)
cross-validates a checkpoint against LightGBM.

    from interplay.tabular.icl import OrionMSPClassifier
    clf = OrionMSPClassifier(checkpoint=".../checkpoints/last.pt").fit(X_train, y_train)
    proba = clf.predict_proba(X_test)
"""

from interplay.tabular.icl.classifier import SMALL_MODEL, OrionInputError, OrionMSPClassifier
from interplay.tabular.icl.datasets import (
    SKLEARN_TABLES,
    NamedTable,
    TabularICLTask,
    load_sklearn_table,
    orion_prior,
    sklearn_tables,
)
from interplay.tabular.icl.model import (
    BANDED_MIN_TOKENS,
    PAPER_CONFIG,
    ColumnEmbedding,
    ICLTransformer,
    MultiScaleRowInteraction,
    OrionMSP,
    OrionMSPConfig,
    PerceiverMemory,
    SparseRowBlock,
    count_parameters,
)
from interplay.tabular.icl.pretrain import PretrainConfig, episode_loss, load_pretrained, pretrain
from interplay.tabular.icl.prior import PriorConfig, PriorSampler, PriorTable, make_table, mlp_scm, tree_scm
from interplay.tabular.icl.runner import cross_validate, run_orion

# the tabular CLI trains a config whose dataset factory carries a runner with it
orion_prior.runner = run_orion  # type: ignore[attr-defined]
sklearn_tables.runner = run_orion  # type: ignore[attr-defined]

__all__ = [
    "BANDED_MIN_TOKENS",
    "PAPER_CONFIG",
    "SKLEARN_TABLES",
    "SMALL_MODEL",
    "ColumnEmbedding",
    "ICLTransformer",
    "MultiScaleRowInteraction",
    "NamedTable",
    "OrionInputError",
    "OrionMSP",
    "OrionMSPClassifier",
    "OrionMSPConfig",
    "PerceiverMemory",
    "PretrainConfig",
    "PriorConfig",
    "PriorSampler",
    "PriorTable",
    "SparseRowBlock",
    "TabularICLTask",
    "count_parameters",
    "cross_validate",
    "episode_loss",
    "load_pretrained",
    "load_sklearn_table",
    "make_table",
    "mlp_scm",
    "pretrain",
    "run_orion",
    "sklearn_tables",
    "tree_scm",
]
