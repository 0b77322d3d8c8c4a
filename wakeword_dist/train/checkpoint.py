"""Checkpoints that are either complete or invisible.

A checkpoint is written by every rank into `checkpoints/.tmp-step-XXXXXXXX/` (Accelerate's
`save_state`: model, optimizer, scheduler, per-rank RNG), then rank 0 adds `train_state.json`
(step, data position, architecture, config) and renames the folder to `step-XXXXXXXX/`.
A crash or `kill -9` mid-write leaves only a `.tmp-*` folder, which resume never picks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

TRAIN_STATE = "train_state.json"
PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Complete = renamed into place with its train state."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and (p / TRAIN_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = complete_checkpoints(ckpt_root)
    return done[-1] if done else None


def read_train_state(ckpt: Path) -> dict:
    path = Path(ckpt) / TRAIN_STATE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"checkpoint state {path} is unreadable: {exc}") from None


def save_checkpoint(accelerator, ckpt_root: Path, step: int, train_state: dict, keep: int) -> Path:
    """Collective: every rank must call it at the same step."""
    ckpt_root = Path(ckpt_root)
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / f".tmp-{checkpoint_name(step)}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / TRAIN_STATE, train_state)
        if final.exists():  # re-save of the same step after a resume
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def check_resume_compatible(state: dict, expected_arch: dict, ckpt: Path) -> None:
    """A checkpoint resumed into another architecture fails before any step, naming the field."""
    saved = state.get("architecture", {})
    for key, value in expected_arch.items():
        if saved.get(key) != value:
            raise RuntimeError(
                f"checkpoint {ckpt} was trained with {key}={saved.get(key)!r} but the config says "
                f"{key}={value!r}; use another run folder or train.resume=never")
