"""Synthetic DEAP generator: MNE forward projection, DEAP format, determinism, planted rating effects
and the per-trial fingerprint that makes pooled-window splits leak."""

from __future__ import annotations

import json
import pickle

import mne
import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, KFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from interplay.eeg.data import DEAP_CHANNELS, read_deap, write_synthetic_deap
from interplay.eeg.data.synthetic import (
    SYNTHETIC_VERSION,
    SyntheticDEAPConfig,
    head_model,
    project_sources,
    synthetic_deap_subject,
)


def test_projection_matches_mne_simulate_raw():
    model = head_model()
    n_dipoles = len(model.positions)
    assert model.gain.shape == (32, 3 * n_dipoles) and n_dipoles > 20
    assert head_model() is model  # one forward per process
    rng = np.random.default_rng(0)
    dipoles = np.array([3, 17, 40])
    activity = rng.normal(0.0, 20e-9, size=(3, 40))
    # simulate_raw drives volume-source dipoles along z
    z = np.tile([0.0, 0.0, 1.0], (3, 1))
    full = np.zeros((n_dipoles, 40))
    full[dipoles] = activity
    vertices = [model.forward["src"][0]["vertno"]]
    stc = mne.VolSourceEstimate(full, vertices, tmin=0.0, tstep=1.0 / 128.0)
    simulated = mne.simulation.simulate_raw(model.info, stc, forward=model.forward, verbose="error")
    ours = project_sources(model.gain, dipoles, z, activity)
    # simulate_raw accumulates in single precision
    np.testing.assert_allclose(ours, simulated.get_data(), rtol=1e-4, atol=1e-4 * np.abs(ours).max())
    # any orientation: the dipole's three gain columns weighted by the orientation
    orientation = np.array([[0.6, -0.8, 0.0]])
    expected = (model.gain[:, 3 * 17 : 3 * 17 + 3] @ orientation[0])[:, None] * activity[1:2]
    np.testing.assert_allclose(
        project_sources(model.gain, np.array([17]), orientation, activity[1:2]), expected
    )


def test_files_read_back_as_deap(tmp_path):
    root = write_synthetic_deap(tmp_path, n_subjects=2, n_trials=3, seconds=2.0, seed=5)
    recordings = read_deap(root)
    assert recordings.ch_names == list(DEAP_CHANNELS) and recordings.sfreq == 128.0
    assert recordings.subjects.tolist() == [1, 1, 1, 2, 2, 2]
    assert all(s.shape == (32, 256) for s in recordings.signals)
    assert all(b.shape == (32, 384) for b in recordings.baselines)
    for name in ("valence", "arousal", "dominance", "liking"):
        assert recordings.ratings[name].min() >= 1.0 and recordings.ratings[name].max() <= 9.0
    signal = recordings.signals[0]
    assert 2.0 < signal.std() < 100.0  # µV, like DEAP's preprocessed EEG
    np.testing.assert_allclose(signal.mean(axis=0), 0.0, atol=1e-3)  # common average reference
    with open(root / "s01.dat", "rb") as handle:
        written = pickle.load(handle, encoding="latin1")
    assert written["data"].shape == (3, 40, 384 + 256)
    assert np.isfinite(written["data"]).all() and written["data"][:, 32:].std() > 1.0  # peripheral noise
    meta = json.loads((root / "synthetic_deap.json").read_text())
    assert meta["version"] == SYNTHETIC_VERSION and meta["seed"] == 5 and meta["fingerprint"] == 1.0


def test_deterministic_in_seed_and_independent_of_subject_count(tmp_path):
    write_synthetic_deap(tmp_path / "one", n_subjects=1, n_trials=2, seconds=1.0, seed=11)
    write_synthetic_deap(tmp_path / "two", n_subjects=2, n_trials=2, seconds=1.0, seed=11)
    assert (tmp_path / "one" / "s01.dat").read_bytes() == (tmp_path / "two" / "s01.dat").read_bytes()
    config = SyntheticDEAPConfig(seconds=1.0)
    data, labels = synthetic_deap_subject(2, n_trials=2, config=config, seed=11)
    again, labels_again = synthetic_deap_subject(2, n_trials=2, config=config, seed=11)
    np.testing.assert_array_equal(data, again)
    np.testing.assert_array_equal(labels, labels_again)
    other, _ = synthetic_deap_subject(2, n_trials=2, config=config, seed=12)
    assert not np.allclose(data, other)
    first, _ = synthetic_deap_subject(1, n_trials=2, config=config, seed=11)
    assert not np.allclose(data, first)
    # a strength changes its component only: same ratings, same background
    no_effect, same_labels = synthetic_deap_subject(
        2, 2, SyntheticDEAPConfig(seconds=1.0, class_effect=0.0), 11
    )
    np.testing.assert_array_equal(same_labels, labels)
    np.testing.assert_array_equal(no_effect[:, :, :300], data[:, :, :300])  # the baselines (before the ramp)
    assert not np.allclose(no_effect[:, :32, 500:], data[:, :32, 500:])


def _log_power_change(recordings, channels, band):
    """Per trial and channel: log band power of the video minus that of the baseline (edges trimmed)."""
    sos = butter(5, band, btype="band", fs=128.0, output="sos")
    index = [recordings.ch_names.index(c) for c in channels]

    def log_power(x):
        return np.log(sosfiltfilt(sos, x[index], axis=-1)[:, 64:-64].var(axis=-1))

    return np.array([log_power(s) - log_power(b) for s, b in zip(recordings.signals, recordings.baselines)])


def _rating_aucs(tmp_path, **strengths):
    write_synthetic_deap(
        tmp_path, n_subjects=2, n_trials=24, seconds=8.0, seed=0, subject_effect=0.0, **strengths
    )
    recordings = read_deap(tmp_path)
    alpha = _log_power_change(recordings, ["F4", "F3"], (8.0, 13.0))
    beta = _log_power_change(recordings, ["C3", "C4", "T7", "T8"], (14.0, 30.0)).mean(axis=1)
    high = {name: recordings.ratings[name] >= 5 for name in ("valence", "arousal")}
    return roc_auc_score(high["valence"], alpha[:, 0] - alpha[:, 1]), roc_auc_score(high["arousal"], beta)


def test_ratings_drive_alpha_asymmetry_and_beta_power(tmp_path):
    valence_auc, arousal_auc = _rating_aucs(tmp_path / "planted")
    # right-minus-left frontal alpha rises with valence; central / temporal beta with arousal
    assert valence_auc > 0.72
    assert arousal_auc > 0.62
    null_valence, _ = _rating_aucs(tmp_path / "null", class_effect=0.0)
    assert abs(null_valence - 0.5) < 0.2
    assert valence_auc - null_valence > 0.2


def _window_log_powers(recordings, window=256):
    """Log band power (theta, alpha, beta, gamma) per channel of non-overlapping windows, and their trial."""
    bands = [(4.0, 8.0), (8.0, 14.0), (14.0, 31.0), (31.0, 49.0)]
    sos = [butter(5, band, btype="band", fs=128.0, output="sos") for band in bands]
    features, groups = [], []
    for trial, signal in enumerate(recordings.signals):
        filtered = np.stack([sosfiltfilt(s, signal, axis=-1) for s in sos], axis=1)
        for start in range(0, signal.shape[1] - window + 1, window):
            features.append(np.log(filtered[..., start : start + window].var(axis=-1)).ravel())
            groups.append(trial)
    return np.array(features), np.array(groups)


def _pooled_and_grouped_accuracy(root, **strengths):
    write_synthetic_deap(root, n_subjects=1, n_trials=20, seconds=12.0, seed=0, **strengths)
    recordings = read_deap(root)
    features, groups = _window_log_powers(recordings)
    labels = (recordings.ratings["valence"] >= 5)[groups]
    knn = KNeighborsClassifier(3)
    pooled = cross_val_score(knn, features, labels, cv=KFold(5, shuffle=True, random_state=0)).mean()
    grouped = cross_val_score(knn, features, labels, groups=groups, cv=GroupKFold(5)).mean()
    return pooled, grouped


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_trial_fingerprint_makes_pooled_windows_leak(tmp_path):
    # class_effect=0: valence leaves no trace in the signal, so any accuracy above chance is memorised trials
    pooled, grouped = _pooled_and_grouped_accuracy(tmp_path / "fingerprint", class_effect=0.0)
    assert pooled > 0.9
    assert abs(grouped - 0.5) < 0.2
    pooled_plain, grouped_plain = _pooled_and_grouped_accuracy(
        tmp_path / "plain", class_effect=0.0, fingerprint=0.0, trial_noise=0.0
    )
    assert abs(pooled_plain - 0.5) < 0.2 and abs(grouped_plain - 0.5) < 0.2
