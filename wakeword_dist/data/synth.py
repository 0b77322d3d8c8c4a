"""Synthesize a complete wake-word dataset with espeak-ng (no downloads, seconds on 2 cores).

Splits written under ``out_root`` (see shards/README.md)::

    train/ val/ test/   1-s clips: positives (the wake phrase), hard negatives (confusable
                        phrases, the phrase cut short, a window of a sentence around the phrase
                        that lacks the full phrase), generic negative speech
    stream/             >= 30-s continuous negative audio (speech + noise floor) for FA/h
    background/         noise bank for augmentation: white, pink, brown noise and babble

Speakers are espeak ``voice+variant`` pairs, disjoint across train / val / test; the stream uses
held-out (val + test) speakers, babble uses train speakers. Every random choice is drawn up front
from one ``numpy`` generator, so the output depends only on (seed, sizes, phrase, espeak build),
never on thread timing: the same seed gives the same ``content_hash``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wakeword_dist.atomic import replace_dir
from wakeword_dist.data import espeak, noise, texts
from wakeword_dist.data.audio_io import resample
from wakeword_dist.data.shard_writer import ShardWriter

log = logging.getLogger(__name__)

DEFAULT_AUDIO_FORMAT = "wav"  # fastest to decode; see shards/README.md for the measurements
# Sizes in clips (1 clip = clip_seconds of audio). "tiny" is for tests (~1-2 s to build).
PRESETS = {
    "tiny": dict(n_speakers=12, train_clips=160, val_clips=40, test_clips=40, background_clips=24,
                 stream_count=2, stream_seconds=30.0, samples_per_shard=64),
    "demo": dict(n_speakers=48, train_clips=3000, val_clips=400, test_clips=400,
                 background_clips=200, stream_count=20, stream_seconds=60.0, samples_per_shard=250),
}
MIX = {"positive": 0.30, "hard": 0.35}  # rest generic negative; of hard negatives:
HARD_MIX = {"confusable": 0.5, "partial": 0.2, "fragment": 0.3}
RATE_WPM = (150, 221)  # espeak -s range; below ~150 wpm "hey nova" no longer fits 1 s
PITCH = (25, 76)  # espeak -p range (0-99)
PEAK_DBFS = (-18.0, -1.0)  # per-clip speech peak level: light level variation
FLOOR_DBFS = (-70.0, -50.0)  # white noise floor RMS, so no clip is digital silence
BATCH_TEXTS = 24  # texts per espeak call (one start-up for ~24 utterances)
STREAM_GAP_S = (0.3, 2.5)  # pause between utterances in a stream, s


@dataclass
class _Item:
    """One planned clip (or stream utterance): what to say and how to place it."""
    kind: str
    text: str
    label: int
    hard: bool
    speaker: str = ""
    place: str = "random"  # random | end | start  (where the speech sits in the clip)
    u_offset: float = 0.0
    peak_dbfs: float = -6.0
    floor_dbfs: float = -60.0
    audio: np.ndarray | None = field(default=None, repr=False)


def make_tiny_dataset(out_root: str | os.PathLike, seed: int = 0) -> dict:
    """Build the tiny test dataset (~264 clips, 2 x 30-s streams) in a few seconds; no progress bar."""
    return synthesize(out_root, size="tiny", seed=seed, progress=False)


def synthesize(out_root: str | os.PathLike, *, wake_phrase: str = "hey nova", seed: int = 0,
               size: str = "demo", n_speakers: int | None = None, clip_seconds: float = 1.0,
               train_clips: int | None = None, val_clips: int | None = None,
               test_clips: int | None = None, background_clips: int | None = None,
               stream_count: int | None = None, stream_seconds: float | None = None,
               samples_per_shard: int | None = None, audio_format: str = DEFAULT_AUDIO_FORMAT,
               sample_rate: int = 16000, workers: int | None = None,
               progress: bool = True) -> dict:
    """Synthesize train/val/test/stream/background shards under ``out_root``.

    Args:
        wake_phrase: the positive class; its label name is the phrase with underscores.
        size: preset (``"tiny"`` or ``"demo"``); explicit counts override the preset's.
        clip_seconds: length of every train/val/test/background clip, s.
        stream_seconds: length of each stream sample, s (>= 30).
        audio_format: ``"wav"`` (default), ``"flac"`` or ``"npy"``.
        workers: parallel espeak processes (default: CPU count + 1).

    Returns a report: per split ``num_samples``, ``total_seconds``, ``content_hash``; ``seconds``
    taken; ``dropped`` (positives longer than a clip, not written).
    Each split directory appears only when complete (written to a temp dir, then renamed).
    """
    t0 = time.perf_counter()
    if size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
    cfg = dict(PRESETS[size])
    overrides = dict(n_speakers=n_speakers, train_clips=train_clips, val_clips=val_clips,
                     test_clips=test_clips, background_clips=background_clips,
                     stream_count=stream_count, stream_seconds=stream_seconds,
                     samples_per_shard=samples_per_shard)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if cfg["stream_seconds"] < 30:
        raise ValueError("stream_seconds must be >= 30 (the FA/h evaluation assumes long audio)")
    if cfg["n_speakers"] < 3:
        raise ValueError("n_speakers must be >= 3 (one per split at least)")
    espeak.espeak_binary()  # fail early with the install hint
    label_name = texts.phrase_label_name(wake_phrase)
    label_names = ["negative", label_name]
    clip_samples = int(round(clip_seconds * sample_rate))
    rng = np.random.default_rng(seed)

    # ---- plan: every random decision, in a fixed order -------------------------------------
    speakers = _pick_speakers(rng, cfg["n_speakers"])
    n_val = n_test = max(1, round(0.15 * len(speakers)))
    split_speakers = {"val": speakers[:n_val], "test": speakers[n_val:n_val + n_test],
                      "train": speakers[n_val + n_test:]}
    plans = {s: _plan_clips(rng, cfg[f"{s}_clips"], split_speakers[s], wake_phrase)
             for s in ("train", "val", "test")}
    stream_plans = [_plan_stream(rng, cfg["stream_seconds"], split_speakers["val"] +
                                 split_speakers["test"], wake_phrase)
                    for _ in range(cfg["stream_count"])]
    babble_pool = [_Item("babble", texts.random_sentence(rng, wake_phrase), 0, False,
                         speaker=split_speakers["train"][i % len(split_speakers["train"])])
                   for i in range(min(48, 4 * cfg["background_clips"]))]
    every_item = [it for s in plans.values() for it in s] + \
                 [it for p in stream_plans for it in p] + babble_pool
    jobs = _make_jobs(rng, every_item)

    # ---- speak: espeak batches in parallel threads (the work is in the subprocesses); the
    # resampling stays in this thread (BLAS called from several threads at once oversubscribes)
    workers = workers or (os.cpu_count() or 2) + 1
    with ThreadPoolExecutor(workers) as pool:
        done = pool.map(lambda job: espeak.speak_batch([it.text for it in job[3]], *job[:3]), jobs)
        for job, segments in tqdm(zip(jobs, done), total=len(jobs), desc="espeak",
                                  disable=not progress, unit="batch"):
            for it, seg in zip(job[3], segments):
                it.audio = resample(seg.astype(np.float32) / 32768.0, espeak.ESPEAK_SAMPLE_RATE,
                                    sample_rate)

    # ---- assemble and write ------------------------------------------------------------------
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    extra = {"generator": {"name": "espeak-ng", "version": espeak.espeak_version(), "size": size,
                           "wake_phrase": wake_phrase, "clip_seconds": clip_seconds}}
    report = {"out_root": str(out_root), "splits": {}, "dropped": 0}
    split_items: dict[str, list[tuple[str, np.ndarray, dict]]] = {}
    for split in ("train", "val", "test"):
        rows, dropped = [], 0
        for it in plans[split]:
            clip = _place(it, clip_samples, sample_rate, np.random.default_rng([seed, len(rows), dropped]))
            if clip is None:
                dropped += 1
                continue
            rows.append(clip)
        report["dropped"] += dropped
        if dropped:
            log.warning("%s: dropped %d positives longer than %.2f s", split, dropped, clip_seconds)
        split_items[split] = [(f"{split}-{i:06d}", a, m) for i, (a, m) in enumerate(rows)]
    split_items["stream"] = [
        (f"stream-{i:06d}", *_assemble_stream(p, cfg["stream_seconds"], sample_rate,
                                             np.random.default_rng([seed, 7, i])))
        for i, p in enumerate(stream_plans)]
    split_items["background"] = _background(np.random.default_rng([seed, 11]), cfg["background_clips"],
                                            clip_samples, [it.audio for it in babble_pool])

    tmp_dirs = {s: out_root / f".{s}.tmp-{os.getpid()}" for s in split_items}
    try:
        for split, rows in split_items.items():
            shutil.rmtree(tmp_dirs[split], ignore_errors=True)
            spk = sorted({m["speaker"] for _, _, m in rows})
            with ShardWriter(tmp_dirs[split], cfg["samples_per_shard"], audio_format, sample_rate,
                             label_names=label_names, source="espeak-ng", seed=seed,
                             extra={**extra, "split": split, "speakers": spk}) as w:
                for key, audio, meta in tqdm(rows, desc=f"write {split}", disable=not progress,
                                             unit="clip", leave=False):
                    w.write(key, audio, {"label_name": label_names[meta["label"]], **meta})
                index = w.close()
            report["splits"][split] = {k: index[k] for k in
                                       ("num_samples", "total_seconds", "content_hash")}
        for split, tmp in tmp_dirs.items():
            replace_dir(tmp, out_root / split)
    finally:
        for tmp in tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if progress:
        print(f"synthesized {sum(s['num_samples'] for s in report['splits'].values())} samples "
              f"in {report['seconds']} s -> {out_root}")
    return report


# ------------------------------------------------------------------------------------ planning
def _pick_speakers(rng: np.random.Generator, n: int) -> list[str]:
    every = [f"{v}+{var}" for v in espeak.VOICES for var in espeak.VARIANTS]
    if n > len(every):
        raise ValueError(f"n_speakers={n} > {len(every)} available voice+variant pairs")
    return [every[i] for i in rng.permutation(len(every))[:n]]


def _level_params(rng: np.random.Generator, it: _Item) -> _Item:
    it.u_offset = float(rng.random())
    it.peak_dbfs = float(rng.uniform(*PEAK_DBFS))
    it.floor_dbfs = float(rng.uniform(*FLOOR_DBFS))
    return it


def _plan_clips(rng: np.random.Generator, n: int, speakers: list[str], phrase: str) -> list[_Item]:
    n_pos = round(MIX["positive"] * n)
    n_hard = round(MIX["hard"] * n)
    n_conf = round(HARD_MIX["confusable"] * n_hard)
    n_part = round(HARD_MIX["partial"] * n_hard)
    positives, confusables = texts.positive_variants(phrase), texts.confusable_phrases(phrase)
    partials = texts.partial_phrases(phrase)
    items = []
    for _ in range(n_pos):
        items.append(_Item("positive", positives[rng.integers(len(positives))], 1, False))
    for _ in range(n_conf):
        items.append(_Item("confusable", confusables[rng.integers(len(confusables))], 0, True))
    for _ in range(n_part):
        items.append(_Item("partial", partials[rng.integers(len(partials))], 0, True))
    for _ in range(n_hard - n_conf - n_part):
        text, side = texts.fragment_sentence(rng, phrase)
        items.append(_Item("fragment", text, 0, True, place=side))
    for _ in range(n - len(items)):
        items.append(_Item("speech", texts.random_sentence(rng, phrase), 0, False))
    items = [items[i] for i in rng.permutation(len(items))]  # shuffled: shards are mixed
    for i, it in enumerate(items):
        it.speaker = speakers[i % len(speakers)]
        _level_params(rng, it)
    return items


def _plan_stream(rng: np.random.Generator, seconds: float, speakers: list[str],
                 phrase: str) -> list[_Item]:
    """Utterances for one stream: generic speech and confusables, never the full phrase, also
    not across utterance boundaries (partials like "hey" + "nova..." are left out)."""
    confusables = texts.confusable_phrases(phrase)
    n = int(seconds / 1.5) + 4  # ~1.5 s per utterance + gap; assembly cycles if short
    items, prev = [], ""
    while len(items) < n:
        if rng.random() < 0.25:
            text, kind, hard = confusables[rng.integers(len(confusables))], "confusable", True
        else:
            text, kind, hard = texts.random_sentence(rng, phrase), "speech", False
        if texts.contains_phrase(f"{prev} {text}", phrase):
            continue
        it = _Item(kind, text, 0, hard, speaker=speakers[int(rng.integers(len(speakers)))])
        items.append(_level_params(rng, it))
        prev = text
    return items


def _make_jobs(rng: np.random.Generator, items: list[_Item]) -> list[tuple[str, int, int, list[_Item]]]:
    """Group items by speaker into espeak calls of <= BATCH_TEXTS, each with its own rate/pitch."""
    by_speaker: dict[str, list[_Item]] = {}
    for it in items:
        by_speaker.setdefault(it.speaker, []).append(it)
    jobs = []
    for spk in sorted(by_speaker):
        group = by_speaker[spk]
        for i in range(0, len(group), BATCH_TEXTS):
            jobs.append((spk, int(rng.integers(*RATE_WPM)), int(rng.integers(*PITCH)),
                         group[i:i + BATCH_TEXTS]))
    return jobs


# ------------------------------------------------------------------------------------ assembly
def _meta(it: _Item, duration_s: float) -> dict:
    return {"label": it.label, "speaker": it.speaker, "source": "espeak-ng", "text": it.text,
            "hard_negative": it.hard, "kind": it.kind}


def _place(it: _Item, clip_samples: int, sr: int, rng: np.random.Generator):
    """Put the utterance into a clip of ``clip_samples``: ``(float32 (S,), meta)`` or ``None``."""
    speech = it.audio
    if speech is None or speech.size == 0:
        return None
    speech = speech * (10 ** (it.peak_dbfs / 20) / (np.abs(speech).max() + 1e-9))
    clip = np.zeros(clip_samples, np.float32)
    n = speech.size
    if it.place == "end":  # crop keeps the end: the clip stops just after the phrase's first part
        tail = int(it.u_offset * 0.15 * sr)
        keep = min(n, clip_samples - tail)
        clip[clip_samples - tail - keep: clip_samples - tail] = speech[n - keep:]
    elif it.place == "start":  # the clip starts just before the phrase's last part
        head = int(it.u_offset * 0.15 * sr)
        keep = min(n, clip_samples - head)
        clip[head:head + keep] = speech[:keep]
    elif n > clip_samples:
        if it.label == 1:
            return None  # a cropped positive would be mislabelled
        start = int(it.u_offset * (n - clip_samples))
        clip[:] = speech[start:start + clip_samples]
    else:
        start = int(it.u_offset * (clip_samples - n))
        clip[start:start + n] = speech
    clip += noise.coloured_noise(rng, clip_samples, "white", it.floor_dbfs)
    return np.clip(clip, -1, 1), _meta(it, clip_samples / sr)


def _assemble_stream(items: list[_Item], seconds: float, sr: int, rng: np.random.Generator):
    """Concatenate utterances with pauses over a pink/brown noise floor: ``(float32 (N,), meta)``."""
    total = int(round(seconds * sr))
    out = noise.coloured_noise(rng, total, ["pink", "brown"][int(rng.integers(2))],
                               float(rng.uniform(-55, -40)))
    pos, i, spoken = int(rng.uniform(*STREAM_GAP_S) * sr), 0, []
    usable = [it for it in items if it.audio is not None and it.audio.size]
    while pos < total and usable:
        it = usable[i % len(usable)]
        seg = it.audio * (10 ** (it.peak_dbfs / 20) / (np.abs(it.audio).max() + 1e-9))
        n = min(seg.size, total - pos)
        out[pos:pos + n] += seg[:n]
        spoken.append(it.text)
        pos += n + int(rng.uniform(*STREAM_GAP_S) * sr)
        i += 1
    speakers = sorted({it.speaker for it in usable})
    meta = {"label": 0, "speaker": ",".join(speakers), "source": "espeak-ng", "hard_negative": False,
            "text": " | ".join(spoken), "kind": "stream"}
    return np.clip(out, -1, 1), meta


def _background(rng: np.random.Generator, n: int, clip_samples: int,
                speech: list[np.ndarray]) -> list[tuple[str, np.ndarray, dict]]:
    speech = [s for s in speech if s is not None and s.size]
    rows = []
    for i in range(n):
        kind = noise.NOISE_KINDS[i % len(noise.NOISE_KINDS)]
        level = float(rng.uniform(-35, -15))
        if kind == "babble" and speech:
            audio = noise.babble(rng, clip_samples, speech, int(rng.integers(4, 8)), level)
        else:
            kind = "white" if kind == "babble" else kind
            audio = noise.coloured_noise(rng, clip_samples, kind, level)
        meta = {"label": 0, "speaker": kind, "source": f"synth-noise:{kind}", "hard_negative": False,
                "text": f"<{kind} noise>", "kind": f"noise:{kind}"}
        rows.append((f"background-{i:06d}", np.clip(audio, -1, 1), meta))
    return rows


def main(argv=None) -> None:
    """``python -m wakeword_dist.data.synth OUT_ROOT [--size demo] [--seed 0] ...``"""
    import argparse

    p = argparse.ArgumentParser(description="Synthesize a wake-word dataset with espeak-ng")
    p.add_argument("out_root")
    p.add_argument("--size", default="demo", choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wake-phrase", default="hey nova")
    p.add_argument("--format", default=DEFAULT_AUDIO_FORMAT, choices=("wav", "flac", "npy"))
    a = p.parse_args(argv)
    synthesize(a.out_root, wake_phrase=a.wake_phrase, seed=a.seed, size=a.size,
               audio_format=a.format)


if __name__ == "__main__":
    main()
