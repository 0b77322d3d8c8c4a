"""Sample sources for the loaders: which shard samples a (rank, worker) reads, and decoding.

A *unit* is a shard plus a sample filter ``i % modulus == residue`` (``i`` = position of the sample
in the tar). Splitting by whole shards is preferred; when there are fewer shards than consumers the
split falls back to sample index, so every rank / worker still reads different samples.

Bad data never raises mid-epoch: an unreadable or truncated shard, a member that does not decode,
a clip with the wrong length or sample rate is counted in ``SkipCounter`` and logged once per
(shard, key). Only a missing teacher-logits member raises (a configuration error, not bad data).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from wakeword_dist.data.audio_io import AUDIO_EXTS, AudioDecodeError, INT16_SCALE, decode_audio
from wakeword_dist.data.tario import TruncatedShardError, iter_tar_samples

log = logging.getLogger("wakeword_dist.data")


@dataclass(frozen=True)
class Unit:
    """Read samples ``i`` of ``shard`` with ``i % modulus == residue``."""
    shard: str
    modulus: int = 1
    residue: int = 0


def split_units(units: list[Unit], part: int, n_parts: int) -> list[Unit]:
    """Give part ``part`` of ``n_parts`` its share: whole units if there are enough, else every
    unit with a finer sample filter (``i % (m * n) == r + m * part``), so parts never overlap."""
    if n_parts == 1:
        return list(units)
    if len(units) >= n_parts:
        return units[part::n_parts]
    return [Unit(u.shard, u.modulus * n_parts, u.residue + u.modulus * part) for u in units]


class SkipCounter:
    """Counts samples taken for decoding (``read``) and the bad ones among them (``count``);
    logs each bad (shard, key, reason) once per process.

    Both are counted where a sample is consumed, not where it is read from the tar: the training
    reader reads ~``shuffle_buffer`` samples ahead, and a fraction over different points would
    charge the read-ahead (a truncated shard once per pass of the buffer) to the bad side.
    """

    def __init__(self) -> None:
        self.count = 0
        self.read = 0
        self._reported = (0, 0)  # (count, read) at the previous since_last()
        self.last_reason = ""
        self._logged: set[tuple[str, str]] = set()

    def since_last(self) -> tuple[int, int]:
        """``(skipped, read)`` since the previous call: what one batch reports."""
        skipped, read = self.count - self._reported[0], self.read - self._reported[1]
        self._reported = (self.count, self.read)
        return skipped, read

    def skip(self, shard: str, key: str | None, reason: str) -> None:
        self.count += 1
        self.last_reason = f"{shard} {key}: {reason}"
        tag = (shard, str(key))
        if tag not in self._logged:
            self._logged.add(tag)
            log.warning("skipping bad sample: shard=%s key=%s: %s", shard, key, reason)


def bad_fraction_lower_bound(bad: float, read: float, z: float = 1.96) -> float:
    """Wilson score lower bound of the bad-sample fraction after ``bad`` of ``read`` samples.

    Why a bound: the reader checks the fraction from the first batch on, where 1 bad clip in
    17 reads as 6 %; stopping on that would end healthy runs by chance. The run stops when the
    fraction is *surely* (97.5 % one-sided) above the limit: 1 of 17 gives 1 %, 30 of 1000 2.1 %.
    """
    if read <= 0:
        return 0.0
    p, z2 = bad / read, z * z
    centre = p + z2 / (2 * read)
    margin = z * math.sqrt(p * (1 - p) / read + z2 / (4 * read * read))
    return max(0.0, (centre - margin) / (1 + z2 / read))


LOST = "__lost__"  # parts of a sample the tar reader could not deliver: {LOST: reason}


def iter_unit(unit: Unit) -> Iterator[tuple[str, str | None, dict[str, bytes]]]:
    """Yield ``(shard, key, {ext: bytes})`` for the unit's samples. Damage is not raised: a
    sample lost to it is yielded as ``{LOST: reason}``, which ``SampleDecoder`` counts as bad."""
    i = -1
    key = None
    try:
        for key, parts in iter_tar_samples(unit.shard):
            i += 1
            if i % unit.modulus == unit.residue:
                yield unit.shard, key, parts
    except TruncatedShardError as e:
        # the sample being read when the damage was hit is lost; count it if it was ours
        if (i + 1) % unit.modulus == unit.residue:
            yield unit.shard, f"after {key}", {LOST: str(e)}
        else:
            log.warning("%s", e)
    except OSError as e:
        yield unit.shard, None, {LOST: f"cannot read shard: {e}"}


class SampleDecoder:
    """Decode raw sample parts into a row of a preallocated batch.

    Args:
        clip_samples: required clip length (samples); other lengths are skipped.
        sample_rate: required rate (Hz) for members that carry one (wav, flac).
        with_teacher_logits: read ``<key>.teacher.npy`` (float16 ``(C,)``) too.
    """

    def __init__(self, clip_samples: int, sample_rate: int, with_teacher_logits: bool):
        self.clip_samples = clip_samples
        self.sample_rate = sample_rate
        self.with_teacher_logits = with_teacher_logits

    def decode(self, shard: str, key: str, parts: dict[str, bytes], out_row: np.ndarray | None,
               skips: SkipCounter):
        """Write float32 audio into ``out_row`` ``(S,)``; return ``(label, hard, logits)`` or
        ``None`` for a bad sample (counted in ``skips``). ``out_row=None`` only validates."""
        skips.read += 1
        if LOST in parts:
            skips.skip(shard, key, parts[LOST])
            return None
        try:
            ext = next((e for e in AUDIO_EXTS if e in parts), None)
            if ext is None:
                raise AudioDecodeError(f"no audio member (has {sorted(parts)})")
            meta = json.loads(parts["json"])
            label, hard = int(meta["label"]), bool(meta.get("hard_negative", False))
            pcm, sr = decode_audio(parts[ext], ext)
            if sr is not None and sr != self.sample_rate:
                raise AudioDecodeError(f"sample rate {sr} Hz != expected {self.sample_rate} Hz")
            if pcm.size != self.clip_samples:
                raise AudioDecodeError(f"{pcm.size} samples != clip length {self.clip_samples}")
        except (AudioDecodeError, KeyError, ValueError, TypeError) as e:
            skips.skip(shard, key, f"{type(e).__name__}: {e}")
            return None
        logits = None
        if self.with_teacher_logits:
            if "teacher.npy" not in parts:
                raise KeyError(f"{shard}: sample {key!r} has no teacher logits (<key>.teacher.npy); "
                               "run the annotate stage or use the online teacher")
            logits = _load_logits(parts["teacher.npy"], shard, key)
        if out_row is None:
            pass
        elif out_row.dtype == np.int16:  # worker -> main hand-over in int16 (see reader)
            out_row[:] = pcm
        else:
            np.multiply(pcm, INT16_SCALE, out=out_row, casting="unsafe")
        return label, hard, logits


def _load_logits(data: bytes, shard: str, key: str) -> np.ndarray:
    import io

    try:
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32).reshape(-1)
    except Exception as e:
        raise ValueError(f"{shard}: sample {key!r}: unreadable teacher logits: {e}") from e


def shard_paths(split_dir: str | os.PathLike, index: dict) -> list[str]:
    return [os.path.join(os.fspath(split_dir), name) for name in index["shards"]]
