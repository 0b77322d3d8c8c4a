"""Inspect a shard dataset: per-split statistics plus a full integrity check.

    python -m wakeword_dist.data.inspect_shards shards/demo

For every split (a folder with ``index.json`` or with ``shard-*.tar``) every member is read and
decoded; counts, seconds and the content hash are recomputed and compared with ``index.json``.
Problems are collected (never raised) so one run lists all of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from wakeword_dist.data.audio_io import AUDIO_EXTS, decode_audio
from wakeword_dist.data.reader import read_index
from wakeword_dist.data.tario import iter_tar_samples

SPLIT_ORDER = ("train", "val", "test", "stream", "background")


def inspect_shards(root: str | Path) -> dict:
    """Return ``{"root", "splits": {split: stats}, "problems": [str]}``.

    ``stats``: ``num_samples``, ``hours``, ``label_counts`` (by name), ``hard_negative``,
    ``speakers``, ``shards``, ``sample_rate``, ``audio_format``, ``has_teacher_logits``.
    """
    root = Path(root)
    problems: list[str] = []
    splits = {}
    dirs = sorted({p.parent for p in root.glob("*/index.json")} |
                  {p.parent for p in root.glob("*/shard-*.tar")},
                  key=lambda d: (SPLIT_ORDER.index(d.name) if d.name in SPLIT_ORDER else 99, d.name))
    if not dirs:
        problems.append(f"{root}: no split folders (no */index.json or */shard-*.tar)")
    for d in dirs:
        splits[d.name] = _inspect_split(d, problems)
    return {"root": str(root), "splits": splits, "problems": problems}


def _inspect_split(d: Path, problems: list[str]) -> dict:
    try:
        index = read_index(d)
    except (FileNotFoundError, ValueError) as e:
        problems.append(str(e))
        index = None
    names = index["shards"] if index else sorted(p.name for p in d.glob("shard-*.tar"))
    expected = index["samples_per_shard"] if index else [None] * len(names)
    rate = int(index["sample_rate"]) if index else None
    label_names = index["label_names"] if index else None
    stray = sorted({p.name for p in d.glob("shard-*.tar")} - set(names))
    problems += [f"{d / s}: shard not listed in index.json" for s in stray]
    labels, speakers, digests = Counter(), set(), []
    seconds, hard, n_total, teacher = 0.0, 0, 0, False
    for name, n_expected in zip(names, expected):
        path = d / name
        if not path.is_file():
            problems.append(f"{path}: listed in index.json but missing")
            continue
        n = 0
        try:
            for key, parts in iter_tar_samples(path):
                n += 1
                for ext, data in parts.items():
                    digests.append((f"{key}.{ext}", hashlib.sha256(data).hexdigest()))
                sample = _check_sample(path, key, parts, rate, label_names, problems)
                if sample is None:
                    continue
                meta, dur = sample
                seconds += dur
                labels[meta.get("label_name", str(meta.get("label")))] += 1
                hard += bool(meta.get("hard_negative", False))
                speakers.add(meta.get("speaker", "unknown"))
                teacher |= "teacher.npy" in parts
        except OSError as e:
            problems.append(f"{path}: {e}")
        n_total += n
        if n_expected is not None and n != n_expected:
            problems.append(f"{path}: {n} samples but index.json says {n_expected}")
    if index:
        if abs(seconds - float(index.get("total_seconds", seconds))) > 0.01 + 1e-6 * seconds:
            problems.append(f"{d / 'index.json'}: total_seconds {index['total_seconds']} but the "
                            f"audio lasts {seconds:.3f} s")
        h = hashlib.sha256()
        for member, digest in sorted(digests):
            h.update(f"{member}\0{digest}\n".encode("utf-8"))
        if index.get("content_hash") not in (None, h.hexdigest()):
            problems.append(f"{d / 'index.json'}: content_hash does not match the shards' members")
    return {"num_samples": n_total, "hours": seconds / 3600, "label_counts": dict(labels),
            "hard_negative": hard, "speakers": len(speakers), "shards": len(names),
            "sample_rate": rate, "audio_format": index.get("audio_format") if index else None,
            "has_teacher_logits": teacher}


def _check_sample(path, key, parts, rate, label_names, problems):
    where = f"{path}: {key}"
    try:
        meta = json.loads(parts["json"])
        label = int(meta["label"])
    except (KeyError, ValueError, TypeError) as e:
        problems.append(f"{where}: bad or missing .json ({e})")
        return None
    if label_names is not None and not -1 <= label < len(label_names):
        problems.append(f"{where}: label {label} outside the label map {label_names}")
    ext = next((e for e in AUDIO_EXTS if e in parts), None)
    if ext is None:
        problems.append(f"{where}: no audio member")
        return None
    try:
        pcm, sr = decode_audio(parts[ext], ext)
    except ValueError as e:
        problems.append(f"{where}.{ext}: does not decode ({e})")
        return None
    if sr is not None and rate is not None and sr != rate:
        problems.append(f"{where}.{ext}: {sr} Hz but index.json says {rate} Hz")
    if "teacher.npy" in parts:
        try:
            np.load(io.BytesIO(parts["teacher.npy"]), allow_pickle=False)
        except ValueError as e:
            problems.append(f"{where}.teacher.npy: does not load ({e})")
    return meta, pcm.size / (sr or rate or 16000)


def print_inspection(report: dict) -> None:
    """Rich table of the splits, then the problems (or 'no problems')."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"shards: {report['root']}")
    for col in ("split", "samples", "hours", "labels", "hard neg", "speakers", "shards", "Hz",
                "format", "teacher"):
        table.add_column(col, justify="left" if col in ("split", "labels") else "right")
    for split, s in report["splits"].items():
        total = max(1, sum(s["label_counts"].values()))
        labels = ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in
                           sorted(s["label_counts"].items()))
        table.add_row(split, str(s["num_samples"]), f"{s['hours']:.3f}", labels,
                      str(s["hard_negative"]), str(s["speakers"]), str(s["shards"]),
                      str(s["sample_rate"]), str(s["audio_format"]),
                      "yes" if s["has_teacher_logits"] else "no")
    console = Console(width=160)
    console.print(table)
    if report["problems"]:
        console.print(f"[red]{len(report['problems'])} problem(s):[/red]")
        for p in report["problems"]:
            console.print(f"  {p}", markup=False)
    else:
        console.print("[green]no problems: every member decodes and matches index.json[/green]")


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m wakeword_dist.data.inspect_shards SHARD_ROOT", file=sys.stderr)
        return 2
    report = inspect_shards(args[0])
    print_inspection(report)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
