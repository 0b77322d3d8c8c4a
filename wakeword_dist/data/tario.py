"""The tar-member stage of the readers' webdataset pipeline, plus the writers' tar helpers.

The readers are ``webdataset`` pipelines (shard lists, ``gopen`` URL opening, node / worker split,
resampled shards, shuffle buffer, ``with_epoch``; see ``reader.py``). This module replaces only
the library's ``tar_file_expander`` + ``group_by_keys`` stage: it parses the 512-byte headers of
the byte stream ``gopen`` returns (a file, a ``curl`` pipe, any ``pipe:`` command) by slicing,
instead of ``tarfile``'s streaming mode, which builds a ``TarInfo`` and parses pax fields per
member. Measured on the shared 2-core dev box (load 3-7 from other jobs), 8,192 one-second wav
clips (2 members each, 277 MB, page cache warm), one process, tar stage only, best of runs:
``tar_file_expander`` + ``group_by_keys`` 13,534 samples/s, this stage 56,898 samples/s
(``python -m wakeword_dist.data.tario --bench DIR``). At 8,000 clips/s/worker a clip may cost
125 us in all; the library's stage alone would take ~74 us of it, this one ~18 us.

Only regular files are returned; directories, links and other entries are skipped. Damage (bad
checksum, short read, missing end-of-archive marker, a connection cut mid-shard) raises
``TruncatedShardError`` after every complete member before it has been yielded.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from typing import BinaryIO, Iterator

import numpy as np

BLOCK = 512


class TruncatedShardError(IOError):
    """The tar ends early or has a corrupt header; ``path`` and the last good member are named."""

    def __init__(self, path: str, last_member: str | None, why: str):
        self.path, self.last_member = path, last_member
        super().__init__(f"{path}: {why} (after member {last_member!r})")


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    field = field.rstrip(b"\0 ").lstrip(b" ")
    return int(field, 8) if field else 0


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156])
    arr = np.frombuffer(header, dtype=np.uint8)
    # the checksum is computed with its own 8-byte field taken as spaces (8 * 32 = 256)
    return stored == int(arr.sum()) - int(arr[148:156].sum()) + 256


class _Chunked:
    """``read(n)`` over any byte stream, pulling it in 1-MiB chunks: a ``curl`` pipe or an
    8-KiB-buffered file costs a syscall (plus, for ``gopen``'s ``Pipe``, a ``waitpid``) per
    read, and a member takes three reads (header, payload, padding)."""

    CHUNK = 1 << 20

    def __init__(self, stream: BinaryIO):
        self.stream, self.buf, self.pos = stream, b"", 0

    def read(self, n: int) -> bytes:
        end = self.pos + n
        if end <= len(self.buf):
            out = self.buf[self.pos:end]
            self.pos = end
            return out
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        while have < n:
            chunk = self.stream.read(max(self.CHUNK, n - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self.buf, self.pos = data, min(n, len(data))
        return data[:n]


def fast_stream(stream: BinaryIO) -> BinaryIO:
    """A 1-MiB-buffered reader over the file or pipe under ``stream`` (a file ``gopen`` just
    opened, or the pipe inside its ``Pipe``; nothing may have been read from it yet), read by C
    code; ``stream`` itself when there is none. The caller keeps ``stream`` to close it (for a
    ``Pipe``: the command's exit status)."""
    inner = getattr(stream, "stream", stream)
    raw = getattr(inner, "raw", None)
    if isinstance(inner, io.BufferedReader) and raw is not None and not inner.closed:
        return io.BufferedReader(raw, 1 << 20)  # freshly opened: nothing is buffered in ``inner``
    return stream


def iter_tar_members(source: str | os.PathLike | BinaryIO,
                     name: str | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member_name, payload_bytes)`` for every regular file of a tar.

    ``source`` is a path (opened here) or a readable byte stream (read to the end of the archive,
    not closed); ``name`` is what errors call it (default: the path, or ``repr(stream)``).
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb", buffering=1 << 20) as f:
            yield from iter_tar_members(f, os.fspath(source) if name is None else name)
        return
    path = repr(source) if name is None else name
    # a BufferedReader's read(n) is C; anything else (gopen's Pipe checks its command's status on
    # every read) goes through _Chunked
    f = source if isinstance(source, io.BufferedReader) else _Chunked(source)
    last = None
    long_name = None
    while True:
        header = f.read(BLOCK)
        if len(header) < BLOCK:
            raise TruncatedShardError(path, last, "no end-of-archive marker")
        if header.count(0) == BLOCK:
            return  # end-of-archive (the second zero block need not be checked)
        # the ustar magic is a cheap sanity check (a shifted or garbage header fails it);
        # the full checksum (~5 us/member) is only computed for pre-POSIX headers
        if header[257:262] != b"ustar" and not _checksum_ok(header):
            raise TruncatedShardError(path, last, "bad tar header checksum")
        try:
            size = _octal(header[124:136])
        except ValueError:
            raise TruncatedShardError(path, last, "corrupt tar header") from None
        kind = header[156:157]
        payload = f.read(size)
        if len(payload) < size:
            raise TruncatedShardError(path, last, f"member payload cut short ({len(payload)}/{size} B)")
        pad = -size % BLOCK
        if pad and len(f.read(pad)) < pad:
            raise TruncatedShardError(path, last, "member padding cut short")
        if kind == b"L":  # GNU long name for the next member
            long_name = payload.rstrip(b"\0").decode("utf-8")
            continue
        if kind == b"x":  # pax extended header: only the path matters here
            for rec in payload.decode("utf-8", "replace").split("\n"):
                if " path=" in rec:
                    long_name = rec.split(" path=", 1)[1]
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue
        if long_name is not None:
            member, long_name = long_name, None
        else:
            member = header[0:100].split(b"\0", 1)[0].decode("utf-8")
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8")
                if prefix:
                    member = f"{prefix}/{member}"
        last = member
        yield member, payload


def split_member_name(name: str) -> tuple[str, str]:
    """``'dir/abc.teacher.npy'`` -> ``('dir/abc', 'teacher.npy')`` (WebDataset's key convention)."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1:]


def iter_tar_samples(source: str | os.PathLike | BinaryIO,
                     name: str | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive members by key: yield ``(key, {ext: bytes})`` per sample (``source``,
    ``name``: as for ``iter_tar_members``).

    On damage the complete samples before it are yielded, then ``TruncatedShardError`` is raised
    (the partial sample in progress is dropped).
    """
    key, parts = None, {}
    for member, data in iter_tar_members(source, name):
        k, ext = split_member_name(member)
        if k != key:
            if key is not None:
                yield key, parts
            key, parts = k, {}
        parts[ext] = data
    if key is not None:
        yield key, parts


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> str:
    """Append ``data`` as member ``name`` with fixed metadata (mtime 0, uid/gid 0, mode 644), so
    equal content gives equal bytes; returns the payload's sha256 hex digest."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(data).hexdigest()


def content_hash(member_digests) -> str:
    """sha256 over (member name, sha256(member bytes)) sorted by name: independent of shard
    boundaries and write order, so the same samples give the same hash."""
    h = hashlib.sha256()
    for name, digest in sorted(member_digests):
        h.update(f"{name}\0{digest}\n".encode("utf-8"))
    return h.hexdigest()


def _bench(split_dir: str) -> None:
    """Samples/s of this stage vs webdataset's ``tar_file_expander`` + ``group_by_keys`` over
    every ``*.tar`` in ``split_dir`` (one process, best of 3, page cache warm)."""
    import glob
    import time

    import webdataset as wds

    urls = sorted(glob.glob(os.path.join(split_dir, "*.tar")))

    def ours():
        return sum(1 for u in urls for _ in iter_tar_samples(wds.gopen(u)))

    def library():
        streams = wds.tariterators.url_opener({"url": u} for u in urls)
        return sum(1 for _ in wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(streams)))

    for label, fn in (("webdataset tar_file_expander + group_by_keys", library), ("tario", ours)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            n = fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{label}: {n / best:,.0f} samples/s ({n} samples)")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["--bench"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m wakeword_dist.data.tario --bench SPLIT_DIR")
    _bench(sys.argv[2])
