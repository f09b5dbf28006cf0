"""Drug sensitivity data: drug table, cell-line expression, IC50 pairs, splits, and the data module.

The inputs of PaccMann MCA (Manica et al. 2019, Mol. Pharmaceutics 16(12); GDSC: ~200 drugs x ~1,000
cell lines, ln IC50) as three files plus an optional gene list:

* **drugs** (``drugs.csv``): one row per drug, an id column (``drug``, ``drug_id``, ``id``, ``name`` or
  ``compound``) and a ``smiles`` column; or PaccMann's ``.smi`` (``SMILES<tab>id``, no header).
  Every SMILES is parsed with RDKit (all invalid ones are named in one error) and rewritten in RDKit's
  canonical form.
* **expression** (``gene_expression.csv`` or ``.h5ad``): cell lines x genes. CSV: first column the
  cell-line names, one column per gene. AnnData: ``obs_names`` are the cell lines, ``var_names`` the
  genes (read with ``anndata.read_h5ad``, which ``scanpy.read_h5ad`` re-exports). A **gene list**
  (text file, one name per line, e.g. PaccMann's 2,128-gene panel) restricts and orders the columns;
  a gene the table lacks is an error naming it, unless ``missing_genes="zero"`` fills it with zeros.
* **pairs** (``pairs.csv``): ``drug``, ``cell_line`` and the label, ``ln_ic50`` (PaccMann's files call
  it ``IC50``; ``label_column`` picks another). Repeated (drug, cell line) measurements are averaged.

Splits (:func:`split_pairs`, seeded): ``random`` pairs; ``cell_line`` (test cell lines never appear in
training: unseen tumours); ``drug`` (test drugs never appear in training: unseen compounds); ``column``
(the pairs file's ``split`` column says ``train`` / ``val`` / ``test``). The validation split is carved
from the training part the same way (held-out cell lines for ``cell_line``...), so model selection
sees the kind of generalisation the test split measures; the test split is never used for selection.

Fitted on the training split only (:class:`DrugSensitivityDataModule`): the SMILES vocabulary, the
per-gene standardisation of expression (mean / sd over the training cell lines) and the min-max
scaling of ln IC50 to [0, 1] (the MCA's sigmoid output range). All three are in ``state_dict()`` so a
checkpoint reads new data exactly as it was trained. Training batches write each drug as a random
SMILES (enumeration augmentation) when ``augment`` is on; evaluation always uses the canonical one.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from interplay.bio.drug.smiles import (
    SmilesVocabulary,
    canonical_smiles,
    morgan_fingerprints,
    randomized_smiles,
    validate_smiles,
)
from interplay.core.data import data_root, require_file
from interplay.core.errors import ConfigError, DataError

__all__ = [
    "DrugSensitivityDataModule",
    "PairBatches",
    "drug_sensitivity",
    "resolve_input",
    "synthetic_drug_dir",
    "synthetic_drug_sensitivity",
    "DrugTables",
    "SPLIT_MODES",
    "Standardizer",
    "fit_min_max",
    "load_tables",
    "read_drug_table",
    "read_expression",
    "read_gene_list",
    "read_pairs",
    "split_pairs",
]

PathLike = str | os.PathLike[str]
SPLIT_MODES = ("random", "cell_line", "drug", "column")
DRUG_ID_COLUMNS = ("drug", "drug_id", "id", "name", "compound")
LABEL_COLUMNS = ("ln_ic50", "LN_IC50", "IC50", "ic50", "label")
_SHOWN = 10  # names listed in one error message


def _names(values: Sequence[Any], limit: int = _SHOWN) -> str:
    values = [str(v) for v in values]
    more = f" (and {len(values) - limit} more)" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def _read_table(path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
    name = path.name.lower()
    sep = "\t" if any(name.endswith(s) for s in (".tsv", ".tsv.gz", ".txt", ".tab")) else ","
    try:
        return pd.read_csv(path, sep=sep, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read the {what} as {'TSV' if sep == chr(9) else 'CSV'}: {err}"
        ) from err


# --------------------------------------------------------------------------------------- readers


def read_drug_table(path: PathLike) -> pd.Series:
    """``{drug id: SMILES}`` as written in the file (not yet validated)."""
    path = require_file(path, "drug table (drug id, SMILES)")
    if path.suffix.lower() == ".smi":
        try:
            frame = pd.read_csv(path, sep=r"\s+", header=None, names=["smiles", "drug"], dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DataError(f"{path}: cannot read as .smi (SMILES<tab>id per line): {err}") from err
        if frame["drug"].isna().any():
            line = int(frame.index[frame["drug"].isna()][0]) + 1
            raise DataError(f"{path}: line {line} has no drug id after the SMILES (.smi: SMILES<tab>id)")
    else:
        frame = _read_table(path, "drug table", dtype=str)
        lower = {c.lower(): c for c in frame.columns}
        if "smiles" not in lower:
            raise DataError(f"{path}: no 'smiles' column (columns: {_names(list(frame.columns))})")
        id_column = next((lower[c] for c in DRUG_ID_COLUMNS if c in lower), None)
        if id_column is None:
            raise DataError(
                f"{path}: no drug id column; expected one of {', '.join(DRUG_ID_COLUMNS)} "
                f"(columns: {_names(list(frame.columns))})"
            )
        frame = frame.rename(columns={id_column: "drug", lower["smiles"]: "smiles"})[["drug", "smiles"]]
    if frame.empty:
        raise DataError(f"{path}: the drug table has no rows")
    frame["drug"] = frame["drug"].astype(str).str.strip()
    frame["smiles"] = frame["smiles"].fillna("").astype(str).str.strip()
    duplicated = frame["drug"][frame["drug"].duplicated()].unique()
    if len(duplicated):
        raise DataError(f"{path}: duplicate drug ids: {_names(duplicated)}")
    return pd.Series(frame["smiles"].to_numpy(), index=pd.Index(frame["drug"].to_numpy(), name="drug"))


def read_gene_list(path: PathLike) -> list[str]:
    """Gene names, one per line (blank lines and ``#`` comments ignored), in file order."""
    path = require_file(path, "gene list")
    genes = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            genes.append(line)
    if not genes:
        raise DataError(f"{path}: the gene list is empty")
    duplicated = pd.Index(genes)[pd.Index(genes).duplicated()].unique()
    if len(duplicated):
        raise DataError(f"{path}: genes listed twice: {_names(duplicated)}")
    return genes


def _expression_from_h5ad(path: Path) -> pd.DataFrame:
    # scanpy.read_h5ad is this very function (re-exported); importing anndata alone saves scanpy's
    # ~10-25 s import (numba, plotting) for a file read
    import anndata

    try:
        adata = anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{path}: cannot read as AnnData (.h5ad): {err}") from err
    matrix = adata.X
    if matrix is None:
        raise DataError(f"{path}: the AnnData object has no X matrix (cell lines x genes)")
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    try:
        values = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: X is not numeric: {err}") from err
    index = pd.Index([str(o) for o in adata.obs_names], name="cell_line")
    return pd.DataFrame(values, index=index, columns=[str(v) for v in adata.var_names])


def read_expression(
    path: PathLike, genes: Sequence[str] | None = None, *, missing_genes: str = "error"
) -> pd.DataFrame:
    """Cell lines x genes (float64), restricted to and ordered as ``genes`` when given.

    ``missing_genes``: ``"error"`` (a gene of the list that the table lacks raises, naming it) or
    ``"zero"`` (such genes are filled with 0 and a warning names them).
    """
    if missing_genes not in ("error", "zero"):
        raise ConfigError(f"missing_genes must be 'error' or 'zero', got {missing_genes!r}")
    path = require_file(path, "gene expression table (cell lines x genes)")
    if path.suffix.lower() == ".h5ad":
        frame = _expression_from_h5ad(path)
    else:
        frame = _read_table(path, "gene expression table", index_col=0)
        frame.index = pd.Index([str(i) for i in frame.index], name="cell_line")
        frame.columns = [str(c) for c in frame.columns]
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if text:
            raise DataError(f"{path}: non-numeric expression columns: {_names(text)}")
        frame = frame.astype(np.float64)
    if frame.empty or frame.shape[1] == 0:
        raise DataError(f"{path}: the expression table is empty")
    if frame.index.has_duplicates:
        raise DataError(
            f"{path}: duplicate cell lines: {_names(frame.index[frame.index.duplicated()].unique())}"
        )
    if pd.Index(frame.columns).has_duplicates:
        dupes = pd.Index(frame.columns)[pd.Index(frame.columns).duplicated()].unique()
        raise DataError(f"{path}: duplicate gene columns: {_names(dupes)}")
    if genes is not None:
        missing = [g for g in genes if g not in frame.columns]
        if missing and missing_genes == "error":
            raise DataError(
                f"{path}: {len(missing)} of {len(genes)} listed genes are not in the expression table: "
                f"{_names(missing)} (data.params.missing_genes=zero fills them with zeros)"
            )
        if missing:
            warnings.warn(
                f"{path}: filling {len(missing)} missing genes with 0: {_names(missing)}", stacklevel=2
            )
        frame = frame.reindex(columns=list(genes), fill_value=0.0)
    values = frame.to_numpy()
    if not np.isfinite(values).all():
        rows, cols = np.nonzero(~np.isfinite(values))
        cells = [f"{frame.index[r]}/{frame.columns[c]}" for r, c in zip(rows[:_SHOWN], cols[:_SHOWN])]
        raise DataError(
            f"{path}: {len(rows)} missing or non-finite expression values (cell line/gene): {_names(cells)}"
        )
    return frame


def read_pairs(path: PathLike, *, label_column: str | None = None) -> pd.DataFrame:
    """``drug``, ``cell_line``, ``ln_ic50`` (+ ``split`` when present); repeats are averaged."""
    path = require_file(path, "IC50 pairs table (drug, cell_line, ln_ic50)")
    frame = _read_table(path, "IC50 pairs table", dtype={"drug": str, "cell_line": str})
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith("Unnamed:")])
    for column in ("drug", "cell_line"):
        if column not in frame.columns:
            raise DataError(f"{path}: no '{column}' column (columns: {_names(list(frame.columns))})")
    candidates = [label_column] if label_column else list(LABEL_COLUMNS)
    label = next((c for c in candidates if c in frame.columns), None)
    if label is None:
        raise DataError(
            f"{path}: no label column; expected {' or '.join(candidates)} "
            f"(columns: {_names(list(frame.columns))})"
        )
    if frame.empty:
        raise DataError(f"{path}: the pairs table has no rows")
    values = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        lines = [str(i + 2) for i in bad]  # +1 for the header, +1 for 1-based lines
        raise DataError(
            f"{path}: {len(bad)} rows with a missing or non-numeric '{label}', lines {_names(lines)}"
        )
    for column in ("drug", "cell_line"):
        empty = np.flatnonzero(frame[column].isna().to_numpy())
        if len(empty):
            raise DataError(
                f"{path}: {len(empty)} rows without a {column}, lines {_names([str(i + 2) for i in empty])}"
            )
    out = pd.DataFrame(
        {
            "drug": frame["drug"].astype(str).str.strip(),
            "cell_line": frame["cell_line"].astype(str).str.strip(),
        }
    )
    out["ln_ic50"] = values
    if "split" in frame.columns:
        out["split"] = frame["split"].astype(str).str.strip().str.lower()
        unknown = sorted(set(out["split"]) - {"train", "val", "test"})
        if unknown:
            raise DataError(
                f"{path}: the 'split' column holds {_names(unknown)}; expected train, val or test"
            )
    keys = ["drug", "cell_line"]
    if out.duplicated(keys).any():
        # replicate measurements of one pair: one label (their mean), so that a pair cannot sit on both
        # sides of a random split
        aggregations: dict[str, Any] = {"ln_ic50": "mean"}
        if "split" in out.columns:
            aggregations["split"] = "first"
        out = out.groupby(keys, sort=False, as_index=False).agg(aggregations)
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------- tables


@dataclass
class DrugTables:
    """Validated inputs: canonical SMILES and molecules per drug, raw expression, pairs."""

    smiles: pd.Series  # drug id -> canonical SMILES
    molecules: dict[str, Any]  # drug id -> RDKit Mol (of the canonical SMILES)
    expression: pd.DataFrame  # cell line x gene, raw values
    pairs: pd.DataFrame  # drug, cell_line, ln_ic50 (+ split)
    sources: dict[str, str]

    @property
    def drugs(self) -> list[str]:
        return list(self.smiles.index)

    @property
    def cell_lines(self) -> list[str]:
        return list(self.expression.index)

    @property
    def genes(self) -> list[str]:
        return list(self.expression.columns)


def load_tables(
    drugs: PathLike,
    expression: PathLike,
    pairs: PathLike,
    *,
    genes: PathLike | Sequence[str] | None = None,
    missing_genes: str = "error",
    label_column: str | None = None,
    unknown: str = "error",
) -> DrugTables:
    """Read and cross-check the three files.

    ``unknown``: pairs naming a drug or cell line absent from the other tables raise (``"error"``,
    naming them) or are dropped with a warning (``"drop"``).
    """
    if unknown not in ("error", "drop"):
        raise ConfigError(f"unknown must be 'error' or 'drop', got {unknown!r}")
    raw = read_drug_table(drugs)
    molecules = validate_smiles(raw.to_dict(), source=str(drugs))
    smiles = pd.Series({d: canonical_smiles(m) for d, m in molecules.items()}, name="smiles")
    smiles.index.name = "drug"
    molecules = {d: validate_smiles({d: s})[d] for d, s in smiles.items()}  # atoms in canonical order
    gene_list = read_gene_list(genes) if isinstance(genes, (str, os.PathLike)) else genes
    table = read_expression(expression, gene_list, missing_genes=missing_genes)
    pair_table = read_pairs(pairs, label_column=label_column)
    for column, known, what, source in (
        ("drug", set(smiles.index), "drugs", drugs),
        ("cell_line", set(table.index), "cell lines", expression),
    ):
        absent = ~pair_table[column].isin(known)
        if absent.any():
            names = pair_table.loc[absent, column].unique()
            message = f"{pairs}: {absent.sum()} pairs name {len(names)} {what} missing from {source}: "
            message += _names(names)
            if unknown == "error":
                raise DataError(message + " (data.params.unknown=drop drops those pairs)")
            warnings.warn(message + "; dropping them", stacklevel=2)
            pair_table = pair_table[~absent].reset_index(drop=True)
    if pair_table.empty:
        raise DataError(f"{pairs}: no pair left whose drug and cell line are both known")
    sources = {"drugs": str(drugs), "expression": str(expression), "pairs": str(pairs)}
    if isinstance(genes, (str, os.PathLike)):
        sources["genes"] = str(genes)
    return DrugTables(smiles, molecules, table, pair_table, sources)


# ---------------------------------------------------------------------------------------- splits


def _group_split(keys: np.ndarray, fraction: float, rng: np.random.Generator, what: str) -> np.ndarray:
    """Boolean mask of the rows whose group falls in a random ``fraction`` of the groups."""
    groups = np.unique(keys)
    n = int(round(fraction * len(groups)))
    if fraction > 0:
        n = max(1, n)
    if n >= len(groups):
        raise DataError(
            f"cannot hold out {fraction:.0%} of {len(groups)} {what}: at least one must stay for training"
        )
    chosen = rng.permutation(groups)[:n]
    return np.isin(keys, chosen)


def _random_split(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(fraction * n))]] = True
    return mask


def split_pairs(
    pairs: pd.DataFrame,
    how: str = "random",
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    seed: int = 0,
    val_how: str | None = None,
) -> dict[str, np.ndarray]:
    """Sorted row indices ``{'train', 'val', 'test'}`` of ``pairs``, disjoint and covering every row.

    ``test_fraction`` is a fraction of the pairs (``random``) or of the cell lines / drugs held out;
    ``val_fraction`` is taken the same way from what remains (``val_how`` overrides how; for
    ``column`` it defaults to ``random`` and applies only when the column names no ``val`` rows).
    """
    if how not in SPLIT_MODES:
        raise ConfigError(f"split must be one of {', '.join(SPLIT_MODES)}, got {how!r}")
    val_how = val_how or ("random" if how == "column" else how)
    if val_how not in SPLIT_MODES[:3]:
        raise ConfigError(f"val_split must be one of {', '.join(SPLIT_MODES[:3])}, got {val_how!r}")
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    rng = np.random.default_rng(seed)
    n = len(pairs)
    column = {"cell_line": "cell_line", "drug": "drug"}

    def held_out(mode: str, rows: np.ndarray, fraction: float) -> np.ndarray:
        if mode == "random":
            return rows[_random_split(len(rows), fraction, rng)]
        keys = pairs[column[mode]].to_numpy()[rows]
        return rows[_group_split(keys, fraction, rng, mode.replace("_", " ") + "s")]

    everything = np.arange(n)
    if how == "column":
        if "split" not in pairs.columns:
            raise DataError("split=column needs a 'split' column (train / val / test) in the pairs table")
        labels = pairs["split"].to_numpy()
        test = everything[labels == "test"]
        val = everything[labels == "val"]
        rest = everything[labels == "train"]
        if len(val) == 0 and val_fraction > 0:
            val = held_out(val_how, rest, val_fraction)
    else:
        test = held_out(how, everything, test_fraction)
        rest = np.setdiff1d(everything, test)
        val = held_out(val_how, rest, val_fraction)
    train = np.setdiff1d(np.setdiff1d(everything, test), val)
    if len(train) == 0:
        raise DataError("the training split is empty: lower test_fraction / val_fraction")
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


# ---------------------------------------------------------------------------------------- scalers


@dataclass
class Standardizer:
    """Per-gene ``(x - mean) / sd`` with mean and sd fitted on training cell lines (sd 0 -> 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        values = np.asarray(values, dtype=np.float64)
        if len(values) == 0:
            raise DataError("cannot standardise expression: no training cell lines")
        std = values.std(axis=0)
        # a gene constant over the training cell lines carries no signal: leave it centred, unscaled
        std = np.where(std > 0, std, 1.0)
        return cls(values.mean(axis=0), std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std


def fit_min_max(values: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the training labels; equal values cannot be min-max scaled."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise DataError("cannot scale ln IC50: the training split has no pairs")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        raise DataError(f"cannot min-max scale ln IC50: every training label equals {low}")
    return low, high


# ------------------------------------------------------------------------------------ data module


class PairBatches(Dataset):
    """Pairs of one split; ``dataset[list of rows]`` returns a whole batch (one call per batch)."""

    def __init__(
        self, module: DrugSensitivityDataModule, rows: np.ndarray, *, augment: bool, seed: int
    ) -> None:
        self.module = module
        self.rows = rows
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: Sequence[int]) -> dict[str, Tensor]:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        m = self.module
        drugs = m.pair_drug[rows]
        cells = m.pair_cell[rows]
        if self.augment:
            # one random SMILES per drug of the batch (RDKit's doRandom writer, seeded here)
            unique, inverse = np.unique(drugs, return_inverse=True)
            seeds = self.rng.integers(0, 2**31 - 1, size=len(unique))
            encoded = torch.stack(
                [m.encode(randomized_smiles(m.molecules[m.drug_ids[d]], s)) for d, s in zip(unique, seeds)]
            )
            smiles = encoded[torch.from_numpy(inverse)]
        else:
            smiles = m.canonical_tokens[torch.from_numpy(drugs)]
        return {
            "smiles": smiles,
            "expression": m.expression_tensor[torch.from_numpy(cells)],
            "fingerprint": m.fingerprint_tensor[torch.from_numpy(drugs)],
            "label": m.scaled_labels[torch.from_numpy(rows)],
            "drug": torch.from_numpy(drugs),
            "cell_line": torch.from_numpy(cells),
        }


class DrugSensitivityDataModule(pl.LightningDataModule):
    """(drug, cell line) -> scaled ln IC50 batches for MCA and the fingerprint baselines.

    A batch is a dict: ``smiles`` ``[B, L]`` token ids (``<start>`` ... ``<stop>``, ``<pad>`` = 0 after),
    ``expression`` ``[B, G]`` standardised, ``fingerprint`` ``[B, n_bits]`` 0/1 floats, ``label`` ``[B]``
    min-max scaled ln IC50, ``drug`` and ``cell_line`` ``[B]`` indices into ``drug_ids`` / ``cell_lines``.
    ``info`` feeds the model and task factories: ``vocab_size``, ``n_genes``, ``smiles_length``,
    ``fingerprint_bits``, ``label_min``, ``label_max``.
    """

    def __init__(
        self,
        tables: DrugTables,
        *,
        split: str = "random",
        test_fraction: float = 0.1,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        val_split: str | None = None,
        augment: bool = True,
        smiles_length: int | None = None,
        fingerprint_bits: int = 512,
        fingerprint_radius: int = 2,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.tables = tables
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.predict_split = "test"
        self.split_settings = dict(
            split=split, test_fraction=test_fraction, val_fraction=val_fraction, seed=split_seed
        )
        self.index = split_pairs(
            tables.pairs,
            split,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            seed=split_seed,
            val_how=val_split,
        )
        self.drug_ids = tables.drugs
        self.cell_lines = tables.cell_lines
        self.genes = tables.genes
        self.molecules = tables.molecules
        drug_position = {d: i for i, d in enumerate(self.drug_ids)}
        cell_position = {c: i for i, c in enumerate(self.cell_lines)}
        self.pair_drug = tables.pairs["drug"].map(drug_position).to_numpy(dtype=np.int64)
        self.pair_cell = tables.pairs["cell_line"].map(cell_position).to_numpy(dtype=np.int64)
        self.labels = tables.pairs["ln_ic50"].to_numpy(dtype=np.float64)
        fingerprints = morgan_fingerprints(
            [self.molecules[d] for d in self.drug_ids], radius=fingerprint_radius, n_bits=fingerprint_bits
        )
        self.fingerprint_tensor = torch.from_numpy(fingerprints.astype(np.float32))
        self.fingerprint_bits = fingerprint_bits
        self._requested_length = smiles_length
        self._truncated = 0
        self._fit()

    # -- fitting (training split only) ------------------------------------------------------------
    def _fit(self) -> None:
        train = self.index["train"]
        train_drugs = np.unique(self.pair_drug[train])
        train_cells = np.unique(self.pair_cell[train])
        smiles = self.tables.smiles
        texts = [smiles.iloc[d] for d in train_drugs]
        if self.augment:
            # augmented training SMILES may use ring-closure digits / branches the canonical ones lack
            texts += [
                randomized_smiles(self.molecules[self.drug_ids[d]], k) for d in train_drugs for k in range(5)
            ]
        self.vocabulary = SmilesVocabulary.fit(texts)
        self.standardizer = Standardizer.fit(self.tables.expression.to_numpy()[train_cells])
        self.label_min, self.label_max = fit_min_max(self.labels[train])
        self._build()

    def _build(self) -> None:
        if self._requested_length is not None:
            self.smiles_length = int(self._requested_length)
        else:
            # the longest canonical SMILES (+ start/stop) with 20% room for the longer random forms
            longest = max(len(self.vocabulary.encode(s)) for s in self.tables.smiles)
            self.smiles_length = int(math.ceil(longest * 1.2))
        if self.smiles_length < 3:
            raise ConfigError(
                f"smiles_length must be >= 3 (start, one token, stop), got {self.smiles_length}"
            )
        self.canonical_tokens = torch.stack([self.encode(s) for s in self.tables.smiles])
        self.expression_tensor = torch.from_numpy(
            self.standardizer.transform(self.tables.expression.to_numpy()).astype(np.float32)
        )
        scaled = (self.labels - self.label_min) / (self.label_max - self.label_min)
        self.scaled_labels = torch.from_numpy(scaled.astype(np.float32))
        self.info = {
            "vocab_size": len(self.vocabulary),
            "n_genes": len(self.genes),
            "smiles_length": self.smiles_length,
            "fingerprint_bits": self.fingerprint_bits,
            "label_min": self.label_min,
            "label_max": self.label_max,
        }
        self.datasets: dict[str, PairBatches] = {}

    def encode(self, smiles: str) -> Tensor:
        """Token ids of ``smiles`` padded (or cut, keeping ``<stop>``) to ``smiles_length``."""
        ids = self.vocabulary.encode(smiles)
        if len(ids) > self.smiles_length:
            self._truncated += 1
            if self._truncated == 1:
                warnings.warn(
                    f"SMILES longer than smiles_length={self.smiles_length} tokens are cut "
                    f"(first: {len(ids)} tokens); raise data.params.smiles_length to keep them whole",
                    stacklevel=2,
                )
            ids = [*ids[: self.smiles_length - 1], self.vocabulary.stop_id]
        out = torch.zeros(self.smiles_length, dtype=torch.long)
        out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def scaled_to_ln_ic50(self, values: Tensor | np.ndarray) -> Tensor | np.ndarray:
        return values * (self.label_max - self.label_min) + self.label_min

    # -- Lightning ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {
                split: PairBatches(self, rows, augment=self.augment and split == "train", seed=self.seed + i)
                for i, (split, rows) in enumerate(self.index.items())
            }

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise DataError(f"the {split} split has no pairs (check the split fractions)")
        if shuffle:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed))
        else:
            sampler = SequentialSampler(dataset)
        size = self.batch_size if shuffle else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=BatchSampler(sampler, size, drop_last=False),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

    def batches(self, split: str) -> DataLoader:
        """Unshuffled, unaugmented batches of any split (explanations, tree baselines)."""
        self.setup()
        dataset = PairBatches(self, self.index[split], augment=False, seed=0)
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=BatchSampler(SequentialSampler(dataset), self.eval_batch_size, drop_last=False),
        )

    # -- arrays for the tree baseline and reports --------------------------------------------------
    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features, ln_ic50)`` of a split: [fingerprint bits | standardised expression] per pair."""
        rows = self.index[split]
        features = np.concatenate(
            [
                self.fingerprint_tensor.numpy()[self.pair_drug[rows]],
                self.expression_tensor.numpy()[self.pair_cell[rows]],
            ],
            axis=1,
        )
        return features, self.labels[rows]

    def pairs(self, split: str) -> pd.DataFrame:
        return self.tables.pairs.iloc[self.index[split]].reset_index(drop=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "vocabulary": self.vocabulary.state_dict(),
            "expression_mean": self.standardizer.mean.tolist(),
            "expression_std": self.standardizer.std.tolist(),
            "genes": list(self.genes),
            "label_min": self.label_min,
            "label_max": self.label_max,
            "smiles_length": self.smiles_length,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Reuse what a checkpoint was fitted on (vocabulary, scalers, padding length)."""
        if list(state["genes"]) != list(self.genes):
            raise DataError(
                "the expression genes differ from the checkpoint's "
                f"({len(self.genes)} vs {len(state['genes'])}): give the same gene list"
            )
        self.vocabulary = SmilesVocabulary.from_state_dict(state["vocabulary"])
        self.standardizer = Standardizer(
            np.asarray(state["expression_mean"], dtype=np.float64),
            np.asarray(state["expression_std"], dtype=np.float64),
        )
        self.label_min, self.label_max = float(state["label_min"]), float(state["label_max"])
        self._requested_length = int(state["smiles_length"])
        self._build()


# ------------------------------------------------------------------------------ registered datasets


def _writable_base(root: PathLike | None) -> Path:
    """``<root>/bio`` when it can be written, else ``~/.cache/interplay/bio`` (generated files only)."""
    base = (Path(root).expanduser() if root is not None else data_root()) / "bio"
    probe = base
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return base if os.access(probe, os.W_OK) else Path("~/.cache/interplay/bio").expanduser()


def resolve_input(name: PathLike, root: PathLike | None, *, what: str, key: str) -> Path:
    """``name`` as given (absolute or existing), else under ``<root>`` or ``<root>/bio``; without a root,
    under ``$INTERPLAY_DATA/bio``. A missing file is one error naming every place tried."""
    candidate = Path(name).expanduser()
    if candidate.is_absolute() or candidate.exists():
        tried = [candidate]
    elif root is not None:
        tried = [Path(root).expanduser() / candidate, Path(root).expanduser() / "bio" / candidate]
    else:
        tried = [data_root() / "bio" / candidate]
    for path in tried:
        if path.is_file():
            return path
    hint = (
        "set data.root=DIR, the directory holding drugs.csv, gene_expression.csv (or .h5ad), pairs.csv "
        "and optionally genes.txt (see docs/reproductions/mca.md)"
        if root is None
        else "check data.root"
    )
    raise DataError(
        f"{what} not found: {' or '.join(map(str, tried))} ({hint}, or give data.params.{key}=PATH)"
    )


def drug_sensitivity(
    root: PathLike | None = None,
    batch_size: int = 64,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    drugs: PathLike = "drugs.csv",
    expression: PathLike | None = None,
    pairs: PathLike = "pairs.csv",
    genes: PathLike | None = None,
    missing_genes: str = "error",
    label_column: str | None = None,
    unknown: str = "error",
    split: str = "random",
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    val_split: str | None = None,
    augment: bool = True,
    smiles_length: int | None = None,
    fingerprint_bits: int = 512,
    fingerprint_radius: int = 2,
) -> DrugSensitivityDataModule:
    """Drug sensitivity from files under ``data.root`` (GDSC as prepared for PaccMann, or your own)."""
    drug_file = resolve_input(drugs, root, what="drug table", key="drugs")
    if expression is None:
        try:
            expression_file = resolve_input("gene_expression.csv", root, what="expression", key="expression")
        except DataError:
            expression_file = resolve_input(
                "gene_expression.h5ad",
                root,
                what="gene expression table (gene_expression.csv or .h5ad)",
                key="expression",
            )
    else:
        expression_file = resolve_input(expression, root, what="gene expression table", key="expression")
    pair_file = resolve_input(pairs, root, what="IC50 pairs table", key="pairs")
    gene_file = resolve_input(genes, root, what="gene list", key="genes") if genes is not None else None
    tables = load_tables(
        drug_file,
        expression_file,
        pair_file,
        genes=gene_file,
        missing_genes=missing_genes,
        label_column=label_column,
        unknown=unknown,
    )
    return DrugSensitivityDataModule(
        tables,
        split=split,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        split_seed=split_seed,
        val_split=val_split,
        augment=augment,
        smiles_length=smiles_length,
        fingerprint_bits=fingerprint_bits,
        fingerprint_radius=fingerprint_radius,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


def synthetic_drug_dir(
    root: PathLike | None = None,
    *,
    n_drugs: int = 60,
    n_cell_lines: int = 80,
    n_genes: int = 200,
    n_pathways: int = 10,
    pair_fraction: float = 0.8,
    data_seed: int = 0,
    expression_format: str = "csv",
) -> Path:
    """The directory of the synthetic files for these settings, generated on first use."""
    from interplay.bio.drug.synthetic import SYNTHETIC_VERSION, write_synthetic_drug_data

    name = (
        f"drug-v{SYNTHETIC_VERSION}-d{n_drugs}-c{n_cell_lines}-g{n_genes}-p{n_pathways}"
        f"-f{pair_fraction:g}-s{data_seed}-{expression_format}"
    )
    directory = _writable_base(root) / "synthetic" / name
    if not (directory / "truth.json").is_file():  # written last: its presence means complete
        write_synthetic_drug_data(
            directory,
            n_drugs=n_drugs,
            n_cell_lines=n_cell_lines,
            n_genes=n_genes,
            n_pathways=n_pathways,
            pair_fraction=pair_fraction,
            expression_format=expression_format,
            seed=data_seed,
        )
    return directory


def synthetic_drug_sensitivity(
    root: PathLike | None = None,
    batch_size: int = 64,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    n_drugs: int = 60,
    n_cell_lines: int = 80,
    n_genes: int = 200,
    n_pathways: int = 10,
    pair_fraction: float = 0.8,
    data_seed: int = 0,
    expression_format: str = "csv",
    split: str = "random",
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    val_split: str | None = None,
    augment: bool = True,
    smiles_length: int | None = None,
    fingerprint_bits: int = 512,
    fingerprint_radius: int = 2,
) -> DrugSensitivityDataModule:
    """NCI molecules x synthetic cell lines with planted interactions (see :mod:`.synthetic`)."""
    directory = synthetic_drug_dir(
        root,
        n_drugs=n_drugs,
        n_cell_lines=n_cell_lines,
        n_genes=n_genes,
        n_pathways=n_pathways,
        pair_fraction=pair_fraction,
        data_seed=data_seed,
        expression_format=expression_format,
    )
    expression = "gene_expression.h5ad" if expression_format == "h5ad" else "gene_expression.csv"
    tables = load_tables(
        directory / "drugs.csv",
        directory / expression,
        directory / "pairs.csv",
        genes=directory / "genes.txt",
    )
    return DrugSensitivityDataModule(
        tables,
        split=split,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        split_seed=split_seed,
        val_split=val_split,
        augment=augment,
        smiles_length=smiles_length,
        fingerprint_bits=fingerprint_bits,
        fingerprint_radius=fingerprint_radius,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        seed=seed,
    )


synthetic_drug_sensitivity.download = lambda root=None: synthetic_drug_dir(root)  # type: ignore[attr-defined]


def _gdsc_download(root: PathLike | None = None) -> str:
    target = (Path(root).expanduser() if root is not None else data_root()) / "bio" / "gdsc"
    return (
        "GDSC as prepared for PaccMann is linked from the paccmann_predictor README "
        "(https://ibm.box.com/v/paccmann-pytoda-data; it needs a browser). Put under "
        f"{target}: drugs (.smi 'SMILES<tab>id' or drugs.csv), gene_expression.csv (cell lines x genes), "
        "pairs.csv (drug, cell_line, IC50, optional split column) and genes.txt (the 2,128-gene panel, one "
        "name per line); docs/reproductions/mca.md shows the conversion"
    )


drug_sensitivity.download = _gdsc_download  # type: ignore[attr-defined]
