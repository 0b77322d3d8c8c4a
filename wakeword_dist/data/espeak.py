"""Temporary shim while synth.py moves to wakeword_dist.data.tts (removed with that change)."""
import numpy as np

from wakeword_dist.data.tts import get_engine
from wakeword_dist.data.tts.base import Prosody
from wakeword_dist.data.tts.espeak import VARIANTS, VOICES  # noqa: F401

ESPEAK_SAMPLE_RATE = 22050
_E = get_engine("espeak-ng")


def espeak_binary():
    return _E.binary_path()


def espeak_version():
    return _E.version()


def speak_batch(texts, voice, rate_wpm, pitch):
    clips, _ = _E.speak_batch(texts, voice, Prosody(rate_wpm / 175, 1 + (pitch - 50) / 100))
    return [np.rint(c * 32768).astype(np.int16) for c in clips]
