"""Protein-protein complexes with a binding affinity: the PPB-Affinity reader, splits, synthetic data.

Data of Alsamkary et al., "Beyond Simple Concatenation: Fairly Assessing PLM Architectures for
Multi-Chain Protein-Protein Interactions Prediction" (arXiv:2505.20036, 2025): their curated
PPB-Affinity (Liu et al., Scientific Data 11:1316, 2024; 8,207 unique complexes after removing
chains shorter than 40 residues and merging duplicates), split by <= 30% sequence-identity clusters
(MMseqs2 ``easy-cluster --min-seq-id 0.3 --cluster-mode 1``, connected components, coverage 0.8).

The CSV format (one row per complex; the columns read here, others are kept out of the way):

* ``Ligand Sequences`` / ``Receptor Sequences``: the chains of each side, comma-separated
  (``"DIKMTQ...,EVQLVE..."``), as in the PPB-Affinity tables and Alsamkary et al.'s
  ``multi_chain_preprocessing(sep=",")``.
* ``KD(M)``: the dissociation constant in mol/L; the label is ``pKd = -log10(KD + label_eps)``
  (``label_eps = 0`` by default; Alsamkary et al.'s code uses ``|log10(KD + 1e-10)|``, which
  saturates near pKd 10 -- set ``label_eps=1e-10`` to reproduce it).
* the complex id: ``id_column`` when given, else ``fasta_id`` when present, else ``<PDB>_<row>``
  (the id Alsamkary et al. gave each row in the FASTA file they clustered), else ``complex_<row>``.

Amino-acid alphabet: the 20 standard one-letter codes plus ``X`` (unknown), ``B`` (Asx), ``Z``
(Glx), ``U`` (selenocysteine) and ``O`` (pyrrolysine) -- the letters ESM-2's vocabulary has tokens
for, so every accepted chain can be embedded as written. Lower-case letters are upper-cased
(some files mark low-complexity stretches in lower case); anything else (gaps ``-``, stops ``*``,
digits, blanks inside a chain) raises :class:`~interplay.core.errors.DataError` naming the complex.

Cluster files: the MMseqs2 ``<prefix>_cluster.tsv`` (two tab-separated columns, representative and
member, no header) or a CSV with ``complex_id`` and ``cluster_id`` columns. :func:`cluster_split`
puts whole clusters into test, validation and train (seeded), so no cluster straddles two splits.

:func:`write_synthetic_ppb_affinity` writes the same format with a planted cross-chain signal.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from interplay.core.data import atomic_write, require_file
from interplay.core.errors import ConfigError, DataError

__all__ = [
    "ALPHABET",
    "KD_COLUMN",
    "LIGAND_COLUMN",
    "RECEPTOR_COLUMN",
    "STANDARD_AMINO_ACIDS",
    "SYNTHETIC_VERSION",
    "Complex",
    "SyntheticPPI",
    "check_chain",
    "cluster_split",
    "random_split",
    "read_clusters",
    "read_ppb_affinity",
    "write_synthetic_ppb_affinity",
]

LIGAND_COLUMN = "Ligand Sequences"
RECEPTOR_COLUMN = "Receptor Sequences"
KD_COLUMN = "KD(M)"
CHAIN_SEPARATOR = ","
#: bumped whenever write_synthetic_ppb_affinity changes what a given seed produces
SYNTHETIC_VERSION = 4

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: accepted residue letters: the 20 standard ones, then X, B, Z, U, O (all in ESM-2's vocabulary)
ALPHABET = STANDARD_AMINO_ACIDS + "XBZUO"
_ALPHABET_SET = frozenset(ALPHABET)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Complex:
    """One protein-protein complex: its ligand chains, receptor chains and pKd = -log10(KD / M)."""

    complex_id: str
    ligand: tuple[str, ...]
    receptor: tuple[str, ...]
    pkd: float

    @property
    def chains(self) -> tuple[str, ...]:
        return self.ligand + self.receptor


def check_chain(sequence: str, *, complex_id: str, side: str, index: int, source: str = "input") -> str:
    """The chain upper-cased; a letter outside :data:`ALPHABET` raises a DataError naming the complex."""
    chain = sequence.strip().upper()
    if not chain:
        raise DataError(f"{source}: complex {complex_id!r}: {side} chain {index + 1} is empty")
    bad = sorted({c for c in chain if c not in _ALPHABET_SET})
    if bad:
        where = chain.index(bad[0]) + 1
        shown = ", ".join(repr(c) for c in bad)
        raise DataError(
            f"{source}: complex {complex_id!r}: {side} chain {index + 1} has characters outside the "
            f"amino-acid alphabet ({shown}; first at residue {where}); allowed: {ALPHABET}"
        )
    return chain


def _split_chains(value: str, *, complex_id: str, side: str, source: str) -> tuple[str, ...]:
    if not value.strip():
        raise DataError(f"{source}: complex {complex_id!r} has no {side} sequence")
    parts = value.split(CHAIN_SEPARATOR)
    return tuple(
        check_chain(part, complex_id=complex_id, side=side, index=i, source=source)
        for i, part in enumerate(parts)
    )


def _complex_ids(frame: pd.DataFrame, id_column: str | None, source: str) -> list[str]:
    if id_column is not None:
        if id_column not in frame.columns:
            raise DataError(
                f"{source}: id column {id_column!r} not found (columns: {', '.join(frame.columns)})"
            )
        ids = [str(v).strip() for v in frame[id_column]]
        blank = [i for i, v in enumerate(ids) if not v]
        if blank:
            raise DataError(f"{source}: column {id_column!r} is empty on line {blank[0] + 2}")
    elif "fasta_id" in frame.columns:
        ids = [str(v).strip() for v in frame["fasta_id"]]
        id_column = "fasta_id"
    elif "PDB" in frame.columns:
        ids = [f"{str(pdb).strip()}_{i}" for i, pdb in enumerate(frame["PDB"])]
    else:
        ids = [f"complex_{i}" for i in range(len(frame))]
    if len(set(ids)) != len(ids):
        dupes = pd.Series(ids)[pd.Series(ids).duplicated()].unique()[:5]
        raise DataError(
            f"{source}: complex ids in {id_column!r} are not unique ({', '.join(map(str, dupes))}); "
            "give another id_column"
        )
    return ids


def read_ppb_affinity(
    path: PathLike,
    *,
    id_column: str | None = None,
    label_eps: float = 0.0,
    sep: str = ",",
) -> list[Complex]:
    """Complexes of a PPB-Affinity-format CSV (plain, .gz or .zip), in file order.

    Errors name the file, the line (header = line 1) and the complex: a missing column, a KD that is
    not a positive number, an empty side, a residue outside :data:`ALPHABET`.
    """
    file = require_file(path, "PPB-Affinity CSV")
    source = str(file)
    if label_eps < 0:
        raise ConfigError(f"label_eps must be >= 0, got {label_eps}")
    try:
        frame = pd.read_csv(file, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise DataError(f"{source}: cannot be read as a CSV table: {err}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in (LIGAND_COLUMN, RECEPTOR_COLUMN, KD_COLUMN) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(frame.columns) or 'none'})"
        )
    if frame.empty:
        raise DataError(f"{source}: no complexes (the table has a header but no rows)")
    ids = _complex_ids(frame, id_column, source)
    complexes = []
    for row, (cid, ligand, receptor, kd_text) in enumerate(
        zip(ids, frame[LIGAND_COLUMN], frame[RECEPTOR_COLUMN], frame[KD_COLUMN], strict=True)
    ):
        where = f"{source} line {row + 2}"
        try:
            kd = float(kd_text)
        except ValueError:
            kd = math.nan
        if not (math.isfinite(kd) and kd > 0):
            raise DataError(
                f"{where}: complex {cid!r}: {KD_COLUMN} must be a positive number, got {kd_text!r}"
            )
        complexes.append(
            Complex(
                complex_id=cid,
                ligand=_split_chains(ligand, complex_id=cid, side="ligand", source=where),
                receptor=_split_chains(receptor, complex_id=cid, side="receptor", source=where),
                pkd=-math.log10(kd + label_eps),
            )
        )
    return complexes


# --------------------------------------------------------------------------------------- splits
def read_clusters(path: PathLike) -> dict[str, str]:
    """``complex id -> cluster id`` from an MMseqs2 ``*_cluster.tsv`` or a complex_id,cluster_id CSV."""
    file = require_file(path, "cluster file")
    source = str(file)
    with open(file, newline="") as handle:
        text = handle.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{source}: the cluster file is empty")
    if "\t" in lines[0]:
        rows = [line.split("\t") for line in lines]
        header = [c.strip().lower() for c in rows[0]]
        if "complex_id" in header and "cluster_id" in header:
            member_at, cluster_at = header.index("complex_id"), header.index("cluster_id")
            rows = rows[1:]
        else:  # MMseqs2: representative <tab> member
            member_at, cluster_at = 1, 0
    else:
        rows = list(csv.reader(lines))
        header = [c.strip().lower() for c in rows[0]]
        if "complex_id" not in header or "cluster_id" not in header:
            raise DataError(
                f"{source}: expected an MMseqs2 cluster TSV (representative<TAB>member) or a CSV "
                f"with columns complex_id and cluster_id, got header {rows[0]}"
            )
        member_at, cluster_at = header.index("complex_id"), header.index("cluster_id")
        rows = rows[1:]
    clusters: dict[str, str] = {}
    for number, fields in enumerate(rows, start=1):
        if len(fields) <= max(member_at, cluster_at):
            raise DataError(f"{source}: entry {number} has {len(fields)} field(s), expected 2: {fields}")
        member, cluster = fields[member_at].strip(), fields[cluster_at].strip()
        if not member or not cluster:
            raise DataError(f"{source}: entry {number} has an empty complex or cluster id")
        if clusters.setdefault(member, cluster) != cluster:
            raise DataError(
                f"{source}: complex {member!r} is in two clusters ({clusters[member]!r}, {cluster!r})"
            )
    return clusters


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and sum to less than 1"
        )


def cluster_split(
    complex_ids: Sequence[str],
    clusters: dict[str, str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    source: str = "cluster file",
) -> dict[str, np.ndarray]:
    """Index arrays ``{'train', 'val', 'test'}`` that keep every identity cluster whole.

    Clusters are shuffled with ``seed`` and dealt to test until it holds ``test_fraction`` of the
    complexes, then to validation, the rest to train; so split sizes match the fractions up to one
    cluster. Complexes absent from the cluster file raise a DataError naming them.
    """
    _check_fractions(val_fraction, test_fraction)
    missing = [c for c in complex_ids if c not in clusters]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5])
        raise DataError(f"{source}: {len(missing)} complex(es) have no cluster: {shown}")
    labels = np.array([clusters[c] for c in complex_ids], dtype=object)
    names = np.array(sorted(set(labels.tolist())), dtype=object)
    wanted = [s for s, f in (("test", test_fraction), ("val", val_fraction)) if f > 0]
    if len(names) < len(wanted) + 1:
        raise DataError(
            f"{source}: {len(names)} identity cluster(s) cannot fill train and {' and '.join(wanted)} "
            "without sharing a cluster"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    sizes = pd.Series(labels).value_counts()
    n = len(complex_ids)
    assignment: dict[str, str] = {}
    position = 0
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        target, taken = fraction * n, 0
        # leave at least one cluster for each later split
        later = 1 + (split == "test" and val_fraction > 0)
        while fraction > 0 and (taken == 0 or taken < target) and position < len(order) - later:
            name = names[order[position]]
            assignment[name] = split
            taken += int(sizes[name])
            position += 1
    for i in order[position:]:
        assignment[names[i]] = "train"
    split_of = np.array([assignment[c] for c in labels])
    return {s: np.flatnonzero(split_of == s) for s in ("train", "val", "test")}


def random_split(
    n: int, *, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, np.ndarray]:
    """Disjoint random index arrays ``{'train', 'val', 'test'}`` (ignores sequence identity)."""
    _check_fractions(val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


# ------------------------------------------------------------------------------------ synthetic
@dataclass
class SyntheticPPI:
    """Where :func:`write_synthetic_ppb_affinity` wrote its files and what it planted."""

    csv: Path
    clusters: Path
    truth: Path
    motifs: list[str]
    potential: np.ndarray  # [n_motifs, n_motifs], symmetric
    pkd: np.ndarray = field(repr=False)


def _motif_sets(chains: Sequence[str], motifs: Sequence[str]) -> np.ndarray:
    return np.array([any(m in chain for chain in chains) for m in motifs], dtype=np.float64)


def write_synthetic_ppb_affinity(
    directory: PathLike,
    *,
    n_complexes: int = 800,
    n_families: int = 80,
    n_motifs: int = 4,
    motif_length: int = 3,
    chain_length: tuple[int, int] = (16, 32),
    max_chains: int = 2,
    copies: tuple[int, int] = (2, 3),
    kinds: tuple[int, int] = (2, 3),
    hotspot_residues: str = "WYRC",
    mutation_rate: float = 0.1,
    noise: float = 0.3,
    seed: int = 0,
) -> SyntheticPPI:
    """Write ``ppb_affinity.csv``, ``clusters.tsv`` and ``truth.json`` into ``directory``.

    Each complex belongs to one of ``n_families`` families (random parent chains, 1 to
    ``max_chains`` per side, point-mutated at ``mutation_rate`` per residue, so a family is one
    high-identity cluster and families share ~6% identity). Background residues are drawn from the
    standard amino acids other than ``hotspot_residues`` (default W, Y, R, C: the residues enriched
    at real binding hot spots, Bogan & Thorn 1998, and Cys); motifs are random ``motif_length``-mers
    OVER the hotspot residues, so they never occur by chance but telling them apart takes their
    order. Each complex gets ``kinds`` distinct motifs, each on a random side (``copies`` times, on
    random chains of that side), and the label depends only on *cross-chain* motif pairs::

        pKd = 7 + sum_{a on a ligand chain} sum_{b on a receptor chain} W[a, b] + noise,

    with ``W`` symmetric (``truth.json``). The same motifs interact or not depending on their sides,
    so a model that sees only the union of both sides' residues (EC) can at best predict the average
    over side assignments (Spearman ~0.7 of the noise-free label for two motifs), while one that keeps
    ligand and receptor apart (HP, PAD) can reach the noise ceiling: the paper's argument for them.
    """
    if n_complexes < 3 or n_families < 3:
        raise ConfigError(f"need at least 3 complexes and 3 families, got {n_complexes} and {n_families}")
    low, high = chain_length
    if not (motif_length * 3 <= low <= high):
        raise ConfigError(f"chain_length {chain_length} must satisfy 3 * motif_length <= min <= max")
    hotspots = np.array(sorted(set(hotspot_residues)))
    if not set(hotspot_residues) <= set(STANDARD_AMINO_ACIDS) or len(hotspots) ** motif_length < n_motifs:
        raise ConfigError(f"hotspot_residues {hotspot_residues!r} cannot make {n_motifs} distinct motifs")
    rng = np.random.default_rng(seed)
    letters = np.array([c for c in STANDARD_AMINO_ACIDS if c not in hotspot_residues])
    motifs: list[str] = []
    while len(motifs) < n_motifs:
        motif = "".join(rng.choice(hotspots, motif_length))
        if motif not in motifs:
            motifs.append(motif)
    upper = rng.normal(0.0, 1.0, (n_motifs, n_motifs))
    potential = np.triu(upper) + np.triu(upper, 1).T

    def random_chain() -> str:
        return "".join(rng.choice(letters, int(rng.integers(low, high + 1))))

    families = [
        (
            [random_chain() for _ in range(int(rng.integers(1, max_chains + 1)))],
            [random_chain() for _ in range(int(rng.integers(1, max_chains + 1)))],
        )
        for _ in range(n_families)
    ]

    def mutate(chain: str) -> list[str]:
        residues = list(chain)
        for i in np.flatnonzero(rng.random(len(residues)) < mutation_rate):
            residues[i] = str(rng.choice(letters))
        return residues

    def plant(ligand: list[list[str]], receptor: list[list[str]]) -> None:
        # each motif goes to a side at random: the same motifs interact or not depending on sides
        for m in rng.choice(n_motifs, size=int(rng.integers(kinds[0], kinds[1] + 1)), replace=False):
            chains = ligand if rng.random() < 0.5 else receptor
            for _ in range(int(rng.integers(copies[0], copies[1] + 1))):
                chain = chains[int(rng.integers(len(chains)))]
                start = int(rng.integers(0, len(chain) - motif_length + 1))
                chain[start : start + motif_length] = list(motifs[m])

    rows, cluster_rows, labels = [], [], []
    representative: dict[int, str] = {}
    chain_names = "ABCDEFGH"
    for i in range(n_complexes):
        family = i % n_families if i < n_families else int(rng.integers(n_families))
        ligand = [mutate(c) for c in families[family][0]]
        receptor = [mutate(c) for c in families[family][1]]
        plant(ligand, receptor)
        ligand_seqs = ["".join(c) for c in ligand]
        receptor_seqs = ["".join(c) for c in receptor]
        on_ligand, on_receptor = _motif_sets(ligand_seqs, motifs), _motif_sets(receptor_seqs, motifs)
        pkd = 7.0 + float(on_ligand @ potential @ on_receptor) + float(rng.normal(0.0, noise))
        labels.append(pkd)
        pdb = f"S{family:03d}"
        complex_id = f"{pdb}_{i}"
        representative.setdefault(family, complex_id)
        cluster_rows.append((representative[family], complex_id))
        lig_names = chain_names[: len(ligand)]
        rec_names = chain_names[len(ligand) : len(ligand) + len(receptor)]
        rows.append(
            {
                "Source Data Set": "synthetic",
                "Complex ID": f"{pdb}:{', '.join(lig_names + rec_names)}::SYN={i}",
                "PDB": pdb,
                "Mutations": "",
                "Ligand Chains": ", ".join(lig_names),
                "Receptor Chains": ", ".join(rec_names),
                "Ligand Name": f"synthetic ligand {family}",
                "Receptor Name": f"synthetic receptor {family}",
                KD_COLUMN: f"{10.0 ** (-pkd):.6e}",
                "Affinity Method": "SPR",
                LIGAND_COLUMN: CHAIN_SEPARATOR.join(ligand_seqs),
                RECEPTOR_COLUMN: CHAIN_SEPARATOR.join(receptor_seqs),
            }
        )
    out = Path(directory)
    csv_path, clusters_path, truth_path = out / "ppb_affinity.csv", out / "clusters.tsv", out / "truth.json"
    with atomic_write(csv_path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(clusters_path) as handle:
        handle.writelines(f"{rep}\t{member}\n" for rep, member in cluster_rows)
    truth = {
        "formula": "pKd = 7 + sum_{a on ligand, b on receptor} W[a, b] + N(0, noise^2)",
        "motifs": motifs,
        "potential": potential.round(6).tolist(),
        "noise": noise,
        "seed": seed,
    }
    with atomic_write(truth_path) as handle:
        json.dump(truth, handle, indent=2)
        handle.write("\n")
    return SyntheticPPI(csv_path, clusters_path, truth_path, motifs, potential, np.asarray(labels))
