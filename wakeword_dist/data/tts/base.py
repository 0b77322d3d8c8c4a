"""What every TTS engine shares: the prosody knobs, the binary check, wav parsing, trimming.

An engine is a small class with ``name``, ``binary``, ``apt_packages``, ``version()``,
``voices()``, ``split_group(voice)`` and ``speak_batch(texts, voice, prosody)``; see
``wakeword_dist/data/tts/__init__.py`` for the registry. Engines return float32 audio at their
native rate (read from the wav header, never assumed); resampling to the shard rate is the
caller's business.
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

ACTIVE_DBFS = -44.0  # a sample above this counts as speech (int16 ~200)
MARGIN_S = 0.02  # lead-in / tail kept around trimmed speech, s


class EngineMissing(RuntimeError):
    """A TTS binary or voice is not installed; the message names the apt package."""


@dataclass(frozen=True)
class Prosody:
    """Engine-native prosody for one batch (applied by the synthesiser, not by DSP afterwards).

    rate: speaking-rate factor (1 = the voice's default, 1.2 = 20 % faster).
    pitch: mean-f0 factor (1 = default, 1.1 = 10 % higher); voices that cannot honour it ignore it
        and ``Engine.applied`` reports 1.0 for them.
    """
    rate: float = 1.0
    pitch: float = 1.0

    def as_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}


class Engine:
    """Base of the engine classes: the install check; subclasses do the speaking."""
    name = ""
    binary = ""
    apt_packages: tuple[str, ...] = ()

    def binary_path(self) -> str:
        """Absolute path of the engine's binary; ``EngineMissing`` names the apt packages."""
        path = shutil.which(self.binary)
        if path is None:
            raise EngineMissing(f"{self.binary} not found on PATH: install it "
                                f"(apt-get install {' '.join(self.apt_packages)})")
        return path

    def split_group(self, voice: str) -> str:
        """Voices of one group share a timbre (or a human talker) and must share a split."""
        return f"{self.name}:{voice}"

    def applied(self, voice: str, prosody: Prosody) -> Prosody:
        """The prosody the voice really receives (unsupported knobs reported as 1.0)."""
        return prosody


def read_wav(data: bytes, who: str) -> tuple[np.ndarray, int]:
    """Parse a PCM16 mono RIFF wav (chunks walked, sizes trusted only when sane) -> float32
    ``(N,)`` in [-1, 1) and its sample rate in Hz from the header."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError(f"{who}: output is not a RIFF/WAVE file ({len(data)} bytes)")
    pos, rate, pcm = 12, None, None
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if tag == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if fmt != 1 or channels != 1 or bits != 16:
                raise RuntimeError(f"{who}: expected 16-bit PCM mono wav, got format {fmt}, "
                                   f"{channels} channels, {bits} bits")
        elif tag == b"data":
            # streamed wavs (espeak --stdout) carry a placeholder size: take what is there
            pcm = data[pos + 8:pos + 8 + min(size, len(data) - pos - 8)]
            break
        pos += 8 + size + (size & 1)
    if rate is None or pcm is None:
        raise RuntimeError(f"{who}: wav without fmt/data chunk")
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    return samples.astype(np.float32) / 32768.0, int(rate)


def active_span(audio: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """``(start, end)`` samples of the speech in ``audio``: first to last sample above
    ACTIVE_DBFS, plus MARGIN_S each side; ``(0, 0)`` when nothing is active. Sample-level, so a
    text cut out of a batch at any point in the silence around it trims to the same samples."""
    active = np.flatnonzero(np.abs(audio) > 10 ** (ACTIVE_DBFS / 20))
    if active.size == 0:
        return 0, 0
    margin = int(MARGIN_S * sample_rate)
    return max(0, int(active[0]) - margin), min(audio.size, int(active[-1]) + 1 + margin)


def trim(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Leading/trailing silence removed (MARGIN_S kept), float32 ``(M,)``; empty if all silent."""
    start, end = active_span(audio, sample_rate)
    return np.ascontiguousarray(audio[start:end], dtype=np.float32)


def to_rate(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """float32 ``(N,)`` at ``orig_sr`` -> float32 ``(~N * target / orig,)`` at ``target_sr``:
    scipy's polyphase resampler with its default Kaiser (beta 5) low-pass, designed once per rate
    pair (scipy would redesign it per call: ~1.7 ms of a 1-s clip's ~2 ms); numpy/scipy only."""
    if orig_sr == target_sr or audio.size == 0:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    up, down, taps = _lowpass(int(orig_sr), int(target_sr))
    return resample_poly(np.asarray(audio, np.float32), up, down, window=taps.copy()).astype(np.float32)


@lru_cache(maxsize=16)
def _lowpass(orig_sr: int, target_sr: int) -> tuple[int, int, np.ndarray]:
    """(up, down, FIR taps) exactly as ``resample_poly`` designs them by default."""
    from math import gcd

    from scipy.signal import firwin

    g = gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    rate = max(up, down)
    return up, down, firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0)).astype(np.float32)
