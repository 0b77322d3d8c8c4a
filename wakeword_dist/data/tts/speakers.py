"""Engine voices -> splits -> derived speakers.

A *voice* is one engine voice (``flite:slt``). Voices that share a timbre or a human talker form a
*split group* (``Engine.split_group``: all accents of one espeak variant; flite's kal/kal16 and
festival's kal_diphone, all recordings of one man) and a group lives in exactly ONE split, so no
timbre is in train and in val/test. Each voice then yields ``speakers_per_voice`` derived speakers:
speaker #0 is the voice itself, the others a fixed ``Perturbation`` draw each.

The assignment gives every engine at least one group in val and in test when it has >= 3 groups
(flite has 4 talkers, festival 3: one each to train/val/test), the rarest engine first, so that the
groups it shares with other engines (kal, slt) are placed before those engines choose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wakeword_dist.data.perturb import Perturbation, draw_speaker
from wakeword_dist.data.tts import get_engine

SPLITS = ("train", "val", "test")
HELD_OUT_SHARE = 0.15  # of an engine's groups (and voices) each for val and test


@dataclass(frozen=True)
class Speaker:
    """One derived speaker: an engine voice and a fixed perturbation (index 0 = unperturbed)."""
    engine: str
    voice: str
    index: int
    group: str
    perturb: Perturbation

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}#{self.index}"


def _held_out(n: int) -> int:
    """Groups (or voices) an engine gives to val and to test each: 0 below 3, else >= 1."""
    return 0 if n < 3 else max(1, round(HELD_OUT_SHARE * n))


def assign_voices(rng: np.random.Generator, engines: list[str],
                  max_voices: dict[str, int]) -> dict[str, dict[str, list[str]]]:
    """``{split: {engine: [voice, ...]}}``: every split group in one split; an engine named in
    ``max_voices`` uses at most that many voices in all (~70/15/15 over train/val/test), the
    others all their voices."""
    members: dict[str, dict[str, list[str]]] = {}  # group -> engine -> voices
    for e in engines:
        for v in get_engine(e).voices():
            members.setdefault(get_engine(e).split_group(v), {}).setdefault(e, []).append(v)
    order = [sorted(members)[i] for i in rng.permutation(len(members))]
    split_of: dict[str, str] = {}
    for e in sorted(engines, key=lambda e: (sum(e in m for m in members.values()), e)):
        mine = [g for g in order if e in members[g]]
        want = _held_out(len(mine))
        for g in mine:
            if g in split_of:
                continue
            have = {s: sum(split_of.get(h) == s for h in mine) for s in ("val", "test")}
            split_of[g] = next((s for s in ("val", "test") if have[s] < want), "train")
    out: dict[str, dict[str, list[str]]] = {s: {e: [] for e in engines} for s in SPLITS}
    for e in engines:
        cap = max_voices.get(e)  # None: every voice of the engine
        held = _held_out(cap) if cap else 0
        caps = {"train": max(1, cap - 2 * held), "val": max(1, held), "test": max(1, held)} if cap else {}
        for s in SPLITS:
            voices = [v for g in order if split_of[g] == s for v in members[g].get(e, [])]
            out[s][e] = [voices[i] for i in rng.permutation(len(voices))][: caps.get(s)]
    return out


def derive_speakers(rng: np.random.Generator, voices: dict[str, dict[str, list[str]]],
                    speakers_per_voice: dict[str, int]) -> dict[str, dict[str, list[Speaker]]]:
    """``{split: {engine: [Speaker, ...]}}``: ``speakers_per_voice[engine]`` per voice, #0 clean."""
    out: dict[str, dict[str, list[Speaker]]] = {}
    for s in SPLITS:
        out[s] = {}
        for e, names in voices[s].items():
            engine = get_engine(e)
            out[s][e] = [Speaker(e, v, k, engine.split_group(v),
                                 Perturbation() if k == 0 else draw_speaker(rng, train=s == "train"))
                         for v in names for k in range(speakers_per_voice[e])]
    return out
