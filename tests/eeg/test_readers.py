"""EEG readers: DEAP (pickles, raw BDF), SEED and DREAMER round-trip their fake files, reject bad input
with errors naming the file and field, and carry an mne.Info with electrode positions."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import mne
import numpy as np
import numpy.lib.recfunctions as recfunctions
import pytest
import scipy.io

from interplay.core.errors import DataError
from interplay.eeg.data import (
    DEAP_CHANNELS,
    DREAMER_CHANNELS,
    SEED_CHANNELS,
    deap_bdf_trials,
    make_info,
    read_deap,
    read_deap_bdf,
    read_dreamer,
    read_seed,
    write_fake_deap,
    write_fake_dreamer,
    write_fake_seed,
)
from interplay.eeg.data.montage import STANDARD_MONTAGE, make_montage
from interplay.eeg.data.seed import SEED_LABELS


def _positions(info) -> dict[str, np.ndarray]:
    return {ch["ch_name"]: ch["loc"][:3] for ch in info["chs"]}


def _shared_bdf() -> Path | None:
    candidates = []
    if os.environ.get("INTERPLAY_SHARED_DATA"):
        candidates.append(Path(os.environ["INTERPLAY_SHARED_DATA"]) / "eeg" / "test.bdf")
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eeg" / "test.bdf")
    return next((path for path in candidates if path.is_file()), None)


# --------------------------------------------------------------------------- montage


@pytest.mark.parametrize(
    "channels", [DEAP_CHANNELS, DREAMER_CHANNELS, SEED_CHANNELS], ids=["deap", "dreamer", "seed"]
)
def test_every_dataset_electrode_gets_a_finite_distinct_position(channels):
    info = make_info(channels, 128.0)
    assert info.ch_names == list(channels)
    positions = np.array(list(_positions(info).values()))
    assert np.isfinite(positions).all()
    assert (np.linalg.norm(positions, axis=1) > 0.05).all()  # on the scalp, not at the origin
    assert len(np.unique(positions.round(6), axis=0)) == len(channels)
    assert info.get_montage() is not None


def test_positions_match_mne_template_case_insensitively():
    reference = mne.create_info(list(DEAP_CHANNELS), 128.0, "eeg")
    reference.set_montage(STANDARD_MONTAGE)
    ours = _positions(make_info(DEAP_CHANNELS, 128.0))
    for name, position in _positions(reference).items():
        np.testing.assert_allclose(ours[name], position, atol=1e-9)
    seed = _positions(make_info(SEED_CHANNELS, 200.0))
    np.testing.assert_allclose(seed["FPZ"], _positions(make_info(["Fpz"], 200.0))["Fpz"], atol=1e-9)
    np.testing.assert_allclose(seed["CZ"], ours["Cz"], atol=1e-9)


def test_seed_cerebellar_electrodes_are_posterior_inferior_and_distinct():
    seed = _positions(make_info(SEED_CHANNELS, 200.0))
    cb1, cb2, o1, o2 = seed["CB1"], seed["CB2"], seed["O1"], seed["O2"]
    assert np.linalg.norm(cb1 - cb2) > 0.03
    assert cb1[0] < 0 < cb2[0]  # left / right
    for cb, occipital in ((cb1, o1), (cb2, o2)):
        assert cb[1] < occipital[1]  # posterior (head frame: +y is the nasion)
        assert cb[2] < occipital[2] - 0.02  # inferior
    assert min(np.linalg.norm(cb1 - p) for name, p in seed.items() if name != "CB1") > 0.01


def test_unknown_electrode_is_a_data_error():
    with pytest.raises(DataError, match="XYZ1"):
        make_montage(["Cz", "XYZ1"])


# --------------------------------------------------------------------------- DEAP preprocessed


def _load_pickle(path):
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


def test_deap_round_trip(tmp_path):
    write_fake_deap(tmp_path, n_subjects=2, n_trials=3, n_samples=384 + 64, seed=1)
    recordings = read_deap(tmp_path)
    assert recordings.dataset == "deap"
    assert recordings.ch_names == list(DEAP_CHANNELS) and recordings.sfreq == 128.0
    assert recordings.subjects.tolist() == [1, 1, 1, 2, 2, 2]
    assert recordings.sessions.tolist() == [0] * 6
    assert recordings.trials.tolist() == [0, 1, 2] * 2
    for i, (subject, trial) in enumerate(zip(recordings.subjects, recordings.trials)):
        written = _load_pickle(tmp_path / f"s{subject:02d}.dat")
        np.testing.assert_array_equal(recordings.signals[i], written["data"][trial, :32, 384:])
        np.testing.assert_array_equal(recordings.baselines[i], written["data"][trial, :32, :384])
        for k, name in enumerate(("valence", "arousal", "dominance", "liking")):
            assert recordings.ratings[name][i] == written["labels"][trial, k]
        assert recordings.sources[i].endswith(f"s{subject:02d}.dat")
    only_second = read_deap(tmp_path, subjects=[2])
    assert only_second.subjects.tolist() == [2, 2, 2]
    np.testing.assert_array_equal(only_second.signals[0], recordings.signals[3])


def _write_pickle(path, content):
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"data": np.zeros((2, 40, 400))}, r"s01\.dat: missing key 'labels'"),
        ({"labels": np.ones((2, 4))}, r"s01\.dat: missing key 'data'"),
        (
            {"data": np.zeros((2, 39, 400)), "labels": np.ones((2, 4))},
            r"s01\.dat: field 'data' has shape \(2, 39, 400\)",
        ),
        (
            {"data": np.zeros((2, 40, 400)), "labels": np.ones((2, 3))},
            r"s01\.dat: field 'labels' has shape \(2, 3\)",
        ),
        (
            {"data": np.zeros((2, 40, 300)), "labels": np.ones((2, 4))},
            r"s01\.dat: field 'data' has 300 samples",
        ),
        (
            {"data": np.zeros((2, 40, 400)), "labels": np.full((2, 4), 12.0)},
            r"s01\.dat: field 'labels' has values",
        ),
        ([1, 2, 3], r"s01\.dat: expected a dict"),
    ],
)
def test_deap_bad_files_name_file_and_field(tmp_path, content, message):
    _write_pickle(tmp_path / "s01.dat", content)
    with pytest.raises(DataError, match=message):
        read_deap(tmp_path)


def test_deap_nan_missing_files_and_garbage(tmp_path):
    data = np.zeros((3, 40, 400))
    data[1, 5, 10] = np.nan
    _write_pickle(tmp_path / "s01.dat", {"data": data, "labels": np.ones((3, 4))})
    with pytest.raises(DataError, match=r"s01\.dat: field 'data' contains NaN or inf \(trial 1\)"):
        read_deap(tmp_path)
    with pytest.raises(DataError, match=r"missing DEAP file\(s\) s07\.dat"):
        read_deap(tmp_path, subjects=[7])
    with pytest.raises(DataError, match="DEAP directory not found"):
        read_deap(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DEAP files"):
        read_deap(tmp_path / "empty")
    (tmp_path / "s02.dat").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"s02\.dat: not a DEAP pickle"):
        read_deap(tmp_path, subjects=[2])


# --------------------------------------------------------------------------- DEAP raw BDF


def _raw_deap_recording(n_trials=3, sfreq=512.0, video_seconds=2.0, status_channel="Status"):
    """A Raw laid out as a DEAP BDF: shuffled electrodes (one upper-cased), an extra EXG channel and
    Status codes 1 / 3 (5 s fixation) / 4 (video) / 5 (3 s fixation) / 1 (rating), with BioSemi's
    high status bits set. EEG is ``100 (k + 1) + c`` µV during trial k's video, its negative during the
    3 s before it, 0 elsewhere (c = the electrode's index in DEAP order)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(DEAP_CHANNELS))
    names = [DEAP_CHANNELS[c] for c in order]
    names[names.index("Fp1")] = "FP1"
    phases = [(1, 2.0)]
    for _ in range(n_trials):
        phases += [(3, 5.0), (4, video_seconds), (5, 3.0), (1, 2.0)]
    total = round(sum(seconds for _, seconds in phases) * sfreq)
    status = np.zeros(total)
    eeg = np.zeros((len(names), total))
    start, trial = 0, -1
    for code, seconds in phases:
        length = round(seconds * sfreq)
        status[start : start + length] = code
        if code == 4:
            trial += 1
            level = (100.0 * (trial + 1) + order)[:, None] * 1e-6  # volts
            eeg[:, start : start + length] = level
            eeg[:, start - round(3 * sfreq) : start] = -level
        start += length
    status += 1 << 16  # BioSemi's CMS-in-range bit, above the 16-bit trigger word
    info = mne.create_info([*names, "EXG1", status_channel], sfreq, ["eeg"] * (len(names) + 1) + ["stim"])
    return mne.io.RawArray(np.vstack([eeg, np.zeros(total), status]), info, verbose="error")


def test_deap_bdf_trials_cut_video_and_baseline_from_status_codes():
    raw = _raw_deap_recording()
    ratings = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 1.5, 2.5, 3.5]])
    recordings = deap_bdf_trials(raw, ratings, subject=7, trial_seconds=2.0)
    assert recordings.ch_names == list(DEAP_CHANNELS) and recordings.sfreq == 128.0
    assert recordings.n_trials == 3
    assert recordings.subjects.tolist() == [7, 7, 7] and recordings.trials.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(recordings.ratings["dominance"], [3.0, 7.0, 2.5])
    for k in range(3):
        signal, baseline = recordings.signals[k], recordings.baselines[k]
        assert signal.shape == (32, 256) and baseline.shape == (32, 384)
        expected = 100.0 * (k + 1) + np.arange(32)  # µV, in DEAP order
        # away from the edges, where resampling rings on the steps
        np.testing.assert_allclose(np.median(signal[:, 32:-32], axis=1), expected, rtol=1e-3)
        np.testing.assert_allclose(np.median(baseline[:, 32:-32], axis=1), -expected, rtol=1e-3)
    assert recordings.info.get_montage() is not None


def test_deap_bdf_trials_errors_name_the_problem():
    raw = _raw_deap_recording(status_channel="Trigger")
    with pytest.raises(DataError, match="no status channel 'Status'"):
        deap_bdf_trials(raw, trial_seconds=2.0)
    raw = _raw_deap_recording()
    with pytest.raises(DataError, match="no video onset"):
        deap_bdf_trials(raw, video_code=6)
    with pytest.raises(DataError, match=r"trial 0 .* needs 3 s before and 60 s after"):
        deap_bdf_trials(raw)  # 60 s trials do not fit in 2 s videos
    with pytest.raises(DataError, match="missing electrode"):
        deap_bdf_trials(raw.copy().drop_channels(["Oz", "PO4"]), trial_seconds=2.0)
    with pytest.raises(DataError, match=r"ratings\['valence'\] has 2 values for 3 trials"):
        deap_bdf_trials(raw, {"valence": [1.0, 2.0]}, trial_seconds=2.0)


def test_read_deap_bdf_missing_file(tmp_path):
    with pytest.raises(DataError, match="BDF file not found"):
        read_deap_bdf(tmp_path / "s01.bdf")
    (tmp_path / "bad.bdf").write_bytes(b"0" * 300)
    with pytest.raises(DataError, match=r"bad\.bdf"):
        read_deap_bdf(tmp_path / "bad.bdf")


@pytest.mark.skipif(_shared_bdf() is None, reason="../shared/data/eeg/test.bdf not present")
def test_read_deap_bdf_on_real_biosemi_file():
    path = _shared_bdf()
    raw = read_deap_bdf(path)
    assert raw.ch_names == list(DEAP_CHANNELS)
    assert raw.info["sfreq"] == 128.0 and raw.n_times == 128  # the file holds 1 s at 2048 Hz
    assert set(raw.get_channel_types()) == {"eeg"}
    positions = _positions(raw.info)
    np.testing.assert_allclose(positions["Cz"], _positions(make_info(["Cz"], 128.0))["Cz"])
    assert all(np.isfinite(p).all() and np.linalg.norm(p) > 0.05 for p in positions.values())
    # each row is the electrode of that name (the file stores them in another order)
    original = mne.io.read_raw_bdf(path, preload=True, verbose="error").pick(["Oz", "Fp2"]).resample(128.0)
    np.testing.assert_allclose(raw.get_data(picks=["Oz", "Fp2"]), original.get_data(), rtol=1e-6, atol=1e-12)
    with pytest.raises(DataError, match=r"test\.bdf: missing electrode\(s\) XX1, XX2"):
        read_deap_bdf(path, channels=["Cz", "XX1", "XX2"])


# --------------------------------------------------------------------------- SEED


def test_seed_round_trip(tmp_path):
    write_fake_seed(tmp_path, n_subjects=2, n_sessions=2, n_trials=3, seconds=0.5, seed=3)
    (tmp_path / "readme.txt").write_text("not a session file")
    recordings = read_seed(tmp_path)
    assert recordings.dataset == "seed" and recordings.sfreq == 200.0
    assert recordings.ch_names == list(SEED_CHANNELS)
    assert recordings.subjects.tolist() == [1] * 6 + [2] * 6
    assert recordings.sessions.tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert recordings.trials.tolist() == [0, 1, 2] * 4
    np.testing.assert_array_equal(recordings.ratings["emotion"], list(SEED_LABELS[:3]) * 4)
    assert all(b is None for b in recordings.baselines)
    files = sorted(tmp_path.glob("1_*.mat"))
    assert recordings.sources[3] == str(files[1])  # the later date is session 1
    content = scipy.io.loadmat(files[1])
    key = next(k for k in content if k.endswith("_eeg2"))
    np.testing.assert_array_equal(recordings.signals[4], content[key])
    assert recordings.signals[4].shape[1] != recordings.signals[3].shape[1]  # trials differ in length
    assert read_seed(tmp_path, subjects=[2]).subjects.tolist() == [2] * 6


def _rewrite(path, change):
    content = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    change(content)
    scipy.io.savemat(path, content)


def test_seed_errors_name_file_and_field(tmp_path):
    write_fake_seed(tmp_path, n_subjects=1, n_trials=3, seconds=0.2)
    session = next(tmp_path.glob("1_*.mat"))
    prefix = next(k for k in scipy.io.loadmat(session) if k.endswith("_eeg1"))[: -len("_eeg1")]

    _rewrite(session, lambda c: c.pop(f"{prefix}_eeg2"))
    with pytest.raises(DataError, match=rf"{session.name}: missing key '{prefix}_eeg2'"):
        read_seed(tmp_path)

    _rewrite(session, lambda c: c.update({f"{prefix}_eeg2": np.zeros((61, 40))}))
    with pytest.raises(DataError, match=rf"{session.name}: field '{prefix}_eeg2' has shape \(61, 40\)"):
        read_seed(tmp_path)

    _rewrite(session, lambda c: c.update({f"{prefix}_eeg2": np.full((62, 40), np.nan)}))
    with pytest.raises(DataError, match=rf"field '{prefix}_eeg2' contains NaN"):
        read_seed(tmp_path)

    _rewrite(tmp_path / "label.mat", lambda c: c.update(label=np.array([[1, 2, -1]])))
    with pytest.raises(DataError, match=r"label\.mat: field 'label' has values \[2\.0\]"):
        read_seed(tmp_path)

    scipy.io.savemat(tmp_path / "label.mat", {"labels": np.array([[1, 0, -1]])})
    with pytest.raises(DataError, match=r"label\.mat: missing key 'label'"):
        read_seed(tmp_path)

    (tmp_path / "label.mat").unlink()
    with pytest.raises(DataError, match=r"label\.mat not found"):
        read_seed(tmp_path)
    with pytest.raises(DataError, match="no SEED files for subject"):
        read_seed(tmp_path, subjects=[9])
    with pytest.raises(DataError, match="SEED directory not found"):
        read_seed(tmp_path / "absent")


# --------------------------------------------------------------------------- DREAMER


def test_dreamer_round_trip(tmp_path):
    path = write_fake_dreamer(tmp_path / "DREAMER.mat", n_subjects=2, n_stimuli=3, seconds=0.5, seed=2)
    recordings = read_dreamer(path)
    assert recordings.dataset == "dreamer" and recordings.sfreq == 128.0
    assert recordings.ch_names == list(DREAMER_CHANNELS)
    assert recordings.subjects.tolist() == [1, 1, 1, 2, 2, 2]
    assert recordings.trials.tolist() == [0, 1, 2] * 2
    # independent read along the documented path DREAMER.Data[0, s].EEG.stimuli[0, 0][t, 0]
    dreamer = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)["DREAMER"][0, 0]
    for i, (subject, trial) in enumerate(zip(recordings.subjects, recordings.trials)):
        record = dreamer.Data[0, subject - 1]
        np.testing.assert_array_equal(recordings.signals[i], record.EEG[0, 0].stimuli[trial, 0].T)
        np.testing.assert_array_equal(recordings.baselines[i], record.EEG[0, 0].baseline[trial, 0].T)
        assert recordings.baselines[i].shape == (14, 7808)
        assert recordings.ratings["valence"][i] == record.ScoreValence[trial, 0]
        assert recordings.ratings["dominance"][i] == record.ScoreDominance[trial, 0]
    assert recordings.signals[0].shape == (14, 64) and recordings.signals[2].shape == (14, 70)
    second = read_dreamer(path, subjects=[2])
    assert second.subjects.tolist() == [2, 2, 2]
    np.testing.assert_array_equal(second.signals[1], recordings.signals[4])


def _modify_dreamer(path, change):
    dreamer = scipy.io.loadmat(path)["DREAMER"]
    dreamer = change(dreamer)
    scipy.io.savemat(path, {"DREAMER": dreamer})


def test_dreamer_errors_name_file_and_field_path(tmp_path):
    path = write_fake_dreamer(tmp_path / "DREAMER.mat", n_subjects=2, n_stimuli=3, seconds=0.3)

    def wrong_rate(d):
        d[0, 0]["EEG_SamplingRate"] = np.array([[256.0]])
        return d

    _modify_dreamer(path, wrong_rate)
    with pytest.raises(DataError, match=r"DREAMER\.mat: DREAMER\.EEG_SamplingRate is 256 Hz, expected 128"):
        read_dreamer(path)

    def thirteen_channels(d):
        d[0, 0]["EEG_SamplingRate"] = np.array([[128.0]])
        stimuli = d[0, 0]["Data"][0, 1]["EEG"][0, 0]["stimuli"]
        stimuli[2, 0] = stimuli[2, 0][:, :13]
        return d

    _modify_dreamer(path, thirteen_channels)
    with pytest.raises(
        DataError, match=r"DREAMER\.mat: Data\[0, 1\]\.EEG\.stimuli\[2, 0\] has shape \(\d+, 13\)"
    ):
        read_dreamer(path)

    def no_arousal(d):
        d[0, 0]["Data"] = recfunctions.drop_fields(d[0, 0]["Data"], "ScoreArousal", usemask=False)
        return d

    path = write_fake_dreamer(tmp_path / "DREAMER.mat", n_subjects=2, n_stimuli=3, seconds=0.3)
    _modify_dreamer(path, no_arousal)
    with pytest.raises(DataError, match=r"DREAMER\.mat: Data\[0, 0\]\.ScoreArousal is missing"):
        read_dreamer(path)

    short = write_fake_dreamer(
        tmp_path / "short" / "DREAMER.mat", n_subjects=1, n_stimuli=2, baseline_samples=100
    )
    with pytest.raises(
        DataError, match=r"Data\[0, 0\]\.EEG\.baseline\[0, 0\] has 100 samples, expected 7808"
    ):
        read_dreamer(short)
    with pytest.raises(DataError, match=r"has 1 subjects, no subject 5"):
        read_dreamer(short, subjects=[5])

    scipy.io.savemat(tmp_path / "other.mat", {"dreamer": np.ones((2, 2))})
    with pytest.raises(DataError, match=r"other\.mat: missing variable 'DREAMER'"):
        read_dreamer(tmp_path / "other.mat")
    with pytest.raises(DataError, match="DREAMER.mat not found"):
        read_dreamer(tmp_path / "absent.mat")


def test_matlab_v73_file_gets_a_clear_error(tmp_path):
    # a MATLAB v7.3 file is HDF5 behind a 128-byte MATLAB header whose version field reads 0x0200
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    (tmp_path / "DREAMER.mat").write_bytes(header + b"\x89HDF\r\n\x1a\n" + b"\x00" * 400)
    with pytest.raises(DataError, match=r"DREAMER\.mat: MATLAB v7\.3 \(HDF5\) file"):
        read_dreamer(tmp_path / "DREAMER.mat")
