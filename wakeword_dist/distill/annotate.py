"""The annotate stage: run the frozen teacher once over a split and store its logits beside each
sample, so ``distill.mode=cached`` training needs no teacher on the device.

Output: a complete copy of the split. Each output shard holds the input shard's members, byte for
byte and in order, plus ``<key>.teacher.npy`` (float16 logits ``(C,)``) after each sample's
members; the out split's ``index.json`` is the input's plus ``teacher`` (the fingerprint
``{name_or_path, weights_sha256, label_names}``), ``annotate`` (provenance) and the recomputed
``content_hash``. A full copy (not a sidecar-only shard) costs the disk space of the split once
more, but keeps one shard = one self-contained WebDataset tar that ``tar tf``, a plain
``wds.WebDataset`` and the training reader read unchanged.

Across ranks: shard ``i`` of the index goes to rank ``i % world_size``; each is written to a
temporary name and renamed when complete, then a done-marker ``.annotate/<shard>.json`` (teacher
fingerprint, source shard size, member digests) is written. A rerun skips shards whose marker
names the same teacher and source, so an interrupted run resumes and a finished one is a no-op.
After a barrier rank 0 writes ``index.json`` last (atomically): a split with an index is complete.

With a ZeRO-3 teacher (``teacher_fn.lockstep``) every rank must call the teacher equally often:
ranks with fewer batches (uneven shards, skipped shards) make dummy 1-clip calls until all ranks
are done, agreed through one small all-reduce per call. A failure on one rank is passed on at the
next such all-reduce, so its peers raise instead of waiting forever.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from wakeword_dist import collectives
from wakeword_dist.atomic import write_json_atomic
from wakeword_dist.data.audio_io import AUDIO_EXTS, INT16_SCALE, AudioDecodeError, decode_audio
from wakeword_dist.data.reader import read_index
from wakeword_dist.data.shard_writer import INDEX_NAME
from wakeword_dist.data.tario import add_member, content_hash, iter_tar_samples

logger = logging.getLogger(__name__)

TEACHER_MEMBER = "teacher.npy"  # <key>.teacher.npy: float16 logits (C,)
MARKER_DIR = ".annotate"  # per-shard done-markers inside the out split
FINGERPRINT_FIELDS = ("name_or_path", "weights_sha256", "label_names")


class NonFiniteLogitsError(ValueError):
    """Teacher logits of a sample are NaN/inf (or overflow float16); names shard and key."""


# ------------------------------------------------------------------------------------ fingerprint
def check_cached_fingerprint(index: dict, expected_fingerprint: dict, index_path: str | os.PathLike) -> None:
    """Refuse cached logits made by another teacher: ``ValueError`` with a one-line message.

    Compared: ``weights_sha256`` (the teacher's identity) and ``label_names`` (the logits' class
    order). ``name_or_path`` is reported when it differs together with the weights, but a path
    alone differing (same weights, moved or renamed folder) is accepted: the logits are the same.
    """
    cached = index.get("teacher")
    if not isinstance(cached, dict):
        raise ValueError(f"{index_path}: no teacher fingerprint - this split holds no cached teacher "
                         "logits; run the annotate stage on it first (or use distill.mode=online)")
    differs = []
    if cached.get("weights_sha256") != expected_fingerprint["weights_sha256"]:
        differs.append(f"weights_sha256 differs (cached {str(cached.get('weights_sha256'))[:12]}, "
                       f"teacher {expected_fingerprint['weights_sha256'][:12]})")
        if cached.get("name_or_path") != expected_fingerprint["name_or_path"]:
            differs.append(f"name_or_path differs (cached {cached.get('name_or_path')!r}, "
                           f"teacher {expected_fingerprint['name_or_path']!r})")
    if list(cached.get("label_names") or []) != list(expected_fingerprint["label_names"]):
        differs.append(f"label_names differ (cached {cached.get('label_names')}, "
                       f"teacher {list(expected_fingerprint['label_names'])})")
    if differs:
        raise ValueError(f"{index_path}: cached teacher logits come from another teacher: "
                         + "; ".join(differs) + " - rerun annotate with this teacher")


# ------------------------------------------------------------------------------------ lockstep
class _Lockstep:
    """Equal teacher-call counts on every rank for a ZeRO-3 teacher (see module docstring).

    Before each call every rank all-reduces its state: 1 = has a batch, 0 = done, FAILED = raised.
    """

    FAILED = 1 << 20

    def __init__(self, teacher_fn: Callable, device: torch.device, dummy_samples: int):
        self.teacher_fn = teacher_fn
        self.device = device
        self.dummy = torch.zeros(1, dummy_samples)

    def _sync(self, state: int) -> int:
        total = int(collectives.sum_over_ranks([state], self.device)[0])
        if total >= self.FAILED and state < self.FAILED:
            raise RuntimeError("annotate failed on another rank (see its error); stopping this rank too")
        return total

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        self._sync(1)
        return self.teacher_fn(audio)

    def drain(self) -> None:
        """Dummy calls while any other rank still has batches; returns once all are done."""
        while self._sync(0) > 0:
            self.teacher_fn(self.dummy)

    def fail(self) -> None:
        """Tell the peers (at their next sync) that this rank failed."""
        self._sync(self.FAILED)


# ------------------------------------------------------------------------------------ one shard
class _TarOut:
    """Reproducible tar output (same header conventions as ShardWriter), written to a temp name."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.digests: list[tuple[str, str]] = []

    def add(self, name: str, data: bytes) -> None:
        self.digests.append((name, add_member(self.tar, name, data)))

    def commit(self) -> None:
        self.tar.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.tar.close()
        self.tmp.unlink(missing_ok=True)


def _logits_npy(logits: np.ndarray) -> bytes:
    """float16 logits (C,) -> .npy bytes."""
    buf = io.BytesIO()
    np.save(buf, logits.reshape(-1), allow_pickle=False)
    return buf.getvalue()


def _annotate_shard(in_path: Path, out_path: Path, forward: Callable, *, batch_size: int,
                    sample_rate: int, device: torch.device) -> dict:
    """Write ``out_path`` = ``in_path`` + teacher logits; returns the shard's done-marker fields.

    Consecutive samples of equal length are batched (up to ``batch_size``): clips are never padded,
    so each sample's logits are those of the teacher on exactly its stored audio. A sample whose
    audio does not decode is copied without logits (the training reader skips it as bad data).
    """
    out = _TarOut(out_path)
    pending: list[tuple[str, dict[str, bytes], np.ndarray]] = []
    counts = {"samples": 0, "annotated": 0, "undecodable": 0}

    def flush() -> None:
        audio = torch.from_numpy(np.stack([a for _, _, a in pending])).to(device)
        logits = forward(audio).detach().float().cpu().numpy()
        with np.errstate(over="ignore"):  # an overflow to inf is what the check below reports
            halves = logits.astype(np.float16)
        for (key, parts, _), row, half in zip(pending, logits, halves):
            if not (np.isfinite(row).all() and np.isfinite(half).all()):
                raise NonFiniteLogitsError(
                    f"{in_path}: teacher logits for key {key!r} are not finite in float16 "
                    f"(max |logit| {np.nanmax(np.abs(row)):.3g}; float16 overflows above 65504) - "
                    "run the teacher in bf16 or fp32 (teacher.dtype)")
            _write_sample(out, key, parts, _logits_npy(half))
            counts["annotated"] += 1
        pending.clear()

    try:
        for key, parts in iter_tar_samples(in_path):
            counts["samples"] += 1
            audio = _decode(parts, sample_rate)
            if audio is None:
                if pending:
                    flush()
                _write_sample(out, key, parts, None)
                counts["undecodable"] += 1
                logger.warning("%s: sample %r has no decodable audio; copied without teacher logits", in_path, key)
                continue
            if pending and (len(pending) == batch_size or audio.shape != pending[0][2].shape):
                flush()
            pending.append((key, parts, audio))
        if pending:
            flush()
        out.commit()
    except BaseException:
        out.abort()
        raise
    return {**counts, "member_digests": out.digests}


def _decode(parts: dict[str, bytes], sample_rate: int) -> np.ndarray | None:
    """float32 audio (S,) in [-1, 1), as the training reader decodes it; None if undecodable."""
    ext = next((e for e in AUDIO_EXTS if e in parts), None)
    if ext is None:
        return None
    try:
        pcm, sr = decode_audio(parts[ext], ext)
    except AudioDecodeError:
        return None
    if sr is not None and sr != sample_rate:
        return None
    return pcm.astype(np.float32) * INT16_SCALE


def _write_sample(out: _TarOut, key: str, parts: dict[str, bytes], logits_npy: bytes | None) -> None:
    for ext, data in parts.items():
        if ext != TEACHER_MEMBER:  # an annotated input split gets this teacher's logits instead
            out.add(f"{key}.{ext}", data)
    if logits_npy is not None:
        out.add(f"{key}.{TEACHER_MEMBER}", logits_npy)


# ------------------------------------------------------------------------------------ the split
def _marker_path(out_dir: Path, shard: str) -> Path:
    return out_dir / MARKER_DIR / f"{shard}.json"


def _source_id(in_path: Path) -> dict:
    st = in_path.stat()
    return {"shard": in_path.name, "bytes": st.st_size}


def _finished(out_dir: Path, shard: str, in_path: Path, fingerprint: dict) -> bool:
    marker = _marker_path(out_dir, shard)
    if not (marker.is_file() and (out_dir / shard).is_file()):
        return False
    done = json.loads(marker.read_text())
    return done.get("teacher") == fingerprint and done.get("source") == _source_id(in_path)


def annotate_split(teacher_fn: Callable[[torch.Tensor], torch.Tensor], fingerprint: dict, *,
                   in_split_dir: str | os.PathLike, out_split_dir: str | os.PathLike, rank: int,
                   world_size: int, batch_size: int, device: torch.device | str,
                   barrier: Callable[[], None] | None = None) -> dict:
    """Annotate every shard of a split with teacher logits (see the module docstring).

    Args:
        teacher_fn: audio (B, S) float32 -> logits (B, C) float32 (``place_teacher``'s callable);
            a ``lockstep`` attribute set True (ZeRO-3) makes the ranks call it equally often.
        fingerprint: ``{name_or_path, weights_sha256, label_names}`` (``TeacherModel.fingerprint()``);
            its label_names must equal the split's.
        in_split_dir / out_split_dir: input split and output split folders (must differ).
        rank, world_size: this rank and the number of ranks; shard i goes to rank i % world_size.
        batch_size: clips per teacher call.
        device: where the audio batches go (``accelerator.device``).
        barrier: waits for all ranks (``accelerator.wait_for_everyone``); needed when
            world_size > 1 (default: ``torch.distributed.barrier``).

    Returns this rank's summary: shards annotated / skipped, samples, seconds; on rank 0 also
    ``index`` (the out split's index).
    """
    in_dir, out_dir = Path(in_split_dir), Path(out_split_dir)
    if in_dir.resolve() == out_dir.resolve():
        raise ValueError(f"annotate: out split {out_dir} must differ from the input split")
    missing = [f for f in FINGERPRINT_FIELDS if f not in fingerprint]
    if missing:
        raise ValueError(f"annotate: teacher fingerprint lacks {missing}")
    device = torch.device(device)
    if barrier is None:
        barrier = torch.distributed.barrier if world_size > 1 else (lambda: None)
    index = read_index(in_dir)
    if list(index["label_names"]) != list(fingerprint["label_names"]):
        raise ValueError(f"{in_dir / INDEX_NAME}: split label_names {index['label_names']} differ from the "
                         f"teacher's {fingerprint['label_names']}")
    out_index_path = out_dir / INDEX_NAME
    if out_index_path.is_file():  # a finished earlier run: only the same teacher may redo it
        try:
            check_cached_fingerprint(json.loads(out_index_path.read_text()), fingerprint, out_index_path)
        except ValueError as err:
            raise ValueError(f"{err} - or delete {out_dir} / choose another out split; annotate does "
                             "not overwrite another teacher's logits") from None
    (out_dir / MARKER_DIR).mkdir(parents=True, exist_ok=True)

    forward = teacher_fn
    lockstep = None
    if getattr(teacher_fn, "lockstep", False) and world_size > 1:
        lockstep = forward = _Lockstep(teacher_fn, device, dummy_samples=int(index["sample_rate"]))
    mine = [name for i, name in enumerate(index["shards"]) if i % world_size == rank]
    summary: dict[str, Any] = {"rank": rank, "annotated": [], "skipped": [], "samples": 0}
    start = time.perf_counter()
    try:
        for shard in mine:
            in_path = in_dir / shard
            if _finished(out_dir, shard, in_path, fingerprint):
                summary["skipped"].append(shard)
                continue
            t0 = time.perf_counter()
            done = _annotate_shard(in_path, out_dir / shard, forward, batch_size=batch_size,
                                   sample_rate=int(index["sample_rate"]), device=device)
            write_json_atomic(_marker_path(out_dir, shard),
                              {"teacher": fingerprint, "source": _source_id(in_path), **done}, indent=None)
            summary["annotated"].append(shard)
            summary["samples"] += done["samples"]
            logger.info("annotated %s: %d samples in %.1f s (rank %d)", shard, done["samples"],
                        time.perf_counter() - t0, rank)
        if lockstep is not None:
            lockstep.drain()
    except Exception:
        if lockstep is not None:
            lockstep.fail()
        raise
    summary["seconds"] = round(time.perf_counter() - start, 3)

    barrier()
    if rank == 0:
        summary["index"] = _write_out_index(index, fingerprint, in_dir, out_dir,
                                            world_size=world_size, batch_size=batch_size)
    barrier()  # nobody reads the out split before its index exists
    return summary


def _write_out_index(index: dict, fingerprint: dict, in_dir: Path, out_dir: Path, *,
                     world_size: int, batch_size: int) -> dict:
    digests, undecodable = [], 0
    for shard in index["shards"]:
        marker = _marker_path(out_dir, shard)
        if not marker.is_file():
            raise RuntimeError(f"annotate: {shard} has no done-marker in {out_dir} after all ranks finished")
        done = json.loads(marker.read_text())
        if done["teacher"] != fingerprint:
            raise RuntimeError(f"annotate: {marker} was written for another teacher")
        digests.extend(tuple(d) for d in done["member_digests"])
        undecodable += done["undecodable"]
    out_index = dict(index)
    out_index["teacher"] = dict(fingerprint)
    out_index["content_hash"] = content_hash(digests)  # the same formula as ShardWriter's
    out_index["annotate"] = {
        "source_split": str(in_dir),
        "source_content_hash": index.get("content_hash"),
        "member": TEACHER_MEMBER,
        "logits_dtype": "float16",
        "world_size": world_size,
        "batch_size": batch_size,
        "undecodable_samples": undecodable,
    }
    path = out_dir / INDEX_NAME
    if not path.is_file() or json.loads(path.read_text()) != out_index:
        write_json_atomic(path, out_index)
    return out_index
