"""Band differential entropy features: closed forms, windowing, baseline, sampling rate, cache, workers."""

from __future__ import annotations

import math
import warnings

import mne
import numpy as np
import pytest
from scipy import signal as scipy_signal

from interplay.core.config import from_dict
from interplay.core.errors import ConfigError, DataError
from interplay.eeg import features as features_module
from interplay.eeg.data.base import BANDS, EEGRecordings
from interplay.eeg.features import (
    FeatureConfig,
    Preprocessing,
    band_differential_entropy,
    differential_entropy,
    extract_features,
    feature_cache_key,
    trial_features,
    window_starts,
)

CHANNELS = ["Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7"]


def make_info(n_channels: int, sfreq: float):
    info = mne.create_info(CHANNELS[:n_channels], sfreq, "eeg")
    info.set_montage("colin27_1005")  # MNE 1.13 deprecates the name "standard_1005"
    return info


def make_recordings(
    n_subjects=2, n_trials=3, n_channels=4, seconds=6.0, sfreq=128.0, baseline_seconds=3.0, seed=0
) -> EEGRecordings:
    rng = np.random.default_rng(seed)
    n, n_b = round(seconds * sfreq), round(baseline_seconds * sfreq)
    total = n_subjects * n_trials
    return EEGRecordings(
        dataset="synthetic",
        info=make_info(n_channels, sfreq),
        signals=[rng.standard_normal((n_channels, n)) for _ in range(total)],
        baselines=[rng.standard_normal((n_channels, n_b)) if n_b else None for _ in range(total)],
        subjects=np.repeat(np.arange(n_subjects), n_trials),
        sessions=np.zeros(total),
        trials=np.tile(np.arange(n_trials), n_subjects),
        ratings={"valence": rng.uniform(1, 9, total), "arousal": rng.uniform(1, 9, total)},
        sources=[f"s{s:02d}.dat" for s in range(n_subjects) for _ in range(n_trials)],
    )


# --------------------------------------------------------------------------- closed forms


def test_differential_entropy_of_known_variance_is_exact():
    sigma = 1.7
    x = np.tile([-sigma, sigma], 500)  # population variance exactly sigma^2
    expected = 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    assert differential_entropy(x) == pytest.approx(expected, rel=1e-12)
    assert differential_entropy(x, log_base=2) == pytest.approx(expected / math.log(2), rel=1e-12)
    assert differential_entropy(x, log_base=10) == pytest.approx(expected / math.log(10), rel=1e-12)
    # along an axis: one value per row
    rows = np.stack([x, 2 * x])
    np.testing.assert_allclose(
        differential_entropy(rows, axis=1), [expected, expected + math.log(2)], rtol=1e-12
    )


@pytest.mark.parametrize("log_base", [1, 0, -2, "ten", float("nan")])
def test_bad_log_base_is_a_config_error(log_base):
    with pytest.raises(ConfigError, match="features.log_base"):
        FeatureConfig(log_base=log_base)


def test_band_de_of_white_noise_matches_closed_form():
    """White noise of variance s^2 through a band-pass keeps s^2 * ENBW / (fs / 2). For a zero-phase
    (forward-backward) Butterworth of order N the noise bandwidth is |H|^4's:
    ENBW = width * (pi / 2N) / sin(pi / 2N) * (1 - 1 / 2N) = 0.915 width for N = 5."""
    fs, sigma, order = 128.0, 2.0, 5
    noise = np.random.default_rng(1).normal(0.0, sigma, size=(8, int(600 * fs)))
    de = band_differential_entropy(noise, fs, BANDS, order).mean(axis=0)
    shape = (math.pi / (2 * order)) / math.sin(math.pi / (2 * order)) * (1 - 1 / (2 * order))
    for (low, high), value in zip(BANDS.values(), de):
        variance = sigma**2 * (high - low) * shape / (fs / 2)
        assert value == pytest.approx(0.5 * math.log(2 * math.pi * math.e * variance), abs=0.015)
        # an ideal brick-wall band would give 0.044 nats more: the tolerance tells the two apart
        ideal = 0.5 * math.log(2 * math.pi * math.e * sigma**2 * (high - low) / (fs / 2))
        assert ideal - value > 0.025
    base2 = band_differential_entropy(noise[:2, :4096], fs, BANDS, order, log_base=2)
    np.testing.assert_allclose(
        base2 * math.log(2), band_differential_entropy(noise[:2, :4096], fs), rtol=1e-12
    )


def test_band_de_rejects_bands_above_nyquist():
    with pytest.raises(ConfigError, match=r"features.bands.gamma.*Nyquist"):
        band_differential_entropy(np.zeros((2, 1000)), 80.0)


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("n_samples", "length", "stride", "expected"),
    [
        (10, 4, 3, [0, 3, 6]),  # 6 + 4 = 10: the last window ends exactly at the end
        (10, 4, 2, [0, 2, 4, 6]),
        (11, 4, 3, [0, 3, 6]),  # remainder of 1 sample dropped
        (4, 4, 5, [0]),
        (3, 4, 1, []),  # shorter than one window
    ],
)
def test_window_starts_hand_cases(n_samples, length, stride, expected):
    np.testing.assert_array_equal(window_starts(n_samples, length, stride), expected)


def test_window_counts_of_the_paper_and_benchmark_layouts():
    assert len(window_starts(7680, 512, 117)) == 1 + (7680 - 512) // 117 == 62
    assert len(window_starts(7680, 512, 128)) == 57
    with pytest.raises(ConfigError):
        window_starts(100, 10, 0)


def test_trial_features_windows_in_seconds_at_the_real_rate():
    rng = np.random.default_rng(2)
    config = FeatureConfig(window_seconds=2.0, stride_seconds=0.5, baseline="none")
    for sfreq in (128.0, 200.0):
        n = round(7.3 * sfreq)
        features, starts = trial_features(rng.standard_normal((3, n)), None, sfreq, config)
        length, stride = round(2 * sfreq), round(0.5 * sfreq)
        np.testing.assert_array_equal(starts, np.arange(0, n - length + 1, stride))
        assert features.shape == (len(starts), 3, 4)
    # 512 samples every 117 at 128 Hz: the defaults are the paper's windows
    assert FeatureConfig().samples(128.0) == (512, 117)


# --------------------------------------------------------------------------- baseline


@pytest.mark.parametrize("zscore", [False, True])
def test_baseline_correction_subtracts_the_mean_of_segment_des(zscore):
    fs = 128.0
    rng = np.random.default_rng(3)
    signal = rng.standard_normal((2, 6 * 128))
    # three one-second segments of very different power: mean of DEs != DE of the mean variance
    baseline = np.concatenate([a * rng.standard_normal((2, 128)) for a in (1.0, 3.0, 9.0)], axis=1)
    config = FeatureConfig(
        window_seconds=4.0, stride_seconds=1.0, zscore_windows=zscore, zscore_scope="channel"
    )
    corrected, _ = trial_features(signal, baseline, fs, config)
    uncorrected, _ = trial_features(signal, None, fs, config)

    expected = np.zeros((2, len(BANDS)))
    for b, (low, high) in enumerate(BANDS.values()):
        sos = scipy_signal.butter(5, [low, high], btype="band", fs=fs, output="sos")
        filtered = scipy_signal.sosfiltfilt(sos, baseline, axis=-1)
        for k in range(3):
            variance = filtered[:, k * 128 : (k + 1) * 128].var(axis=1)
            if zscore:
                variance = variance / baseline[:, k * 128 : (k + 1) * 128].var(axis=1)
            expected[:, b] += 0.5 * np.log(2 * np.pi * np.e * variance) / 3
    np.testing.assert_allclose(uncorrected - corrected, np.broadcast_to(expected, corrected.shape), rtol=1e-9)
    # and "none" leaves the windows alone
    none, _ = trial_features(signal, baseline, fs, FeatureConfig(baseline="none", zscore_windows=zscore))
    np.testing.assert_allclose(
        none, trial_features(signal, None, fs, FeatureConfig(zscore_windows=zscore))[0]
    )


def reference_bde(eeg: np.ndarray, fs: float = 128.0) -> np.ndarray:
    """The authors' per-window transform, written out: global z-score, (b, a) lfilter, log2 DE."""
    eeg = (eeg - eeg.mean()) / eeg.std()
    out = np.zeros((eeg.shape[0], len(BANDS)))
    for b, (low, high) in enumerate(BANDS.values()):
        num, den = scipy_signal.butter(5, [low / (fs / 2), high / (fs / 2)], btype="band")
        for c, channel in enumerate(eeg):
            out[c, b] = 0.5 * np.log2(2 * np.pi * np.e * np.var(scipy_signal.lfilter(num, den, channel)))
    return out


def test_reference_switches_reproduce_the_authors_code_exactly():
    rng = np.random.default_rng(4)
    reference = FeatureConfig(
        window_seconds=4.0,
        stride_seconds=117 / 128,
        filtering="causal_window",
        log_base=2,
        baseline="subtract_mean_signal",
        assume_sfreq=128.0,
    )
    # DEAP-like: 128 Hz with a 3 s baseline averaged sample by sample into one second
    signal, baseline = rng.standard_normal((3, 1200)), rng.standard_normal((3, 384))
    base = reference_bde(baseline.reshape(3, 3, 128).mean(axis=1))
    expected = np.stack([reference_bde(signal[:, s : s + 512]) - base for s in range(0, 1200 - 512 + 1, 117)])
    got, starts = trial_features(signal, baseline, 128.0, reference)
    np.testing.assert_array_equal(starts, np.arange(0, 1200 - 512 + 1, 117))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # SEED-like: 200 Hz without a baseline, still cut and filtered as if 128 Hz
    seed_signal = rng.standard_normal((3, 1500))
    expected = np.stack([reference_bde(seed_signal[:, s : s + 512]) for s in range(0, 1500 - 512 + 1, 117)])
    np.testing.assert_allclose(trial_features(seed_signal, None, 200.0, reference)[0], expected, rtol=1e-10)


# --------------------------------------------------------------------------- sampling rate


def alpha_sine(sfreq: float, seconds: float = 8.0) -> np.ndarray:
    t = np.arange(round(seconds * sfreq)) / sfreq
    noise = 0.05 * np.random.default_rng(5).standard_normal((2, len(t)))
    return np.sin(2 * np.pi * 10.0 * t)[None] + noise


def test_real_rate_puts_a_10_hz_sine_in_alpha_and_assume_sfreq_reproduces_the_flaw():
    config = FeatureConfig(baseline="none")
    for sfreq in (128.0, 200.0):
        features, _ = trial_features(alpha_sine(sfreq), None, sfreq, config)
        assert (features.argmax(axis=-1) == list(BANDS).index("alpha")).all()
    # 200 Hz data filtered as if 128 Hz: 10 Hz looks like 6.4 Hz, i.e. theta
    flawed = FeatureConfig(baseline="none", assume_sfreq=128.0)
    features, starts = trial_features(alpha_sine(200.0), None, 200.0, flawed)
    assert (features.argmax(axis=-1) == list(BANDS).index("theta")).all()
    assert starts[1] - starts[0] == 117  # windows and stride in "128 Hz" samples too
    # at 128 Hz assume_sfreq=128 changes nothing
    np.testing.assert_array_equal(
        trial_features(alpha_sine(128.0), None, 128.0, flawed)[0],
        trial_features(alpha_sine(128.0), None, 128.0, config)[0],
    )


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window_seconds": 0}, "features.window_seconds"),
        ({"stride_seconds": -1.0}, "features.stride_seconds"),
        ({"bands": {"theta": (8.0, 4.0)}}, "features.bands.theta"),
        ({"bands": {"theta": 4.0}}, "features.bands.theta"),
        ({"filter_order": 0}, "features.filter_order"),
        ({"baseline": "divide"}, "features.baseline"),
        ({"zscore_scope": "trial"}, "features.zscore_scope"),
        ({"filtering": "fft"}, "features.filtering"),
        ({"assume_sfreq": 0.0}, "features.assume_sfreq"),
        ({"preprocess": {"l_freq": 40.0, "h_freq": 1.0}}, "features.preprocess"),
        ({"preprocess": {"reference": "mastoids"}}, "features.preprocess.reference"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        FeatureConfig(**kwargs)


def test_config_loads_from_yaml_data():
    config = from_dict(
        FeatureConfig,
        {
            "window_seconds": 2,
            "bands": {"alpha": [8, 14]},
            "log_base": 2,
            "preprocess": {"reference": "average"},
        },
    )
    assert config.bands == {"alpha": (8.0, 14.0)} and config.log_base == 2.0
    assert config.preprocess == Preprocessing(reference="average")


def test_preprocessing_matches_mne_and_average_reference():
    rng = np.random.default_rng(6)
    signal = rng.standard_normal((4, 1280)) + 5.0 * rng.standard_normal((1, 1280))  # shared component
    prep = Preprocessing(l_freq=1.0, h_freq=45.0, reference="average")
    got, _ = trial_features(signal, None, 128.0, FeatureConfig(preprocess=prep))
    manual = mne.filter.filter_data(signal - signal.mean(axis=0), 128.0, 1.0, 45.0, verbose="error")
    np.testing.assert_allclose(got, trial_features(manual, None, 128.0, FeatureConfig())[0], rtol=1e-9)
    assert not np.allclose(got, trial_features(signal, None, 128.0, FeatureConfig())[0])
    with pytest.raises(ConfigError, match=r"features\.preprocess\.h_freq.*Nyquist"):
        alpha_only = {"alpha": (8.0, 14.0)}
        trial_features(
            signal, None, 64.0, FeatureConfig(bands=alpha_only, preprocess=Preprocessing(h_freq=45.0))
        )


# --------------------------------------------------------------------------- extraction


def test_extract_features_bookkeeping_and_values(tmp_path):
    recordings = make_recordings(seconds=6.0)
    recordings.signals[4] = recordings.signals[4][:, :300]  # shorter than one 4 s window
    config = FeatureConfig(stride_seconds=1.0)
    with pytest.warns(UserWarning, match=r"1 of 6 trials.*s01\.dat"):
        result = extract_features(recordings, config, cache_dir=tmp_path, workers=1, progress=False)
    per_trial = [
        trial_features(s, b, 128.0, config) for s, b in zip(recordings.signals, recordings.baselines)
    ]
    counts = [len(starts) for _, starts in per_trial]
    assert counts == [3, 3, 3, 3, 0, 3] and len(result) == 15
    trial_index = np.repeat(np.arange(6), counts)
    np.testing.assert_allclose(result.features, np.concatenate([f for f, _ in per_trial]), rtol=1e-6)
    np.testing.assert_array_equal(result.start, np.concatenate([s for _, s in per_trial]))
    np.testing.assert_array_equal(result.subjects, recordings.subjects[trial_index])
    np.testing.assert_array_equal(result.trials, recordings.trials[trial_index])
    np.testing.assert_array_equal(result.groups, recordings.groups[trial_index])
    np.testing.assert_array_equal(result.ratings["arousal"], recordings.ratings["arousal"][trial_index])
    assert result.info is recordings.info and result.bands == tuple(BANDS)


def test_cache_hit_skips_the_work_and_any_change_misses(tmp_path, monkeypatch):
    recordings = make_recordings()
    calls = []
    real = features_module.trial_features

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(features_module, "trial_features", counting)
    run = dict(cache_dir=tmp_path, workers=1, progress=False)
    first = extract_features(recordings, FeatureConfig(), **run)
    assert len(calls) == 6 and len(list(tmp_path.glob("synthetic-*.npz"))) == 1

    second = extract_features(recordings, FeatureConfig(), **run)
    assert len(calls) == 6  # nothing recomputed
    np.testing.assert_array_equal(second.features, first.features)
    np.testing.assert_array_equal(second.start, first.start)
    np.testing.assert_array_equal(second.groups, first.groups)

    extract_features(recordings, FeatureConfig(log_base=2), **run)  # config change
    assert len(calls) == 12
    recordings.signals[2] = recordings.signals[2].copy()
    recordings.signals[2][0, 10] += 1e-9  # data change
    extract_features(recordings, FeatureConfig(), **run)
    assert len(calls) == 18
    assert len(list(tmp_path.glob("*.npz"))) == 3
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind

    before = feature_cache_key(recordings, FeatureConfig())
    recordings.ratings["valence"][0] += 1.0  # bookkeeping the cache restores must be in the key
    assert feature_cache_key(recordings, FeatureConfig()) != before


def test_corrupt_cache_is_recomputed(tmp_path):
    recordings = make_recordings(n_subjects=1, n_trials=2)
    run = dict(cache_dir=tmp_path, workers=1, progress=False)
    first = extract_features(recordings, **run)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file")
    again = extract_features(recordings, **run)
    np.testing.assert_array_equal(again.features, first.features)
    assert np.load(path)["features"].shape == first.features.shape  # rewritten


def test_two_workers_equal_one(tmp_path):
    recordings = make_recordings(n_subjects=2, n_trials=3)
    one = extract_features(recordings, workers=1, progress=False, cache=False)
    two = extract_features(recordings, workers=2, progress=False, cache=False)
    np.testing.assert_array_equal(one.features, two.features)
    np.testing.assert_array_equal(one.groups, two.groups)
    np.testing.assert_array_equal(one.start, two.start)


def test_user_mistakes_name_the_file_and_field(tmp_path):
    run = dict(workers=1, progress=False, cache=False)
    with pytest.raises(DataError, match=r"no trial is long enough.*features\.window_seconds"):
        extract_features(make_recordings(seconds=2.0), **run)
    with pytest.raises(ConfigError, match=r"features\.bands\.gamma.*Nyquist"):
        extract_features(make_recordings(sfreq=90.0), **run)
    with pytest.raises(DataError, match=r"s00\.dat: trial 0 baseline has 64 samples"):
        extract_features(make_recordings(baseline_seconds=0.5), **run)
    flat = make_recordings()
    flat.signals[3] = flat.signals[3].copy()
    flat.signals[3][1] = 0.0
    with pytest.raises(DataError, match=r"s01\.dat: trial 3 .*flat channel"):
        extract_features(flat, FeatureConfig(zscore_scope="channel"), **run)
    with pytest.raises(ConfigError, match="workers"):
        extract_features(make_recordings(), workers=0, progress=False, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid run warns about nothing
        extract_features(make_recordings(n_subjects=1, n_trials=1), **run)
