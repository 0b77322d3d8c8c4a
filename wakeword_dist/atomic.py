"""Atomic file and directory writes: a crash never leaves a half-written file behind.

Every writer in the project that produces an artefact other stages read (``index.json``, shards,
reports) writes to a temporary name in the same directory and then ``os.replace``s it, which is
atomic on POSIX filesystems when source and target share a directory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python types, tuples into lists and keys into
    strings; NaN/inf -> None (an undefined metric is null in strict JSON, not a bare NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """The project's one JSON writer: strict JSON (``to_jsonable``: NaN/inf -> null, so any JSON
    parser reads it) with sorted keys (equal content gives equal bytes, e.g. for index.json's
    content hash), written atomically. Returns the path."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
    return Path(path)


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Move a fully written ``tmp_dir`` to ``final_dir``, replacing any previous content.

    The old directory is first renamed aside and deleted only after the new one is in place, so a
    reader sees either the complete old or the complete new directory (a crash between the two
    renames leaves the old one under a ``.old-*`` name, never a half-written ``final_dir``).
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
