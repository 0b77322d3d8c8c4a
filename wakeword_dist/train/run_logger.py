"""Rank-0 metric logging: `metrics.jsonl` always, W&B when enabled.

Keys are namespaced (`train/loss`, `val/f1_macro`, `teacher/...`). Every rank may call `log`;
only the main process writes, so a multi-rank run writes each line once.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from wakeword_dist.atomic import write_bytes_atomic


def resolve_wandb_mode(mode: str) -> str:
    """`auto` means online with an API key, offline without one (no network needed)."""
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    def __init__(self, run_dir: Path, *, is_main: bool, wandb_mode: str, project: str, group: str,
                 job_type: str, name: str, config: dict, resume_step: int | None = None):
        self.is_main = is_main
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb_run = None
        if not is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        mode = resolve_wandb_mode(wandb_mode)
        if mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb_run = wandb.init(
                project=project, group=group, job_type=job_type, name=name, config=config,
                mode=mode, dir=str(run_dir), reinit="finish_previous",
                id=_stable_run_id(run_dir), resume="allow" if mode == "online" else None)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint: they will be logged again.
        A line torn by a kill mid-write (not valid JSON) is dropped too."""
        if not self.path.exists():
            return
        kept = [json.dumps(row) for row in _parse_lines(self.path) if row.get("step", 0) <= step]
        write_bytes_atomic(self.path, "".join(line + "\n" for line in kept).encode())

    def log(self, metrics: dict, step: int) -> None:
        if not self.is_main:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def summary(self, values: dict) -> None:
        if self.wandb_run is not None:
            for key, value in values.items():
                self.wandb_run.summary[key] = _plain(value)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _stable_run_id(run_dir: Path) -> str:
    """Same run folder -> same W&B id, so a resumed job continues its W&B run."""
    import hashlib

    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def _parse_lines(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn line (a process killed mid-write) is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_metrics(run_dir: Path) -> list[dict]:
    return _parse_lines(Path(run_dir) / "metrics.jsonl")
