"""Synthetic EEG with known emotion structure, simulated on an MNE head model and written as DEAP files.

:func:`write_synthetic_deap` writes ``s01.dat`` ... in DEAP's preprocessed format (see
:mod:`interplay.eeg.data.deap`: 40 trials x 40 channels x (3 s baseline + trial) at 128 Hz, ratings
1-9), so :func:`~interplay.eeg.data.deap.read_deap` and everything downstream read them as DEAP.

**Head model** (MNE's simulation recipe, one forward per process, cached in memory):
``create_info(DEAP electrodes, 128 Hz)`` -> montage (:func:`~interplay.eeg.data.montage.make_info`)
-> :func:`mne.make_sphere_model` (3-shell sphere fitted to the electrodes) ->
:func:`mne.setup_volume_source_space` (``pos=30`` mm grid, 80 dipoles) ->
:func:`mne.make_forward_solution` (EEG gain ``[32, 3 x 80]``, free orientation). Source time courses
are projected through the gain, which is what :func:`mne.simulation.simulate_raw` does for one fixed
head position (:func:`project_sources` matches it; a test checks this), but works on many trials
without building a Raw per trial.

**Signal** (per trial, 3 s baseline then ``seconds`` of "video"; everything in nAm at the sources,
µV at the electrodes, common-average referenced as DEAP's preprocessed data):

1. background: independent 1/f ("pink") activity on every dipole and orientation, with per-subject
   random dipole weights. Drawn directly at the sensors as ``L z`` with
   ``L L^T = G diag(w) G^T`` (the same Gaussian process, 32 instead of 240 draws per sample);
2. band-limited rhythms on a few dipoles (:data:`RHYTHMS`), whose log-amplitude during the video is
   ``base + subject offset + class_effect * coefficient * z(rating) + trial noise``, with
   ``z(r) = (r - 5) / 4`` in [-1, 1]:

   * valence -> frontal alpha asymmetry: alpha (8-13 Hz) on a left-frontal dipole falls and on the
     right-frontal one rises with valence (Davidson's approach / withdrawal model);
   * arousal -> beta (14-30 Hz) on left / right central dipoles and gamma (31-45 Hz) on temporal ones
     rise with arousal;
   * dominance -> theta (4-8 Hz) on a frontal-midline dipole rises with dominance;
   * an occipital alpha rhythm carries no rating (background realism); liking has no planted effect
     of its own but correlates with valence (as in DEAP) through the ratings.

   During the baseline each rhythm runs at the subject's neutral amplitude (``z = 0``, no trial noise);
3. per-subject variation (``subject_effect``): each rhythm's dipole is drawn per subject from the
   grid points around its nominal location, its orientation is tilted randomly away from radial, its
   log-amplitude gets a random offset (baseline and video alike), its change during every video a
   random "reactivity" offset (which baseline correction does not remove), and the class effect a
   random per-subject gain, so a rule learned on some subjects transfers imperfectly to others
   (leave-one-subject-out is harder than within-subject);
4. a per-trial fingerprint (``fingerprint``), present in every sample of the video part only: a
   narrow-band oscillation at a random frequency (3-45 Hz) on a random dipole, and a random gain per
   electrode. It carries no rating, but it makes every window of a trial look alike, so a classifier
   that sees windows of the same trial in training and test (pooled shuffled windows, the
   RBTransformer paper's protocol) can memorise trials and scores far higher than under trial-grouped
   splits;
5. sensor noise: white, from :func:`mne.make_ad_hoc_cov` (``sensor_noise_uv`` µV per electrode).

Peripheral channels 33-40 are white noise. Defaults: ``class_effect=1`` (a log-amplitude change
of 0.75 per unit ``z``, so ratings 9 vs 1 change a rhythm's power 20-fold); ``subject_effect=1``
(log-amplitude offsets and reactivities of sd 0.4, a per-subject effect gain of log-sd 0.3, dipole
weights of log-sd 0.5, orientations tilted by 0.7 x a normal vector); ``fingerprint=1`` (an
oscillation of 25 nAm, electrode gains of log-sd 0.15); ``trial_noise=0.25`` (log-amplitude sd per
trial and rhythm). On 4 subjects x 40 trials x 30 s, logistic regression on baseline-corrected
differential entropy (4 s windows, 1 s stride) scored 1.00 on windows pooled and shuffled within a
subject, 0.66-0.75 under trial-grouped 5-fold and 0.56-0.69 leave-one-subject-out (binary valence,
seeds 0 and 1). Every strength can be set to 0 to switch that component off; the random draws stay
the same, so two sets that differ in one strength differ only in that component. Output is
deterministic in ``seed``; subject ``k`` gets the same data whatever ``n_subjects`` is.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import mne
import numpy as np
from threadpoolctl import threadpool_limits

from interplay.core.data import atomic_write
from interplay.eeg.data.deap import (
    DEAP_BASELINE_SAMPLES,
    DEAP_FILE_CHANNELS,
    DEAP_LABELS,
    DEAP_SFREQ,
    write_deap_file,
)
from interplay.eeg.data.montage import DEAP_CHANNELS, make_info

__all__ = [
    "RHYTHMS",
    "SYNTHETIC_VERSION",
    "HeadModel",
    "Rhythm",
    "SyntheticDEAPConfig",
    "head_model",
    "project_sources",
    "synthetic_deap_subject",
    "write_synthetic_deap",
]

#: Bumped whenever the generator's output changes, so that cached features of old files are not reused.
SYNTHETIC_VERSION = 1


@dataclass(frozen=True)
class Rhythm:
    """A band-limited source: nominal dipole location (head frame, m), band (Hz), neutral amplitude (nAm),
    and which rating drives its log-amplitude with which sign."""

    name: str
    location: tuple[float, float, float]
    band: tuple[float, float]
    amplitude: float
    rating: str | None = None
    coefficient: float = 0.0


RHYTHMS: tuple[Rhythm, ...] = (
    Rhythm("left_frontal_alpha", (-0.03, 0.06, 0.06), (8.0, 13.0), 40.0, "valence", -1.0),
    Rhythm("right_frontal_alpha", (0.03, 0.06, 0.06), (8.0, 13.0), 40.0, "valence", 1.0),
    Rhythm("left_central_beta", (-0.06, 0.0, 0.06), (14.0, 30.0), 35.0, "arousal", 1.0),
    Rhythm("right_central_beta", (0.06, 0.0, 0.06), (14.0, 30.0), 35.0, "arousal", 1.0),
    Rhythm("left_temporal_gamma", (-0.06, 0.0, 0.03), (31.0, 45.0), 25.0, "arousal", 0.8),
    Rhythm("right_temporal_gamma", (0.06, 0.0, 0.03), (31.0, 45.0), 25.0, "arousal", 0.8),
    Rhythm("frontal_midline_theta", (0.0, 0.03, 0.09), (4.0, 8.0), 50.0, "dominance", 1.0),
    Rhythm("occipital_alpha", (0.0, -0.06, 0.06), (8.0, 12.0), 50.0),
)

_PERIPHERAL = DEAP_FILE_CHANNELS - len(DEAP_CHANNELS)
_BACKGROUND_NAM = 12.0  # rms of each dipole component's pink background
_NEIGHBOUR_M = 0.031  # grid spacing is 30 mm: the nominal dipole and its 6 neighbours
_LOG_AMPLITUDE_PER_Z = 0.75  # class_effect=1: a rating of 9 vs 1 changes a rhythm's power e^3 = 20-fold
_RAMP_SECONDS = 0.25  # cosine ramp between baseline and video amplitudes (no step artefact)


@dataclass(frozen=True)
class SyntheticDEAPConfig:
    """Strengths of the simulated effects (see the module docstring); 0 switches one off."""

    class_effect: float = 1.0
    subject_effect: float = 1.0
    fingerprint: float = 1.0
    trial_noise: float = 0.25
    sensor_noise_uv: float = 1.0
    seconds: float = 60.0


@dataclass(frozen=True)
class HeadModel:
    """The forward model: ``gain`` ``[n_channels, 3 * n_dipoles]`` (V per A·m, x/y/z per dipole), dipole
    positions ``[n_dipoles, 3]`` (head frame, m), the sphere's centre and the Info."""

    gain: np.ndarray
    positions: np.ndarray
    center: np.ndarray
    info: Any
    forward: Any


@lru_cache(maxsize=4)
def head_model(grid_mm: float = 30.0) -> HeadModel:
    """Sphere head model of the 32 DEAP electrodes with a volume source grid of ``grid_mm`` (cached)."""
    info = make_info(DEAP_CHANNELS, DEAP_SFREQ)
    sphere = mne.make_sphere_model("auto", "auto", info, verbose="error")
    sources = mne.setup_volume_source_space(sphere=sphere, pos=grid_mm, verbose="error")
    forward = mne.make_forward_solution(
        info, trans=None, src=sources, bem=sphere, meg=False, eeg=True, verbose="error"
    )
    gain = np.array(forward["sol"]["data"], dtype=np.float64)
    gain.setflags(write=False)
    return HeadModel(
        gain=gain,
        positions=np.array(forward["source_rr"]),
        center=np.array(sphere["r0"]),
        info=info,
        forward=forward,
    )


def project_sources(
    gain: np.ndarray, dipoles: np.ndarray, orientations: np.ndarray, activity: np.ndarray
) -> np.ndarray:
    """Electrode signals ``[n_channels, n]`` of dipoles ``[k]`` with unit ``orientations`` ``[k, 3]`` and
    moments ``activity`` ``[k, n]`` (A·m): ``sum_i G[:, 3 d_i : 3 d_i + 3] @ o_i * a_i(t)``."""
    columns = np.einsum("ckj,kj->ck", gain.reshape(gain.shape[0], -1, 3)[:, dipoles], orientations)
    return columns @ activity


def _unit_spectrum(shapes: np.ndarray, n: int) -> np.ndarray:
    """Spectral amplitudes ``[k, n // 2 + 1]`` scaled so that :func:`_band_noise` has unit variance per row.

    Bins ``m_k (a + i b)`` with standard normal ``a``, ``b`` give ``irfft`` a variance of
    ``(4 / n^2) sum_k m_k^2`` (DC and Nyquist aside), which the scale undoes.
    """
    scale = n / (2.0 * np.sqrt(np.maximum(np.sum(shapes**2, axis=1, keepdims=True), 1e-300)))
    return (shapes * scale).astype(np.float32)


def _band_noise(rng: np.random.Generator, spectrum: np.ndarray, n: int) -> np.ndarray:
    """Gaussian noise ``[k, n]`` (float32) with spectral amplitudes ``spectrum`` from :func:`_unit_spectrum`.

    Built in the frequency domain: one inverse FFT for all rows, in single precision (twice as fast,
    far more precise than EEG needs).
    """
    bins = rng.standard_normal((spectrum.shape[0], 2 * spectrum.shape[1]), dtype=np.float32).view(
        np.complex64
    )
    return np.fft.irfft(bins * spectrum, n=n, axis=1)


def _band_shape(freqs: np.ndarray, low: float, high: float, edge: float = 1.0) -> np.ndarray:
    """Flat pass band with raised-cosine edges ``edge`` Hz wide."""
    inside = np.clip((freqs - (low - edge / 2)) / edge, 0, 1) * np.clip(
        ((high + edge / 2) - freqs) / edge, 0, 1
    )
    return np.sin(inside * np.pi / 2) ** 2


@dataclass
class _Subject:
    mixing: np.ndarray  # [32, 32] background: L with L L^T = G diag(w) G^T * background^2
    columns: np.ndarray  # [32, n_rhythms] gain columns of the subject's rhythm dipoles (V per A·m)
    offsets: np.ndarray  # [n_rhythms] log-amplitude offsets (baseline and video)
    reactivity: np.ndarray  # [n_rhythms] log-amplitude change during every video, whatever the rating
    effect_gain: float


def _make_subject(model: HeadModel, config: SyntheticDEAPConfig, rng: np.random.Generator) -> _Subject:
    # Every draw happens whatever the strengths, so that changing one strength leaves the rest alike.
    n_dipoles = len(model.positions)
    spread = config.subject_effect
    weights = np.exp(0.5 * spread * rng.normal(size=n_dipoles))
    gain3 = model.gain.reshape(model.gain.shape[0], n_dipoles, 3)
    covariance = np.einsum("cdj,d,edj->ce", gain3, weights, gain3) * (_BACKGROUND_NAM * 1e-9) ** 2
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    mixing = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))
    dipoles, orientations = [], []
    for rhythm in RHYTHMS:
        distances = np.linalg.norm(model.positions - np.asarray(rhythm.location), axis=1)
        neighbour = int(rng.choice(np.flatnonzero(distances <= distances.min() + _NEIGHBOUR_M)))
        dipole = neighbour if spread > 0 else int(distances.argmin())
        radial = model.positions[dipole] - model.center
        radial = radial / np.linalg.norm(radial)
        orientation = radial + 0.7 * spread * rng.normal(size=3)
        dipoles.append(dipole)
        orientations.append(orientation / np.linalg.norm(orientation))
    columns = project_sources(model.gain, np.array(dipoles), np.array(orientations), np.eye(len(RHYTHMS)))
    return _Subject(
        mixing=mixing,
        columns=columns,
        offsets=0.4 * spread * rng.normal(size=len(RHYTHMS)),
        reactivity=0.4 * spread * rng.normal(size=len(RHYTHMS)),
        effect_gain=float(np.exp(0.3 * spread * rng.normal())),
    )


def _ratings(rng: np.random.Generator, n_trials: int) -> np.ndarray:
    """``[n_trials, 4]``: valence, arousal, dominance uniform on 1-9, liking = valence + noise; 2 decimals."""
    ratings = rng.uniform(1.0, 9.0, size=(n_trials, 4))
    ratings[:, 3] = np.clip(ratings[:, 0] + rng.normal(0.0, 1.5, n_trials), 1.0, 9.0)
    return np.round(ratings, 2)


def synthetic_deap_subject(
    subject: int,
    n_trials: int = 40,
    config: SyntheticDEAPConfig = SyntheticDEAPConfig(),
    seed: int = 0,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """``(data [n_trials, 40, 384 + 128 seconds] µV, labels [n_trials, 4])`` of participant ``subject``.

    Exactly what :func:`write_synthetic_deap` writes to ``sNN.dat`` for the same ``config`` and ``seed``.
    """
    # Small matrix products per trial: a multi-threaded BLAS only adds contention (20x slower when busy).
    with threadpool_limits(limits=1, user_api="blas"):
        return _simulate_subject(subject, n_trials, config, seed, dtype)


def _simulate_subject(
    subject: int, n_trials: int, config: SyntheticDEAPConfig, seed: int, dtype: Any
) -> tuple[np.ndarray, np.ndarray]:
    model = head_model()
    # separate streams: the ratings and the subject do not change with n_trials or the trial strengths
    streams = np.random.SeedSequence(seed, spawn_key=(subject,)).spawn(3)
    ratings = _ratings(np.random.default_rng(streams[0]), n_trials)
    person = _make_subject(model, config, np.random.default_rng(streams[1]))
    rng = np.random.default_rng(streams[2])
    n_video = round(config.seconds * DEAP_SFREQ)
    n = DEAP_BASELINE_SAMPLES + n_video
    freqs = np.fft.rfftfreq(n, 1.0 / DEAP_SFREQ)
    pink = np.where(freqs > 0, 1.0 / np.sqrt(np.maximum(freqs, 0.5)), 0.0)[None, :]
    rhythm_spectra = _unit_spectrum(np.stack([_band_shape(freqs, *rhythm.band) for rhythm in RHYTHMS]), n)
    background_spectra = _unit_spectrum(np.repeat(pink, len(DEAP_CHANNELS), 0), n)
    ramp_length = round(_RAMP_SECONDS * DEAP_SFREQ)
    video = np.zeros(n)
    video[DEAP_BASELINE_SAMPLES:] = 1.0
    video[DEAP_BASELINE_SAMPLES : DEAP_BASELINE_SAMPLES + ramp_length] = (
        np.sin(np.linspace(0, np.pi / 2, ramp_length)) ** 2
    )
    coefficients = np.array([r.coefficient for r in RHYTHMS])
    rating_index = [DEAP_LABELS.index(r.rating) if r.rating else 0 for r in RHYTHMS]
    base_amplitude = np.array([r.amplitude for r in RHYTHMS]) * 1e-9 * np.exp(person.offsets)
    noise_cov = mne.make_ad_hoc_cov(model.info, std={"eeg": config.sensor_noise_uv * 1e-6}, verbose="error")
    sensor_sd = np.sqrt(noise_cov.data if noise_cov["diag"] else np.diag(noise_cov.data))
    data = np.empty((n_trials, DEAP_FILE_CHANNELS, n), dtype=dtype)
    for trial in range(n_trials):
        z = (ratings[trial, rating_index] - 5.0) / 4.0
        log_change = config.class_effect * person.effect_gain * _LOG_AMPLITUDE_PER_Z * coefficients * z
        log_change = log_change + person.reactivity + config.trial_noise * rng.normal(size=len(RHYTHMS))
        # amplitude per rhythm and sample: neutral in the baseline, rating-driven during the video
        envelope = base_amplitude[:, None] * np.exp(np.outer(log_change, video))
        rhythms = _band_noise(rng, rhythm_spectra, n) * envelope
        eeg = person.mixing @ _band_noise(rng, background_spectra, n)
        eeg += person.columns @ rhythms
        # the trial's fingerprint (drawn even at strength 0, to keep the random stream aligned)
        frequency = rng.uniform(3.0, 45.0)
        shape = np.exp(-0.5 * ((freqs - frequency) / 0.3) ** 2)[None, :]
        oscillation = _band_noise(rng, _unit_spectrum(shape, n), n) * (25e-9 * config.fingerprint) * video
        dipole = rng.integers(len(model.positions))
        orientation = rng.normal(size=(1, 3))
        orientation /= np.linalg.norm(orientation)
        eeg += project_sources(model.gain, np.array([dipole]), orientation, oscillation)
        log_gains = 0.15 * config.fingerprint * rng.normal(size=(len(DEAP_CHANNELS), 1))
        # electrode gains ramp from 1 to exp(log_gain) with the video envelope
        eeg[:, DEAP_BASELINE_SAMPLES:] *= 1.0 + np.expm1(log_gains) * video[None, DEAP_BASELINE_SAMPLES:]
        eeg += sensor_sd[:, None] * rng.standard_normal((len(DEAP_CHANNELS), n), dtype=np.float32)
        eeg -= eeg.mean(axis=0, keepdims=True)  # common average reference, as DEAP's preprocessed data
        data[trial, : len(DEAP_CHANNELS)] = eeg * 1e6
        data[trial, len(DEAP_CHANNELS) :] = 10.0 * rng.standard_normal((_PERIPHERAL, n), dtype=np.float32)
    return data, ratings


def write_synthetic_deap(
    root: str | os.PathLike[str],
    n_subjects: int = 4,
    n_trials: int = 40,
    seconds: float = 60.0,
    seed: int = 0,
    class_effect: float = 1.0,
    subject_effect: float = 1.0,
    fingerprint: float = 1.0,
    trial_noise: float = 0.25,
    sensor_noise_uv: float = 1.0,
    dtype: Any = np.float32,
) -> Path:
    """Write ``s01.dat`` ... ``sNN.dat`` of simulated EEG in DEAP's preprocessed format; return ``root``.

    Also writes ``synthetic_deap.json`` (generator version and parameters). ``dtype`` float32 halves
    the files (a DEAP-sized set is 1.6 GB instead of 3.3 GB); the reader accepts either.
    """
    config = SyntheticDEAPConfig(
        class_effect=class_effect,
        subject_effect=subject_effect,
        fingerprint=fingerprint,
        trial_noise=trial_noise,
        sensor_noise_uv=sensor_noise_uv,
        seconds=seconds,
    )
    if seconds * DEAP_SFREQ < 1:
        raise ValueError(f"seconds must give at least one sample at 128 Hz, got {seconds}")
    root = Path(root)
    for subject in range(1, n_subjects + 1):
        data, labels = synthetic_deap_subject(subject, n_trials, config, seed, dtype)
        write_deap_file(root / f"s{subject:02d}.dat", data, labels)
    meta = {"generator": "interplay.eeg.synthetic_deap", "version": SYNTHETIC_VERSION, "seed": seed}
    meta |= {"n_subjects": n_subjects, "n_trials": n_trials, **asdict(config)}
    with atomic_write(root / "synthetic_deap.json", "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2)
    return root
