"""Batch text-to-speech with the system ``espeak-ng`` binary.

Starting espeak-ng costs ~10-15 ms (voice data loading) while speaking a short phrase costs ~1 ms,
so each call speaks a *batch* of texts separated by 1-s SSML breaks and the output is cut at long
silences. If the cut does not give exactly one segment per text (a long pause inside a text), the
batch falls back to one call per text, so the result never depends on the heuristic.
Debian's espeak-ng 1.51 is deterministic: same text/voice/rate/pitch -> same samples.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from xml.sax.saxutils import escape

import numpy as np

ESPEAK_SAMPLE_RATE = 22050  # Hz, fixed by espeak-ng's output
BREAK_S = 1.0  # SSML pause inserted between the texts of one batch
SPLIT_SILENCE_S = 0.5  # silences longer than this separate texts (in-text pauses are < 0.3 s)
FRAME = 220  # 10 ms analysis frames at 22,050 Hz
ACTIVE_PEAK = 200  # int16 frame peak above which a frame counts as speech (~ -44 dBFS)
MARGIN_FRAMES = 2  # keep 20 ms of lead-in / tail around each segment

# English voices shipped with espeak-ng (the mbrola ones need extra packages and are left out).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
          "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Voice variants (timbre, formants, breathiness); voice x variant = one synthetic "speaker".
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
            "klatt2", "klatt3", "croak", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee",
            "Michael", "adam", "anika", "aunty", "boris", "david", "ed", "grandma", "linda", "max",
            "norbert", "paul", "quincy", "rob", "steph", "travis", "victor", "zac")


@lru_cache(maxsize=1)
def espeak_binary() -> str:
    """Path of ``espeak-ng``; raises ``RuntimeError`` with an install hint when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng not found on PATH: install it (apt-get install espeak-ng)")
    return path


@lru_cache(maxsize=1)
def espeak_version() -> str:
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _run(args: list[str], stdin: str) -> np.ndarray:
    """Run espeak-ng writing a streamed wav to stdout -> int16 ``(N,)`` at 22,050 Hz."""
    proc = subprocess.run([espeak_binary(), *args, "--stdin", "--stdout"], input=stdin.encode(),
                          capture_output=True, check=True)
    wav = proc.stdout
    # the streamed header carries placeholder sizes; the data chunk starts at byte 44
    if len(wav) < 44 or wav[:4] != b"RIFF" or wav[36:40] != b"data":
        raise RuntimeError(f"espeak-ng gave no wav output for {args}: {proc.stderr[:200]!r}")
    return np.frombuffer(wav[44:44 + (len(wav) - 44) // 2 * 2], dtype="<i2")


def _active_runs(pcm: np.ndarray) -> list[tuple[int, int]]:
    """Speech segments ``[(start, end)]`` in samples, split at silences > SPLIT_SILENCE_S."""
    n = pcm.size // FRAME
    if n == 0:
        return []
    peaks = np.abs(pcm[: n * FRAME].reshape(n, FRAME).astype(np.int32)).max(axis=1)
    active = np.flatnonzero(peaks > ACTIVE_PEAK)
    if active.size == 0:
        return []
    gap = int(SPLIT_SILENCE_S * ESPEAK_SAMPLE_RATE / FRAME)
    breaks = np.flatnonzero(np.diff(active) > gap)
    starts = np.concatenate([[active[0]], active[breaks + 1]])
    ends = np.concatenate([active[breaks], [active[-1]]]) + 1
    return [(max(0, (s - MARGIN_FRAMES)) * FRAME, min(n, e + MARGIN_FRAMES) * FRAME)
            for s, e in zip(starts, ends)]


def speak_batch(texts: list[str], voice: str, rate_wpm: int, pitch: int) -> list[np.ndarray]:
    """Speak each text with one voice (``"en-us+f3"``), rate (words/min) and pitch (0-99).

    Returns one trimmed int16 ``(N_i,)`` array at 22,050 Hz per text (leading/trailing silence
    removed, 20 ms kept). Texts are plain words; SSML special characters are escaped.
    """
    args = ["-v", voice, "-s", str(rate_wpm), "-p", str(pitch)]
    ssml = "<speak>" + f'<break time="{int(BREAK_S * 1000)}ms"/>'.join(escape(t) for t in texts) + "</speak>"
    pcm = _run(["-m", *args], ssml)
    runs = _active_runs(pcm)
    if len(runs) == len(texts):
        return [pcm[s:e].copy() for s, e in runs]
    out = []  # fallback: one call per text, the whole active span is the segment
    for t in texts:
        one = _run(args, t)
        r = _active_runs(one)
        out.append(one[r[0][0]: r[-1][1]].copy() if r else one[:0].copy())
    return out
