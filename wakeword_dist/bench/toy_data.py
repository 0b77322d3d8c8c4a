"""A tone/noise stand-in for the espeak-ng dataset, for machines without espeak-ng (the GPU box).

``make_tone_dataset(root)`` writes the same layout ``synth`` does (train / val / test / stream /
background, ``index.json`` each, via ``ShardWriter``), with labels ``negative`` and the wake label:

- positive: a rising chirp (300 -> 1200 Hz, 0.35 s) followed by a 900 Hz tone (0.25 s), placed at
  a random offset over a white-noise floor;
- hard negative: the chirp alone (the first "word" of the phrase);
- negative: noise only, or a single tone at 300-3000 Hz;
- stream: 30 s of pink noise with chirps and tones but no complete positive;
- background: white / pink / brown noise clips for the noise augmentation.

Learnable in a few dozen steps, so a short distillation run shows its loss moving. Seconds to write.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from wakeword_dist.atomic import replace_dir
from wakeword_dist.data.noise import coloured_noise
from wakeword_dist.data.shard_writer import ShardWriter

SAMPLE_RATE = 16000  # Hz


def _chirp(sr: int, seconds: float = 0.35, f0: float = 300.0, f1: float = 1200.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    return (np.sin(phase) * np.hanning(t.size)).astype(np.float32)


def _tone(sr: int, freq: float, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (np.sin(2 * np.pi * freq * t) * np.hanning(t.size)).astype(np.float32)


def _clip(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    out = coloured_noise(rng, n, "white", float(rng.uniform(-50, -35)))
    if kind == "positive":
        event = np.concatenate([_chirp(sr), np.zeros(int(0.05 * sr), np.float32), _tone(sr, 900.0)])
    elif kind == "hard":
        event = _chirp(sr)
    elif kind == "tone":
        event = _tone(sr, float(rng.uniform(300, 3000)), float(rng.uniform(0.1, 0.5)))
    else:
        return np.clip(out, -1, 1)
    event = event[: n] * 10 ** (float(rng.uniform(-12, -3)) / 20)
    start = int(rng.integers(0, n - event.size + 1))
    out[start:start + event.size] += event
    return np.clip(out, -1, 1)


def _rows(rng: np.random.Generator, split: str, count: int, n: int, sr: int):
    kinds = ["positive", "hard", "noise", "tone"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        label = 1 if kind == "positive" else 0
        yield f"{split}-{i:06d}", _clip(rng, kind, n, sr), {
            "label": label, "hard_negative": kind == "hard", "speaker": f"toy{i % 5}", "source": "toy-tones",
            "text": f"<{kind}>"}


def _stream(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    total = int(seconds * sr)
    out = coloured_noise(rng, total, "pink", -45.0)
    pos = int(rng.uniform(0.5, 2.0) * sr)
    while pos < total:
        event = _chirp(sr) if rng.random() < 0.5 else _tone(sr, float(rng.uniform(300, 3000)))
        event = event[: total - pos] * 0.3
        out[pos:pos + event.size] += event
        pos += event.size + int(rng.uniform(0.5, 2.0) * sr)
    return np.clip(out, -1, 1)


def make_tone_dataset(root: str | os.PathLike, *, seed: int = 0, train: int = 256, val: int = 64, test: int = 64,
                      background: int = 16, streams: int = 2, stream_seconds: float = 30.0,
                      clip_seconds: float = 1.0, audio_format: str = "wav", wake_label: str = "hey_nova",
                      sample_rate: int = SAMPLE_RATE) -> dict:
    """Write the toy dataset under ``root``; returns ``{split: num_samples}``. Each split appears
    only when complete (written to a temp folder, then renamed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels = ["negative", wake_label]
    n = int(round(clip_seconds * sample_rate))
    rng = np.random.default_rng(seed)
    splits = {s: list(_rows(rng, s, c, n, sample_rate)) for s, c in (("train", train), ("val", val), ("test", test))}
    splits["stream"] = [(f"stream-{i:06d}", _stream(rng, stream_seconds, sample_rate),
                         {"label": 0, "speaker": "toy", "source": "toy-tones", "text": "<stream>"})
                        for i in range(streams)]
    noises = ("white", "pink", "brown")
    splits["background"] = [(f"background-{i:06d}", coloured_noise(rng, n, noises[i % 3], float(rng.uniform(-35, -15))),
                             {"label": 0, "speaker": noises[i % 3], "source": "toy-noise", "text": "<noise>"})
                            for i in range(background)]
    counts = {}
    for split, rows in splits.items():
        tmp = root / f".{split}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with ShardWriter(tmp, 100, audio_format, sample_rate, label_names=labels, source="toy-tones", seed=seed,
                         extra={"split": split, "generator": {"name": "toy-tones"}}) as w:
            for key, audio, meta in rows:
                w.write(key, audio, {"label_name": labels[meta["label"]], **meta})
        replace_dir(tmp, root / split)
        counts[split] = len(rows)
    return counts
