"""Synthesize a complete wake-word dataset with every offline TTS engine (no downloads, 2 CPU cores).

Splits written under ``out_root`` (see shards/README.md)::

    train/ val/ test/   1-s clips: positives (the wake phrase), hard negatives (confusable
                        phrases, the phrase cut short, a window of a sentence around the phrase
                        that lacks the full phrase), generic negative speech, silence (the
                        room's noise only)
    stream/             >= 30-s continuous negative audio (speech + noise floor) for FA/h; each
                        stream is spoken by ONE engine; the first half (by key) by val speakers,
                        the second half by test speakers, engines interleaved in key order
    background/         noise bank for augmentation (every kind of ``noise.NOISE_KINDS``)

Speech comes from the engines in ``engines`` (espeak-ng, flite, festival, festival-l2; ``data/tts``), each voice
perturbed (tempo, pitch, formant warp; ``data/perturb``) into ``speakers_per_voice`` derived
speakers; voices sharing a timbre or talker share one split (``tts/speakers``). Engines share
each split's clips equally. Every random choice is drawn up front from one ``numpy`` generator,
so the output depends only on (seed, sizes, phrase, engine builds), never on thread timing: the
same seed gives the same ``content_hash``.
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
from wakeword_dist.data import noise, rooms, texts
from wakeword_dist.data.audio_io import to_int16
from wakeword_dist.data.perturb import Perturbation, jitter, perturb
from wakeword_dist.data.shard_writer import ShardWriter
from wakeword_dist.data.tts import ENGINE_NAMES, Prosody, get_engine
from wakeword_dist.data.tts.base import to_rate
from wakeword_dist.data.tts.speakers import Speaker, assign_voices, derive_speakers

log = logging.getLogger(__name__)

DEFAULT_AUDIO_FORMAT = "wav"  # fastest to decode; see shards/README.md for the measurements
# Sizes in clips (1 clip = clip_seconds of audio) and streams. max_voices caps an engine's voices
# (espeak-ng has 320); speakers_per_voice = derived speakers per engine voice (#0 unperturbed).
PRESETS = {
    "tiny": dict(train_clips=160, val_clips=40, test_clips=40, background_clips=24,
                 stream_count=8, stream_seconds=30.0, samples_per_shard=64, rir_count=16,
                 max_voices={"espeak-ng": 6, "flite": 3, "festival": 3, "festival-l2": 3},
                 speakers_per_voice={"espeak-ng": 2, "flite": 2, "festival": 2, "festival-l2": 2}),
    "demo": dict(train_clips=6000, val_clips=800, test_clips=800, background_clips=270,
                 stream_count=66, stream_seconds=60.0, samples_per_shard=250, rir_count=200,
                 max_voices={"espeak-ng": 48},
                 speakers_per_voice={"espeak-ng": 3, "flite": 8, "festival": 12, "festival-l2": 4}),
    "full": dict(train_clips=17000, val_clips=2000, test_clips=2000, background_clips=540,
                 stream_count=138, stream_seconds=60.0, samples_per_shard=500, rir_count=400,
                 max_voices={"espeak-ng": 96},
                 speakers_per_voice={"espeak-ng": 4, "flite": 16, "festival": 24, "festival-l2": 8}),
}
# Shares of every clip split; the rest is generic negative speech. "silence": the speaker's room
# with nothing said (its noise floor, sometimes a hum, fan, clicks, music or a distant TV). Between
# utterances a stream's 1-s windows hear only that; students that had never heard a clip without
# speech gave those windows 0.65-0.67 and so set θ on val for 2 FA/h above most positives
# (docs/results.md, "No speech").
MIX = {"positive": 0.30, "hard": 0.35, "silence": 0.08}
HARD_MIX = {"confusable": 0.5, "partial": 0.2, "fragment": 0.3}  # of the hard negatives
SILENCE_EXTRA_KINDS = ("hum", "fan", "clicks", "music", "tv")  # noise.NOISE_KINDS beyond the floor colours
SILENCE_EXTRA = {"prob": 0.5, "dbfs": (-55.0, -35.0)}  # a second noise over the floor: how often, how loud
PROSODY_RATE = (0.9, 1.25)  # engine speaking-rate factor per batch (espeak: 158-219 wpm)
PROSODY_PITCH = (0.8, 1.25)  # engine mean-f0 factor per batch (where the voice honours it)
BATCH_TEXTS = {"espeak-ng": 24, "flite": 24, "festival": 128, "festival-l2": 128}  # texts per engine process
# (festival: ~0.2 s CPU of start-up per process against 6-37 ms per utterance)
POSITIVE_MAX_S = 0.95  # a positive longer than this (x clip_seconds) after perturbation is sped
MAX_FIT_TEMPO = 1.6  # up to fit, at most to this tempo; beyond, it is dropped
PEAK_DBFS = (-18.0, -1.0)  # per-clip speech peak level: light level variation
# Every clip sits on a noise floor (no clip is digital silence) of the colours and levels the
# streams have: a detector trained only on faint white floors fired on every second of the
# streams with a loud pink floor (-41 dB), speech or not (docs/results.md, "Where the false
# accepts came from").
FLOOR_DBFS = (-70.0, -40.0)  # noise floor RMS
FLOOR_COLOURS = ("white", "pink", "brown")
WINDOW_PAD = 1024  # input samples perturbed beyond a clip's crop on each side (2 STFT windows)
STREAM_GAP_S = (0.3, 2.5)  # pause between utterances in a stream, s
# Share of stream utterances that are curated near misses ("say nova", "hey novak"). FA/h is
# measured on everyday speech, as wake-word benchmarks do; near misses are judged apart, on the
# test split's hard-negative clips at the same θ (report.json ``hard_negative_far``). Mixed into
# the streams they decided FA/h alone: at 0.25 (a quarter of everything said) and still at 0.05,
# every top false accept was one ("pay nova", "say nova"), many of them the phrase with its onset
# changed, which a sliding 1-s window that cuts the onset off cannot tell from the phrase
# (docs/results.md). ``synthesize(stream_near_miss_rate=...)`` puts them back for a harsher test.
STREAM_NEAR_MISS_RATE = 0.0
STREAM_S_PER_UTTERANCE = 2.5  # stream s per planned utterance (~1 s of speech + ~1.4 s of pause; measured)


@dataclass
class _Item:
    """One planned clip (or stream utterance): what to say, by whom, and how to place it."""
    kind: str
    text: str
    label: int
    hard: bool
    speaker: Speaker | None = None
    place: str = "random"  # random | end | start  (where the speech sits in the clip)
    in_clip: bool = True  # a 1-s clip (only its window is perturbed), not stream/babble speech
    perturb: Perturbation = Perturbation()
    u_offset: float = 0.0
    peak_dbfs: float = -6.0
    floor_dbfs: float = -60.0
    prosody: Prosody = Prosody()
    place_seed: tuple = ()  # seed of the clip's own noise-floor generator
    audio: np.ndarray | None = field(default=None, repr=False)  # float32 speech at the shard rate
    clip: tuple | None = field(default=None, repr=False)  # in_clip items: (int16 (S,), meta) or None


def make_tiny_dataset(out_root: str | os.PathLike, seed: int = 0) -> dict:
    """Build the tiny test dataset (240 clips, 8 x 30-s streams, all engines) in a few seconds."""
    return synthesize(out_root, size="tiny", seed=seed, progress=False)


def synthesize(out_root: str | os.PathLike, *, wake_phrase: str = "hey nova", seed: int = 0,
               size: str = "demo", engines: list[str] | tuple[str, ...] = ENGINE_NAMES,
               speakers_per_voice: int | None = None, clip_seconds: float = 1.0,
               train_clips: int | None = None, val_clips: int | None = None,
               test_clips: int | None = None, background_clips: int | None = None,
               stream_count: int | None = None, stream_seconds: float | None = None,
               samples_per_shard: int | None = None, audio_format: str = DEFAULT_AUDIO_FORMAT,
               sample_rate: int = 16000, workers: int | None = None,
               stream_near_miss_rate: float = STREAM_NEAR_MISS_RATE, progress: bool = True) -> dict:
    """Synthesize train/val/test/stream/background shards under ``out_root``.

    Args:
        wake_phrase: the positive class; its label name is the phrase with underscores.
        size: preset (``"tiny"``, ``"demo"`` or ``"full"``); explicit counts override its own.
        engines: TTS engines to mix (each gets an equal share of every split and of the streams).
        speakers_per_voice: derived speakers per engine voice, all engines (default: the preset's).
        clip_seconds: length of every train/val/test/background clip, s.
        stream_seconds: length of each stream sample, s (>= 30).
        stream_near_miss_rate: share of stream utterances that are curated near misses.
        audio_format: ``"wav"`` (default), ``"flac"`` or ``"npy"``.
        workers: parallel synthesis threads (default: CPU count + 1).

    Returns a report: per split ``num_samples``, ``total_seconds``, ``content_hash``; ``seconds``
    taken, also ``engine_seconds`` per engine (``wall``: its batches' time summed over threads;
    ``python_cpu``: resampling, perturbation and placement CPU in this process);
    ``dropped`` (positives too long for a clip, not written).
    Each split directory appears only when complete (written to a temp dir, then renamed).
    """
    t0 = time.perf_counter()
    if size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
    cfg = dict(PRESETS[size])
    overrides = dict(train_clips=train_clips, val_clips=val_clips, test_clips=test_clips,
                     background_clips=background_clips, stream_count=stream_count,
                     stream_seconds=stream_seconds, samples_per_shard=samples_per_shard)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    engines = list(dict.fromkeys(engines))
    if not engines or any(e not in ENGINE_NAMES for e in engines):
        raise ValueError(f"engines must be a non-empty subset of {list(ENGINE_NAMES)}, got {engines}")
    if cfg["stream_seconds"] < 30:
        raise ValueError("stream_seconds must be >= 30 (the FA/h evaluation assumes long audio)")
    if cfg["stream_count"] < 2 * len(engines):
        raise ValueError(f"stream_count must be >= {2 * len(engines)} (every engine in the val "
                         f"and the test half of the streams), got {cfg['stream_count']}")
    spv = {e: speakers_per_voice or cfg["speakers_per_voice"].get(e, 1) for e in engines}
    for e in engines:  # fail at once, with the apt package, before any work
        get_engine(e).binary_path()
        get_engine(e).voices()
    label_name = texts.phrase_label_name(wake_phrase)
    label_names = ["negative", label_name]
    clip_samples = int(round(clip_seconds * sample_rate))
    rng = np.random.default_rng(seed)

    # ---- plan: every random decision, in a fixed order -------------------------------------
    voices = assign_voices(rng, engines, cfg["max_voices"])
    speakers = derive_speakers(rng, voices, spv)
    for split in ("train", "val", "test"):
        if not any(speakers[split].values()):
            raise ValueError(f"no voices left for the {split} split")
    plans = {s: _plan_clips(rng, cfg[f"{s}_clips"], speakers[s], wake_phrase)
             for s in ("train", "val", "test")}
    stream_rng = np.random.default_rng([seed, 5])  # streams draw apart: changing them leaves every clip as it was
    stream_plans = _plan_streams(stream_rng, cfg["stream_count"], cfg["stream_seconds"], speakers, engines,
                                 wake_phrase, stream_near_miss_rate)
    train_speakers = [spk for e in engines for spk in speakers["train"][e]]
    babble_pool = [_Item("babble", texts.random_sentence(rng, wake_phrase), 0, False,
                         speaker=train_speakers[i % len(train_speakers)], in_clip=False)
                   for i in range(min(48, max(8, cfg["background_clips"] // 2)))]
    clip_items = [it for s in plans.values() for it in s] + babble_pool
    stream_items = [it for _, p in stream_plans for it in p]
    for items, item_rng in ((clip_items, rng), (stream_items, stream_rng)):
        for it in items:
            it.perturb = jitter(item_rng, it.speaker.perturb)
    silent = [it for it in clip_items if it.kind == "silence"]
    for it in silent:
        it.perturb = Perturbation()  # nothing is spoken, so nothing is perturbed (as its json says)
    spoken = [it for it in clip_items if it.kind != "silence"]
    jobs = _make_jobs(rng, spoken) + _make_jobs(stream_rng, stream_items)

    for split_no, split in enumerate(("train", "val", "test")):
        for i, it in enumerate(plans[split]):
            it.place_seed = (seed, split_no, i)

    # ---- speak, perturb, place: engine batches in parallel threads (the engines run as
    # subprocesses; numpy/scipy release the GIL in their FFTs and array loops). Every result
    # depends on the plan only, never on which thread ran first.
    workers = workers or (os.cpu_count() or 2) + 1
    engine_seconds = {e: {"wall": 0.0, "python_cpu": 0.0} for e in engines}
    with ThreadPoolExecutor(workers) as pool:
        done = pool.map(lambda job: _run_job(job, sample_rate, clip_samples), jobs)
        for (engine, _, _, _), (wall, cpu) in tqdm(zip(jobs, done), total=len(jobs), desc="tts",
                                                   disable=not progress, unit="batch"):
            engine_seconds[engine]["wall"] += wall
            engine_seconds[engine]["python_cpu"] += cpu
        for it in silent:
            it.clip = _silence(it, clip_samples, sample_rate, np.random.default_rng(list(it.place_seed)))
        streams = list(pool.map(
            lambda i: _assemble_stream(stream_plans[i][1], cfg["stream_seconds"], sample_rate,
                                       np.random.default_rng([seed, 7, i]), stream_plans[i][0]),
            range(len(stream_plans))))

    # ---- assemble and write ------------------------------------------------------------------
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    generator = {"name": "wakeword-dist synth", "size": size, "wake_phrase": wake_phrase,
                 "clip_seconds": clip_seconds, "speakers_per_voice": spv}
    report = {"out_root": str(out_root), "splits": {}, "dropped": 0}
    split_items: dict[str, list[tuple[str, np.ndarray, dict]]] = {}
    for split in ("train", "val", "test"):
        rows = [it.clip for it in plans[split] if it.clip is not None]
        dropped = len(plans[split]) - len(rows)
        report["dropped"] += dropped
        if dropped:
            log.warning("%s: dropped %d positives longer than %.2f s", split, dropped, clip_seconds)
        split_items[split] = [(f"{split}-{i:06d}", a, m) for i, (a, m) in enumerate(rows)]
    split_items["stream"] = [(f"stream-{i:06d}", a, m) for i, (a, m) in enumerate(streams)]
    split_items["background"] = _background(np.random.default_rng([seed, 11]), cfg["background_clips"],
                                            clip_samples, sample_rate, [it.audio for it in babble_pool])

    tmp_dirs = {s: out_root / f".{s}.tmp-{os.getpid()}" for s in split_items}
    try:
        for split, rows in split_items.items():
            shutil.rmtree(tmp_dirs[split], ignore_errors=True)
            used = _engines_used(rows)
            extra = {"generator": {**generator, "engines": {
                e: {"version": get_engine(e).version(), "voices": used[e]} for e in used}},
                "split": split, "speakers": sorted({m["speaker"] for _, _, m in rows}),
                "voice_groups": sorted({m["voice_group"] for _, _, m in rows if "voice_group" in m})}
            source = "synth:" + "+".join(engines) if split != "background" else "synth-noise"
            with ShardWriter(tmp_dirs[split], cfg["samples_per_shard"], audio_format, sample_rate,
                             label_names=label_names, source=source, seed=seed, extra=extra) as w:
                for key, audio, meta in tqdm(rows, desc=f"write {split}", disable=not progress,
                                             unit="clip", leave=False):
                    w.write(key, audio, {"label_name": label_names[meta["label"]], **meta})
                index = w.close()
            report["splits"][split] = {k: index[k] for k in
                                       ("num_samples", "total_seconds", "content_hash")}
            report["splits"][split]["engines"] = _engine_counts(rows)
        # The room bank (pyroomacoustics shoeboxes), the augmenter's default reverb source.
        tmp_dirs[rooms.SPLIT_NAME] = out_root / f".{rooms.SPLIT_NAME}.tmp-{os.getpid()}"
        shutil.rmtree(tmp_dirs[rooms.SPLIT_NAME], ignore_errors=True)
        rir_index = rooms.write_rir_split(tmp_dirs[rooms.SPLIT_NAME], cfg["rir_count"], sample_rate=sample_rate,
                                          seed=seed, audio_format=audio_format)
        report["splits"][rooms.SPLIT_NAME] = {k: rir_index[k] for k in ("num_samples", "total_seconds",
                                                                       "content_hash")}
        for split, tmp in tmp_dirs.items():
            replace_dir(tmp, out_root / split)
    finally:
        for tmp in tmp_dirs.values():
            shutil.rmtree(tmp, ignore_errors=True)
    report["engine_seconds"] = {e: {k: round(v, 2) for k, v in s.items()} for e, s in engine_seconds.items()}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if progress:
        print(f"synthesized {sum(s['num_samples'] for s in report['splits'].values())} samples "
              f"in {report['seconds']} s -> {out_root}")
    return report


# ------------------------------------------------------------------------------------ planning
def _level_params(rng: np.random.Generator, it: _Item) -> _Item:
    it.u_offset = float(rng.random())
    it.peak_dbfs = float(rng.uniform(*PEAK_DBFS))
    it.floor_dbfs = float(rng.uniform(*FLOOR_DBFS))
    return it


def _plan_clips(rng: np.random.Generator, n: int, speakers: dict[str, list[Speaker]],
                phrase: str) -> list[_Item]:
    """``n`` clips in the MIX proportions, shuffled; engine = item index mod #engines, then the
    engine's speakers in turn (every engine gets an equal share of every kind; a "silence" clip
    belongs to a speaker as a recording without speech does, so it never straddles splits)."""
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
    for _ in range(round(MIX["silence"] * n)):
        items.append(_Item("silence", "<silence>", 0, False))
    for _ in range(n - len(items)):
        items.append(_Item("speech", texts.random_sentence(rng, phrase), 0, False))
    items = [items[i] for i in rng.permutation(len(items))]  # shuffled: shards are mixed
    engines = [e for e, spk in speakers.items() if spk]
    turn = {e: 0 for e in engines}
    for i, it in enumerate(items):
        e = engines[i % len(engines)]
        it.speaker = speakers[e][turn[e] % len(speakers[e])]
        turn[e] += 1
        _level_params(rng, it)
    return items


def _plan_streams(rng: np.random.Generator, count: int, seconds: float,
                  speakers: dict[str, dict[str, list[Speaker]]], engines: list[str],
                  phrase: str, near_miss_rate: float) -> list[tuple[str, list[_Item]]]:
    """``[(half, utterances)]`` per stream in key order: the first ``count // 2`` from val
    speakers, the rest from test speakers; in each half engine = position mod #engines."""
    out = []
    for i in range(count):
        half = "val" if i < count // 2 else "test"
        j = i if half == "val" else i - count // 2
        usable = [e for e in engines if speakers[half][e]]
        e = usable[j % len(usable)]
        out.append((half, _plan_stream(rng, seconds, speakers[half][e], phrase, near_miss_rate)))
    return out


def _plan_stream(rng: np.random.Generator, seconds: float, speakers: list[Speaker],
                 phrase: str, near_miss_rate: float) -> list[_Item]:
    """Utterances for one stream: everyday speech, with curated near misses at ``near_miss_rate``;
    never the full phrase, also not across utterance boundaries ("hey" + "nova..." is left out)."""
    confusables = texts.confusable_phrases(phrase)
    n = int(np.ceil(seconds / STREAM_S_PER_UTTERANCE)) + 2  # assembly cycles if short
    items, prev = [], ""
    while len(items) < n:
        if rng.random() < near_miss_rate:
            text, kind, hard = confusables[rng.integers(len(confusables))], "confusable", True
        else:
            text, kind, hard = texts.random_sentence(rng, phrase), "speech", False
        if texts.contains_phrase(f"{prev} {text}", phrase):
            continue
        it = _Item(kind, text, 0, hard, speaker=speakers[int(rng.integers(len(speakers)))],
                   in_clip=False)
        items.append(_level_params(rng, it))
        prev = text
    return items


def _make_jobs(rng: np.random.Generator, items: list[_Item]) -> list[tuple[str, str, Prosody, list[_Item]]]:
    """Group items by engine voice into batches of <= BATCH_TEXTS[engine], each with its own
    engine prosody: ``[(engine, voice, prosody, items)]`` (the derived speakers of one voice
    share its batches: they differ only after synthesis)."""
    by_voice: dict[tuple[str, str], list[_Item]] = {}
    for it in items:
        by_voice.setdefault((it.speaker.engine, it.speaker.voice), []).append(it)
    jobs = []
    for engine, voice in sorted(by_voice):
        group, size = by_voice[engine, voice], BATCH_TEXTS[engine]
        for i in range(0, len(group), size):
            prosody = get_engine(engine).applied(voice, Prosody(float(rng.uniform(*PROSODY_RATE)),
                                                                float(rng.uniform(*PROSODY_PITCH))))
            jobs.append((engine, voice, prosody, group[i:i + size]))
    return jobs


def _run_job(job, sample_rate: int, clip_samples: int) -> float:
    """Speak one batch, resample to ``sample_rate``, perturb (and place) each utterance; fills
    ``it.audio`` / ``it.clip``. Returns ``(wall s, this thread's CPU s)`` for the per-engine
    report (the engine subprocesses' CPU is not in the second figure)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    engine, voice, prosody, items = job
    clips, native_sr = get_engine(engine).speak_batch([it.text for it in items], voice, prosody)
    for it, clip in zip(items, clips):
        it.prosody = prosody
        speech = to_rate(clip, native_sr, sample_rate)
        if it.label == 1 and speech.size:  # a positive must fit its clip: speed it up to fit
            need = speech.size / (POSITIVE_MAX_S * clip_samples)
            if need > it.perturb.tempo and need <= MAX_FIT_TEMPO:
                it.perturb = Perturbation(need, it.perturb.pitch_semitones, it.perturb.warp)
        if it.perturb.is_identity or speech.size == 0:
            it.audio = speech
        elif it.in_clip:
            it.audio = _perturb_clip_window(it, speech, sample_rate, clip_samples)
        else:
            it.audio = perturb(speech, sample_rate, it.perturb)
        if it.in_clip:  # placed here (in parallel); only the int16 clip is kept
            it.clip = _place(it, clip_samples, sample_rate, np.random.default_rng(list(it.place_seed)))
            it.audio = None
    return time.perf_counter() - t0, time.thread_time() - c0


def _perturb_clip_window(it: _Item, speech: np.ndarray, sr: int, clip_samples: int) -> np.ndarray:
    """Perturb only the part of a long utterance that its clip keeps (the crop ``_place`` would
    take from the fully perturbed utterance, plus PAD input samples each side so the STFT edges
    stay outside): the same clip for a fraction of the work. Short utterances: all of it."""
    tempo, n = it.perturb.tempo, speech.size
    n_out = int(round(n / tempo))
    if n_out <= clip_samples + 2 * WINDOW_PAD:
        return perturb(speech, sr, it.perturb)
    if it.place == "end":
        first_out = n_out - clip_samples
    elif it.place == "start":
        first_out = 0
    else:
        first_out = int(it.u_offset * (n_out - clip_samples))
    lo = max(0, int(first_out * tempo) - WINDOW_PAD)
    hi = min(n, int(np.ceil((first_out + clip_samples) * tempo)) + WINDOW_PAD)
    y = perturb(speech[lo:hi], sr, it.perturb)
    start = int(round(first_out - lo / tempo))
    out = y[start:start + clip_samples]
    return np.pad(out, (0, clip_samples - out.size))


# ------------------------------------------------------------------------------------ assembly
def _meta(it: _Item) -> dict:
    spk = it.speaker
    return {"label": it.label, "speaker": spk.name, "source": spk.engine, "engine": spk.engine,
            "voice": spk.voice, "voice_group": spk.group, "perturb": it.perturb.as_dict(),
            "prosody": it.prosody.as_dict(), "text": it.text, "hard_negative": it.hard,
            "kind": it.kind}


def _place(it: _Item, clip_samples: int, sr: int, rng: np.random.Generator):
    """Put the utterance into a clip of ``clip_samples``: ``(int16 (S,), meta)`` or ``None``
    (int16 as the shard writer would round it: the same bytes, half the memory)."""
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
    clip += _floor(it, clip_samples, rng)
    return to_int16(np.clip(clip, -1, 1)), _meta(it)


def _floor(it: _Item, clip_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The clip's noise floor: a colour of ``FLOOR_COLOURS`` at ``it.floor_dbfs``, float32 (S,)."""
    colour = FLOOR_COLOURS[int(rng.integers(len(FLOOR_COLOURS)))]
    return noise.coloured_noise(rng, clip_samples, colour, it.floor_dbfs)


def _silence(it: _Item, clip_samples: int, sr: int, rng: np.random.Generator):
    """A clip of the speaker's room with nothing said: the noise floor ``_place`` puts under speech, and
    with ``SILENCE_EXTRA["prob"]`` one more noise of ``SILENCE_EXTRA_KINDS``: ``(int16 (S,), meta)``."""
    clip = _floor(it, clip_samples, rng)
    if rng.random() < SILENCE_EXTRA["prob"]:
        kind = SILENCE_EXTRA_KINDS[int(rng.integers(len(SILENCE_EXTRA_KINDS)))]
        clip += noise.noise_clip(rng, kind, clip_samples, float(rng.uniform(*SILENCE_EXTRA["dbfs"])),
                                 sample_rate=sr)
        it.text = f"<silence + {kind}>"
    return to_int16(np.clip(clip, -1, 1)), _meta(it)


def _assemble_stream(items: list[_Item], seconds: float, sr: int, rng: np.random.Generator,
                     half: str):
    """Concatenate utterances with pauses over a pink/brown noise floor: ``(int16 (N,), meta)``."""
    total = int(round(seconds * sr))
    out = noise.coloured_noise(rng, total, ["pink", "brown"][int(rng.integers(2))],
                               float(rng.uniform(-55, -40)))
    pos, i, spoken, segments = int(rng.uniform(*STREAM_GAP_S) * sr), 0, [], []
    usable = [it for it in items if it.audio is not None and it.audio.size]
    while pos < total and usable:
        it = usable[i % len(usable)]
        seg = it.audio * (10 ** (it.peak_dbfs / 20) / (np.abs(it.audio).max() + 1e-9))
        n = min(seg.size, total - pos)
        out[pos:pos + n] += seg[:n]
        spoken.append(it.text)
        segments.append([round(pos / sr, 3), round((pos + n) / sr, 3), it.kind, it.text])
        pos += n + int(rng.uniform(*STREAM_GAP_S) * sr)
        i += 1
    speakers = sorted({it.speaker.name for it in usable})
    engine = items[0].speaker.engine
    meta = {"label": 0, "speaker": ",".join(speakers), "source": engine, "engine": engine,
            "voice": ",".join(sorted({it.speaker.voice for it in usable})),
            "voice_group": ",".join(sorted({it.speaker.group for it in usable})),
            "speaker_split": half, "hard_negative": False, "text": " | ".join(spoken),
            "kind": "stream", "segments": segments}  # [start s, end s, kind, text]: what a false accept heard
    return to_int16(np.clip(out, -1, 1)), meta


def _background(rng: np.random.Generator, n: int, clip_samples: int, sample_rate: int,
                speech: list[np.ndarray]) -> list[tuple[str, np.ndarray, dict]]:
    """``n`` noise clips cycling through ``noise.NOISE_KINDS`` (babble from train speakers)."""
    speech = [s for s in speech if s is not None and s.size]
    rows = []
    for i in range(n):
        kind = noise.NOISE_KINDS[i % len(noise.NOISE_KINDS)]
        level = float(rng.uniform(-35, -15))
        if kind == "babble" and not speech:
            kind = "white"
        audio = noise.noise_clip(rng, kind, clip_samples, level, speech, sample_rate=sample_rate)
        meta = {"label": 0, "speaker": kind, "source": f"synth-noise:{kind}", "hard_negative": False,
                "text": f"<{kind} noise>", "kind": f"noise:{kind}"}
        rows.append((f"background-{i:06d}", np.clip(audio, -1, 1), meta))
    return rows


def _engines_used(rows) -> dict[str, list[str]]:
    """engine -> sorted voices used in these rows (streams list several voices per row)."""
    used: dict[str, set] = {}
    for _, _, m in rows:
        if "engine" in m:
            used.setdefault(m["engine"], set()).update(m["voice"].split(","))
    return {e: sorted(v) for e, v in sorted(used.items())}


def _engine_counts(rows) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, _, m in rows:
        if "engine" in m:
            counts[m["engine"]] = counts.get(m["engine"], 0) + 1
    return dict(sorted(counts.items()))


def main(argv=None) -> None:
    """``python -m wakeword_dist.data.synth OUT_ROOT [--size demo] [--seed 0] ...``"""
    import argparse
    import json

    p = argparse.ArgumentParser(description="Synthesize a wake-word dataset with offline TTS engines")
    p.add_argument("out_root")
    p.add_argument("--size", default="demo", choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wake-phrase", default="hey nova")
    p.add_argument("--engines", default=",".join(ENGINE_NAMES),
                   help=f"comma-separated subset of {','.join(ENGINE_NAMES)}")
    p.add_argument("--speakers-per-voice", type=int, default=None)
    p.add_argument("--format", default=DEFAULT_AUDIO_FORMAT, choices=("wav", "flac", "npy"))
    a = p.parse_args(argv)
    report = synthesize(a.out_root, wake_phrase=a.wake_phrase, seed=a.seed, size=a.size,
                        engines=a.engines.split(","), speakers_per_voice=a.speakers_per_voice,
                        audio_format=a.format)
    print(json.dumps({k: report[k] for k in ("splits", "engine_seconds", "dropped", "seconds")},
                     indent=1))


if __name__ == "__main__":
    main()
