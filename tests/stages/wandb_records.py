"""Read a W&B run back from its local files: the ``run-<id>.wandb`` transaction logs that
wandb writes offline (and online, before upload).

Format (wandb's own "datastore"): a 7-byte header (ident ``:W&B``, magic uint16, version
uint8), then the LevelDB log format: 32 KiB blocks of records, each a 7-byte header (crc32 of
type + data, uint32; length uint16; type uint8: 1 full, 2 first, 3 middle, 4 last) and data;
the data of a full (or first..last) record is one serialized ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768          # bytes per LevelDB log block
HEADER = 7             # bytes of the file header and of each record header


def records(path: Path) -> Iterator:
    """Every protobuf Record of one .wandb file, in order; a checksum mismatch is an error."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:HEADER])
    if ident != b":W&B":
        raise ValueError(f"{path}: not a .wandb file (header {ident!r})")
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:                      # block trailer: zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:          # zeroed tail of the last block
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += HEADER + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def read_run(wandb_dir: Path, run_id: str) -> dict:
    """All local sessions of one run id under a ``wandb/`` folder, merged in time order:
    {"sessions": n, "job_types": [...], "groups": [...], "summary": {key: value},
     "history_keys": set, "artifacts": [{name, type, metadata, files {path: digest}}]}.
    Summary keys of nested updates are joined with '/'."""
    out: dict = {"sessions": 0, "job_types": [], "groups": [], "summary": {}, "history_keys": set(),
                 "artifacts": []}
    for path in sorted(Path(wandb_dir).glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")) + \
            sorted(Path(wandb_dir).glob(f"run-*-{run_id}/run-{run_id}.wandb")):
        out["sessions"] += 1
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["job_types"].append(record.run.job_type)
                out["groups"].append(record.run.run_group)
            elif kind == "summary":
                for item in record.summary.update:
                    key = "/".join(item.nested_key) if item.nested_key else item.key
                    out["summary"][key] = json.loads(item.value_json)
            elif kind == "history":
                out["history_keys"] |= {"/".join(i.nested_key) if i.nested_key else i.key
                                        for i in record.history.item}
            elif kind == "artifact":
                a = record.artifact
                out["artifacts"].append({"name": a.name, "type": a.type,
                                         "metadata": json.loads(a.metadata or "{}"),
                                         "files": {e.path: e.digest for e in a.manifest.contents}})
    return out
