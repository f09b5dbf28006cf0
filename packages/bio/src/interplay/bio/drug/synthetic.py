"""Synthetic drug sensitivity data with planted drug x gene interactions, in the reader's file format.

Stands in for GDSC (the data of PaccMann MCA, Manica et al. 2019) in tests, the demo and benchmarks:

* **drugs**: real molecules, drawn (seeded) from RDKit's bundled NCI set (``RDDataDir/NCI/first_5K.smi``,
  kept: one fragment, 10-35 heavy atoms, SMILES of at most 90 characters), written as the file gives
  them (not canonical, so the reader's canonicalisation is exercised);
* **cell lines**: log-expression-like profiles of ``n_genes`` genes in ``n_pathways`` co-expressed
  modules, ``x[c, g] = base[g] + loading[g] * z[c, pathway(g)] + noise``, ``z ~ N(0, 1)``;
* **ln IC50** = ``mean + drug potency + cell fitness + sum_k strength_k * f_k(drug) * x~(cell, driver_k)
  + noise``, where ``f_k`` counts a substructure (SMARTS: halogen, carbonyl, aromatic nitrogen,
  hydroxyl, nitro) standardised over the drugs, ``x~`` is a standardised driver gene (one per
  substructure, each in its own pathway), drug potency is a linear function of the same counts plus
  a per-drug offset, and cell fitness is the first pathway's activity. The interaction terms need both
  the molecule and the expression: a model seeing one side only cannot explain them.

The variance of each part (drug, cell, interaction, noise) is rescaled to ``variance_shares``;
``truth.json`` records the drivers, the SMARTS and the realised shares, so explanations can be
checked (the driver genes should rank high in the gene attention).

Files (each written atomically; ``truth.json`` last, so its presence means the set is complete):
``drugs.csv`` (drug, smiles), ``gene_expression.csv`` and/or ``gene_expression.h5ad`` (cell lines x
genes), ``pairs.csv`` (drug, cell_line, ln_ic50; each pair kept with probability ``pair_fraction``),
``genes.txt`` (the gene list).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interplay.core.data import atomic_save, atomic_write
from interplay.core.errors import ConfigError, DataError

__all__ = [
    "SUBSTRUCTURES",
    "SYNTHETIC_VERSION",
    "SyntheticDrugFiles",
    "nci_smiles",
    "write_synthetic_drug_data",
]

SYNTHETIC_VERSION = 1
#: substructure -> SMARTS; each is paired with one driver gene in the planted interactions
SUBSTRUCTURES = {
    "halogen": "[F,Cl,Br,I]",
    "carbonyl": "[CX3]=[OX1]",
    "aromatic_nitrogen": "[n]",
    "hydroxyl": "[OX2H]",
    "nitro": "[$([NX3](=O)=O),$([NX3+](=O)[O-])]",
}


@dataclass(frozen=True)
class SyntheticDrugFiles:
    directory: Path
    drugs: Path
    expression: Path
    pairs: Path
    genes: Path
    truth: Path


@functools.lru_cache(maxsize=4)
def nci_smiles(max_length: int = 90, min_atoms: int = 10, max_atoms: int = 35) -> tuple[tuple[str, str], ...]:
    """``(NCI id, SMILES)`` of the usable molecules of RDKit's bundled NCI subset (file order)."""
    from rdkit import Chem, RDConfig, RDLogger

    RDLogger.DisableLog("rdApp.*")
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not path.is_file():
        raise DataError(f"RDKit's NCI SMILES file is missing: {path} (reinstall rdkit)")
    out, seen = [], set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or "." in parts[0] or len(parts[0]) > max_length:
            continue
        mol = Chem.MolFromSmiles(parts[0])
        if mol is None or not min_atoms <= mol.GetNumHeavyAtoms() <= max_atoms:
            continue
        key = Chem.MolToSmiles(mol)
        if key in seen:
            continue
        seen.add(key)
        out.append((f"NSC{parts[1]}", parts[0]))
    return tuple(out)


def _substructure_counts(smiles: list[str]) -> np.ndarray:
    from rdkit import Chem

    patterns = [Chem.MolFromSmarts(s) for s in SUBSTRUCTURES.values()]
    counts = np.zeros((len(smiles), len(patterns)))
    for i, text in enumerate(smiles):
        mol = Chem.MolFromSmiles(text)
        for j, pattern in enumerate(patterns):
            counts[i, j] = min(len(mol.GetSubstructMatches(pattern)), 4)  # saturate: a few groups suffice
    return counts


def _standardise(values: np.ndarray) -> np.ndarray:
    sd = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _rescale(part: np.ndarray, variance: float) -> np.ndarray:
    sd = part.std()
    return part * (np.sqrt(variance) / sd) if sd > 0 else part


def _check(
    n_drugs: int, n_cell_lines: int, n_genes: int, n_pathways: int, pair_fraction: float, shares
) -> None:
    if n_drugs < 4 or n_cell_lines < 4:
        raise ConfigError(f"need at least 4 drugs and 4 cell lines, got {n_drugs} and {n_cell_lines}")
    if n_pathways < len(SUBSTRUCTURES) + 1:
        raise ConfigError(f"n_pathways must be >= {len(SUBSTRUCTURES) + 1} (one per driver + fitness)")
    if n_genes < 2 * n_pathways:
        raise ConfigError(f"n_genes ({n_genes}) must be at least twice n_pathways ({n_pathways})")
    if not 0 < pair_fraction <= 1:
        raise ConfigError(f"pair_fraction must be in (0, 1], got {pair_fraction}")
    if len(shares) != 4 or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ConfigError(
            f"variance_shares must be 4 non-negative numbers (drug, cell, interaction, noise), got {shares}"
        )


def write_synthetic_drug_data(
    directory: str | os.PathLike[str],
    *,
    n_drugs: int = 60,
    n_cell_lines: int = 80,
    n_genes: int = 200,
    n_pathways: int = 10,
    pair_fraction: float = 0.8,
    variance_shares: tuple[float, float, float, float] = (0.6, 0.1, 0.2, 0.1),
    expression_format: str = "csv",
    seed: int = 0,
) -> SyntheticDrugFiles:
    """Write a synthetic GDSC-like data set into ``directory`` (see the module docstring)."""
    _check(n_drugs, n_cell_lines, n_genes, n_pathways, pair_fraction, variance_shares)
    if expression_format not in ("csv", "h5ad", "both"):
        raise ConfigError(f"expression_format must be csv, h5ad or both, got {expression_format!r}")
    rng = np.random.default_rng(seed)
    pool = nci_smiles()
    if n_drugs > len(pool):
        raise ConfigError(f"n_drugs ({n_drugs}) exceeds the {len(pool)} usable NCI molecules")
    chosen = [pool[i] for i in np.sort(rng.choice(len(pool), size=n_drugs, replace=False))]
    drug_ids = [d for d, _ in chosen]
    smiles = [s for _, s in chosen]
    features = _standardise(_substructure_counts(smiles))  # [D, K]
    n_features = features.shape[1]

    # cell lines: co-expressed modules; gene g belongs to pathway g % n_pathways
    pathway_of = np.arange(n_genes) % n_pathways
    activity = rng.standard_normal((n_cell_lines, n_pathways))
    base = rng.uniform(2.0, 10.0, n_genes)
    loading = rng.uniform(0.6, 1.4, n_genes) * rng.choice([-1.0, 1.0], n_genes)
    expression = base + loading * activity[:, pathway_of] + 0.5 * rng.standard_normal((n_cell_lines, n_genes))
    genes = [f"GENE{g:04d}" for g in range(n_genes)]
    cell_ids = [f"CL{c:04d}" for c in range(n_cell_lines)]
    # driver k: a random gene of pathway k + 1 (pathway 0 drives cell fitness)
    drivers = [int(rng.choice(np.flatnonzero(pathway_of == k + 1))) for k in range(n_features)]
    driver_expression = _standardise(expression[:, drivers])  # [C, K]

    potency = features @ rng.normal(0.0, 1.0, n_features) + 0.5 * rng.standard_normal(n_drugs)
    fitness = activity[:, 0]
    strengths = rng.uniform(0.7, 1.3, n_features) * rng.choice([-1.0, 1.0], n_features)
    interaction = np.einsum("dk,ck,k->dc", features, driver_expression, strengths)
    shares = np.asarray(variance_shares, dtype=np.float64) / np.sum(variance_shares)
    total_sd = 2.0  # GDSC's ln IC50 spread is a few units
    drug_part = _rescale(np.repeat(potency[:, None], n_cell_lines, 1), shares[0] * total_sd**2)
    cell_part = _rescale(np.repeat(fitness[None, :], n_drugs, 0), shares[1] * total_sd**2)
    interaction_part = _rescale(interaction, shares[2] * total_sd**2)
    noise = np.sqrt(shares[3]) * total_sd * rng.standard_normal((n_drugs, n_cell_lines))
    ln_ic50 = 2.5 + drug_part + cell_part + interaction_part + noise

    keep = rng.random((n_drugs, n_cell_lines)) < pair_fraction
    keep[np.arange(n_drugs), rng.integers(0, n_cell_lines, n_drugs)] = True  # every drug measured
    keep[rng.integers(0, n_drugs, n_cell_lines), np.arange(n_cell_lines)] = True  # every cell line
    d_index, c_index = np.nonzero(keep)
    pairs = pd.DataFrame(
        {
            "drug": [drug_ids[i] for i in d_index],
            "cell_line": [cell_ids[j] for j in c_index],
            "ln_ic50": np.round(ln_ic50[d_index, c_index], 5),
        }
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = SyntheticDrugFiles(
        directory=directory,
        drugs=directory / "drugs.csv",
        expression=directory
        / ("gene_expression.h5ad" if expression_format == "h5ad" else "gene_expression.csv"),
        pairs=directory / "pairs.csv",
        genes=directory / "genes.txt",
        truth=directory / "truth.json",
    )
    with atomic_write(files.drugs, newline="") as handle:
        pd.DataFrame({"drug": drug_ids, "smiles": smiles}).to_csv(handle, index=False)
    table = pd.DataFrame(np.round(expression, 5), index=pd.Index(cell_ids, name="cell_line"), columns=genes)
    if expression_format in ("csv", "both"):
        with atomic_write(directory / "gene_expression.csv", newline="") as handle:
            table.to_csv(handle)
    if expression_format in ("h5ad", "both"):
        write_expression_h5ad(table, directory / "gene_expression.h5ad")
    with atomic_write(files.pairs, newline="") as handle:
        pairs.to_csv(handle, index=False)
    with atomic_write(files.genes) as handle:
        handle.write("\n".join(genes) + "\n")

    parts = {"drug": drug_part, "cell": cell_part, "interaction": interaction_part, "noise": noise}
    total = ln_ic50.var()
    truth: dict[str, Any] = {
        "version": SYNTHETIC_VERSION,
        "seed": seed,
        "n_drugs": n_drugs,
        "n_cell_lines": n_cell_lines,
        "n_genes": n_genes,
        "n_pairs": len(pairs),
        "substructures": SUBSTRUCTURES,
        "driver_genes": {name: genes[g] for name, g in zip(SUBSTRUCTURES, drivers)},
        "interaction_strengths": dict(zip(SUBSTRUCTURES, strengths.round(4).tolist())),
        "variance_shares": {k: round(float(v.var() / total), 4) for k, v in parts.items()},
        "noise_sd": float(np.sqrt(shares[3]) * total_sd),
    }
    with atomic_write(files.truth) as handle:
        json.dump(truth, handle, indent=2)
    return files


def write_expression_h5ad(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Cell lines x genes as AnnData (``obs`` = cell lines, ``var`` = genes), written atomically."""
    import anndata

    # object-dtype names: anndata refuses to write pandas' string arrays to .h5ad
    obs = pd.DataFrame(index=pd.Index([str(i) for i in table.index], dtype=object))
    var = pd.DataFrame(index=pd.Index([str(c) for c in table.columns], dtype=object))
    adata = anndata.AnnData(X=table.to_numpy(dtype=np.float32), obs=obs, var=var)
    return atomic_save(lambda temp: adata.write_h5ad(temp), path)
