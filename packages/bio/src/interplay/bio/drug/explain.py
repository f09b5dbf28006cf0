"""Explanations of PaccMann MCA predictions: atom attention drawn on the molecule, top attended genes.

Manica et al. 2019 (Section 3.3, Figures 5-7) read the model through its two attention maps: the
contextual attention over SMILES tokens, shown on the molecule's atoms, and the gene attention
``softmax(W x + b)``, whose most attended genes they test for pathway enrichment.

* :func:`atom_attention` keeps the weights of atom tokens only (bonds, branches and ring digits carry
  no atom) and returns them in RDKit's atom order (the order atoms are written in the SMILES);
* :func:`draw_atom_attention` colours each atom by its weight (white -> red, scaled to the maximum)
  with ``rdMolDraw2D`` and writes a PNG atomically;
* :func:`top_genes` ranks genes by their mean attention over a set of pairs;
* :func:`explain_split` runs a model with an ``explain`` method over a split and writes one PNG per
  drug (``attention_<drug>.png``), the token weights (``smiles_attention.csv``) and the gene ranking
  (``top_genes.csv``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from interplay.bio.drug.smiles import atom_token_mask, mol_from_smiles, tokenize_smiles
from interplay.core.data import atomic_write
from interplay.core.errors import DataError

__all__ = ["atom_attention", "draw_atom_attention", "explain_split", "top_genes"]


def atom_attention(smiles: str, token_weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-atom weights from per-token weights of ``smiles`` (one weight per token, no special tokens)."""
    tokens = tokenize_smiles(smiles)
    weights = np.asarray(token_weights, dtype=np.float64).reshape(-1)
    if len(weights) != len(tokens):
        raise DataError(
            f"{smiles!r} has {len(tokens)} tokens but {len(weights)} attention weights were given"
        )
    mol = mol_from_smiles(smiles, keep_hydrogens=True)
    if mol is None:
        raise DataError(f"RDKit cannot parse {smiles!r}")
    atoms = weights[atom_token_mask(tokens)]
    if len(atoms) != mol.GetNumAtoms():
        raise DataError(f"{smiles!r}: {len(atoms)} atom tokens but RDKit reads {mol.GetNumAtoms()} atoms")
    return atoms


def draw_atom_attention(
    smiles: str,
    atom_weights: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (500, 400),
    legend: str = "",
) -> Path:
    """A PNG of the molecule with atom ``i`` highlighted in proportion to ``atom_weights[i]``."""
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import rdMolDraw2D

    mol = mol_from_smiles(smiles, keep_hydrogens=True)
    if mol is None:
        raise DataError(f"RDKit cannot parse {smiles!r}")
    weights = np.asarray(atom_weights, dtype=np.float64).reshape(-1)
    if len(weights) != mol.GetNumAtoms():
        raise DataError(f"{smiles!r} has {mol.GetNumAtoms()} atoms but {len(weights)} weights were given")
    top = weights.max() if len(weights) and weights.max() > 0 else 1.0
    scaled = np.clip(weights / top, 0.0, 1.0)
    colours = {i: (1.0, 1.0 - 0.85 * w, 1.0 - 0.85 * w) for i, w in enumerate(scaled)}
    radii = {i: 0.25 + 0.3 * w for i, w in enumerate(scaled)}
    rdDepictor.Compute2DCoords(mol)
    drawer = rdMolDraw2D.MolDraw2DCairo(*size)
    rdMolDraw2D.PrepareAndDrawMolecule(
        drawer,
        mol,
        legend=legend,
        highlightAtoms=list(range(mol.GetNumAtoms())),
        highlightAtomColors=colours,
        highlightAtomRadii=radii,
        highlightBonds=[],
    )
    drawer.FinishDrawing()
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(drawer.GetDrawingText())
    return path


def top_genes(gene_attention: np.ndarray | torch.Tensor, genes: Sequence[str], k: int = 20) -> pd.DataFrame:
    """The ``k`` genes of highest mean attention over the rows of ``gene_attention`` ``[N, G]`` / ``[G]``."""
    values = (
        gene_attention.detach().cpu().numpy() if isinstance(gene_attention, torch.Tensor) else gene_attention
    )
    values = np.asarray(values, dtype=np.float64)
    mean = values.reshape(-1, values.shape[-1]).mean(0)
    if len(mean) != len(genes):
        raise DataError(f"gene attention has {len(mean)} genes but {len(genes)} gene names were given")
    order = np.argsort(-mean, kind="stable")[:k]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "gene": [genes[i] for i in order],
            "mean_attention": mean[order],
            "times_uniform": mean[order] * len(genes),  # > 1: attended more than a uniform weight
        }
    )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "drug"


@torch.no_grad()
def explain_split(
    model: Any,
    datamodule: Any,
    out_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    drugs: Sequence[str] | None = None,
    n_drugs: int = 3,
    top_k: int = 20,
) -> dict[str, Path]:
    """Attention explanations of ``model`` over ``split``: per-drug PNGs, token weights, top genes.

    ``drugs`` names the drugs to draw (default: the ``n_drugs`` with the most pairs in the split).
    Token attention is averaged over the drug's pairs (it depends on the cell line through the
    context); the canonical SMILES is read, unaugmented.
    """
    out_dir = Path(out_dir)
    model.eval()
    gene_rows, token_sums, token_counts = [], {}, {}
    for batch in datamodule.batches(split):
        out = model.explain(batch)
        gene_rows.append(out["gene_attention"].float().cpu())
        weights = out["smiles_attention"].float().cpu()
        for drug in batch["drug"].unique().tolist():
            rows = batch["drug"] == drug
            token_sums[drug] = token_sums.get(drug, 0) + weights[rows].sum(0)
            token_counts[drug] = token_counts.get(drug, 0) + int(rows.sum())
    if not gene_rows:
        raise DataError(f"the {split} split has no pairs to explain")
    written: dict[str, Path] = {}
    ranking = top_genes(torch.cat(gene_rows), datamodule.genes, top_k)
    with atomic_write(out_dir / "top_genes.csv", newline="") as handle:
        ranking.to_csv(handle, index=False)
    written["top_genes"] = out_dir / "top_genes.csv"

    index_of = {d: i for i, d in enumerate(datamodule.drug_ids)}
    if drugs is None:
        chosen = sorted(token_counts, key=lambda d: (-token_counts[d], d))[:n_drugs]
    else:
        missing = [d for d in drugs if d not in index_of or index_of[d] not in token_counts]
        if missing:
            raise DataError(f"drugs without pairs in the {split} split: {', '.join(map(str, missing))}")
        chosen = [index_of[d] for d in drugs]
    rows = []
    for drug in chosen:
        name = datamodule.drug_ids[drug]
        smiles = datamodule.tables.smiles.iloc[drug]
        tokens = tokenize_smiles(smiles)
        mean = (token_sums[drug] / token_counts[drug]).numpy()
        # position 0 is <start>; a SMILES cut at smiles_length keeps its first tokens only
        token_weights = np.zeros(len(tokens))
        kept = min(len(tokens), len(mean) - 2)
        token_weights[:kept] = mean[1 : 1 + kept]
        rows += [
            {"drug": name, "position": i, "token": t, "attention": w}
            for i, (t, w) in enumerate(zip(tokens, token_weights))
        ]
        png = out_dir / f"attention_{_safe_name(name)}.png"
        draw_atom_attention(smiles, atom_attention(smiles, token_weights), png, legend=name)
        written[f"attention_{name}"] = png
    with atomic_write(out_dir / "smiles_attention.csv", newline="") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)
    written["smiles_attention"] = out_dir / "smiles_attention.csv"
    return written
