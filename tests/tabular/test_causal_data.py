"""IHDP readers (CSV and NPZ), the continuous-dosage simulation, synthetic generators, dataset splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from interplay.core.errors import ConfigError, DataError
from interplay.tabular.causal.data import (
    CausalInputError,
    IHDPReplications,
    make_synthetic_categorical,
    make_synthetic_dosage,
    make_synthetic_ihdp,
    read_ihdp_csv,
    read_ihdp_npz,
    simulate_ihdp_continuous,
    simulate_vcnet,
    write_ihdp_csv,
    write_ihdp_npz,
    write_synthetic_ihdp,
)
from interplay.tabular.causal.datasets import holdout_splits
from interplay.tabular.registry import REGISTRY

SHARED_IHDP = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tabular" / "ihdp" / "ihdp_npci_1.csv"
)

# The first two rows of CEVAE's ihdp_npci_1.csv: t, y_factual, y_cfactual, mu0, mu1, x1..x25 (x14 coded 1/2).
ROW_1 = (
    "1,5.59991628549083,4.31877968420119,3.26825638455712,6.8544566863328,-0.528602821749802,"
    "-0.343454502314042,1.12855393123738,0.161702527138546,-0.316603181521744,1.29521593563369,"
    "1,0,1,0,0,0,0,1,0,1,1,1,1,0,0,0,0,0,0"
)
ROW_3 = (
    "0,2.99627270536114,6.63395221920133,1.57053630881398,6.12161721836507,-0.807450996140383,"
    "-0.20294594178963,-0.360897988611247,-0.879605988141577,0.808706461285914,-0.526555605465598,"
    "0,0,0,1,0,0,0,2,0,1,0,1,1,0,0,0,0,0,0"
)


def _check_first_rows(data) -> None:
    assert data.t[0] == 1 and data.y[0] == pytest.approx(5.59991628549083)
    assert data.y_cf[0] == pytest.approx(4.31877968420119)
    assert data.mu0[0] == pytest.approx(3.26825638455712) and data.mu1[0] == pytest.approx(6.8544566863328)
    assert data.x[0, 0] == pytest.approx(-0.528602821749802) and data.x[0, 5] == pytest.approx(
        1.29521593563369
    )
    assert data.true_effect[0] == pytest.approx(6.8544566863328 - 3.26825638455712)


@pytest.mark.skipif(not SHARED_IHDP.is_file(), reason="../shared/data/tabular/ihdp is not on this machine")
def test_reader_against_the_known_first_rows_of_ihdp_npci_1():
    data = read_ihdp_csv(SHARED_IHDP)
    assert data.x.shape == (747, 25) and int(data.t.sum()) == 139
    _check_first_rows(data)
    # x14 is coded {1, 2} in the file; CEVAE subtracts 1
    assert set(np.unique(data.x[:, 13])) == {0.0, 1.0}
    assert data.x[0, 13] == 0.0  # the file's first row has x14 = 1
    raw = read_ihdp_csv(SHARED_IHDP, shift_x14=False)
    np.testing.assert_array_equal(raw.x[:, 13], data.x[:, 13] + 1)


def test_reader_on_a_csv_written_here(tmp_path):
    path = tmp_path / "ihdp_npci_1.csv"
    path.write_text(ROW_1 + "\n" + ROW_3 + "\n")
    data = read_ihdp_csv(path)
    _check_first_rows(data)
    assert data.t.tolist() == [1, 0]
    assert data.x[:, 13].tolist() == [0.0, 1.0]  # 1 -> 0 and 2 -> 1
    assert data.x[1, 12:14].tolist() == [0.0, 1.0]
    # a header line (some copies carry one) is skipped
    header = tmp_path / "with_header.csv"
    header.write_text("t,yf,ycf,mu0,mu1," + ",".join(f"x{i}" for i in range(1, 26)) + "\n" + ROW_1 + "\n")
    np.testing.assert_array_equal(read_ihdp_csv(header).x, data.x[:1])


def test_csv_round_trip_keeps_the_cevae_layout(tmp_path):
    data = make_synthetic_ihdp(3, n=60, n_treated=12)
    path = write_ihdp_csv(tmp_path / "ihdp_npci_3.csv", data)
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == 30 and first[18] in ("1", "2")  # x14 written as {1, 2} like the original
    back = read_ihdp_csv(path)
    np.testing.assert_allclose(back.x, data.x)
    np.testing.assert_allclose(back.potential_outcomes, data.potential_outcomes)
    np.testing.assert_array_equal(back.t, data.t)
    np.testing.assert_allclose(back.y_cf, data.y_cf)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1,2,3\n", "expected 30 comma-separated columns"),
        (ROW_1.replace("5.59991628549083", "nan") + "\n", "column y_factual is nan"),
        (ROW_1.replace("1,5.599", "3,5.599", 1) + "\n", "t must be 0 or 1"),
        (ROW_1.replace("-0.343454502314042", "abc") + "\n" + ROW_1 + "\n", "line 1: a value is not a number"),
        ("\n", "no data rows"),
    ],
)
def test_bad_csv_files_name_the_file_and_the_field(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_ihdp_csv(path)
    assert "bad.csv" in str(info.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="IHDP CSV not found"):
        read_ihdp_csv(tmp_path / "nope.csv")


def test_npz_reader_on_files_written_here(tmp_path):
    reps = [make_synthetic_ihdp(k, n=40, n_treated=8) for k in (1, 2, 3)]
    path = write_ihdp_npz(tmp_path / "ihdp_npci_1-3.train.npz", reps)
    with np.load(path) as archive:
        assert archive["x"].shape == (40, 25, 3) and archive["mu0"].shape == (40, 3)
    back = read_ihdp_npz(path)
    assert len(back) == 3
    for original, read in zip(reps, back):
        np.testing.assert_allclose(read.x, original.x)
        np.testing.assert_allclose(read.true_effect, original.true_effect)
        np.testing.assert_array_equal(read.t, original.t)


def test_npz_reader_shifts_x14_and_checks_keys(tmp_path):
    n, reps = 6, 2
    x = np.zeros((n, 25, reps))
    x[:, 13, :] = np.array([1, 2, 1, 2, 2, 1])[:, None]  # coded {1, 2} as in CFRNet's files
    fields = {k: np.ones((n, reps)) for k in ("yf", "ycf", "mu0", "mu1")}
    t = np.array([0, 1, 0, 1, 0, 1], dtype=float)[:, None].repeat(reps, 1)
    np.savez(tmp_path / "a.npz", x=x, t=t, **fields)
    data = IHDPReplications(tmp_path / "a.npz").replication(1)
    assert data.x[:, 13].tolist() == [0, 1, 0, 1, 1, 0]
    np.savez(tmp_path / "b.npz", x=x, t=t, yf=fields["yf"])
    with pytest.raises(DataError, match="missing key"):
        IHDPReplications(tmp_path / "b.npz")
    with pytest.raises(DataError, match="replication 5 out of range"):
        IHDPReplications(tmp_path / "a.npz").replication(5)


def test_continuous_ihdp_simulation_follows_vcnet():
    covariates = make_synthetic_ihdp(1).x
    data = simulate_ihdp_continuous(covariates, seed=0)
    assert data.treatment == "continuous" and data.x.shape == (747, 25)
    assert data.t.min() > 0.0 and data.t.max() < 1.0
    # covariates are rescaled as (x - min) / max, column by column
    np.testing.assert_allclose(data.x, (covariates - covariates.min(0)) / covariates.max(0))
    # y = response(x, t) + N(0, 0.5^2)
    residual = data.y - data.response(data.x, data.t)
    assert abs(residual.mean()) < 0.1 and residual.std() == pytest.approx(0.5, abs=0.06)
    # the response at t = 0 is 0 (sin(0)) and at t = 1/3 is sin(pi) ~ 0, for every unit
    assert np.abs(data.response(data.x, 0.0)).max() == 0.0
    assert np.abs(data.response(data.x, 1.0 / 3.0)).max() < 1e-3 * np.abs(data.response(data.x, 0.2)).max()
    # the dosage is confounded: it depends on x1 / (1 + x2)
    assert abs(np.corrcoef(data.x[:, 0] / (1 + data.x[:, 1]), data.t)[0, 1]) > 0.2


def test_vcnet_simulation_one_and_other_generators():
    data = simulate_vcnet(500, seed=1)
    residual = data.y - data.response(data.x, data.t)
    assert residual.std() == pytest.approx(0.5, abs=0.06)
    np.testing.assert_allclose(
        data.response(np.full((1, 6), 0.5), 0.5), np.cos(0.0) * (0.25 + 4 * 0.125 / 1.5 * np.sin(0.5))
    )
    cat = make_synthetic_categorical(300, 3, seed=0)
    assert cat.potential_outcomes.shape == (300, 3) and set(np.unique(cat.t)) == {0, 1, 2}
    np.testing.assert_allclose(cat.potential_outcomes[:, 0] * 0, 0)
    dose = make_synthetic_dosage(200, 3, seed=0)
    assert dose.treatment == "dosage" and dose.dosage.shape == (200,)
    np.testing.assert_allclose(
        dose.y - dose.response(dose.x, dose.t, dose.dosage),
        dose.y - dose.response(dose.x, dose.t, dose.dosage),
    )


def test_synthetic_ihdp_is_reproducible_and_ihdp_shaped(tmp_path):
    a, b = make_synthetic_ihdp(2, seed=5), make_synthetic_ihdp(2, seed=5)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (747, 25) and int(a.t.sum()) == 139
    # replications share covariates and treatment, not outcomes (as IHDP's)
    c = make_synthetic_ihdp(3, seed=5)
    np.testing.assert_array_equal(a.x, c.x)
    np.testing.assert_array_equal(a.t, c.t)
    assert not np.allclose(a.y, c.y)
    # omega is set so that the average effect on the treated is 4
    assert a.true_effect[a.t == 1].mean() == pytest.approx(4.0)
    folder = write_synthetic_ihdp(tmp_path / "ihdp", 2, seed=5)
    assert sorted(p.name for p in folder.iterdir()) == ["ihdp_npci_1.csv", "ihdp_npci_2.csv"]
    np.testing.assert_allclose(read_ihdp_csv(folder / "ihdp_npci_2.csv").y, a.y)


def test_holdout_split_matches_the_reference_and_validation_comes_from_train():
    n = 747
    t = make_synthetic_ihdp(1).t
    splits = holdout_splits(n, test_fraction=0.1, val_fraction=0.1, split_seed=1, treatment=t)
    _, reference_test = train_test_split(np.arange(n), test_size=0.1, random_state=1)
    np.testing.assert_array_equal(splits["test"], np.sort(reference_test))
    assert len(splits["test"]) == 75 and len(splits["val"]) == 68 and len(splits["train"]) == 604
    everything = np.concatenate(list(splits.values()))
    assert len(np.unique(everything)) == n
    # stratified: the treated share of validation follows the training part's
    assert abs(t[splits["val"]].mean() - t[splits["train"]].mean()) < 0.03
    with pytest.raises(ConfigError, match="val_fraction"):
        holdout_splits(n, test_fraction=0.1, val_fraction=0.0)


def test_registered_ihdp_dataset_reads_a_folder_and_picks_replications(tmp_path):
    folder = write_synthetic_ihdp(tmp_path / "ihdp", 3, seed=0)
    module = REGISTRY.datasets.create("ihdp-csv", root=str(folder), replication=2)
    assert module.replications == (1, 2, 3) and module.replication == 2
    assert module.info == {"n_covariates": 25, "treatment": "binary", "n_treatments": 2}
    np.testing.assert_allclose(
        module.split("test").y, read_ihdp_csv(folder / "ihdp_npci_2.csv").y[module.index["test"]]
    )
    # <root>/tabular/ihdp is found from the data root as well
    (tmp_path / "root" / "tabular").mkdir(parents=True)
    folder.rename(tmp_path / "root" / "tabular" / "ihdp")
    assert REGISTRY.datasets.create("ihdp-csv", root=str(tmp_path / "root")).replications == (1, 2, 3)
    with pytest.raises(DataError, match="no IHDP CSVs"):
        REGISTRY.datasets.create("ihdp-csv", root=str(tmp_path / "empty"))
    fallback = REGISTRY.datasets.create("ihdp-csv", root=str(tmp_path / "empty"), synthetic_fallback=True)
    assert fallback.replications == tuple(range(1, 11)) and "synthetic" in fallback.source
    with pytest.raises(ConfigError, match="no replication 7"):
        REGISTRY.datasets.create("ihdp-csv", root=str(tmp_path / "root"), replication=7)


def test_registered_npz_dataset_uses_the_official_train_test_files(tmp_path):
    train = [make_synthetic_ihdp(k, n=50, n_treated=10) for k in (1, 2)]
    test = [make_synthetic_ihdp(k, seed=9, n=12, n_treated=3) for k in (1, 2)]
    write_ihdp_npz(tmp_path / "ihdp_npci_1-2.train.npz", train)
    write_ihdp_npz(tmp_path / "ihdp_npci_1-2.test.npz", test)
    module = REGISTRY.datasets.create(
        "ihdp-npz", path=str(tmp_path / "ihdp_npci_1-2.train.npz"), replication=1
    )
    assert module.replications == (0, 1)
    assert len(module.index["test"]) == 12 and len(module.index["train"]) + len(module.index["val"]) == 50
    np.testing.assert_allclose(module.split("test").y, test[1].y)


def test_causal_data_rejects_inconsistent_arrays():
    with pytest.raises(CausalInputError, match="one n"):
        make_synthetic_ihdp(1).__class__(x=np.zeros((3, 2)), t=np.zeros(2), y=np.zeros(3))
    with pytest.raises(CausalInputError, match="treatment must be one of"):
        make_synthetic_ihdp(1).__class__(
            x=np.zeros((3, 2)), t=np.zeros(3), y=np.zeros(3), treatment="ordinal"
        )
