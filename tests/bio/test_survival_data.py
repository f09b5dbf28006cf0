"""Survival data: TCGA CSV reader, genomic groups, patch bags, splits, time bins, AnnData, synthetic cohort.

Fixtures are written by the tests (the synthetic generator, or small hand-made files); the real BLCA
files in ``../shared/data/bio`` (or ``$INTERPLAY_SHARED_DATA``) are only read when present.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from interplay.bio.data import (
    GenomicGroups,
    PatchBags,
    SyntheticCohortLayout,
    assign_bins,
    attach_omics,
    cv_splits,
    fit_cohort_bins,
    fit_time_bins,
    inner_validation,
    omics_to_anndata,
    read_h5ad_omics,
    read_signatures,
    read_split,
    read_tcga_csv,
    slide_stem,
    write_h5ad_omics,
    write_synthetic_cohort,
)
from interplay.bio.survival import concordance_index
from interplay.core.errors import ConfigError, DataError

DIM = 16


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_cohort(
        root, n_patients=60, n_patches=(4, 9), dim=64, seed=3, two_slide_fraction=0.3
    )


@pytest.fixture(scope="module")
def layout(cohort_dir) -> SyntheticCohortLayout:
    return SyntheticCohortLayout(cohort_dir)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=True)
    return path


def _rows(**overrides) -> list[dict]:
    base = [
        {"case_id": "A", "slide_id": "A-1.svs", "survival_months": 5.0, "censorship": 0, "age": 60,
         "G1_rnaseq": 0.5, "G1_cnv": 1, "G2_rnaseq": -1.0},
        {"case_id": "A", "slide_id": "A-2.svs", "survival_months": 5.0, "censorship": 0, "age": 60,
         "G1_rnaseq": 0.5, "G1_cnv": 1, "G2_rnaseq": -1.0},
        {"case_id": "B", "slide_id": "B-1.svs", "survival_months": 12.5, "censorship": 1, "age": 71,
         "G1_rnaseq": 1.5, "G1_cnv": 0, "G2_rnaseq": 2.0},
    ]  # fmt: skip
    for key, value in overrides.items():
        row, column = key.split("__")
        base[int(row)][column] = value
    return base


# =============================================================================== TCGA CSV


def test_reader_groups_slides_by_case_and_splits_omics_from_clinical(tmp_path):
    cohort = read_tcga_csv(_write_csv(tmp_path / "x.csv", _rows()))
    assert cohort.case_ids == ["A", "B"]
    assert cohort.slides == {"A": ["A-1.svs", "A-2.svs"], "B": ["B-1.svs"]}
    np.testing.assert_array_equal(cohort.times, [5.0, 12.5])
    np.testing.assert_array_equal(cohort.censorship, [0.0, 1.0])
    assert list(cohort.omics.columns) == ["G1_rnaseq", "G1_cnv", "G2_rnaseq"]
    assert cohort.omics.loc["B", "G2_rnaseq"] == 2.0
    assert list(cohort.clinical.columns) == ["age"]  # the unnamed index column is dropped
    assert cohort.source == str(tmp_path / "x.csv")


def test_reader_reads_the_single_csv_member_of_a_zip_named_like_mcat(tmp_path):
    text = pd.DataFrame(_rows()).to_csv(index=True)
    archive = tmp_path / "tcga_x_all_clean.csv.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../dataset_csv/tcga_x_all_clean.csv.zip", text)  # MCAT's member name
        bundle.writestr("__MACOSX/._junk.csv", "ignored")
    assert read_tcga_csv(archive).case_ids == ["A", "B"]

    none = tmp_path / "none.zip"
    with zipfile.ZipFile(none, "w") as bundle:
        bundle.writestr("readme.txt", "x")
    with pytest.raises(DataError, match=r"none\.zip.*no \.csv member.*readme\.txt"):
        read_tcga_csv(none)
    several = tmp_path / "several.zip"
    with zipfile.ZipFile(several, "w") as bundle:
        bundle.writestr("a.csv", text)
        bundle.writestr("b.csv", text)
    with pytest.raises(DataError, match=r"several\.zip.*2 \.csv members"):
        read_tcga_csv(several)


@pytest.mark.parametrize("column", ["case_id", "slide_id", "survival_months", "censorship"])
def test_reader_names_file_and_missing_required_column(tmp_path, column):
    frame = pd.DataFrame(_rows()).drop(columns=[column])
    path = tmp_path / "cut.csv"
    frame.to_csv(path)
    with pytest.raises(DataError, match=rf"cut\.csv: missing required column {column}"):
        read_tcga_csv(path)


def test_reader_rejects_missing_file_and_inconsistent_cases(tmp_path):
    with pytest.raises(DataError, match=r"TCGA CSV not found: .*nope\.csv"):
        read_tcga_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"slides of case A disagree on survival_months"):
        read_tcga_csv(_write_csv(tmp_path / "t.csv", _rows(**{"1__survival_months": 6.0})))
    with pytest.raises(DataError, match=r"slides of case A disagree on G1_cnv"):
        read_tcga_csv(_write_csv(tmp_path / "o.csv", _rows(**{"1__G1_cnv": 2})))
    with pytest.raises(DataError, match=r"slide_id values appear on more than one row: A-1\.svs"):
        read_tcga_csv(_write_csv(tmp_path / "d.csv", _rows(**{"1__slide_id": "A-1.svs"})))
    with pytest.raises(DataError, match=r"omics column 'G2_rnaseq' .*not numbers \(high\) for cases B"):
        read_tcga_csv(_write_csv(tmp_path / "n.csv", _rows(**{"2__G2_rnaseq": "high"})))
    with pytest.raises(DataError, match=r"censorship must be 0"):
        read_tcga_csv(_write_csv(tmp_path / "c.csv", _rows(**{"2__censorship": 2})))


def test_reader_nan_omics_error_names_columns_and_cases_unless_filled(tmp_path):
    path = _write_csv(tmp_path / "nan.csv", _rows(**{"2__G2_rnaseq": np.nan}))
    with pytest.raises(
        DataError, match=r"nan\.csv: missing omics values in 1 columns \(G2_rnaseq\) for 1 cases \(B\)"
    ):
        read_tcga_csv(path)
    assert read_tcga_csv(path, fill_omics="zero").omics.loc["B", "G2_rnaseq"] == 0.0
    assert read_tcga_csv(path, fill_omics="median").omics.loc["B", "G2_rnaseq"] == -1.0  # median of A only
    with pytest.raises(ConfigError, match="fill_omics"):
        read_tcga_csv(path, fill_omics="mean")


# =============================================================================== signatures, groups


def _signatures(tmp_path) -> Path:
    path = tmp_path / "sig.csv"
    path.write_text("Tumor Suppressors,Oncogenes\nTP53,MYC\nRB1,KRAS\nPTEN,\n")
    return path


def _omics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    columns = ["TP53_rnaseq", "TP53_cnv", "RB1_mut", "MYC_rnaseq", "MYC_cnv", "KRAS_rnaseq", "OTHER_rnaseq"]
    return pd.DataFrame(
        rng.normal(size=(8, len(columns))), columns=columns, index=[f"P{i}" for i in range(8)]
    )


def test_read_signatures_ignores_empty_cells(tmp_path):
    assert read_signatures(_signatures(tmp_path)) == {
        "Tumor Suppressors": ["TP53", "RB1", "PTEN"],
        "Oncogenes": ["MYC", "KRAS"],
    }
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the signatures file is empty"):
        read_signatures(tmp_path / "empty.csv")


def test_groups_select_sorted_matching_columns_like_mcat(tmp_path):
    signatures = read_signatures(_signatures(tmp_path))
    groups = GenomicGroups.fit(_omics(), signatures)
    # MCAT: sorted(set(genes + '_mut' | '_cnv' | '_rnaseq') & columns); PTEN has no column: skipped
    assert groups.columns == [
        ["RB1_mut", "TP53_cnv", "TP53_rnaseq"],
        ["KRAS_rnaseq", "MYC_cnv", "MYC_rnaseq"],
    ]
    assert groups.sizes == [3, 3]
    assert groups.feature_columns == sorted(groups.columns[0] + groups.columns[1])  # OTHER_rnaseq unused
    parts = groups.transform(_omics())
    assert [p.shape for p in parts] == [(8, 3), (8, 3)] and all(p.dtype == np.float32 for p in parts)
    flat = groups.flat_transform(_omics())
    np.testing.assert_array_equal(parts[0][:, 1], flat[:, groups.feature_columns.index("TP53_cnv")])


def test_groups_errors_name_the_empty_group_and_the_missing_column(tmp_path):
    with pytest.raises(DataError, match=r"gene group\(s\) 'Kinases' match no omics column"):
        GenomicGroups.fit(_omics(), {"Oncogenes": ["MYC"], "Kinases": ["ABL1", "SRC"]})
    groups = GenomicGroups.fit(_omics(), read_signatures(_signatures(tmp_path)))
    with pytest.raises(DataError, match=r"gene column\(s\) are missing: MYC_cnv"):
        groups.transform(_omics().drop(columns=["MYC_cnv"]))
    with pytest.raises(DataError, match=r"missing: NOPE_rnaseq"):
        GenomicGroups.fit_columns(_omics(), {"g": ["TP53_rnaseq", "NOPE_rnaseq"]})
    broken = _omics()
    broken.loc["P3", "KRAS_rnaseq"] = np.nan
    with pytest.raises(DataError, match=r"missing or infinite values in KRAS_rnaseq for cases P3"):
        groups.transform(broken)


def test_standardisation_uses_training_rows_only_and_matches_standard_scaler(tmp_path):
    omics = _omics()
    train, test = omics.iloc[:5], omics.iloc[5:].copy()
    groups = GenomicGroups.fit(train, read_signatures(_signatures(tmp_path)))
    scaler = StandardScaler().fit(train[groups.feature_columns])
    np.testing.assert_allclose(groups.mean, scaler.mean_)
    np.testing.assert_allclose(groups.scale, scaler.scale_)
    np.testing.assert_allclose(
        groups.flat_transform(test), scaler.transform(test[groups.feature_columns]), rtol=1e-6, atol=1e-6
    )
    # changing a test patient does not move the fitted statistics, and only changes that patient
    before = groups.flat_transform(test)
    test.loc["P6", "TP53_rnaseq"] += 100.0
    refit = GenomicGroups.fit(train, read_signatures(_signatures(tmp_path)))
    np.testing.assert_array_equal(refit.mean, groups.mean)
    after = groups.flat_transform(test)
    changed = np.argwhere(before != after)
    assert changed.tolist() == [[1, groups.feature_columns.index("TP53_rnaseq")]]
    # a constant training column is centred, not scaled (StandardScaler's convention)
    constant = train.assign(TP53_cnv=2.0)
    assert GenomicGroups.fit(constant, {"g": ["TP53"]}).scale.tolist()[0] == 1.0


def test_groups_checkpoint_round_trip(tmp_path):
    groups = GenomicGroups.fit(_omics(), read_signatures(_signatures(tmp_path)))
    restored = GenomicGroups.from_dict(groups.to_dict())
    for a, b in zip(groups.transform(_omics()), restored.transform(_omics())):
        np.testing.assert_array_equal(a, b)
    assert restored.names == ["Tumor Suppressors", "Oncogenes"]


def test_h5ad_round_trip_and_attach_to_a_cohort(tmp_path):
    omics = _omics()
    adata = omics_to_anndata(omics)
    assert adata.shape == (8, 7) and list(adata.obs_names) == list(omics.index)
    adata.layers["counts"] = np.arange(56, dtype=np.float32).reshape(8, 7)
    adata.write_h5ad(tmp_path / "expr.h5ad")
    back = read_h5ad_omics(tmp_path / "expr.h5ad")
    assert list(back.columns) == list(omics.columns) and list(back.index) == list(omics.index)
    np.testing.assert_allclose(back.to_numpy(), omics.to_numpy(), rtol=1e-6)
    assert read_h5ad_omics(tmp_path / "expr.h5ad", layer="counts").iloc[1, 0] == 7.0
    with pytest.raises(DataError, match=r"no layer 'raw' \(layers: counts\)"):
        read_h5ad_omics(tmp_path / "expr.h5ad", layer="raw")
    write_h5ad_omics(omics.iloc[:3], tmp_path / "small.h5ad")
    assert read_h5ad_omics(tmp_path / "small.h5ad").shape == (3, 7)

    cohort = read_tcga_csv(_write_csv(tmp_path / "x.csv", _rows()))
    table = pd.DataFrame({"GENE_rnaseq": [1.0, 2.0, 3.0]}, index=["B", "Z", "A"])
    swapped = attach_omics(cohort, table)
    assert swapped.omics["GENE_rnaseq"].tolist() == [3.0, 1.0] and swapped.slides == cohort.slides
    with pytest.raises(DataError, match=r"1 cases of .* are missing: A"):
        attach_omics(cohort, table.drop(index="A"))


# =============================================================================== patch bags


def test_bags_load_pt_dict_and_h5_and_concatenate_a_case(tmp_path):
    torch.save(torch.ones(3, DIM, dtype=torch.float16), tmp_path / "S1.pt")
    torch.save({"features": torch.full((2, DIM), 2.0), "coords": torch.zeros(2, 2)}, tmp_path / "S2.pt")
    (tmp_path / "h5_files").mkdir()
    with h5py.File(tmp_path / "h5_files" / "S3.h5", "w") as handle:  # CLAM's layout
        handle["features"] = np.full((4, DIM), 3.0, dtype=np.float32)
        handle["coords"] = np.zeros((4, 2), dtype=np.int64)
    bags = PatchBags(tmp_path, dim=DIM)
    assert len(bags) == 3 and bags.has("S1.svs") and not bags.has("S4.svs")
    case = bags.load_case(["S1.svs", "S2.svs", "S3.svs"])
    assert case.shape == (9, DIM) and case.dtype == torch.float32
    assert case[:, 0].tolist() == [1.0] * 3 + [2.0] * 2 + [3.0] * 4
    assert slide_stem("TCGA-2F-A9KO-01Z-00-DX1.195576CF.svs") == "TCGA-2F-A9KO-01Z-00-DX1.195576CF"
    assert slide_stem("slides") == "slides"  # MCAT's rstrip('.svs') would give 'slide'


def test_bags_are_lazy_and_errors_name_slide_file_and_root(tmp_path):
    torch.save(torch.zeros(0, DIM), tmp_path / "empty.pt")
    torch.save(torch.ones(2, DIM + 1), tmp_path / "wide.pt")
    bad = torch.ones(3, DIM)
    bad[1, 4] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a tensor")
    bags = PatchBags(tmp_path, dim=DIM)  # nothing is read at construction: the corrupt file is fine
    with pytest.raises(
        DataError, match=r"no patch-feature file for slide 'gone\.svs' under .*looked for gone\.pt"
    ):
        bags.load_case(["gone.svs"])
    with pytest.raises(DataError, match=r"empty\.pt: empty bag \(0 patches\) for slide 'empty\.svs'"):
        bags.load("empty.svs")
    with pytest.raises(DataError, match=r"wide\.pt: patch features have 17 dimensions, expected 16"):
        bags.load("wide")
    with pytest.raises(DataError, match=r"nan\.pt: 1 patches of slide 'nan' hold NaN"):
        bags.load("nan")
    with pytest.raises(DataError, match=r"corrupt\.pt: cannot load"):
        bags.load("corrupt")
    with pytest.raises(DataError, match="patch-feature directory not found"):
        PatchBags(tmp_path / "absent")


# =============================================================================== splits


def test_read_split_drops_nan_padding_and_checks_columns(tmp_path):
    frame = pd.DataFrame({"train": pd.Series(["a", "b", "c"]), "val": pd.Series(["d"])})
    frame.to_csv(tmp_path / "splits_0.csv")
    assert (tmp_path / "splits_0.csv").read_text().splitlines()[2] == "1,b,"  # the MCAT layout
    assert read_split(tmp_path / "splits_0.csv") == (["a", "b", "c"], ["d"])
    pd.DataFrame({"train": ["a"], "test": ["b"]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"bad\.csv: missing column val"):
        read_split(tmp_path / "bad.csv")
    pd.DataFrame({"train": ["a", "b"], "val": ["b", None]}).to_csv(tmp_path / "leak.csv")
    with pytest.raises(DataError, match=r"leak\.csv: 1 cases are in both train and val: b"):
        read_split(tmp_path / "leak.csv")
    with pytest.raises(DataError, match=r"missing split file\(s\) splits_1\.csv"):
        cv_splits(tmp_path, n_folds=2)


def test_inner_validation_is_a_stratified_deterministic_partition():
    rng = np.random.default_rng(0)
    train_index = np.sort(rng.choice(1000, 200, replace=False))
    events = rng.random(200) < 0.3
    fit, val = inner_validation(train_index, events, fraction=0.15, seed=4)
    assert np.intersect1d(fit, val).size == 0 and np.union1d(fit, val).tolist() == train_index.tolist()
    event_of = dict(zip(train_index.tolist(), events.tolist()))
    n_events = int(events.sum())
    assert sum(event_of[i] for i in val) == round(0.15 * n_events)
    assert len(val) == round(0.15 * n_events) + round(0.15 * (200 - n_events))
    again = inner_validation(train_index, events, fraction=0.15, seed=4)
    assert again[1].tolist() == val.tolist()
    assert inner_validation(train_index, events, fraction=0.15, seed=5)[1].tolist() != val.tolist()
    with pytest.raises(DataError, match="200 training indices but 3 event indicators"):
        inner_validation(train_index, events[:3])


# =============================================================================== time bins


def test_time_bins_match_mcat_qcut_and_cut():
    rng = np.random.default_rng(1)
    times = np.round(rng.exponential(30.0, 150), 2)
    censorship = (rng.random(150) < 0.5).astype(float)
    edges = fit_time_bins(times, censorship, n_bins=4)
    # MCAT's Generic_WSI_Survival_Dataset, verbatim in pandas
    _, q_bins = pd.qcut(pd.Series(times[censorship < 1]), q=4, retbins=True, labels=False)
    q_bins[-1] = times.max() + 1e-6
    q_bins[0] = times.min() - 1e-6
    reference, _ = pd.cut(
        pd.Series(times), bins=q_bins, retbins=True, labels=False, right=False, include_lowest=True
    )
    np.testing.assert_allclose(edges, q_bins)
    np.testing.assert_array_equal(assign_bins(times, edges), reference.to_numpy().astype(int))
    # hand case: uncensored times 1..5 -> quartiles 2, 3, 4
    hand = fit_time_bins([1, 2, 3, 4, 5, 9], [0, 0, 0, 0, 0, 1], n_bins=4)
    np.testing.assert_allclose(hand, [1 - 1e-6, 2, 3, 4, 9 + 1e-6])
    assert assign_bins([0.5, 2.0, 2.5, 4.0, 9.0, 50.0], hand).tolist() == [0, 1, 1, 3, 3, 3]


def test_time_bins_need_uncensored_patients_and_fit_on_training_part(tmp_path):
    with pytest.raises(DataError, match=r"my cohort: no uncensored patients"):
        fit_time_bins([1.0, 2.0, 3.0], [1, 1, 1], what="my cohort")
    cohort = read_tcga_csv(_write_csv(tmp_path / "x.csv", _rows()))
    with pytest.raises(DataError, match=r"x\.csv \(training patients\): no uncensored patients"):
        fit_cohort_bins(cohort, [1], n_bins=1)
    edges, labels = fit_cohort_bins(cohort, [0], n_bins=1)
    assert labels.tolist() == [0, 0] and edges[-1] == pytest.approx(5.0 + 1e-6)  # train max, not 12.5
    edges_all, _ = fit_cohort_bins(cohort, fit_on="all", n_bins=1)
    assert edges_all[-1] == pytest.approx(12.5 + 1e-6)


# =============================================================================== synthetic cohort


def test_synthetic_cohort_round_trips_through_every_reader(layout):
    truth = pd.read_csv(layout.truth)
    cohort = read_tcga_csv(layout.csv)
    assert cohort.case_ids == truth["case_id"].tolist()
    np.testing.assert_allclose(cohort.times, truth["survival_months"])
    np.testing.assert_array_equal(cohort.censorship, truth["censorship"])
    assert [len(cohort.slides[c]) for c in cohort.case_ids] == truth["n_slides"].tolist()
    assert 1 < (truth["n_slides"] == 2).sum() < 60
    assert all(s.endswith(".svs") for slides in cohort.slides.values() for s in slides)
    assert 0.35 <= cohort.censorship.mean() <= 0.55

    signatures = read_signatures(layout.signatures)
    groups = GenomicGroups.fit(cohort.omics, signatures)
    assert len(groups.sizes) == 6 and min(groups.sizes) > 0
    assert "TSG90_rnaseq" not in groups.feature_columns  # listed in a signature, no column
    assert not any(c.startswith("XTRA") for c in groups.feature_columns)  # in no signature

    bags = PatchBags(layout.features, dim=64)
    assert bags.missing(s for slides in cohort.slides.values() for s in slides) == []
    case = cohort.case_ids[int(np.argmax(truth["n_slides"].to_numpy()))]
    parts = [bags.load(s).shape[0] for s in cohort.slides[case]]
    assert len(parts) == 2 and bags.load_case(cohort.slides[case]).shape == (sum(parts), 64)
    assert 4 <= sum(parts) <= 9

    folds = cv_splits(layout.splits, n_folds=5)
    vals = [set(v) for _, v in folds]
    assert set().union(*vals) == set(cohort.case_ids) and sum(map(len, vals)) == len(cohort)
    for train, val in folds:
        assert set(train) | set(val) == set(cohort.case_ids)
    labels = fit_cohort_bins(cohort, fit_on="all")[1]
    np.testing.assert_array_equal(labels, truth["label"])


def test_synthetic_true_risk_is_concordant_and_uses_both_modalities(layout, tmp_path):
    truth = pd.read_csv(layout.truth)
    events = truth["censorship"].to_numpy() == 0
    times = truth["survival_months"].to_numpy()
    assert concordance_index(times, events, truth["log_hazard"]) > 0.7
    assert truth["risk_omics"].std() > 0.3 and truth["risk_path"].std() > 0.3
    # the patches carry the latent tumour fraction: a direction estimated on half of the patients
    # (high- minus low-fraction bag means) orders the other half by their fraction
    cohort = read_tcga_csv(layout.csv)
    bags = PatchBags(layout.features, dim=64)
    means = np.stack([bags.load_case(cohort.slides[c]).mean(0).numpy() for c in cohort.case_ids])
    fraction = truth["tumour_fraction"].to_numpy()
    fit, held_out = slice(0, 30), slice(30, 60)
    high = fraction[fit] > np.median(fraction[fit])
    direction = means[fit][high].mean(0) - means[fit][~high].mean(0)
    assert np.corrcoef(means[held_out] @ direction, fraction[held_out])[0, 1] > 0.5
    # deterministic in the seed, and the zipped variant reads the same
    again = write_synthetic_cohort(
        tmp_path, n_patients=60, n_patches=(4, 9), dim=64, seed=3, two_slide_fraction=0.3, zipped=True
    )
    zipped = read_tcga_csv(SyntheticCohortLayout(again, zipped=True).csv)
    pd.testing.assert_frame_equal(zipped.omics, cohort.omics)
    assert not any(p.name.startswith(".synthetic-") for p in again.iterdir())  # staging cleaned up


# =============================================================================== real BLCA files


def _shared_bio() -> Path | None:
    candidates = []
    if os.environ.get("INTERPLAY_SHARED_DATA"):
        configured = Path(os.environ["INTERPLAY_SHARED_DATA"]).expanduser()
        candidates += [configured / "bio", configured]
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bio")
    return next((c for c in candidates if (c / "tcga_blca_all_clean.csv.zip").is_file()), None)


SHARED_BIO = _shared_bio()
needs_blca = pytest.mark.skipif(SHARED_BIO is None, reason="the shared TCGA-BLCA files are not present")


@pytest.fixture(scope="module")
def blca():
    return read_tcga_csv(SHARED_BIO / "tcga_blca_all_clean.csv.zip")


@needs_blca
def test_real_blca_cohort_groups_and_splits(blca):
    assert len(blca) == 373 and sum(len(s) for s in blca.slides.values()) == 437
    assert blca.omics.shape == (373, 3062)  # 2814 rnaseq + 248 cnv, no mut columns in BLCA
    assert int(blca.events.sum()) == 169
    signatures = read_signatures(SHARED_BIO / "tcga_signatures.csv")
    assert len(signatures) == 6
    folds = cv_splits(SHARED_BIO / "splits_blca", n_folds=5)
    assert [(len(t), len(v)) for t, v in folds] == [(298, 75), (298, 75), (298, 75), (299, 74), (299, 74)]
    train, _ = folds[0]
    groups = GenomicGroups.fit(blca.omics.iloc[blca.index_of(train)], signatures)
    assert groups.sizes == [94, 334, 521, 468, 1496, 479]
    edges = fit_time_bins(blca.times, blca.censorship)
    assert np.bincount(assign_bins(blca.times, edges)).tolist() == [63, 75, 95, 140]
