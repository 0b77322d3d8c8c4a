"""Write one split of a dataset as WebDataset tar shards plus ``index.json``.

Layout (see shards/README.md)::

    <split_dir>/shard-000000.tar   members: <key>.<flac|wav|npy>, <key>.json[, <key>.teacher.npy]
    <split_dir>/index.json

Each shard is written as ``shard-XXXXXX.tar.tmp`` and renamed when complete; ``index.json`` is
written last and atomically, so a reader that finds an index finds every shard it names.
Tars are byte-reproducible: fixed mtime/uid/gid/mode and member order = write order.

``split_dir`` may also be a ``pipe:`` template with ``{path}`` (or any URL ``webdataset.gopen``
writes, e.g. an http PUT), as ``wds.ShardWriter`` allows: each shard streams into its own command
(``pipe:aws s3 cp - s3://bucket/ds/train/{path}``) and ``index.json`` goes last, once every shard's
command has exited 0; a failed command raises naming its URL. An object store's single-object
upload is atomic, which stands in for the local rename. The bytes equal the local writer's.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from wakeword_dist.atomic import write_json_atomic
from wakeword_dist.data.audio_io import AUDIO_EXTS, encode_audio, to_int16
from wakeword_dist.data.sources import describe_error, file_url, is_url, open_url
from wakeword_dist.data.tario import add_member, content_hash

SHARD_PATTERN = "shard-%06d.tar"
INDEX_NAME = "index.json"
INDEX_VERSION = 1
REQUIRED_META = ("label", "label_name")


class ShardWriter:
    """Stream samples into ``split_dir/shard-%06d.tar`` and write ``index.json`` on ``close()``.

    Args:
        split_dir: output directory (created).
        samples_per_shard: samples per tar (the last one may hold fewer).
        audio_format: ``"flac"`` (16-bit), ``"wav"`` (PCM_16) or ``"npy"`` (int16).
        sample_rate: Hz of every clip written (recorded in the index, checked by readers).
        label_names: index = label id, e.g. ``["negative", "hey_nova"]``.
        source: where the data comes from (``"espeak-ng"``, ``"folder:/path"``...).
        seed: generator seed recorded in the index (``None`` for imported data).
        extra: more JSON-able fields merged into the index (generator version, preset...).

    Use as a context manager: on an exception the shard in progress is removed and no index is
    written.
    """

    def __init__(self, split_dir: str | os.PathLike, samples_per_shard: int = 1000,
                 audio_format: str = "flac", sample_rate: int = 16000, *,
                 label_names: list[str], source: str, seed: int | None = None,
                 extra: dict[str, Any] | None = None):
        if audio_format not in AUDIO_EXTS:
            raise ValueError(f"audio_format must be one of {AUDIO_EXTS}, got {audio_format!r}")
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        self.remote = is_url(split_dir)
        if self.remote:
            self.split_dir = os.fspath(split_dir)
            file_url(self.split_dir, INDEX_NAME)  # a pipe: template without {path} fails here
        else:
            self.split_dir = Path(split_dir)
            self.split_dir.mkdir(parents=True, exist_ok=True)
        self._stream = None  # the remote shard's gopen stream
        self.samples_per_shard = samples_per_shard
        self.audio_format = audio_format
        self.sample_rate = sample_rate
        self.label_names = list(label_names)
        self.source, self.seed, self.extra = source, seed, dict(extra or {})
        self._tar: tarfile.TarFile | None = None
        self._tmp_path: Path | None = None
        self._shards: list[str] = []
        self._counts: list[int] = []
        self._keys: set[str] = set()
        self._member_digests: list[tuple[str, str]] = []
        self._seconds = 0.0
        self._labels: Counter = Counter()
        self._speakers: set[str] = set()
        self._hard = 0
        self._closed = False

    # ------------------------------------------------------------------------------------ writing
    def write(self, key: str, audio: np.ndarray, meta: dict[str, Any],
              teacher_logits: np.ndarray | None = None) -> None:
        """Add one sample.

        Args:
            key: unique within the split; no ``.`` or ``/`` (WebDataset splits keys at the first dot).
            audio: mono ``(N,)`` int16, or float in [-1, 1] (converted to int16), at ``sample_rate``.
            meta: at least ``label`` (int) and ``label_name``; ``speaker``, ``source``, ``text``,
                ``hard_negative`` default to "unknown"/writer source/""/False; ``duration_s`` is
                computed from ``audio``.
            teacher_logits: optional ``(C,)`` logits, stored as float16 ``<key>.teacher.npy``.
        """
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if not key or "." in key or "/" in key:
            raise ValueError(f"bad sample key {key!r}: must be non-empty, without '.' or '/'")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise ValueError(f"sample {key!r}: meta lacks {missing}")
        label = int(meta["label"])
        if not -1 <= label < len(self.label_names):
            raise ValueError(f"sample {key!r}: label {label} outside [-1, {len(self.label_names)})")
        pcm = to_int16(np.asarray(audio).reshape(-1))
        if pcm.size == 0:
            raise ValueError(f"sample {key!r}: empty audio")
        duration = pcm.size / self.sample_rate
        full_meta = {
            "label": label,
            "label_name": str(meta["label_name"]),
            "speaker": str(meta.get("speaker", "unknown")),
            "source": str(meta.get("source", self.source)),
            "duration_s": round(duration, 6),
            "hard_negative": bool(meta.get("hard_negative", False)),
            "text": str(meta.get("text", "")),
        }
        full_meta.update({k: v for k, v in meta.items() if k not in full_meta})
        members = [
            (f"{key}.{self.audio_format}", encode_audio(pcm, self.audio_format, self.sample_rate)),
            (f"{key}.json", json.dumps(full_meta, sort_keys=True).encode("utf-8")),
        ]
        if teacher_logits is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(teacher_logits, dtype=np.float16).reshape(-1), allow_pickle=False)
            members.append((f"{key}.teacher.npy", buf.getvalue()))

        if self._tar is None:
            self._open_next()
        try:
            for name, data in members:
                self._member_digests.append((name, add_member(self._tar, name, data)))
        except OSError as e:
            if not self.remote:
                raise
            raise OSError(describe_error(self._url(self._shards[-1]), e, self._stream)) from None
        self._keys.add(key)
        self._counts[-1] += 1
        self._seconds += duration
        self._labels[full_meta["label_name"]] += 1
        self._speakers.add(full_meta["speaker"])
        self._hard += full_meta["hard_negative"]
        if self._counts[-1] >= self.samples_per_shard:
            self._finish_shard()

    def _url(self, name: str) -> str:
        return file_url(self.split_dir, name)

    def _open_next(self) -> None:
        name = SHARD_PATTERN % len(self._shards)
        if self.remote:
            self._stream = open_url(self._url(name), "wb")
            # stream mode writes the same bytes as "w" (same blocks, same end-of-archive record)
            self._tar = tarfile.open(fileobj=self._stream, mode="w|", format=tarfile.USTAR_FORMAT)
        else:
            self._tmp_path = self.split_dir / (name + ".tmp")
            self._tar = tarfile.open(self._tmp_path, "w", format=tarfile.USTAR_FORMAT)
        self._shards.append(name)
        self._counts.append(0)

    def _finish_shard(self) -> None:
        if self.remote:
            url, tar, stream = self._url(self._shards[-1]), self._tar, self._stream
            self._tar, self._stream = None, None
            try:
                tar.close()
                stream.close()  # gopen's Pipe waits for the command and raises on a non-zero exit
            except OSError as e:
                raise OSError(describe_error(url, e, stream)) from None
            return
        self._tar.close()
        os.replace(self._tmp_path, self.split_dir / self._shards[-1])
        self._tar, self._tmp_path = None, None

    # ---------------------------------------------------------------------------------- finishing
    def content_hash(self) -> str:
        """sha256 over (member name, sha256(member bytes)) sorted by name.

        Independent of shard boundaries and write order: same samples -> same hash.
        """
        return content_hash(self._member_digests)

    def close(self, teacher: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish the last shard, write ``index.json`` atomically and return the index dict.

        ``teacher``: optional fingerprint (name/path, weights hash, label map) of the model whose
        logits were stored in ``<key>.teacher.npy``.
        """
        if self._closed:
            raise RuntimeError("ShardWriter already closed")
        if self._tar is not None:
            self._finish_shard()
        self._closed = True
        index = {
            "version": INDEX_VERSION,
            "shards": list(self._shards),
            "samples_per_shard": list(self._counts),
            "num_samples": sum(self._counts),
            "total_seconds": round(self._seconds, 3),
            "sample_rate": self.sample_rate,
            "label_names": self.label_names,
            "label_counts": dict(sorted(self._labels.items())),
            "hard_negative_count": self._hard,
            "num_speakers": len(self._speakers),
            "source": self.source,
            "seed": self.seed,
            "content_hash": self.content_hash(),
            "audio_format": self.audio_format,
        }
        if teacher is not None:
            index["teacher"] = teacher
        index.update(self.extra)
        if self.remote:
            url = self._url(INDEX_NAME)
            text = json.dumps(index, indent=2, sort_keys=True) + "\n"  # as write_json_atomic
            stream = open_url(url, "wb")
            try:
                stream.write(text.encode("utf-8"))
                stream.close()
            except OSError as e:
                raise OSError(describe_error(url, e, stream)) from None
        else:
            write_json_atomic(self.split_dir / INDEX_NAME, index)
        return index

    def abort(self) -> None:
        """Drop the shard in progress (complete shards stay; no index is written)."""
        if self._tar is not None and self.remote:
            # kill the command first, so an upload of a half shard never completes
            proc = getattr(self._stream, "proc", None)
            if proc is not None:
                proc.kill()
            try:
                self._stream.close()
            except Exception:  # it was killed: its exit status is not news
                pass
            self._tar, self._stream = None, None
        elif self._tar is not None:
            self._tar.close()
            self._tmp_path.unlink(missing_ok=True)
            self._tar, self._tmp_path = None, None
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()
