"""SMILES handling for drug sensitivity: validation, canonical form, atom-level tokens, augmentation,
Morgan fingerprints.

PaccMann MCA (Manica et al. 2019, "Toward explainable anticancer compound sensitivity prediction
via multimodal attention-based convolutional encoders", Mol. Pharmaceutics 16(12)) reads a drug as
its SMILES string, split into atom-level tokens (Section 2.2: one token per atom, bond, branch and
ring-closure symbol) and augmented during training by SMILES enumeration (the same molecule written
from a random starting atom and traversal order, Bjerrum 2017). Its baseline reads 512-bit Morgan
fingerprints (radius 2, ECFP4-like).

* :func:`tokenize_smiles` splits with the regular expression of Schwaller et al. (Molecular
  Transformer, 2019): bracket atoms (``[nH]``, ``[C@@H]``, ``[N+]``, ``[O-]``) are one token, as are
  the two-letter organic atoms ``Cl`` and ``Br`` and two-digit ring closures ``%10``. Joining the
  tokens gives the input back exactly; a character the expression cannot read raises an error.
* :class:`SmilesVocabulary` maps tokens to ids with ``<pad>`` = 0, ``<unk>`` = 1, ``<start>`` = 2,
  ``<stop>`` = 3, fitted on the training drugs only.
* :func:`validate_smiles` parses every drug with RDKit and raises one :class:`DataError` listing every
  drug id whose SMILES does not parse; :func:`canonical_smiles` writes RDKit's canonical form.
* :func:`randomized_smiles` is the enumeration augmentation (RDKit's ``doRandom`` writer, seeded).
* :func:`morgan_fingerprints` returns a ``[n, n_bits]`` 0/1 matrix.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from interplay.core.errors import DataError

__all__ = [
    "ATOM_TOKEN",
    "SPECIAL_TOKENS",
    "SMILES_TOKEN_PATTERN",
    "SmilesVocabulary",
    "atom_token_mask",
    "canonical_smiles",
    "mol_from_smiles",
    "morgan_fingerprints",
    "randomized_smiles",
    "tokenize_smiles",
    "validate_smiles",
]

#: Schwaller et al. (2019), plus ``%`` followed by two digits for ring closures 10-99.
SMILES_TOKEN_PATTERN = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])"
)
#: tokens that stand for one atom of the molecule (a bracket atom, an organic-subset atom, ``*``)
ATOM_TOKEN = re.compile(r"^(\[[^\]]+]|Br|Cl|B|C|N|O|S|P|F|I|b|c|n|o|s|p|\*)$")

PAD, UNK, START, STOP = "<pad>", "<unk>", "<start>", "<stop>"
SPECIAL_TOKENS = (PAD, UNK, START, STOP)


def _rdkit() -> Any:
    from rdkit import Chem, RDLogger

    # RDKit prints one line per unparsable SMILES on stderr; we report them together instead
    RDLogger.DisableLog("rdApp.*")
    return Chem


def tokenize_smiles(smiles: str, *, what: str = "SMILES") -> list[str]:
    """Atom-level tokens of ``smiles``; ``''.join(tokens) == smiles`` always holds."""
    tokens = SMILES_TOKEN_PATTERN.findall(smiles)
    if "".join(tokens) != smiles:
        # find the first character the pattern skipped, to name it
        position = 0
        for token in SMILES_TOKEN_PATTERN.finditer(smiles):
            if token.start() != position:
                break
            position = token.end()
        raise DataError(
            f"{what} {smiles!r}: cannot tokenise the character {smiles[position]!r} at position {position}"
        )
    return tokens


def atom_token_mask(tokens: Sequence[str]) -> np.ndarray:
    """``True`` where a token is an atom (in SMILES order, i.e. RDKit's atom index order)."""
    return np.array([bool(ATOM_TOKEN.match(t)) for t in tokens], dtype=bool)


def mol_from_smiles(smiles: str, *, keep_hydrogens: bool = False):
    """An RDKit molecule or ``None``. ``keep_hydrogens`` keeps explicit ``[H]`` atoms so that atom
    indices match the atom tokens one to one (RDKit would otherwise drop them)."""
    chem = _rdkit()
    if keep_hydrogens:
        params = chem.SmilesParserParams()
        params.removeHs = False
        return chem.MolFromSmiles(smiles, params)
    return chem.MolFromSmiles(smiles)


def validate_smiles(drugs: Mapping[str, str], *, source: str = "drug table") -> dict[str, Any]:
    """RDKit molecules of ``{drug id: SMILES}``; every drug that does not parse is named in one error."""
    molecules, invalid = {}, []
    for drug, smiles in drugs.items():
        mol = mol_from_smiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
        if mol is None or mol.GetNumAtoms() == 0:
            invalid.append(f"{drug} ({smiles!r})")
        else:
            molecules[drug] = mol
    if invalid:
        raise DataError(
            f"{source}: {len(invalid)} invalid SMILES (RDKit cannot parse them), drug ids: "
            + ", ".join(invalid)
        )
    return molecules


def canonical_smiles(mol) -> str:
    """RDKit's canonical SMILES (isomeric), so that one molecule always reads the same at test time."""
    return _rdkit().MolToSmiles(mol, canonical=True)


def randomized_smiles(mol, seed: int) -> str:
    """The molecule written from a random atom order (RDKit ``doRandom``, non-canonical), seeded."""
    chem = _rdkit()
    return chem.MolToRandomSmilesVect(mol, 1, randomSeed=int(seed) % (2**31 - 1))[0]


def morgan_fingerprints(molecules: Iterable[Any], *, radius: int = 2, n_bits: int = 512) -> np.ndarray:
    """``[n, n_bits]`` uint8 bit vectors of the Morgan (ECFP-like) fingerprint of each molecule."""
    from rdkit.Chem import rdFingerprintGenerator

    if radius < 0 or n_bits < 1:
        raise DataError(f"Morgan fingerprints need radius >= 0 and n_bits >= 1, got {radius}, {n_bits}")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    rows = [generator.GetFingerprintAsNumPy(mol).astype(np.uint8) for mol in molecules]
    return np.stack(rows) if rows else np.zeros((0, n_bits), dtype=np.uint8)


class SmilesVocabulary:
    """Token <-> id table; ids 0-3 are ``<pad>``, ``<unk>``, ``<start>``, ``<stop>``."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self.tokens: list[str] = list(SPECIAL_TOKENS)
        for token in tokens:
            if token not in SPECIAL_TOKENS and token not in self.tokens:
                self.tokens.append(token)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    pad_id, unk_id, start_id, stop_id = 0, 1, 2, 3

    @classmethod
    def fit(cls, smiles: Iterable[str], *, min_count: int = 1) -> SmilesVocabulary:
        """Tokens seen ``min_count`` times or more in ``smiles`` (the training drugs), most frequent first."""
        counts: Counter[str] = Counter()
        for text in smiles:
            counts.update(tokenize_smiles(text))
        ordered = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(ordered)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, smiles: str, *, add_start_stop: bool = True) -> list[int]:
        ids = [self.index.get(t, self.unk_id) for t in tokenize_smiles(smiles)]
        return [self.start_id, *ids, self.stop_id] if add_start_stop else ids

    def decode(self, ids: Iterable[int]) -> str:
        """The SMILES of ``ids`` (special tokens dropped; unknown ids read ``<unk>``)."""
        out = []
        for i in ids:
            i = int(i)
            if i in (self.pad_id, self.start_id, self.stop_id):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return "".join(out)

    def state_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SmilesVocabulary:
        tokens = list(state["tokens"])
        if tokens[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise DataError("SMILES vocabulary state does not start with the special tokens")
        return cls(tokens[len(SPECIAL_TOKENS) :])
