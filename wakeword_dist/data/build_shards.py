"""Import a folder of real recordings into train/val/test/stream/background shards.

Two layouts (``layout="auto"`` picks by looking at ``src_dir``):

- ``folder``: ``positive/ negative/ hard_negative/ background/`` and optionally ``stream/``
  (files anywhere below each; any format soundfile reads; any rate / channel count).
- ``speech_commands``: Google Speech Commands: one folder per word, ``_background_noise_/``,
  ``validation_list.txt``, ``testing_list.txt``. Folders named in ``wake_words`` are positives,
  ``hard_negative_words`` are hard negatives, every other word is a negative.

Speakers never straddle splits: Speech Commands uses its own lists; the folder layout takes the
speaker as the file-name prefix before ``_nohash_`` (the SC convention) or else the file stem, and
assigns it by a stable hash of that id (adding files never moves existing speakers).

Clips become ``clip_seconds`` long: longer recordings keep their loudest window, shorter ones are
zero-padded at a seeded offset. Background files are cut into clip-length pieces. The ``stream``
split is the ``stream/`` folder's long files (>= 30 s) or, without one, the test negatives
concatenated into ``stream_seconds`` pieces.

Unreadable, empty and silent files are skipped and reported (returned and printed). Everything is
written under a temporary directory and moved into place at the end: a failed run leaves no shard
and no index behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wakeword_dist.atomic import replace_dir
from wakeword_dist.data.audio_io import read_audio_file
from wakeword_dist.data.shard_writer import ShardWriter
from wakeword_dist.data.sources import is_url, join_dir

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".opus"}
FOLDER_KINDS = ("positive", "negative", "hard_negative", "background", "stream")
SILENCE_PEAK = 10 ** (-60 / 20)  # peak below -60 dBFS = silent file
MIN_STREAM_SECONDS = 30.0


def build_shards(src_dir: str | os.PathLike, out_root: str | os.PathLike, *, layout: str = "auto",
                 wake_words: list[str] | tuple[str, ...] = (),
                 hard_negative_words: list[str] | tuple[str, ...] = (),
                 clip_seconds: float = 1.0, sample_rate: int = 16000, audio_format: str = "wav",
                 seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 samples_per_shard: int = 1000, stream_seconds: float = 60.0,
                 workers: int = 2, progress: bool = True) -> dict:
    """Build shards from ``src_dir`` into ``out_root/{train,val,test,stream,background}``.

    Args:
        wake_words: Speech Commands folders that are positives (required for that layout); for
            the folder layout the first one names the positive class (default ``"positive"``).
        val_fraction, test_fraction: share of *speakers* (folder layout; SC uses its lists).
        stream_seconds: length of each stream piece built from test negatives, s (>= 30).
        workers: threads reading / resampling files.

    Returns ``{"layout", "label_names", "splits": {split: {num_samples, total_seconds,
    content_hash, label_counts}}, "skipped": [{"path", "reason"}], "seconds"}``.
    """
    t0 = time.perf_counter()
    # out_root: a folder (splits built aside, then swapped in) or a pipe: / URL destination
    # (ShardWriter streams each shard; a split's index.json goes last, so it marks it complete)
    remote = is_url(out_root)
    src, out_root = Path(src_dir), (os.fspath(out_root) if remote else Path(out_root))
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source directory not found")
    if stream_seconds < MIN_STREAM_SECONDS:
        raise ValueError(f"stream_seconds must be >= {MIN_STREAM_SECONDS}")
    layout = detect_layout(src) if layout == "auto" else layout
    if layout == "speech_commands":
        if not wake_words:
            raise ValueError("speech_commands layout needs wake_words (e.g. ['marvin'])")
        items = _plan_speech_commands(src, wake_words, hard_negative_words)
        positive_name = "+".join(wake_words)
    elif layout == "folder":
        items = _plan_folder(src, val_fraction, test_fraction)
        positive_name = wake_words[0] if wake_words else "positive"
    else:
        raise ValueError(f"layout must be auto, folder or speech_commands, got {layout!r}")
    label_names = ["negative", positive_name]
    clip = int(round(clip_seconds * sample_rate))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))  # shards get a mix of words / speakers
    items = [items[i] for i in order]

    tmp = None if remote else out_root / f".build-{os.getpid()}"
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    skipped: list[dict] = []
    extra = {"generator": {"name": "build_shards", "layout": layout, "src": str(src),
                           "clip_seconds": clip_seconds}}

    def writer(split):
        return ShardWriter(join_dir(out_root, split) if remote else tmp / split, samples_per_shard, audio_format, sample_rate,
                           label_names=label_names, source=f"{layout}:{src}", seed=seed,
                           extra={**extra, "split": split})

    writers = {s: writer(s) for s in ("train", "val", "test", "background", "stream")}
    counters = {s: 0 for s in writers}
    stream_buf: list[np.ndarray] = []
    stream_parts: list[str] = []
    try:
        def load(item):
            try:
                audio = _load_checked(item["path"], sample_rate)
            except Exception as e:  # any reader failure is a per-file problem, never fatal
                first_line = (str(e).splitlines() or [""])[0][:200]
                return item, None, f"unreadable: {type(e).__name__}: {first_line}"
            return (item, None, audio) if isinstance(audio, str) else (item, audio, None)

        with ThreadPoolExecutor(max(1, workers)) as pool:
            for item, audio, problem in tqdm(pool.map(load, items), total=len(items),
                                             desc="build-shards", disable=not progress):
                if problem is not None:
                    skipped.append({"path": str(item["path"]), "reason": problem})
                    continue
                kind, split = item["kind"], item["split"]
                meta = {"speaker": item["speaker"], "source": layout, "hard_negative":
                        kind == "hard_negative", "text": item.get("word", ""),
                        "path": str(item["path"].relative_to(src)), "kind": kind}
                if kind == "background":
                    for piece in _pieces(audio, clip):
                        _write(writers, counters, "background", piece, 0, label_names, meta)
                    continue
                if kind == "stream":
                    if audio.size < MIN_STREAM_SECONDS * sample_rate:
                        skipped.append({"path": str(item["path"]),
                                        "reason": f"stream file shorter than {MIN_STREAM_SECONDS} s"})
                        continue
                    _write(writers, counters, "stream", audio, 0, label_names, meta)
                    continue
                label = 1 if kind == "positive" else 0
                piece = _fit(audio, clip, _file_rng(seed, item["path"]))
                _write(writers, counters, split, piece, label, label_names, meta)
                if split == "test" and label == 0 and not item.get("has_stream_dir"):
                    stream_buf.append(piece)
                    stream_parts.append(meta["path"])
                    if len(stream_buf) * clip >= stream_seconds * sample_rate:
                        _write_stream(writers, counters, stream_buf, stream_parts, label_names)
        if len(stream_buf) * clip >= MIN_STREAM_SECONDS * sample_rate:  # the remainder
            _write_stream(writers, counters, stream_buf, stream_parts, label_names)
        indexes = {s: w.close() for s, w in writers.items()}
        for split in indexes if not remote else ():
            replace_dir(tmp / split, out_root / split)
    except BaseException:
        for w in writers.values():
            if not w._closed:
                w.abort()
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    report = {"layout": layout, "label_names": label_names, "skipped": skipped,
              "splits": {s: {k: ix[k] for k in ("num_samples", "total_seconds", "content_hash",
                                                 "label_counts")} for s, ix in indexes.items()},
              "seconds": round(time.perf_counter() - t0, 2)}
    if progress:
        _print_report(report, out_root)
    return report


def detect_layout(src: Path) -> str:
    if (src / "_background_noise_").is_dir() or (src / "validation_list.txt").is_file():
        return "speech_commands"
    if any((src / k).is_dir() for k in FOLDER_KINDS):
        return "folder"
    raise ValueError(f"{src}: cannot tell the layout: expected positive/ negative/ hard_negative/ "
                     f"background/ folders or a Speech Commands tree (_background_noise_/)")


# ------------------------------------------------------------------------------------- planning
def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                  and not p.name.startswith("."))


def speaker_of(path: Path) -> str:
    """``0a7c2a8d_nohash_1.wav`` -> ``0a7c2a8d`` (SC convention), else the file stem."""
    stem = path.stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem


def split_of(speaker: str, val_fraction: float, test_fraction: float) -> str:
    """Stable split from a hash of the speaker id (as Speech Commands' ``which_set`` does)."""
    u = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _plan_folder(src: Path, val_fraction: float, test_fraction: float) -> list[dict]:
    has_stream = (src / "stream").is_dir()
    items = []
    for kind in FOLDER_KINDS:
        for p in _audio_files(src / kind) if (src / kind).is_dir() else []:
            spk = speaker_of(p)
            items.append({"path": p, "kind": kind, "speaker": spk, "has_stream_dir": has_stream,
                          "split": split_of(spk, val_fraction, test_fraction)})
    if not items:
        raise ValueError(f"{src}: no audio files under {', '.join(k + '/' for k in FOLDER_KINDS)}")
    return items


def _plan_speech_commands(src: Path, wake_words, hard_words) -> list[dict]:
    def listed(name):
        f = src / name
        return set(f.read_text().split()) if f.is_file() else set()

    val, test = listed("validation_list.txt"), listed("testing_list.txt")
    items = []
    for word_dir in sorted(d for d in src.iterdir() if d.is_dir()):
        word = word_dir.name
        if word == "_background_noise_":
            kind = "background"
        elif word.startswith((".", "_")):
            continue
        else:
            kind = ("positive" if word in wake_words else
                    "hard_negative" if word in hard_words else "negative")
        for p in _audio_files(word_dir):
            rel = p.relative_to(src).as_posix()
            items.append({"path": p, "kind": kind, "speaker": speaker_of(p), "word": word,
                          "split": "val" if rel in val else "test" if rel in test else "train"})
    missing = [w for w in wake_words if not (src / w).is_dir()]
    if missing:
        raise ValueError(f"{src}: no folder for wake word(s) {missing}")
    return items


# -------------------------------------------------------------------------------------- audio ops
def _load_checked(path: Path, sample_rate: int):
    """float32 mono at ``sample_rate``, or a reason string for empty / silent files."""
    if path.stat().st_size == 0:
        return "empty: 0-byte file"
    audio = read_audio_file(str(path), sample_rate)
    if audio.size == 0:
        return "empty: no audio frames"
    if not np.isfinite(audio).all():
        return "unreadable: non-finite samples"
    if np.abs(audio).max() < SILENCE_PEAK:
        return "silent: peak below -60 dBFS"
    return audio


def _file_rng(seed: int, path: Path) -> np.random.Generator:
    digest = hashlib.sha1(path.name.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _fit(audio: np.ndarray, clip: int, rng: np.random.Generator) -> np.ndarray:
    """Loudest ``clip``-sample window of a long recording; short ones padded at a seeded offset."""
    if audio.size >= clip:
        if audio.size == clip:
            return audio
        energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
        start = int(np.argmax(energy[clip:] - energy[:-clip]))
        return audio[start:start + clip]
    out = np.zeros(clip, np.float32)
    start = int(rng.integers(0, clip - audio.size + 1))
    out[start:start + audio.size] = audio
    return out


def _pieces(audio: np.ndarray, clip: int) -> list[np.ndarray]:
    """Non-overlapping clip-length pieces of a background recording (a short one is tiled)."""
    if audio.size < clip:
        return [np.tile(audio, -(-clip // audio.size))[:clip]]
    return [audio[i:i + clip] for i in range(0, audio.size - clip + 1, clip)]


def _write(writers, counters, split, audio, label, label_names, meta) -> None:
    key = f"{split}-{counters[split]:07d}"
    counters[split] += 1
    writers[split].write(key, np.clip(audio, -1, 1), {"label": label,
                                                     "label_name": label_names[label], **meta})


def _write_stream(writers, counters, buf, parts, label_names) -> None:
    audio = np.concatenate(buf)
    meta = {"speaker": "mixed", "source": "test negatives", "hard_negative": False,
            "text": " | ".join(parts), "kind": "stream"}
    _write(writers, counters, "stream", audio, 0, label_names, meta)
    buf.clear()
    parts.clear()


def _print_report(report: dict, out_root: Path) -> None:
    for split, info in report["splits"].items():
        print(f"{split:>10}: {info['num_samples']:7d} samples, {info['total_seconds'] / 3600:7.3f} h"
              f"  {info['label_counts']}")
    if not report["splits"]["stream"]["num_samples"]:
        print(f"note: no stream audio (add a stream/ folder or more test negatives: "
              f">= {MIN_STREAM_SECONDS:.0f} s); FA/h cannot be measured on this dataset")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} file(s):")
        for s in report["skipped"]:
            print(f"  {s['path']}: {s['reason']}")
    print(f"-> {out_root} in {report['seconds']} s")


def main(argv=None) -> None:
    """``python -m wakeword_dist.data.build_shards SRC OUT_ROOT [--wake-words marvin] ...``"""
    import argparse

    p = argparse.ArgumentParser(description="Import recordings into shards")
    p.add_argument("src_dir")
    p.add_argument("out_root")
    p.add_argument("--layout", default="auto", choices=("auto", "folder", "speech_commands"))
    p.add_argument("--wake-words", nargs="*", default=[])
    p.add_argument("--format", default="wav", choices=("wav", "flac", "npy"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    build_shards(a.src_dir, a.out_root, layout=a.layout, wake_words=a.wake_words,
                 audio_format=a.format, seed=a.seed)


if __name__ == "__main__":
    main()
