"""Synthetic CTR data written in the real formats, with known structure planted in the labels.

:func:`write_synthetic_criteo` writes a Criteo file (TSV without header like the day files, or CSV
with header like ``criteo_sample.txt``): 13 count features with Criteo-like missing rates and 26
categorical fields of 8-hex-digit values drawn from Zipf distributions of very different
cardinalities (3 to 20,000). The click probability is ``sigmoid(logit)`` with

    logit = -1.3 + 0.6 * <u[C1], v[C2]>              (second-order, between two categorical fields)
                 + 0.8 * <p[C4], q[C7]>              (second-order, 1,000 x 200 values)
                 + 1.2 * z(I3) * [C5 == C5's most frequent value]   (numeric x categorical)
                 + 0.4 * a[C3] + 0.3 * z(I1)                         (first-order)

where ``u``, ``v``, ``p``, ``q`` are random 4-d vectors per value and ``z`` is the standardised
``log1p`` of a count (0 when missing). A model that crosses features can learn the first three
terms; a purely additive one cannot. C1 x C2 has 192 value pairs, few enough to memorise pair by
pair; C4 x C7 has 200,000, so a model must learn the product structure itself (a dot product of
field embeddings, which attention scores compute and an MLP must approximate). The returned
:class:`SyntheticCriteo` holds the planted parameters.

:func:`write_synthetic_sequences` writes FuxiCTR-style ``train.csv``, ``valid.csv`` and
``test.csv`` (columns ``clk, userid, adgroup_id, pid, cate_id, brand, price, age_level,
final_gender_code, click_sequence``). Items belong to categories with latent vectors; each user
has a preference vector; the behaviour sequence (``^``-joined ``adgroup_id`` values, oldest first)
is drawn from the items the user likes, and the click probability of a candidate item grows with
its similarity to that preference, so the sequence predicts the label. Users also fall into three
segments by their primary category (which their behaviours mostly come from) that respond
differently (AW-MoE's per-user feature-interaction patterns): segment 0 on taste only, segment 1
also to price (``-1.5 * z(log price)``), segment 2 also to the ad position (``+1.5 [pid == 0] - 0.75``);
a model must read the segment from the sequence (or memorise it per user id) to use those terms.
A ``long_tail_fraction`` of users have at most 3 behaviours (and fewer impressions): the long-tail
group, whose segment is hard to tell.

Both generators are deterministic in ``seed`` and write atomically (temp file, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from interplay.core.data import atomic_write
from interplay.recsys.data.criteo import CATEGORICAL, COLUMNS, NUMERIC

__all__ = ["SyntheticCriteo", "write_synthetic_criteo", "write_synthetic_sequences"]

# Distinct values per categorical field C1..C26 (C1, C2, C5 carry the planted interactions).
CARDINALITIES = (
    12, 16, 500, 1000, 8, 50, 200, 5000, 3, 100, 2000, 10, 300,
    20000, 40, 700, 6, 1500, 15, 4, 3000, 60, 12, 400, 80, 10000,
)  # fmt: skip
# Missing rate per categorical field (Criteo's C19, C20, C22, C25, C26 are often empty).
_CAT_MISSING = {f"C{i}": 0.02 for i in range(1, 27)} | {
    "C19": 0.4,
    "C20": 0.4,
    "C22": 0.7,
    "C25": 0.4,
    "C26": 0.4,
}
for _planted in ("C1", "C2", "C4", "C5", "C7"):
    _CAT_MISSING[_planted] = 0.0
# (log-mean, log-std, missing rate) of the counts I1..I13.
_NUMERIC = (
    (0.8, 1.0, 0.45), (2.0, 2.0, 0.0), (2.0, 1.5, 0.1), (1.5, 1.0, 0.2), (7.0, 2.0, 0.03), (3.0, 2.0, 0.2),
    (1.5, 1.5, 0.04), (2.5, 1.0, 0.0), (3.5, 1.5, 0.04), (0.3, 0.5, 0.45), (1.0, 1.0, 0.04), (0.3, 1.0, 0.75),
    (1.5, 1.0, 0.2),
)  # fmt: skip
_INTERACTION_DIM = 4
# Bumped whenever a generator's output changes, so that cached generated files are not reused.
CRITEO_VERSION = 3
SEQUENCES_VERSION = 2


@dataclass
class SyntheticCriteo:
    """What :func:`write_synthetic_criteo` wrote and the parameters planted in its labels."""

    path: Path
    n_rows: int
    values: dict[str, list[str]]  # field -> its values; index k is the k-th most frequent
    c1_vectors: np.ndarray  # [|C1|, 4]
    c2_vectors: np.ndarray  # [|C2|, 4]
    c5_value: str  # C5 value that switches on the I3 effect
    c3_effects: np.ndarray
    c4_vectors: np.ndarray  # [|C4|, 4]
    c7_vectors: np.ndarray  # [|C7|, 4]
    positive_rate: float = 0.0
    interaction: np.ndarray = field(init=False)  # [|C1|, |C2|] logit contribution of the C1 x C2 term

    def __post_init__(self) -> None:
        self.interaction = 0.6 * self.c1_vectors @ self.c2_vectors.T


def _hex_values(count: int, rng: np.random.Generator) -> list[str]:
    codes = rng.choice(2**32, size=count, replace=False) if count < 2**20 else rng.integers(0, 2**32, count)
    return [f"{int(c):08x}" for c in codes]


def _zipf_sampler(count: int, exponent: float = 1.05):
    p = 1.0 / np.arange(1, count + 1) ** exponent
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    return lambda rng, n: np.searchsorted(cdf, rng.random(n), side="right")


def _count_text(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    out = values.astype(np.int64).astype(str).astype(object)
    out[missing] = ""
    return out


def _standardised_log(counts: np.ndarray, missing: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    z = (np.log1p(np.maximum(counts, 0)) - mu) / max(sigma, 1e-6)
    return np.where(missing, 0.0, z)


def write_synthetic_criteo(
    path: str | os.PathLike[str],
    n_rows: int,
    seed: int = 0,
    fmt: Literal["tsv", "csv"] = "tsv",
    chunk_rows: int = 100_000,
) -> SyntheticCriteo:
    """Write ``n_rows`` Criteo records to ``path`` (see the module docstring); memory ~ one chunk."""
    if fmt not in ("tsv", "csv"):
        raise ValueError(f"fmt must be 'tsv' or 'csv', got {fmt!r}")
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    rng = np.random.default_rng(seed)
    values = {name: _hex_values(CARDINALITIES[i], rng) for i, name in enumerate(CATEGORICAL)}
    samplers = {name: _zipf_sampler(CARDINALITIES[i]) for i, name in enumerate(CATEGORICAL)}
    c1_vectors = rng.standard_normal((CARDINALITIES[0], _INTERACTION_DIM))
    c2_vectors = rng.standard_normal((CARDINALITIES[1], _INTERACTION_DIM))
    c3_effects = rng.standard_normal(CARDINALITIES[2])
    c4_vectors = rng.standard_normal((CARDINALITIES[3], _INTERACTION_DIM))
    c7_vectors = rng.standard_normal((CARDINALITIES[6], _INTERACTION_DIM))
    sep = "\t" if fmt == "tsv" else ","
    positives = 0
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            handle.write(",".join(COLUMNS) + "\n")
        for start in range(0, n_rows, chunk_rows):
            n = min(chunk_rows, n_rows - start)
            columns: dict[str, np.ndarray] = {}
            z: dict[str, np.ndarray] = {}
            for name, (mu, sigma, missing_rate) in zip(NUMERIC, _NUMERIC):
                counts = np.floor(np.exp(rng.normal(mu, sigma, n))) - 1
                if name == "I2":  # Criteo's I2 has small negative values
                    counts = counts - (rng.random(n) < 0.05) * rng.integers(1, 4, n)
                missing = rng.random(n) < missing_rate
                columns[name] = _count_text(counts, missing)
                z[name] = _standardised_log(counts, missing, mu, sigma)
            index: dict[str, np.ndarray] = {}
            for name in CATEGORICAL:
                index[name] = samplers[name](rng, n)
                text = np.asarray(values[name], dtype=object)[index[name]]
                text[rng.random(n) < _CAT_MISSING[name]] = ""
                columns[name] = text
            logit = (
                -1.3
                + 0.6 * np.einsum("nd,nd->n", c1_vectors[index["C1"]], c2_vectors[index["C2"]])
                + 0.8 * np.einsum("nd,nd->n", c4_vectors[index["C4"]], c7_vectors[index["C7"]])
                + 1.2 * z["I3"] * (index["C5"] == 0)
                + 0.4 * c3_effects[index["C3"]]
                + 0.3 * z["I1"]
            )
            label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
            positives += int(label.sum())
            frame = pd.DataFrame({"label": label, **columns}, columns=list(COLUMNS))
            frame.to_csv(handle, sep=sep, header=False, index=False, lineterminator="\n")
    return SyntheticCriteo(
        path=path,
        n_rows=n_rows,
        values=values,
        c1_vectors=c1_vectors,
        c2_vectors=c2_vectors,
        c5_value=values["C5"][0],
        c3_effects=c3_effects,
        c4_vectors=c4_vectors,
        c7_vectors=c7_vectors,
        positive_rate=positives / n_rows,
    )


SEQUENCE_COLUMNS = (
    "clk", "userid", "adgroup_id", "pid", "cate_id", "brand", "price", "age_level", "final_gender_code",
    "click_sequence",
)  # fmt: skip


def _sample_rows(logits: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """For each row of ``logits`` ([users, items]), ``counts[row]`` item indices drawn from its softmax."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    return [np.searchsorted(cdf[r], rng.random(int(counts[r])), side="right") for r in range(len(logits))]


def write_synthetic_sequences(
    directory: str | os.PathLike[str],
    n_users: int = 2000,
    n_items: int = 1000,
    seed: int = 0,
    long_tail_fraction: float = 0.3,
    impressions_per_user: int = 10,
    max_history: int = 50,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, Path]:
    """Write ``train.csv``, ``valid.csv`` and ``test.csv`` under ``directory``; returns their paths.

    Long-tail users (``long_tail_fraction`` of them) have 0-3 behaviours and a third of the
    impressions; the others have 5-``max_history``. Rows are assigned to splits at random (``split``).
    """
    if n_users < 1 or n_items < 2:
        raise ValueError(f"need n_users >= 1 and n_items >= 2, got {n_users} and {n_items}")
    if not 0 <= long_tail_fraction <= 1:
        raise ValueError(f"long_tail_fraction must be in [0, 1], got {long_tail_fraction}")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1) > 1e-6:
        raise ValueError(f"split must be three fractions summing to 1, got {split}")
    rng = np.random.default_rng(seed)
    dim = 8
    n_categories = int(np.clip(n_items // 20, 2, 50))
    centroids = rng.standard_normal((n_categories, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    item_category = _zipf_sampler(n_categories, 0.8)(rng, n_items)
    item_vectors = centroids[item_category] + 0.4 * rng.standard_normal((n_items, dim)) / np.sqrt(dim)
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    popularity = np.log(1.0 / np.arange(1, n_items + 1) ** 0.9)[rng.permutation(n_items)]
    item_brand = item_category * 10 + rng.integers(0, 8, n_items)
    item_price = np.round(np.exp(rng.normal(3.5 + 0.3 * (item_category % 3), 0.8)), 1)

    first, second = rng.integers(0, n_categories, n_users), rng.integers(0, n_categories, n_users)
    preferences = centroids[first] + 0.5 * centroids[second] * (rng.random(n_users) < 0.5)[:, None]
    preferences += 0.3 * rng.standard_normal((n_users, dim)) / np.sqrt(dim)
    preferences /= np.linalg.norm(preferences, axis=1, keepdims=True)
    # user segments (AW-MoE's per-user feature-interaction patterns): the primary category decides
    # how a user responds beyond taste; the behaviour sequence (mostly that category) reveals it
    segment = first % 3
    log_price = np.log(item_price)
    price_z = (log_price - log_price.mean()) / max(log_price.std(), 1e-6)

    def segment_effect(user_segment: int, candidates: np.ndarray, pid: np.ndarray) -> np.ndarray:
        if user_segment == 1:  # price-sensitive
            return -1.5 * price_z[candidates]
        if user_segment == 2:  # responds to the ad position only
            return 1.5 * (pid == 0) - 0.75
        return np.zeros(len(candidates))

    long_tail = rng.random(n_users) < long_tail_fraction
    history_length = np.where(
        long_tail, rng.integers(0, 4, n_users), rng.integers(5, max_history + 1, n_users)
    )
    impressions = np.where(long_tail, max(1, impressions_per_user // 3), impressions_per_user)
    age_level = rng.integers(1, 7, n_users)
    gender = rng.integers(1, 3, n_users)

    user_ids = 1_000_000 + np.arange(n_users)
    item_ids = 100_000 + np.arange(n_items)
    records: dict[str, list] = {name: [] for name in SEQUENCE_COLUMNS}
    block = max(1, 2_000_000 // n_items)
    for start in range(0, n_users, block):
        users = np.arange(start, min(start + block, n_users))
        liking = 4.0 * preferences[users] @ item_vectors.T + 0.5 * popularity[None, :]
        histories = _sample_rows(liking, history_length[users], rng)
        # half of the candidates follow the user's taste, half the global popularity
        liked = _sample_rows(liking, impressions[users], rng)
        popular = _sample_rows(np.broadcast_to(popularity, (len(users), n_items)), impressions[users], rng)
        for row, user in enumerate(users):
            m = int(impressions[user])
            candidates = np.where(rng.random(m) < 0.5, liked[row], popular[row])
            similarity = item_vectors[candidates] @ preferences[user]
            pid = rng.integers(0, 2, m)
            logit = (
                -1.5 + 3.5 * similarity + 0.3 * (pid == 0) + segment_effect(segment[user], candidates, pid)
            )
            clicks = (rng.random(m) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
            sequence = "^".join(str(item_ids[i]) for i in histories[row])
            records["clk"].extend(clicks.tolist())
            records["userid"].extend([int(user_ids[user])] * m)
            records["adgroup_id"].extend(item_ids[candidates].tolist())
            records["pid"].extend([f"430548_100{p}" for p in pid])
            records["cate_id"].extend((5000 + item_category[candidates]).tolist())
            records["brand"].extend((200_000 + item_brand[candidates]).tolist())
            records["price"].extend(item_price[candidates].tolist())
            records["age_level"].extend([int(age_level[user])] * m)
            records["final_gender_code"].extend([int(gender[user])] * m)
            records["click_sequence"].extend([sequence] * m)
    frame = pd.DataFrame(records, columns=list(SEQUENCE_COLUMNS))
    u = rng.random(len(frame))
    parts = {
        "train": u < split[0],
        "valid": (u >= split[0]) & (u < split[0] + split[1]),
        "test": u >= split[0] + split[1],
    }
    directory = Path(directory)
    paths = {}
    for name, mask in parts.items():
        paths[name] = directory / f"{name}.csv"
        with atomic_write(paths[name], "w", encoding="utf-8", newline="") as handle:
            frame[mask].to_csv(handle, index=False, lineterminator="\n")
    return paths
