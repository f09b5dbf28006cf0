"""Synthetic knowledge-graph recommendation data in KGAT's format, with KG-driven preferences.

For Wang et al., KDD 2019, "KGAT: Knowledge Graph Attention Network for Recommendation": the
generator plants the situation KGAT's collaborative knowledge graph is meant for (Section 1, Fig. 1),
where items that share attribute entities (artist, genre, ...) attract the same users, so the KG
carries signal a pure collaborative-filtering model must learn item by item.

:func:`write_synthetic_kg` writes ``train.txt``, ``test.txt`` (``uid iid iid ...``) and
``kg_final.txt`` (``h r t``) into a directory, read back by :func:`~interplay.recsys.data.kg.read_kgat`:

* item relations, each with its own pool of attribute entities (pool sizes grow geometrically: a
  few coarse values such as genres, many fine ones such as artists). Every item links to one value
  per item relation, drawn Zipf-like within the pool.
* with ``n_relations >= 3`` the last relation links each attribute of the finer pools to one
  attribute of the coarsest pool (artist -> genre), giving multi-hop structure; the other
  ``n_relations - 1`` are item relations (with fewer relations, all are item relations).
* latent vectors (``latent_dim``): coarse attributes ``z ~ N(0, I)``; a finer attribute is its parent's
  vector plus noise; an item is the mean of its attributes' vectors plus ``item_noise`` times noise;
  a user is ``N(0, I)``.
* each user has ``max(3, Poisson(interactions_per_user))`` items sampled without replacement with
  probability ``∝ exp(preference_strength * <user, item> + popularity_exponent * log popularity)``
  (Gumbel top-k). A ``test_fraction`` of each user's items (at least one) is the test split.
* ``n_triples`` (optional) tops the KG up with extra item-attribute links (or subsamples it) to an
  exact size, so the generator can match a real dataset's scale (Last-FM: 23,566 users, 48,123
  items, 106,389 entities, 464,567 triples, 9 relations).

Items with few interactions get their signal mostly through their attributes, which is where the
KG helps. The generator is deterministic in ``seed`` and writes each file atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interplay.core.data import atomic_write

__all__ = ["SyntheticKG", "write_synthetic_kg"]


@dataclass
class SyntheticKG:
    """What :func:`write_synthetic_kg` wrote, with the planted latent vectors."""

    directory: Path
    n_users: int
    n_items: int
    n_entities: int
    n_relations: int
    n_train: int
    n_test: int
    n_triples: int
    user_vectors: np.ndarray
    item_vectors: np.ndarray


def _pool_sizes(n_attributes: int, n_pools: int) -> list[int]:
    weights = 2.0 ** np.arange(n_pools)
    sizes = np.maximum(1, np.floor(n_attributes * weights / weights.sum())).astype(int)
    sizes[-1] += n_attributes - sizes.sum()
    if sizes[-1] < 1:
        raise ValueError(f"n_attributes={n_attributes} is too small for {n_pools} attribute pools")
    return sizes.tolist()


def _zipf_choice(rng: np.random.Generator, size: int, n: int, exponent: float = 0.8) -> np.ndarray:
    p = 1.0 / np.arange(1, size + 1) ** exponent
    perm = rng.permutation(size)  # popularity rank is not the id order
    return perm[rng.choice(size, n, p=p / p.sum())]


# Bumped whenever the generator's output changes, so that cached generated files are not reused.
KG_VERSION = 1


def write_synthetic_kg(
    directory: str | os.PathLike[str],
    n_users: int = 1000,
    n_items: int = 1000,
    n_attributes: int = 200,
    n_relations: int = 4,
    interactions_per_user: float = 15.0,
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    n_triples: int | None = None,
    latent_dim: int = 16,
    preference_strength: float = 5.0,
    item_noise: float = 0.3,
    popularity_exponent: float = 0.2,
    user_chunk: int = 512,
) -> SyntheticKG:
    """Write a KGAT-format dataset into ``directory`` (see the module docstring) and describe it."""
    if min(n_users, n_items, n_attributes, n_relations) < 1:
        raise ValueError("n_users, n_items, n_attributes and n_relations must all be >= 1")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    has_hierarchy = n_relations >= 3
    n_item_relations = n_relations - 1 if has_hierarchy else n_relations
    sizes = _pool_sizes(n_attributes, n_item_relations)
    offsets = n_items + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    # attribute vectors: coarse pool random, finer pools = parent (in the coarse pool) + noise
    vectors = np.zeros((n_items + n_attributes, latent_dim))
    vectors[offsets[0] : offsets[0] + sizes[0]] = rng.normal(size=(sizes[0], latent_dim))
    triples: list[np.ndarray] = []
    for pool in range(1, n_item_relations):
        parents = offsets[0] + rng.integers(0, sizes[0], sizes[pool])
        members = offsets[pool] + np.arange(sizes[pool])
        vectors[members] = vectors[parents] + 0.7 * rng.normal(size=(sizes[pool], latent_dim))
        if has_hierarchy:
            triples.append(np.stack([members, np.full(sizes[pool], n_relations - 1), parents], axis=1))

    # items: one value per item relation; vector = mean of attribute vectors + noise
    item_attributes = np.stack(
        [offsets[r] + _zipf_choice(rng, sizes[r], n_items) for r in range(n_item_relations)], axis=1
    )
    item_vectors = vectors[item_attributes].mean(axis=1) + item_noise * rng.normal(size=(n_items, latent_dim))
    vectors[:n_items] = item_vectors
    for r in range(n_item_relations):
        triples.append(np.stack([np.arange(n_items), np.full(n_items, r), item_attributes[:, r]], axis=1))
    kg = np.unique(np.concatenate(triples).astype(np.int64), axis=0)
    if n_triples is not None:
        kg = _resize_kg(kg, n_triples, n_items, offsets, sizes, rng)

    # interactions: Gumbel top-k of preference + popularity per user
    user_vectors = rng.normal(size=(n_users, latent_dim)) / np.sqrt(latent_dim)
    popularity = np.log(1.0 / np.arange(1, n_items + 1) ** popularity_exponent)[rng.permutation(n_items)]
    counts = np.clip(rng.poisson(interactions_per_user, n_users), 3, n_items)
    train_lines, test_lines = [], []
    n_train = n_test = 0
    for start in range(0, n_users, user_chunk):
        stop = min(n_users, start + user_chunk)
        logits = preference_strength * user_vectors[start:stop] @ item_vectors.T + popularity
        keys = logits + rng.gumbel(size=logits.shape)
        k = int(counts[start:stop].max())
        top = (
            np.argpartition(-keys, k - 1, axis=1)[:, :k]
            if k < n_items
            else np.tile(np.arange(n_items), (stop - start, 1))
        )
        order = np.take_along_axis(keys, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        for row, user in enumerate(range(start, stop)):
            chosen = rng.permutation(top[row, : counts[user]])
            n_u_test = max(1, int(round(test_fraction * len(chosen))))
            test, train = np.sort(chosen[:n_u_test]), np.sort(chosen[n_u_test:])
            train_lines.append(f"{user} " + " ".join(map(str, train)))
            test_lines.append(f"{user} " + " ".join(map(str, test)))
            n_train += len(train)
            n_test += len(test)

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "kg_final.txt") as handle:
        np.savetxt(handle, kg, fmt="%d")
    with atomic_write(folder / "test.txt") as handle:
        handle.write("\n".join(test_lines) + "\n")
    with atomic_write(folder / "train.txt") as handle:  # written last: its presence marks completion
        handle.write("\n".join(train_lines) + "\n")
    return SyntheticKG(
        folder, n_users, n_items, n_items + n_attributes, n_relations, n_train, n_test, len(kg),
        user_vectors, item_vectors,
    )  # fmt: skip


def _resize_kg(
    kg: np.ndarray,
    target: int,
    n_items: int,
    offsets: np.ndarray,
    sizes: list[int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Exactly ``target`` unique triples: a random subset, or extra item -> attribute links."""
    if target < len(kg):
        return kg[np.sort(rng.choice(len(kg), target, replace=False))]
    capacity = n_items * int(np.sum(sizes))
    if target > capacity:
        raise ValueError(f"n_triples={target} exceeds the {capacity} possible item-attribute links")
    while len(kg) < target:
        missing = target - len(kg)
        relation = rng.integers(0, len(sizes), missing)
        tails = offsets[relation] + (rng.random(missing) * np.asarray(sizes)[relation]).astype(np.int64)
        extra = np.stack([rng.integers(0, n_items, missing), relation, tails], axis=1)
        kg = np.unique(np.concatenate([kg, extra]), axis=0)
    return kg[np.sort(rng.choice(len(kg), target, replace=False))] if len(kg) > target else kg
