"""Background noise generators for the ``background`` split and the streams' noise floor.

All return float32 ``(n,)`` arrays scaled to a given RMS level in dBFS (0 dBFS = RMS 1.0).
Coloured noise is shaped in the frequency domain: pink has power ∝ 1/f, brown ∝ 1/f².
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink", "brown", "babble")


def scale_to_rms(x: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """Scale ``x`` so its RMS is ``rms_dbfs`` dB relative to full scale."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12
    return (x * (10.0 ** (rms_dbfs / 20.0) / rms)).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, kind: str, rms_dbfs: float) -> np.ndarray:
    """White / pink / brown noise, ``(n,)`` float32 at ``rms_dbfs``."""
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
