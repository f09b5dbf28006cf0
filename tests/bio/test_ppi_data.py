"""PPB-Affinity reader, cluster files and splits, synthetic generator (interplay.bio.ppi.data)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from interplay.bio.ppi.data import (
    ALPHABET,
    cluster_split,
    random_split,
    read_clusters,
    read_ppb_affinity,
    write_synthetic_ppb_affinity,
)
from interplay.core.errors import ConfigError, DataError

HEADER = [
    "Complex ID",
    "PDB",
    "Ligand Chains",
    "Receptor Chains",
    "KD(M)",
    "Ligand Sequences",
    "Receptor Sequences",
]


def write_table(path, rows, header=HEADER):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def table(tmp_path):
    return write_table(
        tmp_path / "ppb.csv",
        [
            ["1A22:A, B::PMID=1", "1A22", "A", "B", "9e-10", "FPTIPLSRLF", "PKFTKCRSPE"],
            ["1AHW:A, B, C::PMID=2", "1AHW", "A, B", "C", "1e-6", "DIKMTQ,evqlve", "TNTVAAYNLT"],
        ],
    )


def test_reader_splits_chains_and_converts_kd_to_pkd(table):
    first, second = read_ppb_affinity(table)
    assert first.complex_id == "1A22_0" and second.complex_id == "1AHW_1"  # <PDB>_<row> as Alsamkary et al.
    assert first.pkd == pytest.approx(-math.log10(9e-10))
    assert second.pkd == pytest.approx(6.0)
    assert second.ligand == ("DIKMTQ", "EVQLVE")  # comma-separated chains, lower case upper-cased
    assert second.receptor == ("TNTVAAYNLT",)
    assert second.chains == ("DIKMTQ", "EVQLVE", "TNTVAAYNLT")


def test_label_eps_reproduces_the_authors_saturating_transform(table):
    # |log10(KD + 1e-10)|: a 9e-10 M binder reads 9.0, not 9.046
    first, _ = read_ppb_affinity(table, label_eps=1e-10)
    assert first.pkd == pytest.approx(abs(math.log10(9e-10 + 1e-10)))


def test_id_column_is_used_and_must_be_unique(table, tmp_path):
    assert [c.complex_id for c in read_ppb_affinity(table, id_column="Complex ID")][0] == "1A22:A, B::PMID=1"
    dup = write_table(
        tmp_path / "dup.csv",
        [["X", "1A22", "A", "B", "1e-9", "ACD", "EFG"], ["X", "1A22", "A", "B", "1e-9", "ACD", "EFG"]],
    )
    with pytest.raises(DataError, match="not unique"):
        read_ppb_affinity(dup, id_column="Complex ID")


@pytest.mark.parametrize("bad", ["ACD-EF", "ACD*", "AC1D", "AC DE"])
def test_a_residue_outside_the_alphabet_names_the_complex(tmp_path, bad):
    path = write_table(
        tmp_path / "bad.csv",
        [
            ["ok", "1ABC", "A", "B", "1e-9", "ACDEF", "GHIKL"],
            ["bad", "2XYZ", "A", "B", "1e-9", "ACDEF", f"GHIK,{bad}"],
        ],
    )
    with pytest.raises(DataError) as info:
        read_ppb_affinity(path)
    message = str(info.value)
    assert (
        "2XYZ_1" in message and "receptor chain 2" in message and "line 3" in message and str(path) in message
    )


def test_extended_letters_are_accepted():
    assert set("XBZUO") <= set(ALPHABET) and len(ALPHABET) == 25


@pytest.mark.parametrize(
    ("kd", "match"),
    [("0", "positive"), ("-1e-9", "positive"), ("abc", "positive"), ("", "positive"), ("nan", "positive")],
)
def test_bad_kd_names_row_and_complex(tmp_path, kd, match):
    path = write_table(tmp_path / "kd.csv", [["c", "3ABC", "A", "B", kd, "ACDEF", "GHIKL"]])
    with pytest.raises(DataError, match=match) as info:
        read_ppb_affinity(path)
    assert "3ABC_0" in str(info.value) and "KD(M)" in str(info.value)


def test_missing_file_column_and_empty_side(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_ppb_affinity(tmp_path / "absent.csv")
    no_kd = write_table(
        tmp_path / "nokd.csv", [["ACD", "EFG"]], header=["Ligand Sequences", "Receptor Sequences"]
    )
    with pytest.raises(DataError, match=r"missing column\(s\) 'KD\(M\)'"):
        read_ppb_affinity(no_kd)
    empty = write_table(tmp_path / "empty.csv", [["c", "4ABC", "A", "B", "1e-9", "", "GHIKL"]])
    with pytest.raises(DataError, match="4ABC_0.*no ligand sequence"):
        read_ppb_affinity(empty)
    blank_chain = write_table(tmp_path / "blank.csv", [["c", "5ABC", "A", "B", "1e-9", "ACD,,EF", "GHIKL"]])
    with pytest.raises(DataError, match="5ABC_0.*ligand chain 2 is empty"):
        read_ppb_affinity(blank_chain)


def test_cluster_files_mmseqs_tsv_and_csv(tmp_path):
    tsv = tmp_path / "clusters.tsv"
    tsv.write_text("a\ta\na\tb\nc\tc\n")
    assert read_clusters(tsv) == {"a": "a", "b": "a", "c": "c"}
    csv_file = tmp_path / "clusters.csv"
    csv_file.write_text("complex_id,cluster_id\na,1\nb,1\nc,2\n")
    assert read_clusters(csv_file) == {"a": "1", "b": "1", "c": "2"}
    clash = tmp_path / "clash.tsv"
    clash.write_text("a\tx\nb\tx\n")  # member x under two representatives
    with pytest.raises(DataError, match="'x' is in two clusters"):
        read_clusters(clash)
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("complex_id,cluster_id\na,1\na,2\n")
    with pytest.raises(DataError, match="'a' is in two clusters"):
        read_clusters(conflict)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,group\na,1\n")
    with pytest.raises(DataError, match="complex_id and cluster_id"):
        read_clusters(bad)


def test_cluster_split_never_shares_a_cluster():
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(500)]
    clusters = {c: f"k{int(rng.integers(0, 60))}" for c in ids}
    for seed in range(5):
        index = cluster_split(ids, clusters, val_fraction=0.1, test_fraction=0.2, seed=seed)
        assert sorted(np.concatenate(list(index.values())).tolist()) == list(range(500))
        groups = {s: {clusters[ids[i]] for i in idx} for s, idx in index.items()}
        assert not groups["train"] & groups["val"]
        assert not groups["train"] & groups["test"]
        assert not groups["val"] & groups["test"]
        assert 0.2 * 500 <= len(index["test"]) < 0.2 * 500 + 30  # within one cluster of the target
        assert 0.1 * 500 <= len(index["val"]) < 0.1 * 500 + 30
    first = cluster_split(ids, clusters, seed=1)
    second = cluster_split(ids, clusters, seed=1)
    assert all(np.array_equal(first[s], second[s]) for s in first)


def test_cluster_split_errors():
    with pytest.raises(DataError, match="2 complex.*no cluster.*'b'"):
        cluster_split(["a", "b", "c"], {"a": "1"})
    with pytest.raises(DataError, match="2 identity cluster"):
        cluster_split(["a", "b", "c"], {"a": "1", "b": "1", "c": "2"})
    with pytest.raises(ConfigError, match="val_fraction"):
        cluster_split(["a"], {"a": "1"}, val_fraction=0.6, test_fraction=0.5)


def test_random_split_is_a_seeded_partition():
    index = random_split(100, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert [len(index[s]) for s in ("train", "val", "test")] == [70, 10, 20]
    assert sorted(np.concatenate(list(index.values())).tolist()) == list(range(100))
    assert np.array_equal(random_split(100, seed=4)["test"], random_split(100, seed=4)["test"])


def test_synthetic_generator_writes_the_format_with_its_planted_signal(tmp_path):
    out = write_synthetic_ppb_affinity(tmp_path, n_complexes=120, n_families=12, noise=0.1, seed=3)
    complexes = read_ppb_affinity(out.csv)
    assert len(complexes) == 120
    assert np.allclose([c.pkd for c in complexes], out.pkd, atol=1e-5)  # KD written with 7 digits
    # the label is 7 + sum over (ligand motif, receptor motif) of W + N(0, 0.1^2)
    truth = json.loads(out.truth.read_text())
    motifs, potential = truth["motifs"], np.array(truth["potential"])
    assert np.allclose(potential, potential.T)
    on_lig = np.array([[any(m in ch for ch in c.ligand) for m in motifs] for c in complexes], float)
    on_rec = np.array([[any(m in ch for ch in c.receptor) for m in motifs] for c in complexes], float)
    residual = out.pkd - (7.0 + np.einsum("ni,ij,nj->n", on_lig, potential, on_rec))
    assert abs(residual.std() - 0.1) < 0.03 and abs(residual.mean()) < 0.05
    # two or three motifs per complex (a later copy can overwrite an earlier motif now and then)
    assert np.mean(on_lig.sum(1) + on_rec.sum(1) >= 2) > 0.9
    # one cluster per family; the cluster file covers every complex
    clusters = read_clusters(out.clusters)
    assert set(clusters) == {c.complex_id for c in complexes}
    assert len(set(clusters.values())) == 12
    assert all(c.complex_id.split("_")[0] == clusters[c.complex_id].split("_")[0] for c in complexes)
    # deterministic per seed
    again = write_synthetic_ppb_affinity(
        tmp_path / "again", n_complexes=120, n_families=12, noise=0.1, seed=3
    )
    assert again.csv.read_bytes() == out.csv.read_bytes()
