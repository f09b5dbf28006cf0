"""CTR data pipeline: readers, feature spec and fitting, memory-mapped cache, data module, generators.

Every file here is written by the synthetic generators or by hand into ``tmp_path``.
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch

from interplay.core.errors import ConfigError, DataError
from interplay.recsys.data import (
    CTRDataModule,
    FeatureSpec,
    FittedFeatures,
    build_arrays,
    cached_arrays,
    load_spec,
    read_criteo,
    read_fuxictr_csv,
    shipped_specs,
    write_synthetic_criteo,
    write_synthetic_sequences,
)
from interplay.recsys.data.criteo import COLUMNS
from interplay.recsys.data.features import hash_texts
from interplay.recsys.data.synthetic import CRITEO_VERSION
from interplay.recsys.layout import FeatureLayout
from interplay.recsys.registry import REGISTRY

SEQUENCE_SPEC = {
    "label": "clk",
    "user": "userid",
    "features": [
        {"name": ["userid", "item"], "kind": "categorical"},
        {"name": "price", "kind": "numeric", "transform": "standardize"},
        {"name": "history", "kind": "sequence", "max_length": 3, "shares_with": "item"},
    ],
}


def plain(data: pd.DataFrame) -> pd.DataFrame:
    """Text columns as object (chunks hold categoricals; concatenating them changes the dtype)."""
    out = data.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column].dtype):
            out[column] = out[column].astype(object)
    return out


def frame(columns: dict, source: str = "mem.csv") -> pd.DataFrame:
    df = pd.DataFrame(columns)
    df.index = pd.RangeIndex(2, 2 + len(df))  # line numbers as a reader gives them
    df.attrs["source"] = source
    return df


@pytest.fixture(scope="module")
def criteo_tsv(tmp_path_factory):
    path = tmp_path_factory.mktemp("criteo") / "day.tsv"
    truth = write_synthetic_criteo(path, 3000, seed=1, fmt="tsv")
    return path, truth


@pytest.fixture(scope="module")
def sequence_files(tmp_path_factory):
    return write_synthetic_sequences(
        tmp_path_factory.mktemp("sequences"), n_users=300, n_items=200, seed=2, long_tail_fraction=0.3
    )


def rewrite_line(source, target, line: int, edit):
    lines = source.read_text().splitlines(keepends=True)
    lines[line - 1] = edit(lines[line - 1])
    target.write_text("".join(lines))
    return target


# ------------------------------------------------------------------------------------------------ readers


def test_criteo_tsv_and_csv_read_the_same_records(tmp_path):
    tsv, csv = tmp_path / "a.tsv", tmp_path / "a.csv"
    write_synthetic_criteo(tsv, 250, seed=5, fmt="tsv")
    write_synthetic_criteo(csv, 250, seed=5, fmt="csv")
    assert "\t" in tsv.read_text().splitlines()[0] and csv.read_text().startswith("label,I1,")
    a = pd.concat(read_criteo(tsv, chunksize=64))
    b = pd.concat(read_criteo(csv, chunksize=100))
    assert list(a.columns) == list(COLUMNS) and len(a) == 250
    assert a.index[0] == 1 and b.index[0] == 2  # file line numbers: the CSV header is line 1
    pd.testing.assert_frame_equal(plain(a).reset_index(drop=True), plain(b).reset_index(drop=True))
    assert a["I1"].dtype == np.float64 and a["I1"].isna().any()  # missing counts -> NaN
    gz = tmp_path / "a.tsv.gz"  # day files ship gzipped
    gz.write_bytes(gzip.compress(tsv.read_bytes()))
    pd.testing.assert_frame_equal(plain(pd.concat(read_criteo(gz, chunksize=64))), plain(a))
    chunk = next(read_criteo(tsv))
    assert isinstance(chunk["C1"].dtype, pd.CategoricalDtype) and (chunk["C22"] == "").any()  # missing -> ""


def test_criteo_csv_header_in_another_order_is_reordered(tmp_path):
    source = tmp_path / "a.csv"
    write_synthetic_criteo(source, 20, seed=0, fmt="csv")
    original = pd.read_csv(source, dtype=str, keep_default_na=False)
    shuffled = original[list(reversed(COLUMNS))]
    target = tmp_path / "b.csv"
    shuffled.to_csv(target, index=False)
    a, b = pd.concat(read_criteo(source)), pd.concat(read_criteo(target))
    assert list(b.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(plain(a), plain(b))


def test_criteo_header_with_wrong_names_is_rejected(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("label," + ",".join(COLUMNS[1:-1]) + ",C99\n0" + "," * 39 + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: header .*missing C26; unexpected C99"):
        read_criteo(path)


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
@pytest.mark.parametrize("chunksize", [100_000, 7])
def test_criteo_wrong_column_count_names_file_and_line(tmp_path, fmt, chunksize):
    source = tmp_path / f"good.{fmt}"
    write_synthetic_criteo(source, 60, seed=0, fmt=fmt)
    sep = "\t" if fmt == "tsv" else ","
    line = 45  # in a later chunk when chunksize=7
    bad = rewrite_line(
        source, tmp_path / f"short.{fmt}", line, lambda s: s.rstrip("\n").rsplit(sep, 1)[0] + "\n"
    )
    with pytest.raises(DataError, match=rf"short\.{fmt}:{line}: expected 40 columns, got 39$"):
        list(read_criteo(bad, chunksize=chunksize))
    bad = rewrite_line(source, tmp_path / f"long.{fmt}", line, lambda s: s.rstrip("\n") + sep + "x\n")
    with pytest.raises(DataError, match=rf"long\.{fmt}:{line}: expected 40 columns, got 41$"):
        list(read_criteo(bad, chunksize=chunksize))


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
@pytest.mark.parametrize("chunksize", [100_000, 7])
def test_criteo_non_numeric_value_names_file_line_and_column(tmp_path, fmt, chunksize):
    source = tmp_path / f"good.{fmt}"
    write_synthetic_criteo(source, 60, seed=0, fmt=fmt)
    sep = "\t" if fmt == "tsv" else ","

    def put_text_in_i5(text: str) -> str:
        fields = text.rstrip("\n").split(sep)
        fields[5] = "abc"
        return sep.join(fields) + "\n"

    bad = rewrite_line(source, tmp_path / f"text.{fmt}", 38, put_text_in_i5)
    with pytest.raises(DataError, match=rf"text\.{fmt}:38: column I5 is not numeric: 'abc'$"):
        list(read_criteo(bad, chunksize=chunksize))


def test_line_numbers_stay_right_after_blank_lines_and_across_chunks(tmp_path):
    source = tmp_path / "good.tsv"
    write_synthetic_criteo(source, 30, seed=0)
    lines = source.read_text().splitlines(keepends=True)
    lines.insert(3, "\n")  # a blank line 4 is skipped but counted
    fields = lines[25].rstrip("\n").split("\t")
    fields[13] = "1.5.3"  # I13 of line 26
    lines[25] = "\t".join(fields) + "\n"
    bad = tmp_path / "blank.tsv"
    bad.write_text("".join(lines))
    with pytest.raises(DataError, match=r"blank\.tsv:26: column I13 is not numeric: '1\.5\.3'"):
        list(read_criteo(bad, chunksize=4))
    good = tmp_path / "blank_ok.tsv"
    good.write_text("".join(lines[:25]))
    chunks = list(read_criteo(good, chunksize=4))
    index = np.concatenate([c.index.to_numpy() for c in chunks])
    assert 4 not in index and index[0] == 1 and index[-1] == 25 and len(index) == 24


def test_fuxictr_reader_validates_against_the_header(sequence_files, tmp_path):
    train = sequence_files["train"]
    chunks = list(read_fuxictr_csv(train, chunksize=50, numeric_columns=["clk", "price"]))
    data = pd.concat(chunks)
    assert data["price"].dtype == np.float64 and data["click_sequence"].dtype == object
    assert data.index[0] == 2
    assert (data["click_sequence"].str.count(r"\^") >= 1).any()
    header = train.read_text().splitlines()[0].split(",")

    def drop_last(text: str) -> str:
        return text.rstrip("\n").rsplit(",", 1)[0] + "\n"

    bad = rewrite_line(train, tmp_path / "short.csv", 77, drop_last)
    with pytest.raises(
        DataError, match=rf"short\.csv:77: expected {len(header)} columns, got {len(header) - 1}$"
    ):
        list(read_fuxictr_csv(bad, chunksize=10, numeric_columns=["price"]))

    def bad_price(text: str) -> str:
        fields = text.rstrip("\n").split(",")
        fields[header.index("price")] = "cheap"
        return ",".join(fields) + "\n"

    bad = rewrite_line(train, tmp_path / "price.csv", 64, bad_price)
    with pytest.raises(DataError, match=r"price\.csv:64: column price is not numeric: 'cheap'$"):
        list(read_fuxictr_csv(bad, chunksize=10, numeric_columns=["clk", "price"]))
    with pytest.raises(DataError, match=r"no column\(s\) nope in the header"):
        read_fuxictr_csv(train, numeric_columns=["nope"])


def test_bad_label_names_file_and_line(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("clk,item\n1,a\n0,b\n2,c\n")
    spec = {"label": "clk", "features": [{"name": "item", "kind": "categorical"}]}
    with pytest.raises(DataError, match=r"l\.csv:4: label column clk must be 0 or 1, got 2\.0"):
        FittedFeatures.fit(spec, read_fuxictr_csv(path, numeric_columns=["clk"]))


# ------------------------------------------------------------------------------------------------ spec


def test_shipped_specs_load_and_lists_expand():
    assert {"criteo", "criteo_small", "taobao", "synthetic_sequences"} <= set(shipped_specs())
    for name in shipped_specs():
        assert isinstance(load_spec(name), FeatureSpec)
    spec = load_spec("criteo")
    assert [f.name for f in spec.features][:2] == ["I1", "I2"] and len(spec.features) == 39
    assert spec.format == "criteo" and spec.features[-1].min_count == 10
    taobao = load_spec("taobao")
    assert taobao.sequence.shares_with == "adgroup_id" and taobao.user == "userid"


def test_spec_yaml_errors_name_the_problem(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("label: y\nfeatures:\n  - {name: a, kind: categorical, min_cout: 3}\n")
    with pytest.raises(ConfigError, match=r"min_cout.*did you mean.*min_count"):
        load_spec(path)
    bad = {
        "features": [
            {"name": "a", "kind": "categorical"},
            {"name": "s", "kind": "sequence", "shares_with": "b"},
        ]
    }
    with pytest.raises(ConfigError, match="shares_with 'b', which is not a categorical feature"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="neither a YAML file nor a shipped spec"):
        load_spec("no-such-spec")


# ------------------------------------------------------------------------------------------ fitted features


def test_vocabulary_min_count_and_oov():
    spec = {"label": "y", "features": [{"name": "c", "kind": "categorical", "min_count": 2}]}
    train = frame({"y": [0, 1, 0, 1, 0, 1, 0], "c": ["a", "b", "a", "c", "b", "a", ""]})
    fitted = FittedFeatures.fit(spec, [train])
    vocab = fitted.encoders["c"]
    assert vocab.values == ["a", "b"] and vocab.counts.tolist() == [3, 2]  # "c" seen once, "" missing
    assert fitted.layout().categorical[0].vocab_size == 3
    test = frame({"y": [0] * 5, "c": ["b", "a", "c", "", "never"]})
    assert fitted.transform(test)["categorical"][:, 0].tolist() == [2, 1, 0, 0, 0]


def test_hashing_is_deterministic_and_leaves_zero_for_missing():
    spec = {"label": "y", "features": [{"name": "c", "kind": "categorical", "hash_buckets": 7}]}
    values = ["x", "y", "z", "", "x", "w"]
    data = frame({"y": [0] * 6, "c": values})
    ids_a = FittedFeatures.fit(spec, [data]).transform(data)["categorical"][:, 0]
    ids_b = FittedFeatures.fit(spec, [frame({"y": [1], "c": ["other"]})]).transform(data)["categorical"][:, 0]
    assert ids_a.tolist() == ids_b.tolist()
    assert (
        ids_a[3] == 0
        and ids_a[0] == ids_a[4]
        and ((ids_a[[0, 1, 2, 5]] >= 1) & (ids_a[[0, 1, 2, 5]] <= 7)).all()
    )
    expected = hash_texts(np.array(["x", "y", "z"], dtype=object)) % np.uint64(7) + np.uint64(1)
    assert ids_a[:3].tolist() == expected.astype(np.int64).tolist()
    assert FittedFeatures.fit(spec, [data]).layout().categorical[0].vocab_size == 8


def test_numeric_transforms_match_hand_computed_values():
    spec = {
        "label": "y",
        "features": [
            {"name": "raw", "column": "x", "kind": "numeric", "transform": "none"},
            {"name": "log", "column": "x", "kind": "numeric", "transform": "log1p"},
            {"name": "std", "column": "x", "kind": "numeric", "transform": "standardize"},
            {"name": "logstd", "column": "x", "kind": "numeric", "transform": "log1p_standardize"},
            {"name": "bins", "column": "x", "kind": "numeric", "transform": "bins", "n_bins": 4},
            {"name": "sq", "column": "x", "kind": "numeric", "transform": "log_square"},
        ],
    }
    train = frame({"y": [0, 1, 0, 1, 0], "x": [1.0, 2.0, 3.0, np.nan, 10.0]})
    fitted = FittedFeatures.fit(spec, [train])
    # train moments of the present values only: 1, 2, 3, 10
    mean, std = 4.0, math.sqrt(((1 - 4) ** 2 + (2 - 4) ** 2 + (3 - 4) ** 2 + (10 - 4) ** 2) / 4)
    logs = np.log1p([1.0, 2.0, 3.0, 10.0])
    assert fitted.encoders["std"]["mean"] == pytest.approx(mean) and fitted.encoders["std"][
        "std"
    ] == pytest.approx(std)
    assert fitted.encoders["bins"]["edges"] == pytest.approx(
        np.quantile([1, 2, 3, 10], [0.25, 0.5, 0.75]).tolist()
    )
    test = frame({"y": [0, 0, 0, 0], "x": [-2.0, 0.0, 5.0, np.nan]})
    out = fitted.transform(test)
    numeric = out["numeric"]
    assert out["numeric"].dtype == np.float32 and numeric.shape == (4, 4)
    expected_log = [-math.log(3.0), 0.0, math.log(6.0), 0.0]  # sign(x) * ln(1 + |x|); missing -> 0
    np.testing.assert_allclose(numeric[:, 0], [-2.0, 0.0, 5.0, 0.0])
    np.testing.assert_allclose(numeric[:, 1], expected_log, rtol=1e-6)
    np.testing.assert_allclose(
        numeric[:, 2], [(-2 - mean) / std, (0 - mean) / std, (5 - mean) / std, 0.0], rtol=1e-6
    )
    log_expected = [(v - logs.mean()) / logs.std() for v in expected_log[:3]] + [0.0]
    np.testing.assert_allclose(numeric[:, 3], log_expected, rtol=1e-5)
    categorical = out["categorical"]
    # bins: edges 1.75, 2.5, 4.75 -> -2 in bin 1, 0 in bin 1, 5 in bin 4; missing -> 0
    assert categorical[:, 0].tolist() == [1, 1, 4, 0]
    assert fitted.layout().categorical[0].vocab_size == 5
    # log_square buckets of train: 1 -> 1, 2 -> 2, 3 -> floor(ln(3)^2) = 1, 10 -> floor(ln(10)^2) = 5
    assert fitted.encoders["sq"].values == [1, 2, 5] and fitted.encoders["sq"].counts.tolist() == [2, 1, 1]
    # test: -2 -> bucket -2 (unseen: 0), 0 -> bucket 0 (unseen: 0), 5 -> floor(ln(5)^2) = 2 -> id 2
    assert categorical[:, 1].tolist() == [0, 0, 2, 0]
    assert [f.name for f in fitted.layout().categorical] == ["bins", "sq"]


def test_statistics_come_from_train_only_and_test_leaves_them_unchanged():
    spec = load_spec(SEQUENCE_SPEC)
    train = frame(
        {
            "clk": [1, 0, 1, 0],
            "userid": ["u1", "u2", "u1", "u3"],
            "item": ["i1", "i2", "i1", "i3"],
            "price": [1.0, 2.0, 3.0, 4.0],
            "history": ["i1^i2", "", "i2", "i3^i4"],
        }
    )
    fitted = FittedFeatures.fit(spec, [train])
    before = fitted.to_json()
    test = frame(
        {
            "clk": [0, 1],
            "userid": ["u9", "u1"],
            "item": ["i_test_only", "i2"],
            "price": [100.0, 2.5],
            "history": ["i_test_only^i1", "i9"],
        },
        source="test.csv",
    )
    out = fitted.transform(test)
    assert fitted.to_json() == before  # transforming test changed nothing
    assert out["categorical"][0].tolist() == [0, 0]  # unseen user and unseen item -> OOV
    assert out["sequence"][0].tolist() == [
        fitted.encoders["item"].lookup(hash_texts(np.array(["i1"], object)))[0],
        0,
        0,
    ]
    assert fitted.encoders["price"]["mean"] == pytest.approx(2.5)  # not moved by the test price 100
    assert out["numeric"][1, 0] == pytest.approx(0.0)
    assert out["user"][0] != out["user"][1] and out["user"].dtype == np.int64 and (out["user"] >= 0).all()


def test_sequences_keep_the_most_recent_items_and_share_the_item_vocabulary():
    spec = load_spec(SEQUENCE_SPEC)  # max_length 3
    train = frame(
        {
            "clk": [1, 0, 1],
            "userid": ["u1", "u2", "u3"],
            "item": ["a", "b", "c"],
            "price": [1.0, 2.0, 3.0],
            "history": ["a^b^c^d^e", "d", ""],
        }
    )
    fitted = FittedFeatures.fit(spec, [train])
    vocab = fitted.encoders["item"]
    # the item vocabulary also counts the sequence items (a, b, c, d twice; e once)
    assert vocab.values == ["a", "b", "c", "d", "e"] and vocab.counts.tolist() == [2, 2, 2, 2, 1]
    layout = fitted.layout()
    assert layout.sequence.shares_with == "item" and layout.sequence.vocab_size == vocab.size == 6
    assert layout.max_sequence_length == 3

    def ids(*items):
        return vocab.lookup(hash_texts(np.array(items, dtype=object))).tolist()

    test = frame(
        {
            "clk": [0] * 5,
            "userid": ["u1"] * 5,
            "item": ["e", "a", "b", "c", "d"],
            "price": [1.0] * 5,
            "history": ["a^b^c^d^e", "b", "", "a^unknown^c", "^a^^"],
        }
    )
    out = fitted.transform(test)
    sequence, length = out["sequence"], out["sequence_length"]
    assert sequence.shape == (5, 3) and sequence.dtype == np.int64 and length.dtype == np.int64
    assert sequence[0].tolist() == ids("c", "d", "e")  # the 3 most recent, oldest first
    assert sequence[1].tolist() == [*ids("b"), 0, 0]  # left-aligned, 0 = padding
    assert sequence[2].tolist() == [0, 0, 0]
    assert sequence[3].tolist() == [*ids("a", "c"), 0]  # an unknown item is dropped, not stored as 0
    assert sequence[4].tolist() == [*ids("a"), 0, 0]  # empty items are ignored
    assert length.tolist() == [3, 1, 0, 2, 1]
    # shared embedding: the same item has the same id in the item column and in the sequence
    assert out["categorical"][0, 1] == sequence[0, 2] and out["categorical"][4, 1] == sequence[0, 1]
    # without count_in_vocabulary only the item column builds the vocabulary
    items_only = dict(SEQUENCE_SPEC)
    items_only["features"] = [
        *SEQUENCE_SPEC["features"][:2],
        {**SEQUENCE_SPEC["features"][2], "count_in_vocabulary": False},
    ]
    assert FittedFeatures.fit(items_only, [train]).encoders["item"].values == ["a", "b", "c"]


def test_fitted_features_save_load_round_trip(tmp_path, criteo_tsv):
    path, _ = criteo_tsv
    spec = load_spec("criteo_small")
    spec.features[0].transform = "bins"
    spec.features[1].transform = "log_square"
    spec.features[2].transform = "standardize"
    spec.features[-1].hash_buckets = 50
    fitted = FittedFeatures.fit(spec, read_criteo(path, chunksize=500), source={"file": str(path)})
    saved = fitted.save(tmp_path / "fitted.json")
    loaded = FittedFeatures.load(saved)
    assert loaded == fitted and loaded.digest() == fitted.digest() and loaded.layout() == fitted.layout()
    chunk = next(read_criteo(path, chunksize=400))
    for key, value in fitted.transform(chunk).items():
        np.testing.assert_array_equal(loaded.transform(chunk)[key], value)
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temp file
    data = json.loads(saved.read_text())
    data["hash_check"]["a"] += 1
    (tmp_path / "tampered.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="text hash differs"):
        FittedFeatures.load(tmp_path / "tampered.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataError, match="not a fitted-features file"):
        FittedFeatures.load(tmp_path / "other.json")


def test_fit_does_not_depend_on_the_chunk_size(criteo_tsv):
    path, _ = criteo_tsv
    spec = load_spec("criteo_small")
    spec.features[3].transform = "bins"
    a = FittedFeatures.fit(spec, read_criteo(path, chunksize=3000))
    b = FittedFeatures.fit(spec, read_criteo(path, chunksize=37))
    c = FittedFeatures.fit(spec, [plain(pd.concat(read_criteo(path)))])  # text as object, not categorical
    assert a == b == c


# ------------------------------------------------------------------------------------------ array cache


def test_cache_built_in_small_chunks_equals_in_memory_transform_and_is_reused(tmp_path):
    path = tmp_path / "small.tsv"
    write_synthetic_criteo(path, 300, seed=4)
    fitted = FittedFeatures.fit("criteo_small", read_criteo(path))
    expected = fitted.transform(pd.concat(read_criteo(path)))
    arrays = build_arrays(read_criteo(path, chunksize=7), fitted, tmp_path / "built")
    assert len(arrays) == 300 and arrays.meta["fitted_digest"] == fitted.digest()
    assert arrays.arrays["categorical"].dtype == np.int32 and isinstance(arrays.arrays["numeric"], np.memmap)
    for key, value in expected.items():
        on_disk = np.load(tmp_path / "built" / f"{key}.npy")  # a plain .npy file
        np.testing.assert_array_equal(on_disk, value)
    batch = arrays.batch(np.array([5, 0, 299]))
    assert batch["categorical"].dtype == torch.int64 and batch["label"].dtype == torch.float32
    np.testing.assert_array_equal(batch["categorical"].numpy(), expected["categorical"][[5, 0, 299]])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left

    calls = []

    def chunks():
        calls.append(1)
        return read_criteo(path, chunksize=100)

    first = cached_arrays("rows", [path], chunks, fitted, tmp_path / "cache")
    second = cached_arrays("rows", [path], chunks, fitted, tmp_path / "cache")
    assert calls == [1] and first.path == second.path  # the second run reused the cache
    np.testing.assert_array_equal(second.arrays["label"], expected["label"])


def test_failed_build_leaves_nothing_behind(tmp_path, criteo_tsv):
    path, _ = criteo_tsv
    fitted = FittedFeatures.fit("criteo_small", read_criteo(path))

    def broken():
        yield from read_criteo(path, chunksize=500)
        raise DataError("disk on fire")

    with pytest.raises(DataError, match="disk on fire"):
        build_arrays(broken(), fitted, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ data module


def check_batch(batch: dict, layout: FeatureLayout, size: int) -> None:
    assert batch["categorical"].dtype == torch.int64 and batch["categorical"].shape == (
        size,
        layout.n_categorical,
    )
    assert batch["numeric"].dtype == torch.float32 and batch["numeric"].shape == (size, layout.n_numeric)
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (size,)
    assert set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    for j, field in enumerate(layout.categorical):
        assert batch["categorical"][:, j].min() >= 0 and batch["categorical"][:, j].max() < field.vocab_size
    if layout.sequence is not None:
        seq, length = batch["sequence"], batch["sequence_length"]
        assert seq.dtype == torch.int64 and seq.shape == (size, layout.max_sequence_length)
        assert length.dtype == torch.int64 and length.shape == (size,)
        positions = torch.arange(layout.max_sequence_length)[None, :]
        assert torch.equal(seq != 0, positions < length[:, None])  # left-aligned, 0 = padding only
        assert seq.max() < layout.sequence.vocab_size
    else:
        assert "sequence" not in batch


def test_datamodule_random_split_batches_and_disjoint_splits(tmp_path, criteo_tsv):
    path, _ = criteo_tsv
    dm = CTRDataModule(
        "criteo_small", path=path, cache_dir=tmp_path, batch_size=128, eval_batch_size=500, chunksize=700
    )
    layout = dm.info["layout"]
    assert isinstance(layout, FeatureLayout) and layout.n_categorical == 26 and layout.n_numeric == 13
    dm.setup("fit")
    indices = {split: dataset.indices for split, dataset in dm.datasets.items()}
    assert sum(len(i) for i in indices.values()) == 3000
    assert not set(indices["train"]) & set(indices["val"]) and not set(indices["train"]) & set(
        indices["test"]
    )
    assert not set(indices["val"]) & set(indices["test"])
    assert 200 < len(indices["val"]) < 400 and 200 < len(indices["test"]) < 400
    assert dm.fitted.n_rows == len(indices["train"])  # fitted on the training rows only
    train_batches = list(dm.train_dataloader())
    assert len(train_batches) == math.ceil(len(indices["train"]) / 128)
    check_batch(train_batches[0], layout, 128)
    assert "user" not in train_batches[0]
    val = list(dm.val_dataloader())
    check_batch(val[0], layout, min(500, len(indices["val"])))
    # evaluation batches follow file order: they equal the transform of the validation rows
    rows = pd.concat(read_criteo(path)).iloc[indices["val"]]
    np.testing.assert_array_equal(
        torch.cat([b["label"] for b in val]).numpy(), dm.fitted.transform(rows)["label"]
    )
    # shuffled, and reproducible with the seed
    first = next(iter(dm.train_dataloader()))["label"]
    again = CTRDataModule("criteo_small", path=path, cache_dir=tmp_path, batch_size=128, chunksize=700)
    assert torch.equal(next(iter(again.train_dataloader()))["label"], first)
    assert again.fitted_path == dm.fitted_path and again.fitted == dm.fitted  # reused from the cache


def test_datamodule_explicit_files_with_sequences(tmp_path, sequence_files):
    dm = CTRDataModule(
        "synthetic_sequences",
        train=sequence_files["train"],
        valid=sequence_files["valid"],
        test=sequence_files["test"],
        cache_dir=tmp_path,
        batch_size=64,
    )
    layout = dm.info["layout"]
    assert layout.sequence.shares_with == "adgroup_id" and layout.target_index == 1
    sizes = dm.split_sizes()
    assert set(sizes) == {"train", "val", "test"} and dm.fitted.n_rows == sizes["train"]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()):
        batch = next(iter(loader))
        check_batch(batch, layout, min(64, len(loader.dataset)))
        assert batch["user"].dtype == torch.int64
    # one example, for the default collate
    example = dm.datasets["train"][3]
    assert example["categorical"].shape == (layout.n_categorical,) and example["label"].shape == ()
    # a dataset pickles without its memory maps (workers reopen them)
    dataset = dm.datasets["val"]
    restored = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 10_000
    assert torch.equal(restored[[0, 5, 2]]["sequence"], dataset[[0, 5, 2]]["sequence"])


def test_vocabulary_fitted_on_train_is_reused_unchanged_at_test(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    header = "clk,userid,item,price,history\n"
    (folder / "train.csv").write_text(header + "1,u1,i1,1.0,i2\n0,u2,i2,2.0,i1^i2\n1,u1,i1,3.0,\n")
    (folder / "valid.csv").write_text(header + "0,u1,i2,1.0,i1\n")
    (folder / "test.csv").write_text(header + "1,u3,i_new,9.0,i_new^i1\n0,u1,i1,2.0,i2\n")
    spec = dict(SEQUENCE_SPEC, format="csv")
    dm = CTRDataModule(
        spec,
        train=folder / "train.csv",
        valid=folder / "valid.csv",
        test=folder / "test.csv",
        cache_dir=tmp_path / "c",
    )
    dm.setup("test")
    fitted_json = dm.fitted_path.read_text()
    test = next(iter(dm.test_dataloader()))
    item = dm.fitted.encoders["item"]
    assert test["categorical"][:, 1].tolist() == [0, item.values.index("i1") + 1]  # i_new -> OOV
    assert test["sequence"][0].tolist() == [item.values.index("i1") + 1, 0, 0]
    assert dm.fitted_path.read_text() == fitted_json and dm.fitted.n_rows == 3
    # a checkpoint's fitted features win over a fresh fit
    state = dm.state_dict()
    other = CTRDataModule(
        spec,
        train=folder / "valid.csv",
        valid=folder / "valid.csv",
        test=folder / "test.csv",
        cache_dir=tmp_path / "d",
    )
    other.load_state_dict(state)
    assert other.fitted == dm.fitted
    np.testing.assert_array_equal(next(iter(other.test_dataloader()))["categorical"], test["categorical"])
    reloaded = CTRDataModule(
        "criteo",
        train=folder / "valid.csv",
        valid=folder / "valid.csv",
        fitted=dm.fitted_path,
        cache_dir=tmp_path / "e",
    )
    assert reloaded.fitted == dm.fitted and reloaded.spec.label == "clk"


def test_datamodule_rejects_ambiguous_split_settings(tmp_path):
    with pytest.raises(ConfigError, match="either 'path'"):
        CTRDataModule("criteo", path=tmp_path / "a", train=tmp_path / "b", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least 'train' and 'valid'"):
        CTRDataModule("criteo", train=tmp_path / "b", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="sum to less than 1"):
        CTRDataModule("criteo", path=tmp_path / "a", val_fraction=0.6, test_fraction=0.5, cache_dir=tmp_path)
    with pytest.raises(DataError, match="data file not found"):
        CTRDataModule("criteo", path=tmp_path / "missing.tsv", cache_dir=tmp_path).info  # noqa: B018


def test_registered_datasets_build_from_generated_files(tmp_path):
    assert {"criteo", "taobao-tiny", "synthetic-ctr", "synthetic-sequences"} <= set(REGISTRY.datasets.names())
    common = dict(root=str(tmp_path), batch_size=32, eval_batch_size=None, num_workers=0, seed=0)
    ctr = REGISTRY.datasets.create("synthetic-ctr", **common, n_rows=400)
    assert (tmp_path / "recsys" / "synthetic" / f"criteo-v{CRITEO_VERSION}-n400-seed0.tsv").is_file()
    check_batch(next(iter(ctr.train_dataloader())), ctr.info["layout"], 32)
    seq = REGISTRY.datasets.create("synthetic-sequences", **common, n_users=60, n_items=40)
    check_batch(next(iter(seq.val_dataloader())), seq.info["layout"], 32)
    assert list((tmp_path / "recsys" / "cache").glob("fitted-*.json"))
    # criteo reads <root>/recsys/<path>; taobao-tiny <root>/recsys/tiny_csv/*_sample.csv
    write_synthetic_criteo(tmp_path / "recsys" / "criteo_sample.txt", 300, seed=3, fmt="csv")
    crit = REGISTRY.datasets.create("criteo", **common, spec="criteo_small")
    assert sum(crit.split_sizes().values()) == 300
    tiny = tmp_path / "recsys" / "tiny_csv"
    files = write_synthetic_sequences(tmp_path / "gen", n_users=30, n_items=20, seed=0)
    tiny.mkdir()
    for name in ("train", "valid", "test"):
        text = files[name].read_text()
        (tiny / f"{name}_sample.csv").write_text(text)
    taobao = REGISTRY.datasets.create("taobao-tiny", **common, spec="synthetic_sequences")
    assert taobao.split_sizes()["train"] > 0
    with pytest.raises(DataError, match="not found"):
        REGISTRY.datasets.create("taobao-tiny", **{**common, "root": str(tmp_path / "nowhere")}).info  # noqa: B018


# ------------------------------------------------------------------------------------------ generators


def test_planted_interaction_is_learnable_signal(tmp_path):
    truth = write_synthetic_criteo(tmp_path / "big.tsv", 40_000, seed=11)
    data = pd.concat(read_criteo(tmp_path / "big.tsv", chunksize=20_000))
    c1 = data["C1"].map({v: i for i, v in enumerate(truth.values["C1"])}).to_numpy()
    c2 = data["C2"].map({v: i for i, v in enumerate(truth.values["C2"])}).to_numpy()
    assert not np.isnan(c1.astype(float)).any() and 0.15 < data["label"].mean() < 0.5
    table = (
        pd.DataFrame({"c1": c1, "c2": c2, "y": data["label"]})
        .groupby(["c1", "c2"])["y"]
        .agg(["mean", "size"])
    )
    table = table[table["size"] >= 80]
    # the label rate differs strongly between C1 x C2 combinations...
    assert table["mean"].max() - table["mean"].min() > 0.4
    # ...beyond what C1 and C2 explain on their own: centred per C1 and per C2 (an additive model's
    # best), the rates still follow the planted interaction u[C1] . v[C2]
    logit = np.log((table["mean"] + 0.01) / (1.01 - table["mean"]))
    frame_ = logit.reset_index()
    frame_.columns = ["c1", "c2", "logit"]
    residual = frame_["logit"] - frame_.groupby("c1")["logit"].transform("mean")
    residual = residual - residual.groupby(frame_["c2"]).transform("mean")
    planted = truth.interaction[frame_["c1"], frame_["c2"]]
    planted = planted - planted.mean()
    assert np.corrcoef(residual, planted)[0, 1] > 0.6
    # and the numeric x categorical term: I3 matters only where C5 is its most frequent value
    on = data["C5"] == truth.c5_value
    high = data["I3"] > data["I3"].median()
    effect_on = data["label"][on & high].mean() - data["label"][on & ~high].mean()
    effect_off = data["label"][~on & high].mean() - data["label"][~on & ~high].mean()
    assert effect_on > 0.15 and abs(effect_off) < 0.05


def test_sequence_generator_writes_readable_files_with_long_tail_users(sequence_files):
    data = pd.concat(
        pd.concat(read_fuxictr_csv(path, numeric_columns=["clk", "price"]))
        for path in sequence_files.values()
    )
    assert set(sequence_files) == {"train", "valid", "test"}
    lengths = data["click_sequence"].map(lambda s: len(s.split("^")) if s else 0)
    per_user = lengths.groupby(data["userid"]).first()
    short = per_user[per_user <= 3]
    assert 0.15 < len(short) / len(per_user) < 0.45  # long_tail_fraction = 0.3
    assert per_user.max() > 10 and (per_user[per_user > 3] >= 5).all()
    # users click items like the ones in their history: candidates whose category appears there
    category = dict(zip(data["adgroup_id"], data["cate_id"]))
    seen = [
        category.get(item) is not None and cate in {category.get(h) for h in history.split("^")}
        for item, cate, history in zip(data["adgroup_id"], data["cate_id"], data["click_sequence"])
    ]
    seen = np.array(seen)
    assert data["clk"][seen].mean() > data["clk"][~seen].mean() + 0.1
    assert re.fullmatch(r"\d+(\^\d+)*", data["click_sequence"][data["click_sequence"] != ""].iloc[0])
