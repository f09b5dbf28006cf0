"""Drug sensitivity: PaccMann MCA (Manica et al. 2019) and its fingerprint baselines.

Importing this package registers in :data:`interplay.bio.registry.REGISTRY`:

* models ``mca`` (:class:`MCA`), ``paccmann-v2`` (:class:`PaccMannV2`, context attention in both
  directions), ``fp-mlp`` (:class:`FingerprintMLP`) and ``fp-lightgbm`` (:class:`FingerprintLightGBM`,
  tag ``gbdt``: fitted outside Lightning by :func:`run_drug_experiment`);
* datasets ``drug-sensitivity`` (files under ``data.root``: drugs, expression, pairs, gene list) and
  ``synthetic-drug-sensitivity`` (NCI molecules x synthetic cell lines, planted interactions);
* task ``drug_regression`` (:class:`DrugRegressionTask`).

Configs ``mca-gdsc``, ``mca-synthetic``, ``paccmann-v2-synthetic``, ``fp-mlp-synthetic``,
``fp-lightgbm-synthetic`` and the reproduction ``mca`` ship in ``interplay.bio.configs``.
"""

from __future__ import annotations

from interplay.bio.drug.baselines import FingerprintLightGBM, FingerprintMLP
from interplay.bio.drug.data import (
    DrugSensitivityDataModule,
    DrugTables,
    drug_sensitivity,
    load_tables,
    read_drug_table,
    read_expression,
    read_gene_list,
    read_pairs,
    split_pairs,
    synthetic_drug_sensitivity,
)
from interplay.bio.drug.explain import atom_attention, draw_atom_attention, explain_split, top_genes
from interplay.bio.drug.model import MCA, PaccMannV2
from interplay.bio.drug.smiles import (
    SmilesVocabulary,
    canonical_smiles,
    morgan_fingerprints,
    randomized_smiles,
    tokenize_smiles,
    validate_smiles,
)
from interplay.bio.drug.synthetic import write_synthetic_drug_data
from interplay.bio.drug.task import DrugRegressionTask, run_drug_experiment
from interplay.bio.registry import REGISTRY

__all__ = [
    "MCA",
    "DrugRegressionTask",
    "DrugSensitivityDataModule",
    "DrugTables",
    "FingerprintLightGBM",
    "FingerprintMLP",
    "PaccMannV2",
    "SmilesVocabulary",
    "atom_attention",
    "canonical_smiles",
    "draw_atom_attention",
    "explain_split",
    "load_tables",
    "morgan_fingerprints",
    "randomized_smiles",
    "read_drug_table",
    "read_expression",
    "read_gene_list",
    "read_pairs",
    "run_drug_experiment",
    "split_pairs",
    "tokenize_smiles",
    "top_genes",
    "validate_smiles",
    "write_synthetic_drug_data",
]


def _register() -> None:
    # guarded: a second import of this module (importlib.reload) must not register twice
    models, datasets, tasks = REGISTRY.models, REGISTRY.datasets, REGISTRY.tasks
    entries = [
        (
            models,
            "mca",
            "PaccMann MCA: SMILES multiscale conv + gene-context attention (Manica et al., 2019)",
            MCA,
            (),
        ),
        (
            models,
            "paccmann-v2",
            "PaccMann v2: MCA with context attention in both directions (genes <-> SMILES)",
            PaccMannV2,
            (),
        ),
        (
            models,
            "fp-mlp",
            "dense network on Morgan fingerprint + expression (PaccMann's fingerprint baseline)",
            FingerprintMLP,
            (),
        ),
        (
            models,
            "fp-lightgbm",
            "LightGBM on Morgan fingerprint + expression, early stopping on validation",
            FingerprintLightGBM,
            ("gbdt",),
        ),
        (
            datasets,
            "drug-sensitivity",
            "drug x cell line ln IC50 from files (GDSC as for PaccMann, or yours)",
            drug_sensitivity,
            (),
        ),
        (
            datasets,
            "synthetic-drug-sensitivity",
            "NCI molecules x synthetic cell lines, IC50 with planted interactions",
            synthetic_drug_sensitivity,
            (),
        ),
        (
            tasks,
            "drug_regression",
            "drug sensitivity regression: MSE on scaled ln IC50; RMSE, R2, Pearson, Spearman",
            DrugRegressionTask,
            (),
        ),
    ]
    for registry, name, description, factory, tags in entries:
        if name not in registry:
            registry.register(name, description, tags=tags)(factory)


_register()
