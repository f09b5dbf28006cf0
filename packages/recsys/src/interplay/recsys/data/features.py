"""Feature specs (YAML) and the features fitted from them on the training split.

A :class:`FeatureSpec` says which columns a CTR model sees and how each is encoded; it is loaded
from YAML with :func:`load_spec` (a file, or the name of a spec shipped in ``data/specs/``)::

    format: criteo            # reader: criteo (TSV/CSV day files) or csv (FuxiCTR-style, with header)
    label: label
    user: null                # column of user ids for GAUC (optional)
    features:
      - name: [I1, I2]        # a list expands into one feature per name, same settings
        kind: numeric
        transform: log1p      # none | log1p | standardize | log1p_standardize | bins | log_square
      - name: C1
        kind: categorical
        min_count: 10         # rarer values (and missing ones) map to id 0
      - name: C2
        kind: categorical
        hash_buckets: 100000  # id = 1 + hash(value) mod 100000, no vocabulary
      - name: click_sequence
        kind: sequence
        separator: "^"
        max_length: 20
        shares_with: adgroup_id   # the item field whose vocabulary / embedding table it uses

:meth:`FittedFeatures.fit` reads the training rows once (in chunks) and keeps only what the
transform needs; :meth:`FittedFeatures.transform` turns any chunk (train, validation or test) into
the arrays of the batch contract in :mod:`interplay.recsys.layout`, never changing what was fitted.

Encodings (the numbers a model sees):

* **categorical** with a vocabulary: values seen at least ``min_count`` times in train get ids
  ``1..V`` by decreasing count, ties by value (so the ids do not depend on the chunking); id 0 is
  the single OOV bucket, shared by unseen, rare and missing (``""``) values. ``vocab_size = V + 1``.
* **categorical** with ``hash_buckets: B``: id ``1 + h(value) mod B`` (``h`` = pandas' SipHash of
  the text, checked when a saved file is loaded); missing -> 0; ``vocab_size = B + 1``.
* **numeric** (a column of ``layout.numeric``, float32): ``none`` (x), ``log1p``
  (``sign(x) * ln(1 + |x|)``, defined for Criteo's negative counts), ``standardize``
  (``(x - mean) / std``, train moments), ``log1p_standardize`` (log1p, then standardised). A missing
  value becomes 0 *after* the transform (the training mean for the standardised ones).
* **numeric** encoded as categorical (a column of ``layout.categorical``): ``bins`` (``n_bins``
  quantile bins with edges fitted on train; ids ``1..``, missing -> 0) and ``log_square`` (the
  Criteo-winning bucketing, also FuxiCTR's: ``floor(ln(x)^2)`` for ``x > 2``, else ``floor(x)``; the
  buckets then form a vocabulary with ``min_count`` like any categorical value).
* **sequence**: the text is split on ``separator`` (oldest item first, as FuxiCTR writes it) and
  each item is looked up in the vocabulary of the ``shares_with`` field (by default the item field's
  vocabulary also counts the items seen in train sequences, as FuxiCTR's shared embeddings do).
  Items the vocabulary does not know are **dropped** rather than stored as 0, because 0 is padding:
  models mask ``ids == 0``, and dropping keeps ``ids[:length] > 0``, ``ids[length:] == 0``. The
  **most recent** ``max_length`` known items are kept (truncation drops the oldest), stored oldest
  first and left-aligned: ``[i1, i2, ..., i_n, 0, 0]``. ``sequence_length`` counts them.
* **user** (optional): a 63-bit hash of the user id text (``int64``; 0 if missing): a stable group id
  for GAUC that also separates users never seen in train (a vocabulary would lump them into one
  OOV id).
* **label**: float32 in {0, 1}; anything else is an error naming the file and line.

Bounded memory: fitting keeps per field only the distinct values with their counts (as 64-bit
hashes in numpy arrays plus one copy of each text), running moments, and a fixed-size uniform
sample (``quantile_sample`` values, chosen by a hash of the row number) for the quantile edges.
Memory therefore grows with the number of *distinct* values, not with the number of rows; use
``hash_buckets`` for a field whose cardinality itself is too large.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from interplay.core.config import from_dict, load_config, to_dict
from interplay.core.data import atomic_write
from interplay.core.errors import ConfigError, DataError
from interplay.recsys.layout import FeatureLayout, FieldInfo

__all__ = [
    "FORMAT",
    "FeatureConfig",
    "FeatureSpec",
    "FittedFeatures",
    "load_spec",
    "shipped_specs",
]

FORMAT = "interplay.recsys.features/1"
SPECS_DIR = Path(__file__).parent / "specs"

NumericTransform = Literal["none", "log1p", "standardize", "log1p_standardize", "bins", "log_square"]
_CATEGORICAL_TRANSFORMS = ("bins", "log_square")
_CHECK_TEXTS = ("", "a", "05db9164", "12345", "\u00e9t\u00e9")  # canaries for the hash function


# ------------------------------------------------------------------------------------------------ spec


@dataclass
class FeatureConfig:
    """One feature of a spec (see the module docstring for the meaning of each option)."""

    name: str | list[str]
    kind: Literal["categorical", "numeric", "sequence"]
    column: str | None = None  # the column in the file; defaults to ``name``
    # categorical (and numeric log_square buckets)
    min_count: int = 1
    hash_buckets: int | None = None
    # numeric
    transform: NumericTransform = "log1p"
    n_bins: int = 10
    # sequence
    separator: str = "^"
    max_length: int = 20
    shares_with: str | None = None
    count_in_vocabulary: bool = True  # the shared field's vocabulary also counts the sequence items

    def __post_init__(self) -> None:
        if isinstance(self.name, list):
            if not self.name or not all(isinstance(n, str) and n for n in self.name):
                raise ValueError(f"a feature's name list must hold non-empty names, got {self.name!r}")
            if self.column is not None and len(self.name) > 1:
                raise ValueError(f"features {self.name} share one 'column' ({self.column}); give one name")
        elif not self.name:
            raise ValueError("a feature needs a non-empty name")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count} (feature {self.name})")
        if self.hash_buckets is not None and self.hash_buckets < 1:
            raise ValueError(f"hash_buckets must be >= 1, got {self.hash_buckets} (feature {self.name})")
        if self.kind == "numeric" and self.transform == "bins" and self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins} (feature {self.name})")
        if self.kind == "sequence":
            if not self.shares_with:
                raise ValueError(
                    f"sequence feature {self.name} needs 'shares_with': the item field whose vocabulary "
                    "it uses"
                )
            if self.max_length < 1:
                raise ValueError(f"max_length must be >= 1, got {self.max_length} (feature {self.name})")
            if not self.separator:
                raise ValueError(f"sequence feature {self.name} needs a non-empty separator")

    @property
    def source(self) -> str:
        """The file column this feature reads."""
        assert isinstance(self.name, str)
        return self.column or self.name

    @property
    def encodes_categorical(self) -> bool:
        """True when the feature becomes a column of ``batch['categorical']``."""
        return self.kind == "categorical" or (
            self.kind == "numeric" and self.transform in _CATEGORICAL_TRANSFORMS
        )


@dataclass
class FeatureSpec:
    """Which columns a CTR model sees and how (see the module docstring for an example)."""

    features: list[FeatureConfig]
    label: str = "label"
    user: str | None = None  # user id column for GAUC (optional)
    format: Literal["criteo", "csv"] = "csv"
    separator: str = ","  # field separator of the csv format
    quantile_sample: int = 1_000_000  # values kept per binned field to fit its quantile edges
    description: str = ""

    def __post_init__(self) -> None:
        expanded: list[FeatureConfig] = []
        for feature in self.features:
            if isinstance(feature.name, list):
                expanded.extend(dataclasses.replace(feature, name=n) for n in feature.name)
            else:
                expanded.append(feature)
        self.features = expanded
        if not self.features:
            raise ValueError("a feature spec needs at least one feature")
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature name(s) {', '.join(map(str, duplicates))} appear more than once")
        if self.quantile_sample < 100:
            raise ValueError(f"quantile_sample must be >= 100, got {self.quantile_sample}")
        sequences = [f for f in self.features if f.kind == "sequence"]
        if len(sequences) > 1:
            raise ValueError(
                f"at most one sequence feature is supported (the batch has one 'sequence'), got "
                f"{', '.join(str(f.name) for f in sequences)}"
            )
        for sequence in sequences:
            target = next((f for f in self.features if f.name == sequence.shares_with), None)
            if target is None or target.kind != "categorical":
                categorical = [str(f.name) for f in self.features if f.kind == "categorical"]
                raise ValueError(
                    f"sequence feature {sequence.name} shares_with '{sequence.shares_with}', which is not "
                    f"a categorical feature (have: {', '.join(categorical) or 'none'})"
                )

    @property
    def sequence(self) -> FeatureConfig | None:
        return next((f for f in self.features if f.kind == "sequence"), None)

    def columns(self) -> list[str]:
        """The file columns the spec reads (label, user and feature columns), without repeats."""
        wanted = [self.label, *([self.user] if self.user else []), *(f.source for f in self.features)]
        return list(dict.fromkeys(wanted))

    def categorical_columns(self) -> list[str]:
        """Text columns read as pandas categoricals: categorical features and the user column."""
        numeric = set(self.numeric_columns())
        sequence = {f.source for f in self.features if f.kind == "sequence"}
        wanted = [
            *(f.source for f in self.features if f.kind == "categorical"),
            *([self.user] if self.user else []),
        ]
        return [c for c in dict.fromkeys(wanted) if c not in numeric and c not in sequence]

    def numeric_columns(self) -> list[str]:
        """Columns parsed as numbers by the readers (the label and the numeric features)."""
        return list(dict.fromkeys([self.label, *(f.source for f in self.features if f.kind == "numeric")]))

    def to_dict(self) -> dict:
        return to_dict(self)


def shipped_specs() -> list[str]:
    """Names of the specs shipped in ``interplay/recsys/data/specs``."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def load_spec(source: str | os.PathLike[str] | Mapping | FeatureSpec) -> FeatureSpec:
    """A spec from a YAML file, the name of a shipped spec (``criteo``, ``taobao``...) or a mapping."""
    if isinstance(source, FeatureSpec):
        return source
    if isinstance(source, Mapping):
        return from_dict(FeatureSpec, source, source="<feature spec>")
    path = Path(source).expanduser()
    if path.is_file():
        return load_config(FeatureSpec, path)
    shipped = SPECS_DIR / f"{source}.yaml"
    if shipped.is_file():
        return load_config(FeatureSpec, shipped)
    raise ConfigError(
        f"feature spec '{source}' is neither a YAML file nor a shipped spec "
        f"(shipped: {', '.join(shipped_specs())})"
    )


# ---------------------------------------------------------------------------------------- hashing


def hash_texts(values: np.ndarray) -> np.ndarray:
    """Stable 64-bit hashes (uint64) of an object array of ``str`` (pandas' SipHash, fixed key)."""
    if values.size == 0:
        return np.zeros(0, dtype=np.uint64)
    # categorize (hash the distinct values once) pays off on large arrays only; same result either way
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=values.size > 4096)


def _mix64(values: np.ndarray, salt: int) -> np.ndarray:
    """SplitMix64 finaliser of ``values ^ salt`` (uint64 in, uint64 out): cheap, stable pseudo-randomness."""
    z = values.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_from_rows(rows: np.ndarray, salt: int) -> np.ndarray:
    """A float64 in [0, 1) per row number, a pure function of (row, salt): independent of chunking."""
    return (_mix64(np.asarray(rows, dtype=np.uint64), salt) >> np.uint64(11)).astype(np.float64) / 2.0**53


def _salt(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


# ------------------------------------------------------------------------------ column access


def _source_of(frame: pd.DataFrame) -> str:
    return str(frame.attrs.get("source", "<data>"))


def _require_columns(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{_source_of(frame)}: no column(s) {', '.join(missing)} "
            f"(have: {', '.join(map(str, frame.columns))})"
        )


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """float64 values of ``column`` (NaN = missing); text is parsed, with file:line on failure."""
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = series.astype(object).where(series.notna(), "").astype(str)
        missing = text.isin(("", "nan", "NaN", "NA", "N/A", "null", "NULL", "None")).to_numpy()
        values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~missing & np.isnan(values))
        if bad.size:
            i = bad[0]
            raise DataError(
                f"{_source_of(frame)}:{frame.index[i]}: column {column} is not numeric: {text.iloc[i]!r}"
            )
    bad = np.flatnonzero(np.isinf(values))
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{_source_of(frame)}:{frame.index[i]}: column {column} is not a finite number: {values[i]}"
        )
    return values


def _texts(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Object array of ``str`` for ``column``, ``""`` for missing; whole floats print as integers."""
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.full(values.shape, "", dtype=object)
        finite = np.isfinite(values)
        whole = finite & (np.floor(values) == values)
        out[whole] = values[whole].astype(np.int64).astype(str).astype(object)
        rest = finite & ~whole
        out[rest] = values[rest].astype(str).astype(object)
        return out
    values = series.to_numpy(dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = ""
    return values


def _factorize(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, distinct)`` of an object array of ``str``: ``texts == distinct[codes]``; ``""`` -> -1."""
    codes, distinct = pd.factorize(texts)
    distinct = np.asarray(distinct, dtype=object)
    return _drop_empty(codes.astype(np.int64), distinct)


def _drop_empty(codes: np.ndarray, distinct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    empty = np.flatnonzero(distinct == "")
    if empty.size:
        codes = np.where(np.isin(codes, empty), -1, codes)
    return codes, distinct


def _distinct(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``column`` as ``(codes, distinct texts)``; code -1 = missing. Categorical columns are free."""
    series = frame[column]
    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = series.cat.categories
        distinct = (
            _texts(pd.DataFrame({column: categories}), column) if len(categories) else np.zeros(0, object)
        )
        return _drop_empty(series.cat.codes.to_numpy().astype(np.int64), distinct)
    return _factorize(_texts(frame, column))


# ------------------------------------------------------------------------------------ encoders


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def log_square_buckets(x: np.ndarray) -> np.ndarray:
    """Criteo bucketing: ``floor(ln(x)^2)`` for ``x > 2``, else ``floor(x)`` (int64; NaN -> 0, use a mask)."""
    out = np.zeros(x.shape, dtype=np.int64)
    finite = np.isfinite(x)
    large = finite & (x > 2)
    small = finite & ~large
    out[large] = np.floor(np.log(x[large]) ** 2).astype(np.int64)
    out[small] = np.floor(x[small]).astype(np.int64)
    return out


class Vocabulary:
    """Values -> ids ``1..V`` (id 0 = OOV / missing), looked up through sorted 64-bit keys."""

    def __init__(self, values: list, counts: list[int] | np.ndarray, value_type: Literal["text", "int"]):
        self.values = list(values)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.value_type = value_type
        keys = self.keys_of(np.asarray(self.values, dtype=object if value_type == "text" else np.int64))
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._ids = (order + 1).astype(np.int64)
        if self._keys.size > 1 and np.any(self._keys[1:] == self._keys[:-1]):
            raise DataError(
                "two vocabulary values share a 64-bit key (a hash collision): re-fit with hashing"
            )

    def keys_of(self, values: np.ndarray) -> np.ndarray:
        if self.value_type == "int":
            return np.asarray(values, dtype=np.int64).view(np.uint64)
        return hash_texts(values)

    @property
    def size(self) -> int:
        return len(self.values) + 1

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """int64 ids of ``keys`` (0 where the key is not in the vocabulary)."""
        if not self.values or keys.size == 0:
            return np.zeros(keys.shape, dtype=np.int64)
        pos = np.searchsorted(self._keys, keys)
        pos[pos == self._keys.size] = 0
        return np.where(self._keys[pos] == keys, self._ids[pos], 0)

    def to_dict(self) -> dict:
        values = [int(v) for v in self.values] if self.value_type == "int" else [str(v) for v in self.values]
        return {
            "type": "vocabulary",
            "value_type": self.value_type,
            "values": values,
            "counts": self.counts.tolist(),
        }


def _pack(values: np.ndarray) -> np.ndarray:
    """Texts as fixed-width utf-8 bytes (8 bytes for a Criteo value instead of a ~60-byte str)."""
    if values.dtype != object or values.size == 0:
        return values
    try:
        packed = values.astype("S")
    except UnicodeEncodeError:
        packed = np.strings.encode(values.astype("U"), "utf-8")
    if packed.dtype.itemsize > 64:
        return values  # long texts stay Python strings
    return packed


def _unpack(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        return np.strings.decode(values, "utf-8").astype(object)
    return values


class _Counter:
    """Counts of distinct values, merged lazily so a chunk costs O(distinct values in the chunk)."""

    def __init__(self, value_type: Literal["text", "int"]):
        self.value_type = value_type
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending = 0
        self._merged = 0

    def add_ints(self, values: np.ndarray) -> None:
        """Count int64 values (numeric buckets)."""
        unique, counts = np.unique(values.astype(np.int64), return_counts=True)
        self._add(unique.view(np.uint64), counts, unique)

    def add_codes(self, codes: np.ndarray, distinct: np.ndarray) -> None:
        """Count texts given as ``distinct[codes]`` (code -1 = missing, not counted)."""
        counts = np.bincount(codes[codes >= 0], minlength=distinct.size)
        seen = np.flatnonzero(counts)
        self._add(hash_texts(distinct[seen]), counts[seen], distinct[seen])

    def _add(self, keys: np.ndarray, counts: np.ndarray, values: np.ndarray) -> None:
        if keys.size == 0:
            return
        self._parts.append((keys, counts.astype(np.int64), _pack(values)))
        self._pending += keys.size
        # merging when the unmerged entries outnumber the merged ones keeps memory within ~2x the
        # distinct values and the merge work amortised O(log) per entry
        if self._pending > max(self._merged, 1 << 16):
            self._merge()

    def _merge(self) -> None:
        if len(self._parts) > 1:
            keys = np.concatenate([p[0] for p in self._parts])
            counts = np.concatenate([p[1] for p in self._parts])
            packed = [p[2] for p in self._parts]
            if len({v.dtype.kind for v in packed}) > 1:  # some chunk had a long text: all as str
                packed = [_unpack(v) for v in packed]
            values = np.concatenate(packed)
            order = np.argsort(keys, kind="stable")
            keys, counts, values = keys[order], counts[order], values[order]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            self._parts = [(keys[starts], np.add.reduceat(counts, starts), values[starts])]
        self._merged = self._parts[0][0].size if self._parts else 0
        self._pending = 0

    def vocabulary(self, min_count: int) -> Vocabulary:
        self._merge()
        if not self._parts:
            return Vocabulary([], [], self.value_type)
        keys, counts, values = self._parts[0]
        keep = counts >= min_count
        keys, counts, values = keys[keep], counts[keep], values[keep]
        by_value = np.argsort(values, kind="stable")  # utf-8 bytes sort like their str
        order = by_value[np.argsort(-counts[by_value], kind="stable")]  # decreasing count, then value
        return Vocabulary(_unpack(values[order]).tolist(), counts[order], self.value_type)


class _Moments:
    """Running count, mean and sum of squared deviations (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        n_b, mean_b = x.size, float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.n * n_b / n
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else 1.0


class _Sample:
    """A uniform sample of at most ``size`` values: those whose row hash is smallest (bottom-k)."""

    def __init__(self, size: int, salt: int) -> None:
        self.size, self.salt = size, salt
        self.values = np.zeros(0, dtype=np.float64)
        self.priority = np.zeros(0, dtype=np.uint64)

    def add(self, x: np.ndarray, rows: np.ndarray) -> None:
        keep = np.isfinite(x)
        values = np.concatenate([self.values, x[keep]])
        priority = np.concatenate([self.priority, _mix64(rows[keep], self.salt)])
        if values.size > self.size:
            best = np.argpartition(priority, self.size - 1)[: self.size]
            values, priority = values[best], priority[best]
        self.values, self.priority = values, priority


def _numeric_encoder(feature: FeatureConfig, moments: _Moments | None, sample: _Sample | None) -> dict:
    if feature.transform in ("standardize", "log1p_standardize"):
        assert moments is not None
        std = moments.std
        return {"type": feature.transform, "mean": moments.mean, "std": std if std > 0 else 1.0}
    if feature.transform == "bins":
        assert sample is not None
        if sample.values.size:
            quantiles = np.quantile(sample.values, np.linspace(0, 1, feature.n_bins + 1)[1:-1])
            edges = np.unique(quantiles).tolist()
        else:
            edges = []
        return {"type": "bins", "edges": edges}
    return {"type": feature.transform}


# ------------------------------------------------------------------------------- fitted features


class FittedFeatures:
    """A :class:`FeatureSpec` plus what was learned from the training rows (see the module docstring)."""

    def __init__(self, spec: FeatureSpec, encoders: dict[str, Any], n_rows: int, source: dict | None = None):
        self.spec = spec
        self.encoders = encoders  # feature name -> Vocabulary | dict (numeric / hashing parameters)
        self.n_rows = n_rows
        self.source = dict(source or {})

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        spec: FeatureSpec | str | os.PathLike[str] | Mapping,
        chunks: Iterable[pd.DataFrame],
        *,
        source: dict | None = None,
    ) -> FittedFeatures:
        """Fit on the training ``chunks`` (read once, in order). ``source`` is kept as provenance."""
        spec = load_spec(spec)
        counters: dict[str, _Counter] = {}
        moments: dict[str, _Moments] = {}
        samples: dict[str, _Sample] = {}
        for feature in spec.features:
            if feature.kind == "categorical" and feature.hash_buckets is None:
                counters[feature.name] = _Counter("text")
            elif feature.kind == "numeric" and feature.transform == "log_square":
                counters[feature.name] = _Counter("int")
            elif feature.kind == "numeric" and feature.transform in ("standardize", "log1p_standardize"):
                moments[feature.name] = _Moments()
            elif feature.kind == "numeric" and feature.transform == "bins":
                samples[feature.name] = _Sample(spec.quantile_sample, _salt(str(feature.name)))
        sequence = spec.sequence
        n_rows = 0
        for frame in chunks:
            _require_columns(frame, spec.columns())
            rows = np.arange(n_rows, n_rows + len(frame), dtype=np.uint64)
            n_rows += len(frame)
            _labels(frame, spec.label)  # validate early: a bad label fails the fit, not the cache
            for feature in spec.features:
                name = feature.name
                if feature.kind == "categorical" and name in counters:
                    counters[name].add_codes(*_distinct(frame, feature.source))
                elif feature.kind == "numeric":
                    x = _numbers(frame, feature.source)
                    if name in counters:
                        counters[name].add_ints(log_square_buckets(x[np.isfinite(x)]))
                    elif name in moments:
                        moments[name].add(_signed_log1p(x) if feature.transform == "log1p_standardize" else x)
                    elif name in samples:
                        samples[name].add(x, rows)
            if sequence is not None and sequence.count_in_vocabulary and sequence.shares_with in counters:
                tokens, _ = _split_sequences(_texts(frame, sequence.source), sequence.separator)
                counters[sequence.shares_with].add_codes(*_factorize(tokens))
            del frame  # one chunk in memory at a time (the loop would keep it while reading the next)
        if n_rows == 0:
            raise DataError("cannot fit features on an empty training split")
        encoders: dict[str, Any] = {}
        for feature in spec.features:
            name = feature.name
            if name in counters:
                encoders[name] = counters[name].vocabulary(feature.min_count)
            elif feature.kind == "categorical":
                encoders[name] = {"type": "hashing", "buckets": feature.hash_buckets}
            elif feature.kind == "numeric":
                encoders[name] = _numeric_encoder(feature, moments.get(name), samples.get(name))
        return cls(spec, encoders, n_rows, source)

    # ------------------------------------------------------------------ layout

    def vocab_size(self, name: str) -> int:
        encoder = self.encoders[name]
        if isinstance(encoder, Vocabulary):
            return encoder.size
        if encoder["type"] == "hashing":
            return int(encoder["buckets"]) + 1
        if encoder["type"] == "bins":
            return len(encoder["edges"]) + 2
        return 0

    def layout(self) -> FeatureLayout:
        categorical = tuple(
            FieldInfo(str(f.name), "categorical", self.vocab_size(str(f.name)))
            for f in self.spec.features
            if f.encodes_categorical
        )
        numeric = tuple(
            FieldInfo(str(f.name), "numeric")
            for f in self.spec.features
            if f.kind == "numeric" and not f.encodes_categorical
        )
        sequence = self.spec.sequence
        if sequence is None:
            return FeatureLayout(categorical, numeric)
        target = str(sequence.shares_with)
        return FeatureLayout(
            categorical,
            numeric,
            FieldInfo(str(sequence.name), "sequence", self.vocab_size(target), target),
            sequence.max_length,
        )

    # ------------------------------------------------------------------ transform

    def _categorical_ids(self, frame: pd.DataFrame, feature: FeatureConfig) -> np.ndarray:
        encoder = self.encoders[feature.name]
        if feature.kind == "numeric":
            x = _numbers(frame, feature.source)
            if feature.transform == "bins":
                ids = np.searchsorted(np.asarray(encoder["edges"], dtype=np.float64), x, side="right") + 1
            else:
                ids = encoder.lookup(log_square_buckets(x).view(np.uint64))
            return np.where(np.isfinite(x), ids, 0).astype(np.int64)
        return self._text_ids(*_distinct(frame, feature.source), encoder)

    @staticmethod
    def _text_ids(codes: np.ndarray, distinct: np.ndarray, encoder: Vocabulary | dict) -> np.ndarray:
        """ids of the texts ``distinct[codes]`` (code -1 -> 0); each distinct text is hashed once."""
        keys = hash_texts(distinct)
        if isinstance(encoder, Vocabulary):
            distinct_ids = encoder.lookup(keys)
        else:
            distinct_ids = (keys % np.uint64(encoder["buckets"])).astype(np.int64) + 1
        distinct_ids = np.append(distinct_ids, 0)  # code -1 picks this 0
        return distinct_ids[codes]

    def _numeric_values(self, frame: pd.DataFrame, feature: FeatureConfig) -> np.ndarray:
        encoder = self.encoders[feature.name]
        x = _numbers(frame, feature.source)
        kind = encoder["type"]
        if kind in ("log1p", "log1p_standardize"):
            x = _signed_log1p(x)
        if kind in ("standardize", "log1p_standardize"):
            x = (x - encoder["mean"]) / encoder["std"]
        return np.nan_to_num(x, nan=0.0).astype(np.float32)

    def _sequence(self, frame: pd.DataFrame, feature: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
        n, length = len(frame), feature.max_length
        tokens, counts = _split_sequences(_texts(frame, feature.source), feature.separator)
        ids = self._text_ids(*_factorize(tokens), self.encoders[str(feature.shares_with)])
        row = np.repeat(np.arange(n), counts)
        known = ids != 0
        ids, row = ids[known], row[known]
        kept = np.bincount(row, minlength=n)  # known items per row
        start = np.cumsum(kept) - kept
        position = np.arange(ids.size) - start[row]  # 0 = oldest known item of the row
        drop = np.maximum(kept - length, 0)  # the oldest items beyond max_length are dropped
        take = position >= drop[row]
        out = np.zeros((n, length), dtype=np.int64)
        out[row[take], (position - drop[row])[take]] = ids[take]
        return out, np.minimum(kept, length).astype(np.int64)

    def transform(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Arrays of the batch contract for the rows of ``frame`` (see :mod:`interplay.recsys.layout`).

        ``categorical`` int64 ``[n, n_categorical]``, ``numeric`` float32 ``[n, n_numeric]``, ``label``
        float32 ``[n]``, plus ``sequence`` int64 ``[n, L]`` and ``sequence_length`` int64 ``[n]`` with
        a sequence feature and ``user`` int64 ``[n]`` with a user column. Nothing fitted changes.
        """
        spec = self.spec
        _require_columns(frame, spec.columns())
        n = len(frame)
        categorical = [self._categorical_ids(frame, f) for f in spec.features if f.encodes_categorical]
        numeric = [
            self._numeric_values(frame, f)
            for f in spec.features
            if f.kind == "numeric" and not f.encodes_categorical
        ]
        out: dict[str, np.ndarray] = {
            "categorical": np.stack(categorical, axis=1) if categorical else np.zeros((n, 0), dtype=np.int64),
            "numeric": np.stack(numeric, axis=1) if numeric else np.zeros((n, 0), dtype=np.float32),
        }
        if spec.sequence is not None:
            out["sequence"], out["sequence_length"] = self._sequence(frame, spec.sequence)
        if spec.user:
            codes, distinct = _distinct(frame, spec.user)
            users = (hash_texts(distinct) & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)
            out["user"] = np.append(users, 0)[codes]  # a missing user id -> 0
        out["label"] = _labels(frame, spec.label)
        return out

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        encoders = {
            name: encoder.to_dict() if isinstance(encoder, Vocabulary) else dict(encoder)
            for name, encoder in self.encoders.items()
        }
        return {
            "format": FORMAT,
            "spec": self.spec.to_dict(),
            "n_rows": self.n_rows,
            "source": self.source,
            "encoders": encoders,
            "hash_check": {
                text: int(h)
                for text, h in zip(_CHECK_TEXTS, hash_texts(np.array(_CHECK_TEXTS, dtype=object)))
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping, *, where: str = "<fitted features>") -> FittedFeatures:
        if data.get("format") != FORMAT:
            raise DataError(
                f"{where}: not a fitted-features file (format {data.get('format')!r}, expected {FORMAT!r})"
            )
        check = data.get("hash_check", {})
        now = hash_texts(np.array(list(check), dtype=object)) if check else np.zeros(0, np.uint64)
        if any(int(h) != int(check[text]) for text, h in zip(check, now)):
            raise DataError(
                f"{where}: the text hash differs from the one used at fitting time "
                f"(pandas {pd.__version__}); "
                "hashed ids would change: re-fit the features"
            )
        spec = from_dict(FeatureSpec, data["spec"], source=where)
        encoders: dict[str, Any] = {}
        for name, encoder in data["encoders"].items():
            if encoder.get("type") == "vocabulary":
                encoders[name] = Vocabulary(encoder["values"], encoder["counts"], encoder["value_type"])
            else:
                encoders[name] = dict(encoder)
        missing = [str(f.name) for f in spec.features if f.kind != "sequence" and f.name not in encoders]
        if missing:
            raise DataError(f"{where}: no fitted encoder for feature(s) {', '.join(missing)}")
        return cls(spec, encoders, int(data["n_rows"]), data.get("source"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal digests, identical encodings."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically (a temp file renamed over ``path``)."""
        path = Path(path)
        with atomic_write(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FittedFeatures:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"fitted features not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"cannot read fitted features {path}: {error}") from error
        return cls.from_dict(data, where=str(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FittedFeatures) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        layout = self.layout()
        return (
            f"FittedFeatures({layout.n_categorical} categorical, {layout.n_numeric} numeric, "
            f"sequence={self.spec.sequence.name if self.spec.sequence else None}, "
            f"fitted on {self.n_rows} rows)"
        )


def _labels(frame: pd.DataFrame, column: str) -> np.ndarray:
    y = _numbers(frame, column)
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        i = bad[0]
        value = "missing" if np.isnan(y[i]) else repr(float(y[i]))
        raise DataError(
            f"{_source_of(frame)}:{frame.index[i]}: label column {column} must be 0 or 1, got {value}"
        )
    return y.astype(np.float32)


def _split_sequences(texts: np.ndarray, separator: str) -> tuple[np.ndarray, np.ndarray]:
    """All items of all rows (object array, empty items removed) and the item count per row."""
    parts = [t.split(separator) if t else [] for t in texts]
    counts = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    if not counts.sum():
        return np.zeros(0, dtype=object), counts
    flat = np.fromiter((item.strip() for p in parts for item in p), dtype=object, count=int(counts.sum()))
    empty = flat == ""
    if empty.any():  # "a^^b" or a trailing separator: drop the empty items
        row = np.repeat(np.arange(len(parts)), counts)
        counts = counts - np.bincount(row[empty], minlength=len(parts))
        flat = flat[~empty]
    return flat, counts
