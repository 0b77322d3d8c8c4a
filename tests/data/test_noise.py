"""Noise kinds: deterministic by rng, at the requested RMS level, each with its own character."""

import numpy as np
import pytest

from wakeword_dist.data import noise

SR = 16000
N = 2 * SR  # 2 s


def _speech(seed=0, n=SR):
    """Speech-like stand-in: 120-Hz harmonic buzz shaped by a 4-Hz syllable envelope, (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    buzz = sum(np.sin(2 * np.pi * 120 * k * t + rng.uniform(0, 6)) / k for k in range(1, 20))
    return (buzz * np.maximum(np.sin(2 * np.pi * 4 * t), 0)).astype(np.float32)


SPEECH = [_speech(i) for i in range(8)]


def _clip(kind, seed=0, level=-30.0, n=N):
    return noise.noise_clip(np.random.default_rng(seed), kind, n, level, speech=SPEECH, sample_rate=SR)


def _power_fraction(x, keep):
    """Share of x's power in the rfft bins where keep(f_hz) is true (Hann window: tones between
    bins do not leak far)."""
    p = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size))) ** 2
    return float(p[keep(np.fft.rfftfreq(x.size, 1 / SR))].sum() / p.sum())


@pytest.mark.parametrize("kind", noise.NOISE_KINDS)
def test_each_kind_deterministic_and_at_level(kind):
    a, b, c = _clip(kind), _clip(kind), _clip(kind, seed=1)
    assert a.dtype == np.float32 and a.shape == (N,) and np.all(np.isfinite(a))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    for level in (-40.0, -20.0):
        x = _clip(kind, seed=2, level=level).astype(np.float64)
        assert 20 * np.log10(np.sqrt(np.mean(x ** 2))) == pytest.approx(level, abs=0.01)


def test_new_kinds_are_listed():
    assert {"white", "pink", "brown", "babble", "hum", "fan", "clicks", "music", "tv"} == set(noise.NOISE_KINDS)


def test_hum_is_mains_harmonics():
    def near_harmonics(f0):  # within 1 Hz + the 0.2 % grid drift of a multiple of f0 Hz
        return lambda f: np.abs(f - f0 * np.round(f / f0)) < 1.0 + 0.002 * f
    for seed in range(4):
        x = _clip("hum", seed)
        assert max(_power_fraction(x, near_harmonics(50.0)), _power_fraction(x, near_harmonics(60.0))) > 0.99
    assert _power_fraction(_clip("pink"), near_harmonics(50.0)) < 0.3  # the check can fail


def test_fan_is_low_passed_and_slowly_modulated():
    x = _clip("fan", 3, n=8 * SR)
    assert _power_fraction(x, lambda f: f < 3000) > 0.9
    white = _clip("white", 3, n=8 * SR)
    assert _power_fraction(white, lambda f: f < 3000) < 0.5


def test_clicks_are_impulsive():
    def kurtosis(x):  # 3 for Gaussian noise
        x = x.astype(np.float64)
        return np.mean(x ** 4) / np.mean(x ** 2) ** 2
    for seed in range(4):
        assert kurtosis(_clip("clicks", seed)) > 6
    assert kurtosis(_clip("white")) < 4


def test_music_is_tonal():
    for seed in range(4):
        p = np.abs(np.fft.rfft(_clip("music", seed).astype(np.float64))) ** 2 + 1e-20
        flatness = np.exp(np.mean(np.log(p))) / np.mean(p)  # 1 = white, -> 0 = pure tones
        assert flatness < 0.01, flatness


def test_tv_is_speech_shaped_and_modulated():
    for seed in range(3):
        for speech in (SPEECH, None):
            x = noise.noise_clip(np.random.default_rng(seed), "tv", 4 * SR, -30.0, speech=speech)
            assert _power_fraction(x, lambda f: f > 4000) < 0.05
            frames = np.sqrt(np.mean(x[: x.size // 400 * 400].reshape(-1, 400) ** 2, axis=1))  # 25 ms
            assert frames.std() / frames.mean() > 0.3  # syllabic level changes, not steady noise


def test_legacy_kinds_draw_as_before():
    """synth's background clips of the old kinds keep their bytes when it calls noise_clip."""
    for kind in ("white", "pink", "brown"):
        old = noise.coloured_noise(np.random.default_rng(4), N, kind, -25.0)
        assert np.array_equal(noise.noise_clip(np.random.default_rng(4), kind, N, -25.0), old)
    rng = np.random.default_rng(5)
    old = noise.babble(rng, N, SPEECH, int(rng.integers(4, 8)), -25.0)
    assert np.array_equal(noise.noise_clip(np.random.default_rng(5), "babble", N, -25.0, speech=SPEECH), old)
    # coloured_noise passes the new non-speech kinds on (callers written before noise_clip).
    assert np.array_equal(noise.coloured_noise(np.random.default_rng(6), N, "hum", -25.0),
                          noise.noise_clip(np.random.default_rng(6), "hum", N, -25.0))


def test_bad_requests_are_one_line_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="babble.*speech"):
        noise.noise_clip(rng, "babble", N, -30.0)
    with pytest.raises(ValueError, match="unknown noise kind 'rain'"):
        noise.noise_clip(rng, "rain", N, -30.0)
    with pytest.raises(ValueError, match="n_samples"):
        noise.noise_clip(rng, "hum", 0, -30.0)
    with pytest.raises(ValueError, match="coloured_noise"):
        noise.coloured_noise(rng, N, "babble", -30.0)
