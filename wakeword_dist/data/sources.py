"""Where shards live, which of them a (rank, worker) reads, and the pipeline stages that turn a
shard URL into decoded samples.

Locations: a split is a local folder, an ``http(s)://`` URL prefix, or a ``pipe:`` command
template with a ``{path}`` placeholder (``pipe:aws s3 cp s3://bucket/ds/{path} -``). Everything,
``index.json`` included, is opened with ``webdataset.gopen`` (``curl`` for http(s), a shell for
``pipe:``, ``open`` for files).

A consumer's *share* is a list of shard URLs plus a sample filter ``i % modulus == residue``
(``i`` = position of the sample in its tar). Splitting by whole shards is preferred; when there
are fewer shards than consumers the split falls back to sample index, so every rank / worker still
reads different samples.

Bad data never raises mid-epoch: an unreachable or truncated shard (after ``retries`` re-reads
for a URL), a member that does not decode, a clip with the wrong length or sample rate is counted
in ``SkipCounter`` and logged once per (shard, key). Only a missing teacher-logits member raises
(a configuration error, not bad data).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Collection, Iterable, Iterator

import numpy as np

from wakeword_dist.data.audio_io import AUDIO_EXTS, AudioDecodeError, INT16_SCALE, decode_audio
from wakeword_dist.data.tario import TruncatedShardError, fast_stream, iter_tar_samples

log = logging.getLogger("wakeword_dist.data")


# -------------------------------------------------------------------------------------- locations
def is_url(location: str | os.PathLike) -> bool:
    """True for ``pipe:`` commands and ``scheme://`` URLs (``file://`` included); False for paths."""
    loc = os.fspath(location)
    return loc.startswith("pipe:") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", loc) is not None


class Location(str):
    """A URL or ``pipe:`` split location that joins like a ``Path`` (``root / "train"``), so code
    written for folders (``(split / "index.json").exists()``) works on remote data too."""

    def __truediv__(self, part: str) -> "Location":
        return Location(join_dir(str(self), part))

    def _as_file(self) -> str:
        # a joined pipe: template reads ".../index.json/{path} -": the file itself is the path
        return self.replace("/{path}", "", 1) if self.startswith("pipe:") else str(self)

    def exists(self) -> bool:
        """Whether the file can be read (an index: small); a split folder never "exists"."""
        try:
            read_url_bytes(self._as_file())
        except OSError:
            return False
        return True

    is_file = exists


def location(root: str | os.PathLike) -> "os.PathLike | Location":
    """``Path`` for a local folder, ``Location`` for a URL prefix or ``pipe:`` template."""
    from pathlib import Path

    root = os.fspath(root)
    if not is_url(root):
        return Path(root)
    if root.startswith("pipe:"):
        _pipe_template(root)
    return Location(root)


def join_dir(root: str | os.PathLike, part: str) -> str | os.PathLike:
    """The location of sub-folder ``part`` (a ``Path`` stays a ``Path``; a ``pipe:`` template
    keeps its ``{path}`` placeholder for the file names that follow)."""
    if not is_url(root):
        return root / part if isinstance(root, os.PathLike) else os.path.join(root, part)
    root = os.fspath(root)
    if root.startswith("pipe:"):
        return _pipe_template(root).replace("{path}", f"{part}/{{path}}")
    return f"{root.rstrip('/')}/{part}"


def file_url(folder: str | os.PathLike, name: str) -> str:
    """The URL (or path) ``gopen`` opens for file ``name`` of ``folder``."""
    folder = os.fspath(folder)
    if folder.startswith("pipe:"):
        return _pipe_template(folder).replace("{path}", name)
    if is_url(folder):
        return f"{folder.rstrip('/')}/{name}"
    return os.path.join(folder, name)


def _pipe_template(root: str) -> str:
    if "{path}" not in root:
        raise ValueError(f"{root!r}: a pipe: location needs a {{path}} placeholder for the file it "
                         f"reads or writes, e.g. 'pipe:aws s3 cp s3://bucket/ds/{{path}} -'")
    return root


_CURL_EXIT = {6: "host not found", 7: "cannot connect", 18: "connection closed mid-transfer",
              22: "HTTP error status (>= 400)", 28: "timed out", 35: "TLS handshake failed",
              52: "empty reply from server", 56: "connection reset while receiving"}


def describe_error(url: str, e: BaseException, stream=None) -> str:
    """One line naming ``url`` and what went wrong (curl's exit codes spelled out; with the
    ``stream`` of a broken pipe, its command's exit status)."""
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror  # "Broken pipe", "No such file or directory"
    else:
        text = str(e.args[0]) if e.args else type(e).__name__
    proc = getattr(stream, "proc", None) if stream is not None else None
    if proc is not None and isinstance(e, BrokenPipeError):  # the command died: say how
        try:
            text = f"command exit {proc.wait(timeout=30)} ({text})"
        except Exception:
            pass
    m = re.search(r"\): exit (\d+) \(", text)  # gopen's Pipe: "(<args>): exit N (read) {}"
    if m and "curl" in text:
        code = int(m.group(1))
        text = f"curl exit {code}: {_CURL_EXIT.get(code, 'transfer failed')}"
    elif m and text.startswith("(("):
        text = f"command exit {m.group(1)}"
    text = text.replace(url, "").strip(" :") or type(e).__name__
    return f"{url}: {text}"


class ShardReadError(OSError):
    """A shard, index or file that could not be read; the message names its URL."""


def open_url(url: str, mode: str = "rb"):
    """``webdataset.gopen`` with one-line errors naming the URL."""
    import webdataset as wds

    try:
        return wds.gopen(url, mode)
    except Exception as e:
        raise ShardReadError(describe_error(url, e)) from None


def read_url_bytes(url: str) -> bytes:
    """The whole content of ``url`` (an index file): ``ShardReadError`` naming it on failure."""
    stream = open_url(url)
    try:
        data = stream.read()
        _close(stream)
    except Exception as e:
        raise ShardReadError(describe_error(url, e)) from None
    finally:
        _close(stream, quiet=True)
    if not data:  # curl -f -s: an HTTP error gives no bytes (its exit status was checked above)
        raise ShardReadError(f"{url}: empty")
    return data


def _close(stream, quiet: bool = False) -> None:
    try:
        stream.close()
    except Exception:
        if not quiet:
            raise


# ------------------------------------------------------------------------------------- consumers
@dataclass(frozen=True)
class Share:
    """Shards ``urls``, of each only samples ``i`` with ``i % modulus == residue``."""
    urls: tuple[str, ...]
    modulus: int = 1
    residue: int = 0

    def split(self, part: int, n_parts: int) -> "Share":
        """Part ``part`` of ``n_parts``: whole shards if there are enough, else every shard with
        a finer sample filter (``i % (m * n) == r + m * part``), so parts never overlap."""
        if not 0 <= part < n_parts:
            raise ValueError(f"part {part} outside [0, {n_parts})")
        if n_parts == 1:
            return self
        if len(self.urls) >= n_parts:
            return Share(self.urls[part::n_parts], self.modulus, self.residue)
        return Share(self.urls, self.modulus * n_parts, self.residue + self.modulus * part)


@dataclass(frozen=True)
class SourceFilter:
    """Keep a sample when its json ``source`` is in ``include`` (if given) and not in ``exclude``.

    Leave-one-engine-out: ``SourceFilter(exclude={"flite"})`` for training,
    ``SourceFilter(include={"flite"})`` for the held-out test.
    """
    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def make(cls, include: Collection[str] | None = None,
             exclude: Collection[str] | None = None) -> "SourceFilter | None":
        """``None`` when both are empty (no filtering, no json parse ahead of decoding)."""
        for name, v in (("include_sources", include), ("exclude_sources", exclude)):
            if isinstance(v, str):
                raise TypeError(f"{name} must be a collection of source names, got the string {v!r}")
        if not include and not exclude:
            return None
        return cls(frozenset(include or ()), frozenset(exclude or ()))

    def keep(self, source: str) -> bool:
        return (not self.include or source in self.include) and source not in self.exclude

    def __str__(self) -> str:
        parts = ([f"include={sorted(self.include)}"] if self.include else []) + \
                ([f"exclude={sorted(self.exclude)}"] if self.exclude else [])
        return "sources " + " ".join(parts)


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


@dataclass
class ReadProgress:
    """Shared by a worker's source and decoding stages, to stop instead of spinning forever when
    nothing usable is left: shard reads finished per URL since the last sample the source let
    through (``since_sample``) and since the last good decode (``since_good``)."""
    urls: tuple[str, ...]
    since_sample: dict = field(default_factory=dict)
    since_good: dict = field(default_factory=dict)
    bad_run: int = 0

    def finished(self, url: str) -> None:
        self.since_sample[url] = self.since_sample.get(url, 0) + 1
        self.since_good[url] = self.since_good.get(url, 0) + 1

    def every_shard_read(self, counts: dict, times: int) -> bool:
        return len(counts) == len(set(self.urls)) and min(counts.values()) >= times

    def good(self) -> None:
        self.since_good.clear()
        self.bad_run = 0


class ShardReader:
    """The source stage: ``{"url": ...}`` dicts (from a webdataset shard list) in, samples
    ``(url, key, parts, meta)`` out, for one consumer's ``share``.

    ``meta`` is the parsed json when a ``sources`` filter needed it (``None`` otherwise: the
    decoder parses it). A URL whose read fails (unreachable, HTTP error, cut mid-shard) is read
    again up to ``retries`` times, ``retry_delay_s`` x attempt apart, skipping the samples already
    delivered, so a transient failure loses nothing and changes no batch; after that the loss is
    yielded as a ``LOST`` sample (counted as bad) and logged with the URL. Local files are not
    re-read (their damage is permanent).
    """

    def __init__(self, share: Share, *, retries: int = 2, retry_delay_s: float = 1.0,
                 sources: SourceFilter | None = None, progress: ReadProgress | None = None):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.share, self.retries, self.retry_delay_s = share, retries, retry_delay_s
        self.sources = sources
        self.progress = progress
        self._given_up: set[str] = set()  # URLs that failed after retries: read once from now on

    def __call__(self, src: Iterable[dict]) -> Iterator[tuple]:
        for item in src:
            url = item["url"]
            yielded = 0
            for sample in self.iter_shard(url):
                yielded += 1
                if self.progress is not None:
                    self.progress.since_sample.clear()
                yield sample
            if self.progress is not None:
                self.progress.finished(url)
                if self.progress.every_shard_read(self.progress.since_sample, 2):
                    what = f" passing the {self.sources}" if self.sources else ""
                    raise RuntimeError(f"no samples{what} in {list(self.share.urls)}")

    def iter_shard(self, url: str) -> Iterator[tuple]:
        """This share's samples of one shard, in tar order (retried, damage as ``LOST``)."""
        m, r = self.share.modulus, self.share.residue
        delivered = 0  # tar positions already handled (yielded or filtered) by earlier attempts
        retries = 0 if (url in self._given_up or not is_url(url)) else self.retries
        for attempt in range(retries + 1):
            i = -1
            try:
                for i, (key, parts) in enumerate(_read_tar(url)):
                    if i < delivered:
                        continue
                    delivered = i + 1
                    if i % m != r:
                        continue
                    meta = None
                    if self.sources is not None:
                        try:
                            meta = json.loads(parts["json"])
                        except (KeyError, ValueError):  # the decoder counts it as bad
                            pass
                        else:
                            if not self.sources.keep(str(meta.get("source", ""))):
                                continue
                    yield url, key, parts, meta
                return
            except OSError as e:  # TruncatedShardError, ShardReadError, a pipe's exit status
                reason = str(e) if isinstance(e, (TruncatedShardError, ShardReadError)) else describe_error(url, e)
                if attempt < retries:
                    log.warning("%s; re-reading (retry %d of %d)", reason, attempt + 1, retries)
                    time.sleep(self.retry_delay_s * (attempt + 1))
                    continue
                if retries:
                    self._given_up.add(url)
                lost = delivered  # the sample being read when the damage was hit
                if lost % m == r:
                    after = f"after {delivered} samples" if delivered else "no sample read"
                    yield url, f"({after})", {LOST: reason}, None
                else:
                    log.warning("%s", reason)
                return


def _read_tar(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, parts)`` of the tar at ``url``; damage or a failed transfer raises ``OSError``
    after the complete samples before it. A pipe's exit status is checked at the end."""
    stream = open_url(url)
    fast = fast_stream(stream)  # kept alive until ``stream`` is closed (it shares its file)
    try:
        try:
            yield from iter_tar_samples(fast, url)
        except TruncatedShardError as e:
            failed = _exit_problem(stream, url)  # a short read of a failed transfer: say why
            if failed:
                raise ShardReadError(f"{failed}; {e.args[0].replace(url + ': ', '')}") from None
            raise
        # the archive's record padding (< 10 KiB) is read so a pipe can end by itself; more than
        # that is not part of the shard: stop the command instead of reading it to the end
        if fast.read(1 << 16) and fast.read(1 << 16):
            _kill(stream)
            return
        failed = _exit_problem(stream, url)
        if failed:
            raise ShardReadError(failed)
    except GeneratorExit:  # left mid-shard (end of epoch): stop the command, do not wait for it
        _kill(stream)
        raise
    finally:
        _close(stream, quiet=True)


def _kill(stream) -> None:
    proc = getattr(stream, "proc", None)  # gopen's Pipe
    if proc is not None and proc.poll() is None:
        proc.kill()


def _exit_problem(stream, url: str) -> str | None:
    """Close ``stream``; for a gopen ``Pipe`` whose command failed, the one-line reason."""
    try:
        stream.close()
    except Exception as e:
        return describe_error(url, e)
    return None


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
               skips: SkipCounter, meta: dict | None = None):
        """Write float32 audio into ``out_row`` ``(S,)``; return ``(label, hard, logits)`` or
        ``None`` for a bad sample (counted in ``skips``). ``out_row=None`` only validates;
        ``meta``: the json member already parsed (by a source filter)."""
        skips.read += 1
        if LOST in parts:
            skips.skip(shard, key, parts[LOST])
            return None
        try:
            ext = next((e for e in AUDIO_EXTS if e in parts), None)
            if ext is None:
                raise AudioDecodeError(f"no audio member (has {sorted(parts)})")
            if meta is None:
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
