"""Offline TTS engines behind one small interface (see ``base.Engine``).

``get_engine(name)`` gives the engine object; ``ENGINE_NAMES`` lists them in their canonical order.
Each engine: ``name``, ``apt_packages``, ``version()``, ``voices()`` (its base voices),
``split_group(voice)`` (voices sharing a timbre or a human talker share it, and a split),
``applied(voice, prosody)`` and ``speak_batch(texts, voice, prosody) -> (clips, sample_rate)``:
trimmed float32 ``(N_i,)`` clips at the engine's native rate. A missing binary or voice raises
``EngineMissing`` with the apt package to install.
"""

from __future__ import annotations

from wakeword_dist.data.tts.base import Engine, EngineMissing, Prosody
from wakeword_dist.data.tts.espeak import Espeak
from wakeword_dist.data.tts.festival import Festival
from wakeword_dist.data.tts.festival_l2 import FestivalL2
from wakeword_dist.data.tts.flite import Flite

_ENGINES = {e.name: e for e in (Espeak(), Flite(), Festival(), FestivalL2())}
ENGINE_NAMES = tuple(_ENGINES)


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (``espeak-ng``, ``flite``, ``festival`` or ``festival-l2``)."""
    if name not in _ENGINES:
        raise ValueError(f"unknown TTS engine {name!r}: choose from {', '.join(ENGINE_NAMES)}")
    return _ENGINES[name]


__all__ = ["Engine", "EngineMissing", "Prosody", "ENGINE_NAMES", "get_engine"]
