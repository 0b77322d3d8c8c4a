"""Background noise generators for the ``background`` split and the streams' noise floor.

All return float32 ``(n,)`` arrays scaled to a given RMS level in dBFS (0 dBFS = RMS 1.0);
peaks are not limited (impulsive kinds have a crest factor of ~15-25 dB, so keep their level
below ~-25 dBFS or clip). Every random choice comes from the ``rng`` passed in: same generator
state -> same clip. ``noise_clip`` is the one entry point for every kind in ``NOISE_KINDS``:

- ``white`` / ``pink`` / ``brown``: power ∝ 1, 1/f, 1/f² (shaped in the frequency domain);
- ``babble``: 4-7 overlapping talkers from the ``speech`` clips given;
- ``hum``: 50 or 60 Hz mains hum (±0.2 % drift) with random harmonic roll-off (buzz);
- ``fan``: HVAC / fan: low-passed broadband noise, slow amplitude modulation, blade-pass tone;
- ``clicks``: impulsive events (keyboard clicks, dishes ringing, knocks) over a quiet floor;
- ``music``: random chords and melody notes (harmonic tones, plucked or sustained envelopes);
- ``tv``: speech-shaped noise with a syllabic (~4 Hz) envelope, like a distant TV, sometimes with
  a music bed; shaped by the ``speech`` clips' long-term spectrum when given.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "fan", "clicks", "music", "tv")
COLOURED = ("white", "pink", "brown")


def scale_to_rms(x: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """Scale ``x`` so its RMS is ``rms_dbfs`` dB relative to full scale."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12
    return (x * (10.0 ** (rms_dbfs / 20.0) / rms)).astype(np.float32)


def noise_clip(rng: np.random.Generator, kind: str, n_samples: int, level_dbfs: float,
               speech: list[np.ndarray] | None = None, *, sample_rate: int = 16000) -> np.ndarray:
    """One noise clip of ``kind`` (one of ``NOISE_KINDS``): float32 ``(n_samples,)`` at RMS
    ``level_dbfs``. ``speech``: mono clips at ``sample_rate`` Hz, needed by ``babble`` (its
    talkers) and used by ``tv`` (its spectrum) when given.

    For the kinds ``synth`` made before (white, pink, brown, babble) the draws are the ones it
    made: ``coloured_noise`` / ``babble`` with ``rng.integers(4, 8)`` talkers.
    """
    if n_samples < 1:
        raise ValueError(f"noise_clip: n_samples must be >= 1, got {n_samples}")
    if kind in COLOURED:
        return coloured_noise(rng, n_samples, kind, level_dbfs)
    if kind == "babble":
        usable = [s for s in (speech or []) if s is not None and s.size]
        if not usable:
            raise ValueError("noise_clip: kind 'babble' needs speech clips (speech=[...])")
        return babble(rng, n_samples, usable, int(rng.integers(4, 8)), level_dbfs)
    makers = {"hum": hum, "fan": fan, "clicks": clicks, "music": music}
    if kind in makers:
        return makers[kind](rng, n_samples, level_dbfs, sample_rate)
    if kind == "tv":
        return tv(rng, n_samples, level_dbfs, sample_rate, speech)
    raise ValueError(f"noise_clip: unknown noise kind {kind!r}; one of {', '.join(NOISE_KINDS)}")


def coloured_noise(rng: np.random.Generator, n: int, kind: str, rms_dbfs: float) -> np.ndarray:
    """White / pink / brown noise, ``(n,)`` float32 at ``rms_dbfs``. Other kinds of
    ``NOISE_KINDS`` except babble are passed on to ``noise_clip`` (at 16 kHz), for callers written
    when only coloured noise existed."""
    if kind not in COLOURED:
        if kind == "babble" or kind not in NOISE_KINDS:
            raise ValueError(f"coloured_noise: {kind!r} is not one of {', '.join(COLOURED)}")
        return noise_clip(rng, kind, n, rms_dbfs)
    white = rng.standard_normal(n)
    if kind == "white":
        return scale_to_rms(white, rms_dbfs)
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0  # DC: keep finite, removed below
    exponent = {"pink": 0.5, "brown": 1.0}[kind]  # amplitude ∝ f^-exponent
    spec /= f ** exponent
    spec[0] = 0.0
    return scale_to_rms(np.fft.irfft(spec, n), rms_dbfs)


def babble(rng: np.random.Generator, n: int, speech: list[np.ndarray], n_talkers: int,
           rms_dbfs: float) -> np.ndarray:
    """Sum of ``n_talkers`` speech clips (each tiled to length and circularly shifted), ``(n,)``."""
    out = np.zeros(n, np.float64)
    for i in rng.choice(len(speech), size=min(n_talkers, len(speech)), replace=False):
        s = speech[int(i)]
        s = np.tile(s, int(np.ceil(n / s.size)) + 1)
        start = int(rng.integers(0, s.size - n + 1))
        seg = s[start:start + n].astype(np.float64)
        out += seg / (np.sqrt(np.mean(seg ** 2)) + 1e-9)
    return scale_to_rms(out, rms_dbfs)


# ------------------------------------------------------------------------------------- helpers
def _shaped(rng: np.random.Generator, n: int, gain_of_hz, sample_rate: int) -> np.ndarray:
    """White noise through the zero-phase amplitude response ``gain_of_hz(f)`` (f in Hz), ``(n,)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec *= gain_of_hz(np.fft.rfftfreq(n, 1.0 / sample_rate))
    spec[0] = 0.0  # no DC offset
    return np.fft.irfft(spec, n)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12


def _tone(freq_hz: np.ndarray, amps: np.ndarray, phases: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Sum of sinusoids: freq/amps/phases (K,), t (N,) in s -> (N,). One component at a time: a
    (K, N) matrix would be 300 MB for 40 harmonics over a 60-s stream."""
    out = np.zeros(t.size)
    for f, a, p in zip(freq_hz, amps, phases):
        out += a * np.sin(2 * np.pi * f * t + p)
    return out


# ---------------------------------------------------------------------------------------- kinds
def hum(rng: np.random.Generator, n: int, rms_dbfs: float, sample_rate: int = 16000) -> np.ndarray:
    """Mains hum: 50 or 60 Hz (±0.2 % grid drift) and harmonics up to 4-40× with amplitude
    ∝ k^-p (p in 0.3-2: from buzzy to pure), random phases, over a floor 40 dB down. ``(n,)``."""
    f0 = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.002, 0.002))  # Hz
    n_harm = max(1, min(int(rng.integers(4, 41)), int((sample_rate / 2 - 1) // f0)))
    k = np.arange(1, n_harm + 1, dtype=np.float64)
    amps = k ** -rng.uniform(0.3, 2.0) * rng.uniform(0.3, 1.0, n_harm)
    amps[1] *= rng.uniform(1.0, 3.0) if n_harm > 1 else 1.0  # rectifiers make 2·f0 strong
    phases = rng.uniform(0, 2 * np.pi, n_harm)
    # Harmonic k is Im(z^k · e^{i·phase_k}) with z = e^{i·2π·f0·t}: one complex multiply per
    # harmonic instead of a sin (5x faster over a 60-s stream).
    z = np.exp(2j * np.pi * f0 * np.arange(n) / sample_rate)
    zk, out = np.ones(n, np.complex128), np.zeros(n)
    for a, p in zip(amps, phases):
        zk *= z
        out += a * (zk * np.exp(1j * p)).imag
    floor = rng.standard_normal(n) * _rms(out) * 10 ** (-40 / 20)  # -40 dB re the hum
    return scale_to_rms(out + floor, rms_dbfs)


def fan(rng: np.random.Generator, n: int, rms_dbfs: float, sample_rate: int = 16000) -> np.ndarray:
    """Fan / HVAC: pink-tilted noise through a 2nd-order low-pass (cut-off 200-2000 Hz), amplitude
    modulated at 0.1-2 Hz (depth 0-30 %), plus a blade-pass tone (20-200 Hz, 2 harmonics) 10-25 dB
    below the broadband part. ``(n,)``."""
    cutoff = float(np.exp(rng.uniform(np.log(200.0), np.log(2000.0))))  # Hz, log-uniform
    tilt = rng.uniform(0.0, 0.5)  # amplitude ∝ f^-tilt (0 = white, 0.5 = pink)
    broad = _shaped(rng, n, lambda f: np.maximum(f, 20.0) ** -tilt / np.sqrt(1 + (f / cutoff) ** 4),
                    sample_rate)
    t = np.arange(n) / sample_rate
    mod_hz, depth, mod_phase = rng.uniform(0.1, 2.0), rng.uniform(0.0, 0.3), rng.uniform(0, 2 * np.pi)
    broad *= 1 + depth * np.sin(2 * np.pi * mod_hz * t + mod_phase)
    blade_hz = rng.uniform(20.0, 200.0)
    blade = _tone(blade_hz * np.array([1.0, 2.0]), np.array([1.0, rng.uniform(0.2, 0.6)]),
                  rng.uniform(0, 2 * np.pi, 2), t)
    blade *= _rms(broad) / _rms(blade) * 10 ** (-rng.uniform(10.0, 25.0) / 20)
    return scale_to_rms(broad + blade, rms_dbfs)


def _click_event(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One impulsive event, unit peak: a keyboard click (2-10 ms high-passed burst + its release
    30-80 ms later), dishes (2-4 modes at 1.5-7 kHz ringing for 30-300 ms) or a knock (a mode at
    80-400 Hz, 10-50 ms)."""
    kind = int(rng.integers(3))
    if kind == 0:  # keyboard: press + release
        dur = rng.uniform(0.002, 0.010)
        m = int(dur * sample_rate) + 1
        burst = np.diff(rng.standard_normal(m + 1)) * np.exp(-np.arange(m) / (m / 4))  # diff = high-pass
        gap = int(rng.uniform(0.03, 0.08) * sample_rate)
        out = np.zeros(gap + m)
        out[:m] = burst
        out[gap:] += burst * rng.uniform(0.2, 0.6)  # the release: same key, softer
    else:
        if kind == 1:  # dishes: a few high modes, long ring
            freqs, tau = rng.uniform(1500.0, 7000.0, int(rng.integers(2, 5))), rng.uniform(0.03, 0.3)
        else:  # knock: one low mode, short
            freqs, tau = rng.uniform(80.0, 400.0, 1), rng.uniform(0.01, 0.05)
        m = int(5 * tau * sample_rate) + 1  # 5 τ: 43 dB down at the end
        t = np.arange(m) / sample_rate
        out = _tone(freqs, rng.uniform(0.3, 1.0, freqs.size), rng.uniform(0, 2 * np.pi, freqs.size), t)
        out *= np.exp(-t / tau)
    return out / (np.abs(out).max() + 1e-12)


def clicks(rng: np.random.Generator, n: int, rms_dbfs: float, sample_rate: int = 16000) -> np.ndarray:
    """Impulsive noise: Poisson events at 1-8 per s (at least one), each ``_click_event`` at a
    level ±10 dB, over a pink floor 35-50 dB below the loudest event peak. ``(n,)``."""
    rate = rng.uniform(1.0, 8.0)  # events per s
    count = max(1, int(rng.poisson(rate * n / sample_rate)))
    starts = np.sort(rng.integers(0, n, count))
    out = np.zeros(n)
    for start in starts:
        ev = _click_event(rng, sample_rate) * 10 ** (rng.uniform(-10.0, 10.0) / 20)
        end = min(n, start + ev.size)
        out[start:end] += ev[:end - start]
    floor = coloured_noise(rng, n, "pink", 0.0).astype(np.float64)
    out += floor * np.abs(out).max() * 10 ** (-rng.uniform(35.0, 50.0) / 20)
    return scale_to_rms(out, rms_dbfs)


_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])  # scale steps, semitones
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


def music(rng: np.random.Generator, n: int, rms_dbfs: float, sample_rate: int = 16000) -> np.ndarray:
    """Music-like tonal noise: a random key (major or minor), tempo 60-140 bpm, one chord per bar
    (4 beats) from degrees I IV V vi held as a pad, and a melody note on 1-2 notes per beat an
    octave up; each note a harmonic tone (1-6 partials, amplitude ∝ k^-p) with a plucked
    (exponential decay) or sustained (attack-release) envelope. ``(n,)``."""
    t_total = n / sample_rate
    beat = 60.0 / rng.uniform(60.0, 140.0)  # s
    root = int(rng.integers(45, 58))  # MIDI note of the key (A2-A#3)
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    n_partials = int(rng.integers(1, 7))
    roll = rng.uniform(0.5, 2.0)
    plucked = rng.random() < 0.5
    offset = rng.uniform(0, 4 * beat)  # the clip starts somewhere in a bar
    out = np.zeros(n)

    def add_note(midi: float, start_s: float, dur_s: float, amp: float) -> None:
        i0 = max(0, int((start_s - offset) * sample_rate))
        i1 = min(n, int((start_s - offset + dur_s) * sample_rate))
        if i1 <= i0:
            return
        t = (np.arange(i0, i1) / sample_rate) - (start_s - offset)  # s since the note's onset
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        k = np.arange(1, n_partials + 1, dtype=np.float64)
        keep = f0 * k < sample_rate / 2
        tone = _tone(f0 * k[keep], k[keep] ** -roll, rng.uniform(0, 2 * np.pi, int(keep.sum())), t)
        if plucked:
            env = np.exp(-t / (0.25 * dur_s + 1e-3))
        else:  # 10-50 ms attack, 50 ms release, s
            env = np.minimum(1.0, t / rng.uniform(0.01, 0.05)) * np.clip((dur_s - t) / 0.05, 0.0, 1.0)
        out[i0:i1] += amp * tone * env

    bar = 0
    while bar * 4 * beat < t_total + offset:
        degree = int(rng.choice([0, 3, 4, 5]))  # I IV V vi
        chord = [scale[(degree + j) % 7] + 12 * ((degree + j) // 7) for j in (0, 2, 4)]
        for note in chord:
            add_note(root + note, bar * 4 * beat, 4 * beat, 0.3)
        for b in range(4):
            for half in range(int(rng.integers(1, 3))):
                step = int(rng.integers(0, 7))
                add_note(root + 12 + scale[step], (bar * 4 + b + 0.5 * half) * beat, 0.5 * beat,
                         rng.uniform(0.3, 0.8))
        bar += 1
    if not np.any(out):  # a clip shorter than the first note's gap: keep it non-silent
        add_note(root + 12, offset, 4 * beat, 1.0)
    out += rng.standard_normal(n) * _rms(out) * 10 ** (-45 / 20)  # -45 dB hiss: never digital silence
    return scale_to_rms(out, rms_dbfs)


def _ltass_gain(f: np.ndarray) -> np.ndarray:
    """Long-term average speech spectrum, amplitude: flat 150-500 Hz, -6 dB/octave to 1 kHz,
    -9 dB/octave above (close to Byrne et al. 1994), high-passed below 100 Hz."""
    f = np.maximum(f, 1.0)
    g = np.where(f < 500, 1.0, (500 / f) ** (6 / 6.02))
    g = np.where(f < 1000, g, 0.5 * (1000 / f) ** (9 / 6.02))
    return g / np.sqrt(1 + (100 / f) ** 4)


def tv(rng: np.random.Generator, n: int, rms_dbfs: float, sample_rate: int = 16000,
       speech: list[np.ndarray] | None = None) -> np.ndarray:
    """Distant-TV-like noise: speech-shaped noise (the ``speech`` clips' average spectrum when
    given, else ``_ltass_gain``) with a syllabic envelope (noise low-passed at 2-6 Hz, half-wave
    rectified: pauses included), and with probability 0.5 a music bed 10-20 dB below. ``(n,)``."""
    usable = [s for s in (speech or []) if s is not None and s.size >= 512]
    if usable:  # average magnitude spectrum of the speech, 512-sample (32 ms) frames
        frames = np.concatenate([np.lib.stride_tricks.sliding_window_view(s.astype(np.float64), 512)[::256]
                                 for s in usable])
        mag = np.sqrt(np.mean(np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)) ** 2, axis=0))
        grid = np.fft.rfftfreq(512, 1.0 / sample_rate)
        gain = lambda f: np.interp(f, grid, mag)  # noqa: E731
    else:
        gain = _ltass_gain
    shaped = _shaped(rng, n, gain, sample_rate)
    syllable_hz = rng.uniform(2.0, 6.0)
    env = _shaped(rng, n, lambda f: 1.0 / (1 + (f / syllable_hz) ** 4), sample_rate)
    env = np.maximum(env / (np.abs(env).max() + 1e-12) + rng.uniform(0.0, 0.3), 0.0)
    out = shaped * env
    if rng.random() < 0.5:
        bed = music(rng, n, 0.0, sample_rate).astype(np.float64)
        out += bed * _rms(out) * 10 ** (-rng.uniform(10.0, 20.0) / 20)
    if not np.any(out):
        out = shaped
    return scale_to_rms(out, rms_dbfs)
