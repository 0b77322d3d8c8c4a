"""Encode / decode the audio members of a shard, plus reading arbitrary audio files.

Shard audio is always 16-bit PCM, mono. Three containers are allowed (see shards/README.md):

- ``flac``: smallest on disk (~55 % of wav for speech), slowest to decode (libFLAC via soundfile).
- ``wav``:  44-byte RIFF header + raw int16; decoded here with ``np.frombuffer`` (no libsndfile call).
- ``npy``:  ``np.save`` of an int16 ``(N,)`` array; decoded here with ``np.frombuffer`` too.

The wav/npy parsers are the loader's fast path: they never copy the payload and they detect a
truncated payload from the header, so a damaged member raises instead of yielding short audio.
Anything unusual (float wav, stereo, extensible headers we do not handle) falls back to soundfile.
"""

from __future__ import annotations

import ast
import io
import struct
from functools import lru_cache

import numpy as np
import soundfile as sf

AUDIO_EXTS = ("flac", "wav", "npy")
INT16_SCALE = 1.0 / 32768.0  # int16 -> float32 in [-1, 1)


class AudioDecodeError(ValueError):
    """A member that is not decodable audio of the expected kind."""


# ----------------------------------------------------------------------------------------- encode
def to_int16(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] ``(N,)`` -> int16 ``(N,)`` (rounded, clipped). int16 passes through."""
    if audio.dtype == np.int16:
        return audio
    return np.clip(np.rint(np.asarray(audio, np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def encode_audio(pcm: np.ndarray, audio_format: str, sample_rate: int) -> bytes:
    """Encode int16 mono ``(N,)`` PCM as flac / wav / npy bytes (deterministic: same input, same bytes)."""
    pcm = np.ascontiguousarray(to_int16(pcm)).reshape(-1)
    if audio_format == "wav":
        payload = pcm.astype("<i2", copy=False).tobytes()
        header = struct.pack(
            "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(payload), b"WAVE", b"fmt ", 16,
            1, 1, sample_rate, sample_rate * 2, 2, 16, b"data", len(payload))
        return header + payload
    if audio_format == "npy":
        buf = io.BytesIO()
        np.save(buf, pcm.astype("<i2", copy=False), allow_pickle=False)
        return buf.getvalue()
    if audio_format == "flac":
        buf = io.BytesIO()
        sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"audio_format must be one of {AUDIO_EXTS}, got {audio_format!r}")


# ----------------------------------------------------------------------------------------- decode
def decode_audio(data: bytes, ext: str) -> tuple[np.ndarray, int | None]:
    """Decode one audio member to int16 mono ``(N,)`` and its sample rate in Hz.

    ``ext`` is the member extension (``flac``/``wav``/``npy``). npy carries no sample rate, so
    ``None`` is returned for it and the caller uses the rate from ``index.json``.
    Raises ``AudioDecodeError`` for anything undecodable or truncated.
    """
    if ext == "wav":
        fast = _decode_wav_fast(data)
        if fast is not None:
            return fast
    elif ext == "npy":
        return _decode_npy_fast(data), None
    elif ext != "flac":
        raise AudioDecodeError(f"unknown audio extension {ext!r}")
    return _decode_soundfile(data)


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    try:
        pcm, sr = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except Exception as e:  # libsndfile raises several types; all mean "bad member"
        raise AudioDecodeError(f"soundfile could not decode: {e}") from e
    if pcm.shape[0] == 0:
        raise AudioDecodeError("empty audio")
    if pcm.shape[1] > 1:  # downmix; shards we write are mono, foreign ones may not be
        pcm = np.rint(pcm.mean(axis=1)).astype(np.int16)
    else:
        pcm = pcm[:, 0]
    return pcm, int(sr)


def _decode_wav_fast(data: bytes) -> tuple[np.ndarray, int] | None:
    """Plain PCM16 mono RIFF -> (int16 view, sr); ``None`` means "not plain, use soundfile"."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioDecodeError("not a RIFF/WAVE member")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioDecodeError("truncated wav fmt chunk")
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif cid == b"data":
            if fmt is None:
                return None
            tag, channels, sr, _, _, bits = fmt
            if tag != 1 or channels != 1 or bits != 16:
                return None
            if body + size > len(data) or size % 2:
                raise AudioDecodeError(f"truncated wav payload ({len(data) - body} of {size} bytes)")
            if size == 0:
                raise AudioDecodeError("empty audio")
            return np.frombuffer(data, dtype="<i2", count=size // 2, offset=body), sr
        pos = body + size + (size & 1)  # RIFF chunks are word aligned
    raise AudioDecodeError("wav without data chunk")


@lru_cache(maxsize=256)
def _parse_npy_header(header: bytes) -> tuple[str, bool, tuple]:
    d = ast.literal_eval(header.decode("latin1"))
    return d["descr"], d["fortran_order"], tuple(d["shape"])


def _decode_npy_fast(data: bytes) -> np.ndarray:
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise AudioDecodeError("not an npy member")
    if data[6] == 1:
        hlen, start = struct.unpack_from("<H", data, 8)[0], 10
    else:
        hlen, start = struct.unpack_from("<I", data, 8)[0], 12
    try:
        descr, fortran, shape = _parse_npy_header(bytes(data[start:start + hlen]))
    except Exception as e:
        raise AudioDecodeError(f"bad npy header: {e}") from e
    offset = start + hlen
    if descr not in ("<i2", "|i2", "i2") or len(shape) != 1:
        try:  # a foreign npy (float, 2-D): go through numpy and convert
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise AudioDecodeError(f"could not load npy: {e}") from e
        arr = arr.mean(axis=-1) if arr.ndim == 2 else arr.reshape(-1)
        return to_int16(arr) if arr.dtype.kind == "f" else arr.astype(np.int16)
    n = shape[0]
    if n == 0:
        raise AudioDecodeError("empty audio")
    if offset + 2 * n > len(data):
        raise AudioDecodeError(f"truncated npy payload ({len(data) - offset} of {2 * n} bytes)")
    return np.frombuffer(data, dtype="<i2", count=n, offset=offset)


# --------------------------------------------------------------------------- arbitrary audio files
def read_audio_file(path: str, target_sr: int) -> np.ndarray:
    """Read any file soundfile understands -> float32 mono ``(N,)`` at ``target_sr`` Hz.

    Multi-channel audio is averaged to mono; other rates are resampled with torchaudio's
    band-limited sinc resampler. Raises whatever soundfile raises for unreadable files.
    """
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return resample(audio, sr, target_sr)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """float32 ``(N,)`` at ``orig_sr`` Hz -> float32 ``(ceil(N * target/orig),)`` at ``target_sr``.

    The band-limited windowed-sinc filter of ``torchaudio.functional.resample`` (its kernel is
    reused, so the output matches torchaudio to ~1e-6), applied polyphase in numpy: each output
    phase only touches its ~2 * lowpass width non-zero taps instead of torchaudio's dense
    ``orig``-wide conv window (~25x fewer MACs for 22,050 -> 16,000 Hz), and torch's conv1d set-up
    cost per new input length (10-100 ms) is avoided. Single-threaded and deterministic.
    """
    if orig_sr == target_sr or audio.size == 0:
        return np.ascontiguousarray(audio, dtype=np.float32)
    taps, offsets, width, orig, new = _polyphase(int(orig_sr), int(target_sr))
    n = audio.size
    n_frames = -(-n // orig) + 1  # frames of ``orig`` input samples -> ``new`` output samples
    x = np.zeros(width + n_frames * orig + taps.shape[1] + orig, np.float32)
    x[width:width + n] = audio
    starts = (np.arange(n_frames) * orig)[:, None, None] + offsets[None, :, :]  # (F, new, L)
    out = np.einsum("fpl,pl->fp", x[starts], taps, optimize=False).reshape(-1)
    return np.ascontiguousarray(out[: -(-new * n // orig)], dtype=np.float32)


@lru_cache(maxsize=8)
def _polyphase(orig_sr: int, target_sr: int):
    """torchaudio's sinc kernel ``(new, K)`` cut to its non-zero band: taps ``(new, L)`` and the
    input index of each tap relative to a frame start ``(new, L)``."""
    import math

    import torchaudio.functional.functional as AFF

    gcd = math.gcd(orig_sr, target_sr)
    kernel, width = AFF._get_sinc_resample_kernel(orig_sr, target_sr, gcd)
    kernel = kernel[:, 0, :].double().numpy()  # (new, K), K = 2 * width + orig
    nonzero = [np.flatnonzero(row) for row in kernel]
    length = max(z[-1] - z[0] + 1 for z in nonzero)
    lo = np.array([min(z[0], kernel.shape[1] - length) for z in nonzero])
    offsets = lo[:, None] + np.arange(length)[None, :]
    taps = np.take_along_axis(kernel, offsets, axis=1).astype(np.float32)
    return taps, offsets, int(width), orig_sr // gcd, target_sr // gcd
