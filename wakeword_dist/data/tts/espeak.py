"""espeak-ng: formant synthesis, 8 English voices x 40 variants, batched through SSML.

Starting espeak-ng costs ~10-15 ms (voice data loading) while speaking a short phrase costs ~1 ms,
so each call speaks a *batch* of texts separated by 1-s SSML breaks and the output is cut at long
silences. If the cut does not give exactly one segment per text (a long pause inside a text), the
batch falls back to one call per text, so the result never depends on the heuristic.
Debian's espeak-ng 1.51 is deterministic: same text/voice/rate/pitch -> same samples.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from xml.sax.saxutils import escape

import numpy as np

from wakeword_dist.data.tts.base import Engine, Prosody, read_wav, trim

BREAK_S = 1.0  # SSML pause inserted between the texts of one batch
SPLIT_SILENCE_S = 0.5  # silences longer than this separate texts (in-text pauses are < 0.3 s)
ACTIVE_PEAK = 200 / 32768  # 10-ms frame peak above which a frame counts as speech (~ -44 dBFS)
MARGIN_FRAMES = 2  # keep 20 ms of lead-in / tail around each segment
DEFAULT_WPM = 175  # espeak-ng's default -s; Prosody.rate scales it
DEFAULT_PITCH = 50  # espeak-ng's default -p (0-99); Prosody.pitch 1.25 -> 75

# English voices shipped with espeak-ng (the mbrola ones need extra packages and are left out).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
          "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Voice variants (timbre, formants, breathiness); voice x variant = one engine voice.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
            "klatt2", "klatt3", "croak", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee",
            "Michael", "adam", "anika", "aunty", "boris", "david", "ed", "grandma", "linda", "max",
            "norbert", "paul", "quincy", "rob", "steph", "travis", "victor", "zac")


class Espeak(Engine):
    name = "espeak-ng"
    binary = "espeak-ng"
    apt_packages = ("espeak-ng",)

    @lru_cache(maxsize=1)
    def version(self) -> str:
        out = subprocess.run([self.binary_path(), "--version"], capture_output=True, text=True,
                             check=True)
        return out.stdout.split("Data at")[0].strip()

    def voices(self) -> list[str]:
        return [f"{v}+{var}" for v in VOICES for var in VARIANTS]

    def split_group(self, voice: str) -> str:
        # the variant sets formants, breathiness and pitch: en-us+f3 and en-gb+f3 share a timbre
        # (only the accent differs), so all accents of one variant go to one split
        return f"espeak-ng:variant:{voice.split('+', 1)[1]}"

    def args(self, voice: str, prosody: Prosody) -> list[str]:
        pitch = int(np.clip(round(DEFAULT_PITCH + 100 * (prosody.pitch - 1)), 0, 99))
        return ["-v", voice, "-s", str(int(round(DEFAULT_WPM * prosody.rate))), "-p", str(pitch)]

    def speak_batch(self, texts: list[str], voice: str,
                    prosody: Prosody = Prosody()) -> tuple[list[np.ndarray], int]:
        """Speak each text with one voice (``"en-us+f3"``).

        Returns ``(clips, sample_rate)``: one trimmed float32 ``(N_i,)`` array per text (20 ms kept
        around the speech) at espeak's native 22,050 Hz. SSML special characters are escaped.
        """
        args = self.args(voice, prosody)
        brk = f'<break time="{int(BREAK_S * 1000)}ms"/>'
        pcm, sr = self._run(["-m", *args], "<speak>" + brk.join(escape(t) for t in texts) + "</speak>")
        runs = _active_runs(pcm, sr)
        if len(runs) == len(texts):
            return [pcm[s:e].copy() for s, e in runs], sr
        out = []  # fallback: one call per text, the whole active span is the segment
        for t in texts:
            one, sr = self._run(args, t)
            out.append(trim(one, sr))
        return out, sr

    def _run(self, args: list[str], stdin: str) -> tuple[np.ndarray, int]:
        proc = subprocess.run([self.binary_path(), *args, "--stdin", "--stdout"],
                              input=stdin.encode(), capture_output=True, check=True)
        return read_wav(proc.stdout, f"espeak-ng {' '.join(args)}")


def _active_runs(pcm: np.ndarray, sr: int) -> list[tuple[int, int]]:
    """Speech segments ``[(start, end)]`` in samples, split at silences > SPLIT_SILENCE_S."""
    frame = sr // 100
    n = pcm.size // frame
    if n == 0:
        return []
    peaks = np.abs(pcm[: n * frame].reshape(n, frame)).max(axis=1)
    active = np.flatnonzero(peaks > ACTIVE_PEAK)
    if active.size == 0:
        return []
    gap = int(SPLIT_SILENCE_S * 100)  # in 10-ms frames
    breaks = np.flatnonzero(np.diff(active) > gap)
    starts = np.concatenate([[active[0]], active[breaks + 1]])
    ends = np.concatenate([active[breaks], [active[-1]]]) + 1
    return [(max(0, (s - MARGIN_FRAMES)) * frame, min(n, e + MARGIN_FRAMES) * frame)
            for s, e in zip(starts, ends)]
