"""festival 2.5: the kal / ked diphone voices and the slt HTS voice, many texts per process.

``text2wave`` per utterance pays festival's start-up and voice loading every time (0.2-0.7 s); here
ONE ``festival --batch`` process per batch runs a generated Scheme script that synthesises each
text to its own temp wav (~12 ms per utterance for the diphone voices, ~60 ms for HTS).
Prosody: ``Duration_Stretch`` and the intonation model's target f0 mean for the diphone voices;
the HTS voice takes its speed from hts_engine's ``-r`` and ignores f0 targets (pitch reported 1.0).
The diphone voices write 16 kHz, slt-hts 32 kHz (read from each wav header). Deterministic.
"""

from __future__ import annotations

import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from wakeword_dist.data.tts.base import Engine, EngineMissing, Prosody, read_wav, trim

HTS = "cmu_us_slt_arctic_hts"
PACKAGE = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
           HTS: "festvox-us-slt-hts"}
# (Duration_Stretch, target f0 mean Hz, target f0 std Hz) each voice sets for itself.
DIPHONE_DEFAULTS = {"kal_diphone": (1.1, 105.0, 14.0), "ked_diphone": (1.1, 105.0, 15.0)}
# kal is the same talker as flite's kal/kal16, slt as flite's slt: one split for each talker.
TALKER = {"kal_diphone": "talker:kal", "ked_diphone": "talker:ked", HTS: "talker:slt"}


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Festival(Engine):
    name = "festival"
    binary = "festival"
    voice_packages = PACKAGE  # voice -> its apt package, in the engine's voice order
    talkers = TALKER  # voice -> split group
    apt_packages = ("festival", *PACKAGE.values())

    @lru_cache(maxsize=1)
    def version(self) -> str:
        out = subprocess.run([self.binary_path(), "--version"], capture_output=True, text=True,
                             check=True)
        return out.stdout.split(":", 1)[-1].strip()

    @lru_cache(maxsize=1)
    def installed_voices(self) -> tuple[str, ...]:
        out = subprocess.run([self.binary_path(), "--batch", "(print (voice.list))"],
                             capture_output=True, text=True, check=True)
        return tuple(out.stdout.strip().strip("()").split())

    def voices(self) -> list[str]:
        have = self.installed_voices()
        for v, package in self.voice_packages.items():
            if v not in have:
                raise EngineMissing(f"festival voice {v} not installed: install it "
                                    f"(apt-get install {package})")
        return list(self.voice_packages)

    def split_group(self, voice: str) -> str:
        return self.talkers[voice]

    def applied(self, voice: str, prosody: Prosody) -> Prosody:
        return Prosody(prosody.rate, 1.0) if voice == HTS else prosody

    def prosody_lines(self, voice: str, prosody: Prosody) -> list[str]:
        """Scheme that sets the selected voice's speaking rate (and f0 target where it has one)."""
        if voice == HTS:  # hts_engine's speed factor; Duration_Stretch does not reach HTS
            return [f"(set! hts_engine_params (append {HTS}::hts_engine_params "
                    f"(list '(\"-r\" {prosody.rate:.4f}))))"]
        stretch, f0_mean, f0_std = DIPHONE_DEFAULTS[voice]
        return [f"(Parameter.set 'Duration_Stretch {stretch / prosody.rate:.4f})",
                f"(set! int_lr_params '((target_f0_mean {f0_mean * prosody.pitch:.2f}) "
                f"(target_f0_std {f0_std}) (model_f0_mean 170) (model_f0_std 34)))"]

    def script(self, texts: list[str], voice: str, prosody: Prosody, out_dir: str) -> str:
        """The Scheme program: select the voice, set its prosody, synthesise text i to i.wav."""
        lines = [f"(voice_{voice})", *self.prosody_lines(voice, prosody)]
        # top-level set! per text: inside a (let ...) the HTS voice re-saves the first utterance
        lines += [f"(set! ww_utt (Utterance Text {_scheme_string(t)})) (utt.synth ww_utt) "
                  f"(utt.save.wave ww_utt \"{out_dir}/{i:05d}.wav\" 'riff)" for i, t in enumerate(texts)]
        return "\n".join(lines) + "\n"

    def speak_batch(self, texts: list[str], voice: str,
                    prosody: Prosody = Prosody()) -> tuple[list[np.ndarray], int]:
        """Speak each text with one voice in one festival process -> ``(clips, sample_rate)``:
        trimmed float32 ``(N_i,)`` at the voice's rate (16,000 Hz diphone, 32,000 Hz HTS)."""
        if voice not in self.voices():
            raise ValueError(f"{self.name} voice {voice!r} is not one of {tuple(self.voice_packages)}")
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            script = Path(tmp) / "batch.scm"
            script.write_text(self.script(texts, voice, prosody, tmp))
            proc = subprocess.run([self.binary_path(), "--batch", str(script)], capture_output=True,
                                  text=True)
            out, sr = [], 0
            for i, t in enumerate(texts):
                wav = Path(tmp) / f"{i:05d}.wav"
                if not wav.exists():
                    raise RuntimeError(f"{self.name} ({voice}) wrote no audio for {t!r}: "
                                       f"{(proc.stderr or proc.stdout).strip()[-200:]}")
                audio, sr = read_wav(wav.read_bytes(), f"{self.name} {voice} {t!r}")
                out.append(trim(audio, sr))
        return out, sr
