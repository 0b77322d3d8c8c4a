"""flite (CMU Flite 2.2): kal / kal16 diphone voices and the awb / rms / slt clustergen voices.

One process per batch: the texts go to a text file one paragraph each (blank lines between, so
each is its own utterance, bit-identical to speaking it alone), and ``-psdur`` prints one line per
utterance: its phone segments with end times, a pause at both ends. The wav of an utterance is a
little shorter than its last end time (0-5 ms for clustergen, ~0.12 s for the diphone voices), so
utterance k starts at sum(L_i - d) with d the batch's mean shortfall (error: a few ms), and the batch
is cut at the quietest 5 ms within 40 ms of that estimate (inside the ~0.2-s pause that opens
every utterance). A cut that does not land in silence,
or a segment count that differs from the text count, sends the batch to one call per text.
Start-up is ~15 ms per process against ~3 ms (kal) to ~25 ms (clustergen) of synthesis per
utterance, so batching saves 30-80 % of flite's time.
kal is an 8 kHz voice, the others 16 kHz: the rate is read from each wav header.
flite is deterministic: same texts, voice and settings -> same samples. The diphone voices give
each text the samples it gets alone; the clustergen voices continue their noise excitation across
the utterances of one process, so their samples also depend on the batch (correlation ~0.995 with
the text spoken alone) - still the same for the same plan.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from functools import lru_cache

import numpy as np

from wakeword_dist.data.tts.base import Engine, Prosody, read_wav, trim

CUT_SEARCH_S = 0.04  # a cut goes to the quietest point this close to its estimate, s
CUT_FRAME_S = 0.005  # ... judged in frames this long, s
SILENT_PEAK = 10 ** (-40 / 20)  # ... which must be below this peak (kal's pauses reach -45 dBFS)
VOICES = ("kal", "kal16", "awb", "rms", "slt")
# Mean f0 of each voice at its defaults, Hz (flite's int_f0_target_mean); Prosody.pitch scales it.
F0_MEAN_HZ = {"kal": 95.0, "kal16": 95.0, "awb": 130.0, "rms": 100.0, "slt": 170.0}
# The same human talker behind several voices (and festival's): they must share a split.
TALKER = {"kal": "talker:kal", "kal16": "talker:kal", "awb": "talker:awb", "rms": "talker:rms",
          "slt": "talker:slt"}


class Flite(Engine):
    name = "flite"
    binary = "flite"
    apt_packages = ("flite",)

    @lru_cache(maxsize=1)
    def version(self) -> str:
        # flite --version prints "version: flite-2.2-current Sep 2018 ..." and exits 1
        out = subprocess.run([self.binary_path(), "--version"], capture_output=True, text=True)
        text = out.stdout + out.stderr
        if "version:" not in text:
            raise RuntimeError(f"flite --version printed no version: {text.strip()[:200]!r}")
        return text.split("version:", 1)[1].split("(")[0].strip()

    @lru_cache(maxsize=1)
    def installed_voices(self) -> tuple[str, ...]:
        out = subprocess.run([self.binary_path(), "-lv"], capture_output=True, text=True, check=True)
        return tuple(out.stdout.split(":", 1)[-1].split())

    def voices(self) -> list[str]:
        have = self.installed_voices()
        missing = [v for v in VOICES if v not in have]
        if missing:
            raise RuntimeError(f"flite lacks voices {missing}: install it (apt-get install "
                               f"{' '.join(self.apt_packages)})")
        return list(VOICES)

    def split_group(self, voice: str) -> str:
        return TALKER[voice]

    def args(self, voice: str, prosody: Prosody) -> list[str]:
        return ["-voice", voice, "--setf", f"duration_stretch={1 / prosody.rate:.4f}",
                "--setf", f"int_f0_target_mean={F0_MEAN_HZ[voice] * prosody.pitch:.2f}"]

    def speak_batch(self, texts: list[str], voice: str,
                    prosody: Prosody = Prosody()) -> tuple[list[np.ndarray], int]:
        """Speak each text with one voice -> ``(clips, sample_rate)``: one trimmed float32
        ``(N_i,)`` per text at the voice's native rate (8,000 Hz for kal, else 16,000 Hz)."""
        args = self.args(voice, prosody)
        paragraphs = "\n\n".join(t if t.rstrip()[-1:] in ".?!" else t + "." for t in texts) + "\n"
        audio, sr, stdout = self._run(args, paragraphs)
        cuts = _cuts(stdout, audio, sr, len(texts))
        if cuts is not None:
            return [trim(audio[a:b], sr) for a, b in zip(cuts[:-1], cuts[1:])], sr
        out = []
        for t in texts:
            one, sr, _ = self._run(args, t + "\n")
            out.append(trim(one, sr))
        return out, sr

    def _run(self, args: list[str], text: str):
        """One flite process: ``text`` from a temp file, wav to a temp file, segments on stdout."""
        with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
            txt, wav = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.wav")
            with open(txt, "w") as f:
                f.write(text)
            proc = subprocess.run([self.binary_path(), *args, "-psdur", "-f", txt, "-o", wav],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not os.path.exists(wav):
                raise RuntimeError(f"flite {' '.join(args)} failed ({proc.returncode}): "
                                   f"{proc.stderr.strip()[:200]}")
            with open(wav, "rb") as f:
                audio, sr = read_wav(f.read(), f"flite {' '.join(args)}")
        return audio, sr, proc.stdout


def _cuts(psdur: str, audio: np.ndarray, sr: int, n_texts: int) -> list[int] | None:
    """Sample positions ``[0, c_1, ..., len]`` that separate the batch's utterances, or ``None``
    when the segment listing does not match the texts or a cut would not fall in silence."""
    lines = [[seg.rsplit(":", 1) for seg in ln.split()] for ln in psdur.splitlines() if ln.strip()]
    if len(lines) != n_texts or any(len(ln) < 3 or ln[0][0] != "pau" or ln[-1][0] != "pau"
                                    for ln in lines):
        return None
    length = np.array([float(ln[-1][1]) for ln in lines])  # s, as listed
    short = (length.sum() - audio.size / sr) / n_texts  # s, mean wav shortfall per utterance
    start = np.concatenate([[0.0], np.cumsum(length - short)])
    cuts, reach, frame = [0], int(CUT_SEARCH_S * sr), max(1, int(CUT_FRAME_S * sr))
    for k in range(n_texts - 1):
        guess = int(round(start[k + 1] * sr))  # inside the next utterance's leading ~0.2-s pause
        lo = max(cuts[-1] + 1, guess - reach)
        window = np.abs(audio[lo: guess + reach])
        n = window.size // frame
        if n == 0:
            return None
        peaks = window[: n * frame].reshape(n, frame).max(axis=1)
        quiet = int(np.argmin(peaks))  # the quietest 5-ms frame near the estimate
        if peaks[quiet] > SILENT_PEAK:
            return None
        cuts.append(lo + quiet * frame + frame // 2)
    return cuts + [audio.size]
