"""Checkpoints that are either complete or invisible.

A checkpoint is written by every rank into `checkpoints/.tmp-step-XXXXXXXX/` (Accelerate's
`save_state`: model, optimizer, scheduler, per-rank RNG), then rank 0 adds `train_state.json`
(step, data position, architecture, config), flushes everything to disk and renames the folder
to `step-XXXXXXXX/`. A crash or `kill -9` mid-write leaves only a `.tmp-*` folder, which resume
never picks (and the next save at or after that step deletes). Old checkpoints are renamed to
`.old-*` before they are deleted, so a kill mid-delete never leaves a half-deleted folder that
looks complete. Tests: tests/reliability/test_kill_and_preempt.py, test_safe_io.py.

Loading is weights_only throughout (safetensors model; Accelerate loads optimizer / RNG files
with `torch.load(weights_only=True)`), except Accelerate's `custom_checkpoint_*.pkl` (our LR
scheduler), which it unpickles with `weights_only=False`; `read_train_state` vets those files
first. See docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch

# temp file + fsync + rename, temp removed on failure; re-exported for the recipe (final.json)
from wakeword_dist.atomic import write_json_atomic

TRAIN_STATE = "train_state.json"
PREFIX = "step-"
_TMP, _OLD = ".tmp-", ".old-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Complete = renamed into place with its train state."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / TRAIN_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = complete_checkpoints(ckpt_root)
    return done[-1] if done else None


def read_train_state(ckpt: Path) -> dict:
    """The checkpoint's `train_state.json`, after vetting the files Accelerate would unpickle.

    Called before `accelerator.load_state`: a `custom_checkpoint_*.pkl` that is not plain
    tensors and containers is refused here, before Accelerate runs `torch.load(weights_only=False)`
    on it (a pickle can run any code; ours never needs to)."""
    path = Path(ckpt) / TRAIN_STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"checkpoint state {path} is unreadable: {exc}") from None
    vet_pickles(ckpt)
    return state


def vet_pickles(ckpt: Path) -> None:
    """Raise RuntimeError naming the file unless every `custom_checkpoint_*.pkl` loads weights_only."""
    for pkl in sorted(Path(ckpt).glob("custom_checkpoint_*.pkl")):
        try:
            torch.load(pkl, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(
                f"checkpoint file {pkl} does not load with weights_only=True ({first}); refusing "
                "to unpickle it: Accelerate would run torch.load(weights_only=False) on it") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of `folder` and the folder itself, so a renamed checkpoint survives a
    node crash or power loss, not only a killed process (a rename alone orders nothing)."""
    for path in [*sorted(p for p in folder.rglob("*") if p.is_file()), folder]:
        _fsync(path)


def _step_of(name: str) -> int | None:
    for prefix in (_TMP + PREFIX, _OLD + PREFIX):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


def _set_aside(folder: Path) -> Path:
    """Rename `folder` to `.old-<name>` (invisible to resume) and return the new path."""
    aside = folder.with_name(_OLD + folder.name)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(folder, aside)
    return aside


def _discard(folder: Path) -> None:
    """Rename aside, then delete: a kill mid-delete leaves a `.old-*` folder, never a
    half-deleted `step-*` one that still has its train_state.json."""
    shutil.rmtree(_set_aside(folder), ignore_errors=True)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`. A re-save of the same step (after a resume, or a stop signal on
    a checkpoint step) first sets the old folder aside and puts it back if the rename fails.
    (Unlike `atomic.replace_dir`, which leaves the old folder aside on failure.)"""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = _set_aside(final)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def save_checkpoint(accelerator, ckpt_root: Path, step: int, train_state: dict, keep: int) -> Path:
    """Collective: every rank must call it at the same step."""
    ckpt_root = Path(ckpt_root)
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / f"{_TMP}{checkpoint_name(step)}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / TRAIN_STATE, train_state)
        _fsync_tree(tmp)
        _move_into_place(tmp, final)
        _fsync(ckpt_root)
        for old in complete_checkpoints(ckpt_root)[:-keep] if keep > 0 else []:
            _discard(old)
        # Leftovers of killed saves (.tmp-*) and deletes (.old-*) at or before this step are
        # dead: no save of an earlier step can still be running. Later ones are left alone.
        for leftover in ckpt_root.iterdir():
            left_step = _step_of(leftover.name)
            if leftover.is_dir() and left_step is not None and left_step <= step:
                shutil.rmtree(leftover, ignore_errors=True)
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
