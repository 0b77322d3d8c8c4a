"""Speaker perturbation of synthetic speech: tempo, pitch and vocal-tract-length (formant) warping.

One engine voice plus one fixed ``Perturbation`` draw is one derived speaker; ``jitter`` adds the
small per-clip variation a real talker has. Everything is numpy/scipy, deterministic and
vectorised (no Python loop over frames): ~1-2 ms per 1-s clip at 16 kHz on one core.

The method, one STFT analysis (512-point Hann window = 32 ms, hop 128 = 8 ms at 16 kHz):

1. Formant warp: each frame's all-pole (LPC) spectral envelope E(f) is replaced by E(f / w')
   (the harmonics stay where they are, so f0 is untouched); ``w' = warp / p`` pre-compensates
   the resampling of step 3, so the final envelope peaks sit at ``warp`` x their old frequency.
2. Time stretch by ``p / tempo`` with a phase vocoder: magnitudes interpolated between analysis
   frames, phases advanced by each bin's measured instantaneous frequency (cumulative sum over
   frames), then locked to the nearest spectral peak's phase (identity phase locking, Laroche &
   Dolson 1999) to keep the vertical phase coherence that avoids the "phasey" sound.
3. Resample by ``1 / p`` (FFT resampling): duration back to ``1 / tempo`` x the original, every
   frequency (f0 and envelope) x ``p`` with ``p = 2 ** (semitones / 12)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft
from scipy.signal import resample as fft_resample

N_FFT = 512  # samples; 32 ms at 16 kHz (two periods of a 60-Hz voice)
HOP = 128  # samples; 8 ms, 75 % overlap (Hann^2 overlap-add sums to a constant 1.5)
LPC_ORDER_PER_KHZ = 1.1  # all-pole envelope order per kHz of sample rate (18 at 16 kHz: ~1 pole pair / kHz + tilt)
MAX_GAIN = 4.6  # nats: the envelope warp changes no bin by more than +-40 dB

# Ranges of the derived speakers (one draw per speaker) and of the per-clip jitter around them.
SPEAKER_TEMPO = (0.88, 1.15)  # speaking-rate factor: duration / tempo
SPEAKER_SEMITONES = (-3.0, 3.0)  # f0 shift, semitones
SPEAKER_WARP = (0.88, 1.14)  # formant frequency factor (~ 1 / vocal-tract length ratio)
# Training speakers reach further, so that a male engine voice also yields female- and child-like
# talkers (the test's voices include female ones no training engine voice resembles): f0 up to
# +8 semitones, with formants following f0 as they do across real talkers (shorter vocal tract,
# higher voice: warp ~ 2 ** (0.3 * semitones / 12), ~1.19 for a +10 semitone male -> female step),
# times an independent spread. Val and test speakers keep the narrower ranges above, so the
# evaluation does not change with what training is given. Measured: not enough on its own to
# reach flite's and festival's held-out talkers (docs/results.md).
TRAIN_SEMITONES = (-4.0, 8.0)
TRAIN_WARP_PER_OCTAVE = 0.3  # formant shift that follows f0, in octaves per octave of f0
TRAIN_WARP_SPREAD = (0.92, 1.09)
JITTER_TEMPO = 0.03  # per clip: tempo x U(1 -/+ 0.03)
JITTER_SEMITONES = 0.4  # per clip: + U(-/+ 0.4) semitones
JITTER_WARP = 0.01  # per clip: warp x U(1 -/+ 0.01)


@dataclass(frozen=True)
class Perturbation:
    """tempo > 1 speaks faster (duration / tempo); pitch in semitones; warp > 1 moves formants up
    (a shorter vocal tract). ``Perturbation()`` is the identity."""
    tempo: float = 1.0
    pitch_semitones: float = 0.0
    warp: float = 1.0

    def as_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}

    @property
    def is_identity(self) -> bool:
        return self.tempo == 1.0 and self.pitch_semitones == 0.0 and self.warp == 1.0


def draw_speaker(rng: np.random.Generator, *, train: bool = False) -> Perturbation:
    """One derived speaker's fixed perturbation: uniform in the SPEAKER_* ranges, or for a
    training speaker (``train=True``) f0 in TRAIN_SEMITONES with formants that follow it."""
    tempo = float(rng.uniform(*SPEAKER_TEMPO))
    if not train:
        return Perturbation(tempo, float(rng.uniform(*SPEAKER_SEMITONES)), float(rng.uniform(*SPEAKER_WARP)))
    semitones = float(rng.uniform(*TRAIN_SEMITONES))
    warp = 2 ** (TRAIN_WARP_PER_OCTAVE * semitones / 12) * float(rng.uniform(*TRAIN_WARP_SPREAD))
    return Perturbation(tempo, semitones, warp)


def jitter(rng: np.random.Generator, speaker: Perturbation) -> Perturbation:
    """A clip's perturbation: the speaker's, varied a little (the JITTER_* spreads)."""
    if speaker.is_identity:  # the unperturbed voice stays exactly the engine's voice
        return speaker
    return Perturbation(speaker.tempo * float(rng.uniform(1 - JITTER_TEMPO, 1 + JITTER_TEMPO)),
                        speaker.pitch_semitones + float(rng.uniform(-JITTER_SEMITONES, JITTER_SEMITONES)),
                        speaker.warp * float(rng.uniform(1 - JITTER_WARP, 1 + JITTER_WARP)))


def perturb(audio: np.ndarray, sample_rate: int, p: Perturbation) -> np.ndarray:
    """Apply ``p`` to mono float audio ``(N,)`` -> float32 ``(round(N / p.tempo),)``.

    The identity runs the full analysis/synthesis too (reconstruction error ~ -60 dB).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < N_FFT:
        return audio.copy()
    factor = 2.0 ** (p.pitch_semitones / 12.0)
    n_out = int(round(audio.size / p.tempo))
    spec = _stft(audio)  # (T, F)
    if p.warp / factor != 1.0:
        spec = _warp_envelope(spec, p.warp / factor, sample_rate)
    stretched = _phase_vocoder(spec, factor / p.tempo)
    y = _istft(stretched, int(round(audio.size * factor / p.tempo)))
    if factor != 1.0:  # zero-padded to a fast FFT length (silence; cut off again below)
        n_fast = sfft.next_fast_len(y.size, real=True)
        y = fft_resample(np.pad(y, (0, n_fast - y.size)), int(round(n_fast / factor)))
    out = np.zeros(n_out, np.float32)
    out[: min(n_out, y.size)] = y[:n_out]
    return out


# ------------------------------------------------------------------------------------ STFT
_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann


def _stft(x: np.ndarray) -> np.ndarray:
    """Centred STFT of ``(N,)`` -> complex64 ``(T, N_FFT // 2 + 1)``, T = 1 + N // HOP."""
    pad = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(pad, N_FFT)[: 1 + x.size // HOP * HOP: HOP]
    return sfft.rfft(frames * _WINDOW, axis=1)


def _overlap_add(frames: np.ndarray) -> np.ndarray:
    """Sum ``(T, N_FFT)`` frames placed every HOP samples -> ``(N_FFT + HOP * (T - 1),)``."""
    n_frames = frames.shape[0]
    out = np.zeros(N_FFT + HOP * (n_frames - 1), np.float32)
    for k in range(N_FFT // HOP):  # 4 strided adds instead of one per frame
        out[k * HOP: k * HOP + n_frames * HOP] += frames[:, k * HOP:(k + 1) * HOP].reshape(-1)
    return out


@lru_cache(maxsize=64)
def _window_power(n_frames: int) -> np.ndarray:
    """Overlap-added squared window for ``n_frames`` frames (1.5 inside, less at the edges)."""
    return np.maximum(_overlap_add(np.tile(_WINDOW ** 2, (n_frames, 1))), 1e-3)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add of ``(T, F)`` frames -> float32 ``(length,)`` (centred like _stft)."""
    frames = sfft.irfft(spec, n=N_FFT, axis=1) * _WINDOW
    out = _overlap_add(frames) / _window_power(frames.shape[0])
    y = out[N_FFT // 2: N_FFT // 2 + length]
    return np.pad(y, (0, length - y.size)) if y.size < length else y


# ------------------------------------------------------------------------------- the steps
def _warp_envelope(spec: np.ndarray, w: float, sample_rate: int) -> np.ndarray:
    """Move each frame's spectral envelope from f to ``w * f`` keeping its fine (harmonic)
    structure: ``|X'(f)| = |X(f)| * |A(f)| / |A(f / w)|``, 1 / |A| the frame's all-pole (LPC)
    envelope. LPC rather than a cepstral envelope: its peaks are as sharp as the formants, so
    they move all the way (a smooth envelope only tilts a narrow F1 by a fraction of the warp)."""
    order = max(8, int(round(LPC_ORDER_PER_KHZ * sample_rate / 1000)))
    r = sfft.irfft(np.abs(spec) ** 2, n=N_FFT, axis=1)[:, : order + 1].astype(np.float64)
    r[:, 0] = r[:, 0] * (1 + 1e-3) + 1e-12  # white-noise floor: keeps Levinson stable on silence
    a = _levinson(r, order)  # (T, order + 1), a[:, 0] = 1
    log_a = np.log(np.abs(sfft.rfft(a, n=N_FFT, axis=1)) + 1e-9).astype(np.float32)  # (T, F)
    n_bins = spec.shape[1]
    src = np.minimum(np.arange(n_bins) / w, n_bins - 1.0)  # read the envelope at f / w
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_bins - 1)
    frac = (src - lo).astype(np.float32)
    warped = np.take(log_a, lo, axis=1) * (1 - frac) + np.take(log_a, hi, axis=1) * frac
    return spec * np.exp(np.clip(log_a - warped, -MAX_GAIN, MAX_GAIN))


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """Levinson-Durbin for every frame at once: autocorrelation ``(T, order + 1)`` ->
    prediction polynomial ``(T, order + 1)`` with ``a[:, 0] = 1``."""
    a = np.zeros_like(r)
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -(a[:, :i] * r[:, i:0:-1]).sum(axis=1) / err
        a[:, 1:i + 1] += k[:, None] * a[:, i - 1::-1][:, :i]
        err *= 1.0 - k * k
    return a


def _phase_vocoder(spec: np.ndarray, stretch: float) -> np.ndarray:
    """Time-stretch ``(T, F)`` frames by ``stretch`` (> 1 longer) -> ``(~T * stretch, F)``."""
    n_frames, n_bins = spec.shape
    if stretch == 1.0:
        return spec
    steps = np.arange(0, n_frames - 1, 1.0 / stretch)  # fractional analysis frame per output frame
    left = steps.astype(np.intp)
    frac = (steps - left).astype(np.float32)[:, None]
    mag = np.abs(spec)
    phase = np.angle(spec)
    out_mag = mag[left] * (1 - frac) + mag[left + 1] * frac
    # true phase advance per hop between analysis frames t and t + 1, per bin
    omega = (2 * np.pi * HOP / N_FFT * np.arange(n_bins)).astype(np.float32)
    dphi = phase[1:] - phase[:-1] - omega
    dphi += omega - np.float32(2 * np.pi) * np.round(dphi / np.float32(2 * np.pi))
    acc = np.empty((steps.size, n_bins), np.float32)
    acc[0] = phase[0]
    np.cumsum(dphi[left[:-1]], axis=0, out=acc[1:])
    acc[1:] += phase[0]
    acc = _lock_phases(out_mag, acc, phase[left])
    out = np.empty(acc.shape, np.complex64)
    out.real = out_mag * np.cos(acc)
    out.imag = out_mag * np.sin(acc)
    return out


def _lock_phases(mag: np.ndarray, acc: np.ndarray, analysis_phase: np.ndarray) -> np.ndarray:
    """Identity phase locking ``(T, F)``: every bin keeps its analysis phase offset from the
    nearest spectral peak of its frame, whose phase comes from the accumulated advance.

    Runs on the flattened array: flat indices grow across frames, so a running max (min) of peak
    indices finds each bin's nearest peak to the left (right); one from another frame is ignored.
    """
    n_frames, n_bins = mag.shape
    peak = np.zeros(mag.shape, dtype=bool)
    peak[:, 1:-1] = (mag[:, 1:-1] > mag[:, :-2]) & (mag[:, 1:-1] >= mag[:, 2:])
    flat = np.arange(n_frames * n_bins, dtype=np.int32).reshape(n_frames, n_bins)
    first = flat[:, :1]  # first flat index of each frame, (T, 1)
    left = np.maximum.accumulate(np.where(peak, flat, -1).ravel()).reshape(n_frames, n_bins)
    right = np.minimum.accumulate(np.where(peak, flat, flat.size).ravel()[::-1])[::-1]
    right = right.reshape(n_frames, n_bins)
    has_left, has_right = left >= first, right < first + n_bins
    use_right = has_right & (~has_left | (right - flat < flat - left))
    nearest = np.where(use_right, right, np.where(has_left, left, flat)).ravel()
    acc_flat, ana_flat = acc.ravel(), analysis_phase.ravel()
    return (acc_flat.take(nearest) + ana_flat - ana_flat.take(nearest)).reshape(n_frames, n_bins)
