"""Knowledge-graph data: KGAT and RecBole readers, splits, the CKG, samplers, downloads, generator.

Every file is written into ``tmp_path`` by hand or by the synthetic generator; downloads use
``file://`` URLs of a local copy of the repository layout (no network).
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from interplay.core.data import sha256sum
from interplay.core.errors import ChecksumError, ConfigError, DataError
from interplay.recsys.data.kg import (
    CFSampler,
    KGData,
    KGDataModule,
    TripleSampler,
    download_kgat,
    kgat_batch_size,
    read_kgat,
    read_kgat_interactions,
    read_kgat_triples,
    read_recbole,
    split_validation,
)
from interplay.recsys.data.kg_synthetic import write_synthetic_kg
from interplay.recsys.registry import REGISTRY


def write(path, text):
    path.write_text(text)
    return path


def kgat_dir(tmp_path, zipped=False):
    folder = tmp_path / "kgat"
    folder.mkdir()
    write(folder / "train.txt", "0 0 1 1 2\n1 2 3\n\n2 1\n3\n")  # repeated item, blank line, user-only line
    write(folder / "test.txt", "0 3\n1 0 4\n")
    kg = "0 0 5\n1 0 5\n0 0 5\n2 1 6\n"  # one duplicate triple
    if zipped:
        with zipfile.ZipFile(folder / "kg_final.txt.zip", "w") as archive:
            archive.writestr("kg_final.txt", kg)
    else:
        write(folder / "kg_final.txt", kg)
    return folder


# -- KGAT format ------------------------------------------------------------------------------------


def test_interactions_drop_duplicates_and_blank_lines(tmp_path):
    pairs = read_kgat_interactions(write(tmp_path / "train.txt", "0 0 1 1 2\n\n1 2 3\n3\n"))
    assert pairs.tolist() == [[0, 0], [0, 1], [0, 2], [1, 2], [1, 3]]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [("0 1 2\n1 x 3\n", 2, "integers, got 'x'"), ("0 1\n\n1 2 -3\n", 3, "non-negative")],
)
def test_malformed_interaction_lines_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(DataError, match=rf"{path}:{line}: .*{message}"):
        read_kgat_interactions(path)


def test_triples_are_unique_and_malformed_lines_name_file_and_line(tmp_path):
    assert read_kgat_triples(write(tmp_path / "kg.txt", "0 0 5\n0 0 5\n1 1 2\n")).tolist() == [
        [0, 0, 5],
        [1, 1, 2],
    ]
    path = write(tmp_path / "bad.txt", "0 0 5\n1 1\n")
    with pytest.raises(DataError, match=rf"{path}:2: expected 3 fields"):
        read_kgat_triples(path)
    path = write(tmp_path / "bad2.txt", "0 0 5\n\n1 r 2\n")
    with pytest.raises(DataError, match=rf"{path}:3: .*integers, got 'r'"):
        read_kgat_triples(path)


def test_zipped_kg_is_read_in_place_and_errors_name_the_member(tmp_path):
    folder = kgat_dir(tmp_path, zipped=True)
    data = read_kgat(folder, val_fraction=0.0)
    assert data.triples.tolist() == [[0, 0, 5], [1, 0, 5], [2, 1, 6]]
    with zipfile.ZipFile(folder / "kg_final.txt.zip", "w") as archive:
        archive.writestr("kg_final.txt", "0 0 5\n0 0\n")
    with pytest.raises(DataError, match=r"kg_final.txt.zip:kg_final.txt:2: expected 3 fields"):
        read_kgat(folder)


def test_read_kgat_counts_as_the_original(tmp_path):
    data = read_kgat(kgat_dir(tmp_path), val_fraction=0.0)
    assert (data.n_users, data.n_items) == (3, 5)  # max ids of train and test, + 1
    assert (data.n_entities, data.n_relations) == (7, 2)
    assert data.train.tolist() == [[0, 0], [0, 1], [0, 2], [1, 2], [1, 3], [2, 1]]
    assert data.test.tolist() == [[0, 3], [1, 0], [1, 4]]
    with pytest.raises(DataError, match="kg_final.txt"):
        (tmp_path / "kgat" / "kg_final.txt").unlink()
        read_kgat(tmp_path / "kgat")


def test_validation_split_is_per_user_seeded_and_disjoint():
    rng = np.random.default_rng(0)
    pairs = np.unique(np.stack([rng.integers(0, 50, 3000), rng.integers(0, 400, 3000)], 1), axis=0)
    pairs = np.concatenate([pairs, [[60, 7]]])  # a user with one item keeps it
    train, val = split_validation(pairs, 0.1, seed=4)
    again, val_again = split_validation(pairs, 0.1, seed=4)
    _, val_other = split_validation(pairs, 0.1, seed=5)
    assert np.array_equal(val, val_again) and np.array_equal(train, again)
    assert not np.array_equal(val, val_other)
    assert len(np.unique(np.concatenate([train, val]), axis=0)) == len(pairs)
    for user in range(50):
        n = (pairs[:, 0] == user).sum()
        assert (val[:, 0] == user).sum() == int(np.floor(0.1 * n + 0.5))
    assert [60, 7] in train.tolist()
    with pytest.raises(ConfigError, match="val_fraction"):
        split_validation(pairs, 1.0, 0)


def test_collaborative_graph_has_kgat_relation_ids_and_node_offsets(tmp_path):
    data = read_kgat(kgat_dir(tmp_path), val_fraction=0.0)
    graph = data.collaborative_graph()
    triples = set(zip(graph.heads.tolist(), graph.relations.tolist(), graph.tails.tolist()))
    users, k = data.n_users, data.n_relations
    expected = set()
    for u, i in data.train:
        expected |= {(u, 0, users + i), (users + i, k + 1, u)}
    for h, r, t in data.triples:
        expected |= {(users + h, r + 1, users + t), (users + t, r + k + 2, users + h)}
    assert triples == expected and graph.n_edges == len(expected)
    assert graph.n_relations == 2 * k + 2 and graph.n_nodes == users + data.n_entities
    for r in range(graph.n_relations):  # edges sorted by relation, sliced by relation_ptr
        assert (graph.relations[graph.relation_slice(r)] == r).all()
    assert torch.equal(graph.edge_index, torch.stack([graph.tails, graph.heads]))  # messages t -> h


# -- RecBole -------------------------------------------------------------------------------------------


def recbole_dir(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir(parents=True)
    rows = [f"u{u}\ti{i}\t5\t{u * 10 + i}" for u in range(6) for i in range(4) if (u + i) % 2 == 0]
    write(
        folder / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows) + "\n",
    )
    write(folder / "toy.link", "item_id:token\tentity_id:token\ni0\tm.a\ni2\tm.b\ni9\tm.z\n")
    write(
        folder / "toy.kg",
        "head_id:token\trelation_id:token\ttail_id:token\nm.a\tgenre\tm.g\nm.b\tgenre\tm.g\nm.b\tby\tm.p\n",
    )
    return folder


def test_recbole_atomic_files_are_remapped_to_the_kgat_convention(tmp_path):
    data = read_recbole(recbole_dir(tmp_path), test_fraction=0.25, val_fraction=0.0)
    assert (data.n_users, data.n_items, data.n_relations) == (6, 4, 2)
    # items i0..i3 -> 0..3; linked entities share the item id; m.g, m.p (and unlinked m.z) follow
    assert data.n_entities == 6
    assert sorted(map(tuple, data.triples.tolist())) == [(0, 1, 4), (2, 0, 5), (2, 1, 4)]  # by=0, genre=1
    all_pairs = np.concatenate([data.train, data.test])
    assert len(all_pairs) == 12 and len(data.test) == 6  # round(0.25 * 2) = 1 test item for each user


def test_recbole_malformed_lines_name_file_and_line(tmp_path):
    folder = recbole_dir(tmp_path)
    path = write(folder / "toy.kg", "head_id:token\trelation_id:token\ttail_id:token\nm.a\tgenre\n")
    with pytest.raises(DataError, match=rf"{path}:2: expected 3 tab-separated fields, got 2"):
        read_recbole(folder)
    folder = recbole_dir(tmp_path / "again")
    path = write(folder / "toy.link", "item:token\tentity_id:token\n")
    with pytest.raises(DataError, match=rf"{path}:1: header lacks item_id"):
        read_recbole(folder)


# -- sampling ------------------------------------------------------------------------------------------


def test_cf_sampler_draws_distinct_users_true_positives_and_unseen_negatives():
    rng = np.random.default_rng(0)
    train = np.unique(np.stack([rng.integers(0, 40, 600), rng.integers(0, 30, 600)], 1), axis=0)
    known = {tuple(p) for p in train.tolist()}
    sampler = CFSampler(40, 30, train)
    for _ in range(20):
        batch = sampler.sample(32, rng)
        users = batch["users"].tolist()
        assert len(set(users)) == 32
        for u, p, n in zip(users, batch["pos_items"].tolist(), batch["neg_items"].tolist()):
            assert (u, p) in known and (u, n) not in known


def test_triple_sampler_corrupts_tails_into_non_triples():
    rng = np.random.default_rng(1)
    heads, relations, tails = rng.integers(0, 20, 300), rng.integers(0, 3, 300), rng.integers(0, 20, 300)
    known = set(zip(heads.tolist(), relations.tolist(), tails.tolist()))
    sampler = TripleSampler(heads, relations, tails, 20)
    batch = sampler.sample(15, rng)
    assert len(set(batch["heads"].tolist())) == 15
    for h, r, t, n in zip(*(batch[k].tolist() for k in ("heads", "relations", "pos_tails", "neg_tails"))):
        assert (h, r, t) in known and (h, r, n) not in known


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    info = write_synthetic_kg(
        folder, n_users=60, n_items=80, n_attributes=30, n_relations=3, interactions_per_user=8, seed=2
    )
    return folder, info


def test_training_stream_follows_the_original_batch_counts(synthetic):
    folder, _ = synthetic
    data = read_kgat(folder)
    module = KGDataModule(data, batch_size=64, seed=5)
    kg_batch = kgat_batch_size(len(data.triples), len(data.train), 64)
    assert module.info["kg_batch_size"] == kg_batch == len(data.triples) // (len(data.train) // 64)
    for mode, n_kg in (("alternating", module.graph.n_edges // kg_batch + 1), ("cf", 0), ("joint", 0)):
        module.training_mode = mode
        batches = list(module.train_dataloader())
        phases = [b["phase"] for b in batches]
        assert phases == ["cf"] * (len(data.train) // 64 + 1) + ["kg"] * n_kg
        assert ("heads" in batches[0]) == (mode == "joint")
    module.training_mode = "alternating"
    first, second = list(module.train_dataloader()), list(module.train_dataloader())
    assert not torch.equal(first[0]["users"], second[0]["users"])  # a new epoch draws new batches
    repeat = KGDataModule(data, batch_size=64, seed=5)
    assert torch.equal(next(iter(repeat.train_dataloader()))["users"], first[0]["users"])  # seeded
    resumed = KGDataModule(data, batch_size=64, seed=5)
    resumed.load_state_dict(module.state_dict())  # as a checkpoint restores it: the next epoch follows
    third = next(iter(module.train_dataloader()))
    assert module.state_dict() == {"epochs_drawn": 3}
    assert torch.equal(next(iter(resumed.train_dataloader()))["users"], third["users"])


def test_evaluation_batches_exclude_known_items(synthetic):
    folder, _ = synthetic
    data = read_kgat(folder)
    module = KGDataModule(data, eval_batch_size=7)
    for split, known in (("val", ("train",)), ("test", ("train", "val"))):
        excluded = {tuple(p) for s in known for p in getattr(data, s).tolist()}
        truth = {tuple(p) for p in getattr(data, split).tolist()}
        seen_truth, seen_excluded = set(), set()
        for batch in module.evaluation_users(split):
            users = batch["users"].tolist()
            for k, u in enumerate(users):
                lo, hi = batch["truth_ptr"][k : k + 2].tolist()
                seen_truth |= {(u, i) for i in batch["truth_items"][lo:hi].tolist()}
                lo, hi = batch["exclude_ptr"][k : k + 2].tolist()
                seen_excluded |= {(u, i) for i in batch["exclude_items"][lo:hi].tolist()}
        assert seen_truth == truth
        assert seen_excluded == {p for p in excluded if p[0] in {u for u, _ in truth}}


def test_synthetic_generator_is_deterministic_and_exact(tmp_path, synthetic):
    folder, info = synthetic
    data = read_kgat(folder, val_fraction=0.0)
    assert (data.n_users, data.n_items, data.n_entities) == (60, 80, 110)
    assert (
        len(data.train) == info.n_train
        and len(data.test) == info.n_test
        and len(data.triples) == info.n_triples
    )
    again = write_synthetic_kg(
        tmp_path / "again",
        n_users=60,
        n_items=80,
        n_attributes=30,
        n_relations=3,
        interactions_per_user=8,
        seed=2,
    )
    assert (again.directory / "train.txt").read_text() == (folder / "train.txt").read_text()
    sized = write_synthetic_kg(
        tmp_path / "sized",
        n_users=20,
        n_items=40,
        n_attributes=30,
        n_relations=3,
        interactions_per_user=5,
        n_triples=150,
    )
    assert len(read_kgat_triples(sized.directory / "kg_final.txt")) == 150


def test_registered_datasets_and_missing_files(tmp_path):
    module = REGISTRY.datasets.create(
        "synthetic-kg", root=tmp_path, n_users=30, n_items=40, n_attributes=10, interactions_per_user=5
    )
    assert module.info["n_users"] == 30
    missing = REGISTRY.datasets.create("kgat-last-fm", root=tmp_path)
    with pytest.raises(DataError, match=r"download kgat-last-fm"):
        _ = missing.info


# -- downloads -------------------------------------------------------------------------------------------


def mirror(tmp_path, zipped=True):
    """A local copy of the repository layout: <mirror>/Data/last-fm/..."""
    folder = tmp_path / "mirror" / "Data" / "last-fm"
    folder.mkdir(parents=True)
    source = kgat_dir(tmp_path, zipped=zipped)
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return tmp_path / "mirror", folder


def test_download_from_file_url_verifies_and_records_checksums(tmp_path):
    base, folder = mirror(tmp_path)
    root = tmp_path / "data"
    target = download_kgat("last-fm", root, base_url=base.as_uri())
    assert target == root / "recsys" / "kgat" / "last-fm"
    sums = dict(line.split()[::-1] for line in (target / "SHA256SUMS").read_text().splitlines())
    assert sums["kg_final.txt.zip"] == sha256sum(folder / "kg_final.txt.zip")
    assert read_kgat(target, val_fraction=0.0).n_users == 3
    # the recorded checksum guards later downloads: a changed mirror file is refused
    (target / "train.txt").unlink()
    (folder / "train.txt").write_text("0 1\n")
    with pytest.raises(ChecksumError, match="train.txt"):
        download_kgat("last-fm", root, base_url=base.as_uri())
    assert not (target / "train.txt").exists()


def test_download_checksum_mismatch_raises_and_keeps_nothing(tmp_path):
    base, _ = mirror(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        download_kgat("last-fm", root, base_url=base.as_uri(), checksums={"test.txt": "0" * 64})
    assert not (root / "recsys" / "kgat" / "last-fm" / "test.txt").exists()


def test_download_falls_back_to_the_plain_kg_file(tmp_path):
    base, _ = mirror(tmp_path, zipped=False)
    target = download_kgat("last-fm", tmp_path / "data", base_url=base.as_uri())
    assert (target / "kg_final.txt").is_file() and not (target / "kg_final.txt.zip").exists()
    with pytest.raises(ConfigError, match="unknown KGAT dataset"):
        download_kgat("movielens", tmp_path / "data", base_url=base.as_uri())


def test_kgdata_rejects_ids_out_of_range():
    with pytest.raises(DataError, match="exceed"):
        KGData(2, 2, 2, 1, np.array([[0, 5]]), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 3)))
