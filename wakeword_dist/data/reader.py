"""Streaming shard readers: training (resampled, equal steps per rank), evaluation (each sample
exactly once), the long ``stream`` split and the background-noise bank.

Training data across ranks (DESIGN "Data across ranks"):

- shards are split by rank *before* any shuffle (``shards[rank::world_size]``; with fewer shards
  than ranks every rank reads every shard but keeps only samples ``i % world_size == rank``);
- each rank's shards are split again among its DataLoader workers the same way;
- a worker cycles its shards forever (a new shard order each pass) through a shuffle buffer, so
  every rank yields exactly ``batches_per_epoch`` batches whatever its shard sizes: no DDP hang.

Determinism: DataLoader workers are served round-robin, so batch ``b`` comes from *logical*
worker ``b % num_workers``, whose random stream is seeded by ``(seed, epoch, rank, worker)``.
``skip_batches=k`` makes each worker rebuild (decode, not collate) and drop its batches ``< k``,
so the result equals the full run minus its first ``k`` batches (exact resume). The same
``num_workers`` must be used to resume: it changes which worker makes which batch.

Batches are built inside the workers into preallocated arrays (no per-sample dict / collate):
``audio`` float32 ``(B, S)`` in [-1, 1], ``label`` int64 ``(B,)`` (-1 = unlabelled),
``hard_negative`` bool ``(B,)``, ``key`` list[str], ``read`` and ``skipped`` int (samples this
worker took for decoding since its previous batch, and the bad ones among them: the bad fraction
is ``skipped / read``), ``teacher_logits`` float32 ``(B, C)`` when requested.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Collection, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wakeword_dist.data.audio_io import INT16_SCALE, decode_audio
from wakeword_dist.data.shard_writer import INDEX_NAME
from wakeword_dist.data.sources import (SampleDecoder, SkipCounter, Unit, iter_unit, shard_paths,
                                        split_units)
from wakeword_dist.data.tario import iter_tar_samples

INDEX_KEYS = ("shards", "samples_per_shard", "sample_rate", "label_names")


# ------------------------------------------------------------------------------------------ index
def read_index(split_dir: str | os.PathLike) -> dict:
    """Load ``split_dir/index.json``; one-line ``FileNotFoundError`` / ``ValueError`` naming it."""
    path = Path(split_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing shard index (build the split with synth or "
                                f"build-shards first)")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: invalid shard index: {e}") from None
    missing = [k for k in INDEX_KEYS if k not in index] if isinstance(index, dict) else INDEX_KEYS
    if missing:
        raise ValueError(f"{path}: invalid shard index: missing {list(missing)}")
    return index


def check_sample_rate(index: dict, expected: int, split_dir: str | os.PathLike | None = None) -> None:
    """Raise ``ValueError`` naming the index file and both rates when they differ."""
    if int(index["sample_rate"]) != int(expected):
        where = Path(split_dir) / INDEX_NAME if split_dir is not None else "index.json"
        raise ValueError(f"{where}: shards are {index['sample_rate']} Hz but {expected} Hz is "
                         f"expected (rebuild the shards or change the sample rate)")


def _units_for_rank(split_dir, index: dict, rank: int, world_size: int) -> list[Unit]:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    units = [Unit(p) for p in shard_paths(split_dir, index)]
    if not units:
        raise ValueError(f"{Path(split_dir) / INDEX_NAME}: no shards")
    return split_units(units, rank, world_size)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _audio_buffer(rows: int, samples: int):
    """The batch's audio ``(rows, samples)``: ``(numpy view to fill, object to hand over)``.

    In the main process: float32. In a DataLoader worker: int16 allocated in shared memory, so
    the hand-over copies nothing and touches half the shared pages; ``BatchLoader`` converts to
    float32 in the main process (exact: int16 / 2**15). Fresh shared memory costs ~2.5 ms per
    4 MB on the 2-core dev box, more than decoding a batch of wav, so this halves the
    transfer cost that bounds a single worker.
    """
    if get_worker_info() is None:
        audio = np.empty((rows, samples), np.float32)
        return audio, audio
    shared = torch.empty((rows, samples), dtype=torch.int16).share_memory_()
    return shared.numpy(), shared  # the tensor itself must travel: its storage is the shared one


def _identity(batch):
    return batch


class BatchLoader:
    """The loader returned to callers: iterates a DataLoader whose workers ship int16 audio and
    turns it into float32 ``(B, S)`` in [-1, 1]. ``len()`` is the number of batches."""

    def __init__(self, loader: DataLoader, length: int | None):
        self.loader, self._length = loader, length

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("evaluation loaders have no fixed length (ranks differ)")
        return self._length

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            audio = batch["audio"]
            if isinstance(audio, torch.Tensor):  # int16 from a worker's shared memory
                # numpy, single-threaded, one pass: 3x cheaper than torch's .to().mul_() here;
                # exact, as int16 / 2**15 is representable in float32
                pcm, audio = audio.numpy(), np.empty(audio.shape, np.float32)
                np.multiply(pcm, INT16_SCALE, out=audio, casting="unsafe")
            batch["audio"] = torch.from_numpy(audio)
            batch["label"] = torch.from_numpy(batch["label"])
            batch["hard_negative"] = torch.from_numpy(batch["hard_negative"])
            if "teacher_logits" in batch:
                batch["teacher_logits"] = torch.from_numpy(batch["teacher_logits"])
            yield batch


def _to_batch(audio, labels, hard, keys, skipped, read, logits) -> dict:
    """Worker-side batch: small arrays stay numpy (pickled inline: a shared-memory tensor costs
    a file descriptor and an mmap each, ~0.3 ms); ``BatchLoader`` makes them tensors."""
    batch = {"audio": audio, "label": labels, "hard_negative": hard, "key": keys,
             "skipped": skipped, "read": read}
    if logits is not None:
        batch["teacher_logits"] = np.stack(logits)
    return batch


# --------------------------------------------------------------------------------------- training
class TrainBatches(IterableDataset):
    """Exactly ``len(self)`` batches per rank; see the module docstring."""

    def __init__(self, units: list[Unit], *, batch_size: int, batches_per_epoch: int, rank: int,
                 seed: int, epoch: int, num_workers: int, skip_batches: int, clip_samples: int,
                 sample_rate: int, shuffle_buffer: int, with_teacher_logits: bool):
        if not 0 <= skip_batches <= batches_per_epoch:
            raise ValueError(f"skip_batches={skip_batches} outside [0, {batches_per_epoch}]")
        self.units, self.batch_size, self.bpe = units, batch_size, batches_per_epoch
        self.rank, self.seed, self.epoch, self.skip = rank, seed, epoch, skip_batches
        self.num_workers = max(1, num_workers)
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.decoder = SampleDecoder(clip_samples, sample_rate, with_teacher_logits)

    def __len__(self) -> int:
        return self.bpe - self.skip

    def __iter__(self) -> Iterator[dict]:
        worker, n = _worker()
        if n != self.num_workers:
            raise RuntimeError(f"built for {self.num_workers} workers, run by {n}")
        logical = (worker + self.skip) % n  # physical worker w serves global batches skip + w + i*n
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, logical])
        skips = SkipCounter()
        pass_sizes: list[int] = []
        samples = self._shuffled(rng, split_units(self.units, logical, n), pass_sizes)
        B, S = self.batch_size, self.decoder.clip_samples
        bad_run = 0
        for b in range(logical, self.bpe, n):
            keep = b >= self.skip
            audio, handoff = _audio_buffer(B, S) if keep else (None, None)
            labels, hard = np.empty(B, np.int64), np.empty(B, np.bool_)
            keys, logits = [], [] if self.decoder.with_teacher_logits else None
            while len(keys) < B:
                shard, key, parts = next(samples)
                row = audio[len(keys)] if keep else None
                got = self.decoder.decode(shard, key, parts, row, skips)
                if got is None:
                    bad_run += 1
                    # two full passes plus the buffer without one usable sample: all are bad
                    if pass_sizes and bad_run > 2 * (pass_sizes[0] + self.shuffle_buffer):
                        raise RuntimeError(f"no usable sample in {[u.shard for u in self.units]}"
                                           f"; last problem: {skips.last_reason}")
                    continue
                bad_run = 0
                labels[len(keys)], hard[len(keys)] = got[0], got[1]
                if logits is not None:
                    logits.append(got[2])
                keys.append(key)
            skipped, read = skips.since_last()  # a dropped (resumed-over) batch's count goes with it
            if keep:
                yield _to_batch(handoff, labels, hard, keys, skipped, read, logits)

    def _shuffled(self, rng: np.random.Generator, units: list[Unit], pass_sizes: list[int]):
        """Endless raw samples: units in a fresh random order each pass, through a buffer.
        ``pass_sizes`` receives the number of samples read per pass."""
        def passes():
            while True:
                got = 0
                for i in rng.permutation(len(units)):
                    for sample in iter_unit(units[int(i)]):
                        got += 1
                        yield sample
                pass_sizes.append(got)
                if got == 0:
                    raise RuntimeError(f"no samples in {[u.shard for u in units]}")
        source = passes()
        buf = [next(source) for _ in range(self.shuffle_buffer)]
        while True:
            j = int(rng.integers(len(buf)))
            out, buf[j] = buf[j], next(source)
            yield out


def make_train_loader(split_dir: str | os.PathLike, *, batch_size: int, batches_per_epoch: int,
                      rank: int, world_size: int, seed: int, epoch: int, num_workers: int = 2,
                      skip_batches: int = 0, clip_samples: int = 16000,
                      expected_sample_rate: int = 16000, shuffle_buffer: int = 1000,
                      with_teacher_logits: bool = False) -> BatchLoader:
    """Training loader for one rank: exactly ``batches_per_epoch - skip_batches`` batches.

    Args:
        batch_size: clips per batch (per rank).
        seed, epoch: with ``rank`` (and ``num_workers``) fix the batches completely.
        skip_batches: batches of this epoch already consumed (resume): they are rebuilt and
            dropped inside the workers.
        clip_samples: clip length in samples; other lengths are skipped as bad data.
        shuffle_buffer: samples held per worker for shuffling (~32 KB each for 1-s int16 clips).
    Yields the batch dicts described in the module docstring. Not for ``accelerator.prepare``.
    """
    index = read_index(split_dir)
    check_sample_rate(index, expected_sample_rate, split_dir)
    dataset = TrainBatches(
        _units_for_rank(split_dir, index, rank, world_size), batch_size=batch_size,
        batches_per_epoch=batches_per_epoch, rank=rank, seed=seed, epoch=epoch,
        num_workers=num_workers, skip_batches=skip_batches, clip_samples=clip_samples,
        sample_rate=expected_sample_rate, shuffle_buffer=shuffle_buffer,
        with_teacher_logits=with_teacher_logits)
    return _loader(dataset, num_workers, len(dataset))


def _loader(dataset: IterableDataset, num_workers: int, length: int | None) -> BatchLoader:
    # a plain DataLoader (wds.WebLoader has no len(), which progress bars and schedulers use);
    # batches are made in the workers, so batch_size=None; in-order delivery keeps determinism
    extra = {"prefetch_factor": 4, "persistent_workers": False} if num_workers > 0 else {}
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                        **extra)
    return BatchLoader(loader, length)


# ------------------------------------------------------------------------------------- evaluation
class EvalBatches(IterableDataset):
    """Sequential batches over this rank's samples, in shard order (last batch may be short)."""

    def __init__(self, units: list[Unit], *, batch_size: int, clip_samples: int, sample_rate: int,
                 with_teacher_logits: bool):
        self.units, self.batch_size = units, batch_size
        self.decoder = SampleDecoder(clip_samples, sample_rate, with_teacher_logits)

    def __iter__(self) -> Iterator[dict]:
        worker, n = _worker()
        skips = SkipCounter()
        B, S = self.batch_size, self.decoder.clip_samples
        audio, handoff = _audio_buffer(B, S)
        labels, hard = np.empty(B, np.int64), np.empty(B, bool)
        keys, logits = [], [] if self.decoder.with_teacher_logits else None

        def flush():
            k = len(keys)  # the buffer is handed over (a view for the short last batch)
            return _to_batch(handoff[:k], labels[:k].copy(), hard[:k].copy(), list(keys), *skips.since_last(),
                             logits)

        for unit in split_units(self.units, worker, n):
            for shard, key, parts in iter_unit(unit):
                got = self.decoder.decode(shard, key, parts, audio[len(keys)], skips)
                if got is None:
                    continue
                labels[len(keys)], hard[len(keys)] = got[0], got[1]
                if logits is not None:
                    logits.append(got[2])
                keys.append(key)
                if len(keys) == B:
                    yield flush()
                    audio, handoff = _audio_buffer(B, S)  # the yielded batch keeps the old one
                    keys = []
                    logits = [] if logits is not None else None
        if keys:
            yield flush()


def make_eval_loader(split_dir: str | os.PathLike, *, batch_size: int, rank: int, world_size: int,
                     num_workers: int = 1, clip_samples: int = 16000,
                     expected_sample_rate: int = 16000,
                     with_teacher_logits: bool = False) -> BatchLoader:
    """Deterministic loader for val/test: every sample is read by exactly one rank, once.

    Ranks may get different numbers of batches; the caller gathers results and de-duplicates
    by ``key`` (batches have the same dict format as training).
    """
    index = read_index(split_dir)
    check_sample_rate(index, expected_sample_rate, split_dir)
    dataset = EvalBatches(_units_for_rank(split_dir, index, rank, world_size),
                          batch_size=batch_size, clip_samples=clip_samples,
                          sample_rate=expected_sample_rate, with_teacher_logits=with_teacher_logits)
    return _loader(dataset, num_workers, None)


# ----------------------------------------------------------------------- sequential whole-split use
def split_keys(split_dir: str | os.PathLike) -> list[str]:
    """The sample keys of a split in order, read from the tars without decoding any audio."""
    index = read_index(split_dir)
    return [key for shard in shard_paths(split_dir, index) for key, _ in iter_tar_samples(shard)]


def iter_split(split_dir: str | os.PathLike, keys: Collection[str] | None = None) -> Iterator[dict]:
    """Every sample of a split in order (only those in ``keys`` when given; the others are not
    decoded), decoded: ``{key, audio float32 (N,), sample_rate, meta, teacher_logits (C,) | None,
    shard}``. Raises on bad data (use it for trusted splits / tools)."""
    index = read_index(split_dir)
    for shard in shard_paths(split_dir, index):
        for key, parts in iter_tar_samples(shard):
            if keys is not None and key not in keys:
                continue
            ext = next(e for e in ("flac", "wav", "npy") if e in parts)
            pcm, sr = decode_audio(parts[ext], ext)
            logits = None
            if "teacher.npy" in parts:
                import io
                logits = np.load(io.BytesIO(parts["teacher.npy"])).astype(np.float32)
            yield {"key": key, "audio": pcm.astype(np.float32) * INT16_SCALE,
                   "sample_rate": sr or int(index["sample_rate"]), "meta": json.loads(parts["json"]),
                   "teacher_logits": logits, "shard": shard}


def iter_stream(split_dir: str | os.PathLike,
                keys: Collection[str] | None = None) -> Iterator[tuple[str, np.ndarray, int]]:
    """Long continuous audio of the ``stream`` split: ``(key, float32 (N,) in [-1, 1], Hz)``,
    only the streams in ``keys`` when given."""
    for s in iter_split(split_dir, keys):
        yield s["key"], s["audio"], s["sample_rate"]


def load_background(split_dir: str | os.PathLike, max_clips: int | None = None,
                    clip_samples: int | None = None) -> torch.Tensor:
    """Noise bank for augmentation: float32 ``(K, S)``; clips are cropped / tiled to
    ``clip_samples`` (default: the shortest clip's length). ``K <= max_clips``."""
    clips = []
    for s in iter_split(split_dir):
        clips.append(s["audio"])
        if max_clips is not None and len(clips) >= max_clips:
            break
    if not clips:
        raise ValueError(f"{Path(split_dir) / INDEX_NAME}: background split holds no clips")
    S = clip_samples or min(c.size for c in clips)
    bank = np.stack([np.tile(c, -(-S // c.size))[:S] for c in clips])
    return torch.from_numpy(bank.astype(np.float32))
