"""Streaming shard readers on webdataset's pipeline: training (resampled, equal steps per rank),
evaluation (each sample exactly once), the long ``stream`` split and any small whole split
(background noise, room impulse responses).

A split is a local folder, an ``http(s)://`` prefix or a ``pipe:`` template with ``{path}``
(``sources.py``); its ``index.json`` is read through the same ``gopen``. ``Split.from_spec`` reads
a brace-expanded shard spec with no index (``https://host/ds/train-{000000..000999}.tar``).

Each DataLoader worker runs one ``webdataset.DataPipeline``::

    ResampledShards(this worker's shards)      library: resampled shards, seeded per worker
    -> ShardReader                             ours: gopen + fast tar stage (tario), retries,
                                               sample-index split, source filter on the json
    -> webdataset.shuffle(shuffle_buffer)      library: shuffle buffer
    -> batches                                 ours: np.frombuffer decoding into a (B, S) batch
    .with_epoch(batches of this worker)        library: fixed length, whatever the shard sizes

Evaluation uses ``SimpleShardList`` in shard order and no shuffle. The library's node and worker
splitters read the rank from the environment and the worker id as given; here both are explicit:

- shards are split by rank *before* any shuffle (``shards[rank::world_size]``; with fewer shards
  than ranks every rank reads every shard but keeps only samples ``i % world_size == rank``);
- each rank's shards are split again among its DataLoader workers the same way, by *logical*
  worker (below);
- a training worker resamples its shards forever, so every rank yields exactly
  ``batches_per_epoch`` batches whatever its shard sizes and filters: no DDP hang.

Determinism: DataLoader workers are served round-robin, so batch ``b`` comes from logical worker
``b % num_workers``, whose shard draws and shuffle are seeded by ``(seed, epoch, rank, worker)``.
``skip_batches=k`` makes each worker rebuild (decode, not collate) and drop its batches ``< k``,
so the result equals the full run minus its first ``k`` batches (exact resume). The same
``num_workers`` must be used to resume: it changes which worker makes which batch. A transient
read failure that a retry repairs changes no batch (the re-read skips what was delivered).

Batches are built inside the workers into preallocated arrays (no per-sample dict / collate):
``audio`` float32 ``(B, S)`` in [-1, 1], ``label`` int64 ``(B,)`` (-1 = unlabelled),
``hard_negative`` bool ``(B,)``, ``key`` list[str], ``read`` and ``skipped`` int (samples this
worker took for decoding since its previous batch, and the bad ones among them: the bad fraction
is ``skipped / read``), ``teacher_logits`` float32 ``(B, C)`` when requested.

Source filters (``include_sources`` / ``exclude_sources``, on the json ``source`` field) act in
the worker before the shuffle and before any audio is decoded; filtered samples are neither read
nor skipped in the counts.
"""

from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass
from itertools import count
from typing import Collection, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wakeword_dist.data.audio_io import INT16_SCALE, decode_audio
from wakeword_dist.data.shard_writer import INDEX_NAME
from wakeword_dist.data.sources import (LOST, ReadProgress, SampleDecoder, Share, ShardReader,
                                        ShardReadError, SkipCounter, SourceFilter, _read_tar,
                                        file_url, is_url, location, read_url_bytes)

__all__ = ["make_train_loader", "make_eval_loader", "iter_split", "iter_stream", "load_background",
           "read_index", "split_keys", "split_exists", "check_sample_rate", "Split", "location"]

INDEX_KEYS = ("shards", "samples_per_shard", "sample_rate", "label_names")


# ------------------------------------------------------------------------------------------ index
def read_index(split_dir: str | os.PathLike) -> dict:
    """Load ``split_dir/index.json`` (a path or URL); one-line ``FileNotFoundError`` (local) /
    ``ShardReadError`` (URL) / ``ValueError`` naming it."""
    where = file_url(split_dir, INDEX_NAME)
    if is_url(split_dir):
        text = read_url_bytes(where)
    elif not os.path.isfile(where):
        raise FileNotFoundError(f"{where}: missing shard index (build the split with synth or "
                                f"build-shards first)")
    else:
        with open(where, "rb") as f:
            text = f.read()
    try:
        index = json.loads(text)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: invalid shard index: {e}") from None
    missing = [k for k in INDEX_KEYS if k not in index] if isinstance(index, dict) else INDEX_KEYS
    if missing:
        raise ValueError(f"{where}: invalid shard index: missing {list(missing)}")
    return index


def split_exists(split_dir: str | os.PathLike) -> bool:
    """Whether the split has an index (for a URL: whether it can be read)."""
    if not is_url(split_dir):
        return os.path.isfile(file_url(split_dir, INDEX_NAME))
    try:
        read_index(split_dir)
    except (OSError, ValueError):
        return False
    return True


def check_sample_rate(index: dict, expected: int, split_dir: str | os.PathLike | None = None) -> None:
    """Raise ``ValueError`` naming the index file and both rates when they differ."""
    if int(index["sample_rate"]) != int(expected):
        where = file_url(split_dir, INDEX_NAME) if split_dir is not None else "index.json"
        raise ValueError(f"{where}: shards are {index['sample_rate']} Hz but {expected} Hz is "
                         f"expected (rebuild the shards or change the sample rate)")


@dataclass(frozen=True)
class Split:
    """What the readers read: shard URLs, label map and sample rate, and where they came from."""
    location: str
    urls: tuple[str, ...]
    label_names: tuple[str, ...]
    sample_rate: int

    @classmethod
    def open(cls, split_dir: "str | os.PathLike | Split") -> "Split":
        """The split whose ``index.json`` is at ``split_dir`` (a ``Split`` passes through)."""
        if isinstance(split_dir, Split):
            return split_dir
        index = read_index(split_dir)
        return cls(os.fspath(split_dir), tuple(file_url(split_dir, n) for n in index["shards"]),
                   tuple(index["label_names"]), int(index["sample_rate"]))

    @classmethod
    def from_spec(cls, spec: str, *, label_names: Collection[str], sample_rate: int) -> "Split":
        """Shards named by a webdataset spec (brace expansion, ``::`` between lists), no index:
        the label map and sample rate come from the caller (the config)."""
        urls = tuple(wds.shardlists.expand_urls(spec))
        if not urls or not label_names:
            raise ValueError(f"shard spec {spec!r}: needs shards and label names (got "
                             f"{len(urls)} shards, labels {list(label_names)})")
        return cls(spec, urls, tuple(label_names), int(sample_rate))

    def share(self, rank: int, world_size: int) -> Share:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if not self.urls:
            raise ValueError(f"{file_url(self.location, INDEX_NAME)}: no shards")
        return Share(self.urls).split(rank, world_size)


def _open_checked(split, expected_sample_rate: int) -> Split:
    sp = Split.open(split)
    if sp.sample_rate != int(expected_sample_rate):
        where = sp.location if not isinstance(split, (str, os.PathLike)) else file_url(split, INDEX_NAME)
        raise ValueError(f"{where}: shards are {sp.sample_rate} Hz but {expected_sample_rate} Hz is "
                         f"expected (rebuild the shards or change the sample rate)")
    return sp


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
def _seed(*parts: int) -> int:
    """One 63-bit seed from integers (same value in every process: no hash randomisation)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class TrainBatches(IterableDataset):
    """Exactly ``len(self)`` batches per rank; see the module docstring."""

    def __init__(self, share: Share, *, batch_size: int, batches_per_epoch: int, rank: int,
                 seed: int, epoch: int, num_workers: int, skip_batches: int, clip_samples: int,
                 sample_rate: int, shuffle_buffer: int, with_teacher_logits: bool,
                 sources: SourceFilter | None, retries: int, retry_delay_s: float):
        if not 0 <= skip_batches <= batches_per_epoch:
            raise ValueError(f"skip_batches={skip_batches} outside [0, {batches_per_epoch}]")
        self.share, self.batch_size, self.bpe = share, batch_size, batches_per_epoch
        self.rank, self.seed, self.epoch, self.skip = rank, seed, epoch, skip_batches
        self.num_workers = max(1, num_workers)
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.decoder = SampleDecoder(clip_samples, sample_rate, with_teacher_logits)
        self.sources, self.retries, self.retry_delay_s = sources, retries, retry_delay_s

    def __len__(self) -> int:
        return self.bpe - self.skip

    def __iter__(self) -> Iterator[dict]:
        worker, n = _worker()
        if n != self.num_workers:
            raise RuntimeError(f"built for {self.num_workers} workers, run by {n}")
        logical = (worker + self.skip) % n  # physical worker w serves global batches skip + w + i*n
        mine = sum(1 for b in range(logical, self.bpe, n) if b >= self.skip)
        if mine == 0:  # with_epoch(0) would mean "no limit"
            return iter(())
        share = self.share.split(logical, n)
        seed = _seed(self.seed, self.epoch, self.rank, logical)
        skips, progress = SkipCounter(), ReadProgress(share.urls)
        pipeline = wds.DataPipeline(
            wds.ResampledShards(list(share.urls), seed=seed, worker_seed=_no_worker_seed,
                                deterministic=True),
            ShardReader(share, retries=self.retries, retry_delay_s=self.retry_delay_s,
                        sources=self.sources, progress=progress),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                        rng=random.Random(seed)),
            lambda samples: self._batches(samples, logical, n, skips, progress),
        ).with_epoch(nbatches=mine)
        return iter(pipeline)

    def _batches(self, samples, logical: int, n: int, skips: SkipCounter,
                 progress: ReadProgress) -> Iterator[dict]:
        """Endless batches ``logical, logical + n, ...``; those ``< skip`` are built, not kept."""
        B, S = self.batch_size, self.decoder.clip_samples
        for b in count(logical, n):
            keep = b >= self.skip
            audio, handoff = _audio_buffer(B, S) if keep else (None, None)
            labels, hard = np.empty(B, np.int64), np.empty(B, np.bool_)
            keys, logits = [], [] if self.decoder.with_teacher_logits else None
            while len(keys) < B:
                url, key, parts, meta = next(samples)
                row = audio[len(keys)] if keep else None
                got = self.decoder.decode(url, key, parts, row, skips, meta)
                if got is None:
                    progress.bad_run += 1
                    # every shard read twice and twice the buffer consumed, nothing usable
                    if progress.bad_run > 2 * self.shuffle_buffer and \
                            progress.every_shard_read(progress.since_good, 2):
                        raise RuntimeError(f"no usable sample in {list(self.share.urls)}"
                                           f"; last problem: {skips.last_reason}")
                    continue
                progress.good()
                labels[len(keys)], hard[len(keys)] = got[0], got[1]
                if logits is not None:
                    logits.append(got[2])
                keys.append(key)
            skipped, read = skips.since_last()  # a dropped (resumed-over) batch's count goes with it
            if keep:
                yield _to_batch(handoff, labels, hard, keys, skipped, read, logits)


def _no_worker_seed() -> int:
    return 0  # the seed passed to ResampledShards already names the rank and logical worker


def make_train_loader(split_dir, *, batch_size: int, batches_per_epoch: int,
                      rank: int, world_size: int, seed: int, epoch: int, num_workers: int = 2,
                      skip_batches: int = 0, clip_samples: int = 16000,
                      expected_sample_rate: int = 16000, shuffle_buffer: int = 1000,
                      with_teacher_logits: bool = False,
                      include_sources: Collection[str] | None = None,
                      exclude_sources: Collection[str] | None = None,
                      retries: int = 2, retry_delay_s: float = 1.0) -> "BatchLoader":
    """Training loader for one rank: exactly ``batches_per_epoch - skip_batches`` batches.

    Args:
        split_dir: folder, URL prefix or ``pipe:`` template of a split with ``index.json``, or
            a ``Split`` (``Split.from_spec`` for shards without an index).
        batch_size: clips per batch (per rank).
        seed, epoch: with ``rank`` (and ``num_workers``) fix the batches completely.
        skip_batches: batches of this epoch already consumed (resume): they are rebuilt and
            dropped inside the workers.
        clip_samples: clip length in samples; other lengths are skipped as bad data.
        shuffle_buffer: samples held per worker for shuffling (~32 KB each for 1-s int16 clips).
        include_sources, exclude_sources: keep only samples whose json ``source`` is in
            ``include_sources`` (when given) and not in ``exclude_sources``; the number of
            batches does not change (the shards are resampled).
        retries, retry_delay_s: re-reads of a URL whose transfer failed, ``retry_delay_s`` x
            attempt apart (s); after them the loss is counted as bad data.
    Yields the batch dicts described in the module docstring. Not for ``accelerator.prepare``.
    """
    split = _open_checked(split_dir, expected_sample_rate)
    dataset = TrainBatches(
        split.share(rank, world_size), batch_size=batch_size,
        batches_per_epoch=batches_per_epoch, rank=rank, seed=seed, epoch=epoch,
        num_workers=num_workers, skip_batches=skip_batches, clip_samples=clip_samples,
        sample_rate=expected_sample_rate, shuffle_buffer=shuffle_buffer,
        with_teacher_logits=with_teacher_logits,
        sources=SourceFilter.make(include_sources, exclude_sources), retries=retries,
        retry_delay_s=retry_delay_s)
    return _loader(dataset, num_workers, len(dataset))


def _loader(dataset: IterableDataset, num_workers: int, length: int | None) -> "BatchLoader":
    # a plain DataLoader (wds.WebLoader has no len(), which progress bars and schedulers use);
    # batches are made in the workers, so batch_size=None; in-order delivery keeps determinism
    extra = {"prefetch_factor": 4, "persistent_workers": False} if num_workers > 0 else {}
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                        **extra)
    return BatchLoader(loader, length)


# ------------------------------------------------------------------------------------- evaluation
class EvalBatches(IterableDataset):
    """Sequential batches over this rank's samples, in shard order (last batch may be short)."""

    def __init__(self, share: Share, *, batch_size: int, clip_samples: int, sample_rate: int,
                 with_teacher_logits: bool, sources: SourceFilter | None, retries: int,
                 retry_delay_s: float):
        self.share, self.batch_size = share, batch_size
        self.decoder = SampleDecoder(clip_samples, sample_rate, with_teacher_logits)
        self.sources, self.retries, self.retry_delay_s = sources, retries, retry_delay_s

    def __iter__(self) -> Iterator[dict]:
        worker, n = _worker()
        share = self.share.split(worker, n) if n > 1 else self.share
        if not share.urls:
            return iter(())
        return iter(wds.DataPipeline(
            wds.SimpleShardList(list(share.urls)),
            ShardReader(share, retries=self.retries, retry_delay_s=self.retry_delay_s,
                        sources=self.sources),
            self._batches))

    def _batches(self, samples) -> Iterator[dict]:
        skips = SkipCounter()
        B, S = self.batch_size, self.decoder.clip_samples
        audio, handoff = _audio_buffer(B, S)
        labels, hard = np.empty(B, np.int64), np.empty(B, bool)
        keys, logits = [], [] if self.decoder.with_teacher_logits else None

        def flush():
            k = len(keys)  # the buffer is handed over (a view for the short last batch)
            return _to_batch(handoff[:k], labels[:k].copy(), hard[:k].copy(), list(keys),
                             *skips.since_last(), logits)

        for url, key, parts, meta in samples:
            got = self.decoder.decode(url, key, parts, audio[len(keys)], skips, meta)
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


def make_eval_loader(split_dir, *, batch_size: int, rank: int, world_size: int,
                     num_workers: int = 1, clip_samples: int = 16000,
                     expected_sample_rate: int = 16000, with_teacher_logits: bool = False,
                     include_sources: Collection[str] | None = None,
                     exclude_sources: Collection[str] | None = None,
                     retries: int = 2, retry_delay_s: float = 1.0) -> "BatchLoader":
    """Deterministic loader for val/test: every sample is read by exactly one rank, once.

    Ranks may get different numbers of batches; the caller gathers results and de-duplicates
    by ``key`` (batches have the same dict format as training). ``split_dir``, the source
    filters and retries: as for ``make_train_loader``.
    """
    split = _open_checked(split_dir, expected_sample_rate)
    dataset = EvalBatches(split.share(rank, world_size), batch_size=batch_size,
                          clip_samples=clip_samples, sample_rate=expected_sample_rate,
                          with_teacher_logits=with_teacher_logits,
                          sources=SourceFilter.make(include_sources, exclude_sources),
                          retries=retries, retry_delay_s=retry_delay_s)
    return _loader(dataset, num_workers, None)


# ----------------------------------------------------------------------- sequential whole-split use
def split_keys(split_dir) -> list[str]:
    """The sample keys of a split in order, read from the tars without decoding any audio."""
    return [key for url in Split.open(split_dir).urls for key, _ in _read_tar(url)]


def split_json(split_dir) -> dict[str, dict]:
    """``{key: json}`` of every sample of a split, from its json members only (no audio is
    decoded); a sample without a json member maps to ``{}``."""
    out = {}
    for url in Split.open(split_dir).urls:
        for key, parts in _read_tar(url):
            out[key] = json.loads(parts["json"]) if "json" in parts else {}
    return out


def split_sources(split_dir) -> dict[str, str]:
    """``{key: source}`` of every sample of a split (``""`` where a sample has none)."""
    return {k: str(meta.get("source", "")) for k, meta in split_json(split_dir).items()}


def iter_split(split_dir, keys: Collection[str] | None = None, *,
               include_sources: Collection[str] | None = None,
               exclude_sources: Collection[str] | None = None) -> Iterator[dict]:
    """Every sample of a split in order (only those in ``keys`` and passing the source filter
    when given; the others are not decoded), decoded: ``{key, audio float32 (N,), sample_rate,
    meta, teacher_logits (C,) | None, shard}``. Raises on bad data (trusted splits / tools)."""
    split = Split.open(split_dir)
    sources = SourceFilter.make(include_sources, exclude_sources)
    reader = ShardReader(Share(split.urls), retries=0, sources=sources)
    for url, key, parts, meta in wds.DataPipeline(wds.SimpleShardList(list(split.urls)), reader):
        if LOST in parts:
            raise ShardReadError(parts[LOST])
        if keys is not None and key not in keys:
            continue
        ext = next(e for e in ("flac", "wav", "npy") if e in parts)
        pcm, sr = decode_audio(parts[ext], ext)
        logits = None
        if "teacher.npy" in parts:
            logits = np.load(io.BytesIO(parts["teacher.npy"])).astype(np.float32)
        yield {"key": key, "audio": pcm.astype(np.float32) * INT16_SCALE,
               "sample_rate": sr or split.sample_rate,
               "meta": meta if meta is not None else json.loads(parts["json"]),
               "teacher_logits": logits, "shard": url}


def iter_stream(split_dir, keys: Collection[str] | None = None, *,
                include_sources: Collection[str] | None = None,
                exclude_sources: Collection[str] | None = None
                ) -> Iterator[tuple[str, np.ndarray, int]]:
    """Long continuous audio of the ``stream`` split: ``(key, float32 (N,) in [-1, 1], Hz)``,
    only the streams in ``keys`` (and passing the source filter) when given."""
    for s in iter_split(split_dir, keys, include_sources=include_sources,
                        exclude_sources=exclude_sources):
        yield s["key"], s["audio"], s["sample_rate"]


def load_background(split_dir, max_clips: int | None = None, clip_samples: int | None = None, *,
                    include_sources: Collection[str] | None = None,
                    exclude_sources: Collection[str] | None = None) -> torch.Tensor:
    """Any small split as one tensor (noise bank, room impulse responses): float32 ``(K, S)``;
    clips are cropped / tiled to ``clip_samples`` (default: the shortest clip's length).
    ``K <= max_clips``; in split order."""
    clips = []
    for s in iter_split(split_dir, include_sources=include_sources,
                        exclude_sources=exclude_sources):
        clips.append(s["audio"])
        if max_clips is not None and len(clips) >= max_clips:
            break
    if not clips:
        raise ValueError(f"{file_url(Split.open(split_dir).location, INDEX_NAME)}: split holds "
                         f"no clips (after the source filter, if any)")
    S = clip_samples or min(c.size for c in clips)
    bank = np.stack([np.tile(c, -(-S // c.size))[:S] for c in clips])
    return torch.from_numpy(bank.astype(np.float32))
