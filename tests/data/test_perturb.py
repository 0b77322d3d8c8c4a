"""Speaker perturbation DSP (data/perturb.py): tempo, pitch and formant warping do what they say,
on signals whose truth is known (a sine, a pulse train, resonance-shaped noise)."""

import numpy as np
import pytest
from scipy.signal import find_peaks, lfilter, welch

from wakeword_dist.data.perturb import Perturbation, draw_speaker, jitter, perturb

SR = 16000  # Hz
FORMANTS = ((700, 80), (1500, 100), (2600, 120))  # (centre Hz, bandwidth Hz) of a vowel-like filter


def _resonate(excitation: np.ndarray) -> np.ndarray:
    """Pass ``excitation`` through the FORMANTS' two-pole resonators -> float32, peak 0.5."""
    x = excitation
    for f, bw in FORMANTS:
        r = np.exp(-np.pi * bw / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _pulse_train(f0: float, seconds: float = 1.0) -> np.ndarray:
    x = np.zeros(int(SR * seconds))
    x[:: int(round(SR / f0))] = 1.0
    return _resonate(x)


def _f0(y: np.ndarray) -> float:
    """Autocorrelation pitch of a steady periodic signal, Hz (60-400 Hz search)."""
    y = y - y.mean()
    c = np.correlate(y, y, "full")[y.size - 1:]
    lo, hi = SR // 400, SR // 60
    return SR / (lo + int(np.argmax(c[lo:hi])))


def _spectral_peaks(y: np.ndarray) -> np.ndarray:
    """The first three peaks of the smoothed Welch PSD, Hz."""
    f, p = welch(y, SR, nperseg=1024)
    level = np.convolve(10 * np.log10(p + 1e-20), np.ones(5) / 5, "same")
    peaks, _ = find_peaks(level, prominence=3)
    return f[peaks][:3]


def _sine(freq: float, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(SR * seconds)) / SR)).astype(np.float32)


def _peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size), 8 * y.size))
    return float(np.argmax(spec)) * SR / (8 * y.size)


def test_identity_reconstructs_the_input():
    x = _pulse_train(130)
    y = perturb(x, SR, Perturbation())
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y - x).max() < 1e-4  # full STFT analysis/synthesis, ~ -80 dB


@pytest.mark.parametrize("tempo", [0.85, 1.2])
def test_tempo_changes_duration_not_pitch(tempo):
    x = _sine(300.0)
    y = perturb(x, SR, Perturbation(tempo=tempo))
    assert y.size == round(x.size / tempo)
    assert _peak_hz(y[2000:-2000]) == pytest.approx(300.0, abs=2.0)
    # the level survives the phase vocoder (no cancellation between frames)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=0.05)


@pytest.mark.parametrize("semitones", [-3.0, 3.0, 7.0])
def test_pitch_shift_moves_f0_keeps_duration_and_formants(semitones):
    x = _pulse_train(120)
    y = perturb(x, SR, Perturbation(pitch_semitones=semitones))
    assert y.size == x.size
    assert _f0(y[4000:12000]) == pytest.approx(120 * 2 ** (semitones / 12), rel=0.03)
    # the spectral envelope (formants) stays put: measured on noise through the same resonators
    noise = _resonate(np.random.default_rng(0).standard_normal(SR))
    before = _spectral_peaks(noise)
    after = _spectral_peaks(perturb(noise, SR, Perturbation(pitch_semitones=semitones)))
    np.testing.assert_allclose(after[1:], before[1:], rtol=0.06)


@pytest.mark.parametrize("warp", [0.87, 1.15])
def test_warp_moves_formants_keeps_pitch(warp):
    noise = _resonate(np.random.default_rng(0).standard_normal(SR))
    before, after = _spectral_peaks(noise), _spectral_peaks(perturb(noise, SR, Perturbation(warp=warp)))
    ratio = after / before
    assert np.all(np.sign(ratio - 1) == np.sign(warp - 1)), (before, after)  # every peak moves
    assert ratio[1:] == pytest.approx([warp, warp], rel=0.05)  # F2, F3 by the factor
    x = _pulse_train(120)
    assert _f0(perturb(x, SR, Perturbation(warp=warp))[4000:12000]) == pytest.approx(_f0(x[4000:12000]), rel=0.01)


def test_deterministic_and_draws_in_range():
    x = _pulse_train(150)
    p = Perturbation(1.07, -1.5, 1.08)
    np.testing.assert_array_equal(perturb(x, SR, p), perturb(x, SR, p))
    a = [draw_speaker(np.random.default_rng(s)) for s in range(50)]
    assert a == [draw_speaker(np.random.default_rng(s)) for s in range(50)]
    assert len({s.as_dict()["warp"] for s in a}) == 50  # distinct speakers
    clip = jitter(np.random.default_rng(1), a[0])
    assert clip != a[0] and abs(clip.tempo / a[0].tempo - 1) <= 0.03
    assert jitter(np.random.default_rng(1), Perturbation()) == Perturbation()  # the clean voice


def test_short_and_silent_input():
    assert perturb(np.zeros(100, np.float32), SR, Perturbation(1.1, 2, 1.1)).size == 100
    y = perturb(np.zeros(SR, np.float32), SR, Perturbation(1.1, 2, 1.1))
    assert y.size == round(SR / 1.1) and np.all(np.isfinite(y)) and np.abs(y).max() < 1e-6


def test_training_speakers_reach_female_like_voices_and_eval_speakers_stay_put():
    train = [draw_speaker(np.random.default_rng(s), train=True) for s in range(300)]
    pitch = np.array([p.pitch_semitones for p in train])
    warp = np.array([p.warp for p in train])
    assert pitch.max() > 6.5 and pitch.min() < -3  # male -> female-like and deeper
    assert np.corrcoef(pitch, warp)[0, 1] > 0.5  # formants follow f0, as across real talkers
    assert warp.max() < 1.3 and warp.min() > 0.8
    for seed in range(20):  # the same draws consumed: val/test speakers do not move with train's ranges
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        draw_speaker(a, train=True), draw_speaker(b)
        assert a.random() == b.random()
    assert all(abs(draw_speaker(np.random.default_rng(s)).pitch_semitones) <= 3 for s in range(100))
