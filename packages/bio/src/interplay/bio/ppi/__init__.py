"""Protein-protein binding affinity from protein language models (Alsamkary et al., 2025).

"Beyond Simple Concatenation: Fairly Assessing PLM Architectures for Multi-Chain Protein-Protein
Interactions Prediction" (arXiv:2505.20036): four ways to put a head on per-residue PLM features of
a complex's ligand and receptor chains -- EC, SC, HP, PAD (:mod:`interplay.bio.ppi.models`) -- over
frozen features with a ConvBERT layer or with the PLM fine-tuned; PPB-Affinity data with <= 30%
identity-cluster splits (:mod:`interplay.bio.ppi.data`); embedding providers and an on-disk store
(:mod:`interplay.bio.ppi.embeddings`); the regression task, metrics and data module
(:mod:`interplay.bio.ppi.task`).

Importing this package registers, in :data:`interplay.bio.registry.REGISTRY`, the models
``ppi-ec``, ``ppi-sc``, ``ppi-hp``, ``ppi-pad``, the datasets ``ppb-affinity`` and ``synthetic-ppi``
and the task ``ppi_regression``.
"""

from interplay.bio.ppi.data import (
    ALPHABET,
    Complex,
    cluster_split,
    random_split,
    read_clusters,
    read_ppb_affinity,
    write_synthetic_ppb_affinity,
)
from interplay.bio.ppi.embeddings import (
    EmbeddingProvider,
    EmbeddingStore,
    ESM2Provider,
    RandomPLMProvider,
    RandomProteinLM,
    create_provider,
)
from interplay.bio.ppi.models import (
    ARCHITECTURES,
    AttentionPool,
    ConvBertLayer,
    EmbeddingConcatenation,
    HierarchicalPooling,
    PooledAttentionAddition,
    PPIModel,
    SequenceConcatenation,
)
from interplay.bio.ppi.task import (
    AffinityMetrics,
    PPIDataModule,
    PPIRegressionTask,
    pearson,
    rmse,
    spearman,
)

__all__ = [
    "ALPHABET",
    "ARCHITECTURES",
    "AffinityMetrics",
    "AttentionPool",
    "Complex",
    "ConvBertLayer",
    "ESM2Provider",
    "EmbeddingConcatenation",
    "EmbeddingProvider",
    "EmbeddingStore",
    "HierarchicalPooling",
    "PPIDataModule",
    "PPIModel",
    "PPIRegressionTask",
    "PooledAttentionAddition",
    "RandomPLMProvider",
    "RandomProteinLM",
    "SequenceConcatenation",
    "cluster_split",
    "create_provider",
    "pearson",
    "random_split",
    "read_clusters",
    "read_ppb_affinity",
    "rmse",
    "spearman",
    "write_synthetic_ppb_affinity",
]
