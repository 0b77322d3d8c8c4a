"""Rank-0 metric logging: `metrics.jsonl` always, W&B when enabled.

Keys are namespaced (`train/loss`, `val/f1_macro`, `teacher/...`). Every rank may call `log`;
only the main process writes, so a multi-rank run writes each line once. The W&B run's id is
kept in the run folder (`wandb_run.json`) so `evaluate` and `export` reopen the same run and
write their answers into its summary (`results_run`, `log_evaluation`, `log_export` below).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from pathlib import Path

from wakeword_dist.atomic import write_bytes_atomic, write_json_atomic

WANDB_RUN_FILE = "wandb_run.json"  # {id, project, group, job_type, name} of the run's W&B run


def resolve_wandb_mode(mode: str) -> str:
    """`auto` means online with an API key, offline without one (no network needed)."""
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _finite(value):
    """A summary figure: an undefined metric (NaN, inf; null in report.json) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
            run_id = read_run_file(run_dir).get("id") or _stable_run_id(run_dir)
            self.wandb_run = wandb.init(
                project=project, group=group, job_type=job_type, name=name, config=config,
                mode=mode, dir=str(run_dir), reinit="finish_previous",
                id=run_id, resume="allow" if mode == "online" else None)
            # evaluate / export reopen this run by id to put their results in its summary
            write_json_atomic(Path(run_dir) / WANDB_RUN_FILE, {"id": run_id, "project": project, "group": group,
                                                             "job_type": job_type, "name": name})

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


def read_run_file(run_dir: Path) -> dict:
    """The run folder's ``wandb_run.json`` ({} when training logged no W&B run)."""
    path = Path(run_dir) / WANDB_RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _stable_run_id(run_dir: Path) -> str:
    """Same run folder -> same W&B id, so a resumed job continues its W&B run."""
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


# ----------------------------------------------------------------------------- results in W&B
# test figures of report.json put in the run's summary as test/<key> (FRR, FA/h at val's θ)
TEST_SUMMARY_KEYS = ("f1_macro", "accuracy", "frr_at_target", "det_frr_at_target", "fa_per_hour", "fa_count",
                     "threshold", "target_fa_per_hour", "meets_target", "clip_auc", "clip_eer", "det_eer",
                     "stream_hours")


@contextlib.contextmanager
def results_run(cfg, run_dir: Path):
    """The run's training W&B run reopened by the id in ``wandb_run.json`` (the id training would
    have used when it logged none), so results land in the same summary and group; None when W&B
    is disabled. Offline, the reopened run is a second offline folder with the same id, which
    ``wandb sync`` merges into the one run."""
    mode = resolve_wandb_mode(cfg.logging.wandb)
    if mode == "disabled":
        yield None
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    info = read_run_file(run_dir)
    run = wandb.init(project=info.get("project", cfg.logging.project), group=info.get("group", cfg.run.experiment),
                     job_type=info.get("job_type", cfg.train.job), name=info.get("name"), mode=mode,
                     dir=str(run_dir), id=info.get("id") or _stable_run_id(run_dir), reinit="finish_previous",
                     resume="allow" if mode == "online" else None)
    try:
        yield run
    finally:
        run.finish()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):  # 1 MiB reads: a teacher may be GBs
            h.update(block)
    return h.hexdigest()


def _artifact_name(text: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "unnamed"


def _use(run, artifact) -> None:
    """Record ``artifact`` as an input of ``run`` (lineage). Offline runs cannot declare inputs
    (wandb raises), so there it is logged beside the outputs, whose metadata names its digest."""
    if run.offline:
        run.log_artifact(artifact)
    else:
        run.use_artifact(artifact)


def _lineage(run, cfg, job: str) -> dict:
    """Dataset (the train split's index.json, content-hashed) and, for distill, the teacher
    (config + weights of a local HF folder; a hub name is recorded by name) as inputs.
    Returns their identities for the outputs' metadata."""
    index = Path(cfg.data.root) / "train" / "index.json"
    lineage: dict = {}
    if index.is_file():
        meta = json.loads(index.read_text())
        sha = file_sha256(index)
        dataset = wandb_artifact(f"{Path(cfg.data.root).name}-train", "dataset", {
            "index_sha256": sha, "root": str(cfg.data.root), "num_samples": meta.get("num_samples"),
            "total_seconds": meta.get("total_seconds"), "label_names": meta.get("label_names")})
        dataset.add_file(str(index), name="index.json")
        _use(run, dataset)
        lineage["dataset"] = {"artifact": dataset.name, "index_sha256": sha}
    if job == "distill":
        teacher_dir = Path(cfg.teacher_path())
        files = sorted(p for p in teacher_dir.glob("*") if p.suffix in (".json", ".safetensors", ".bin")) \
            if teacher_dir.is_dir() else []
        hashes = {p.name: file_sha256(p) for p in files}
        teacher = wandb_artifact(f"{cfg.run.experiment}-teacher" if files else f"teacher-{cfg.teacher_path()}", "model",
                                 {"name_or_path": cfg.teacher_path(), "files_sha256": hashes})
        for p in files:
            if p.suffix == ".json":
                teacher.add_file(str(p), name=p.name)
            else:  # weights by reference (digest, no copy): a real teacher is hundreds of MB
                teacher.add_reference(p.resolve().as_uri(), name=p.name)
        _use(run, teacher)
        lineage["teacher"] = {"artifact": teacher.name, "name_or_path": cfg.teacher_path(), "files_sha256": hashes}
    return lineage


def wandb_artifact(name: str, kind: str, metadata: dict):
    import wandb

    return wandb.Artifact(_artifact_name(name), type=kind, metadata=metadata)


def log_evaluation(cfg, run_dir: Path, report: dict, *, prefix: str = "test") -> None:
    """Test figures at val's θ into the summary (``<prefix>/*``; another prefix for another
    test set, e.g. a held-out engine), the DET curve as a table and a line plot (FRR vs FA/h),
    and the best student as a ``model`` artifact with its lineage."""
    with results_run(cfg, run_dir) as run:
        if run is None:
            return
        import wandb

        for key in TEST_SUMMARY_KEYS:
            run.summary[f"{prefix}/{key}"] = _finite(report.get(key))
        det = report["det"]
        table = wandb.Table(columns=["threshold", "frr", "fa_per_hour"],
                            data=[[t, f, a] for t, f, a in zip(det["thresholds"], det["frr"], det["fa_per_hour"])])
        run.log({f"{prefix}/det": table, f"{prefix}/det_plot": wandb.plot.line(
            table, "fa_per_hour", "frr", title=f"DET on {prefix} (FRR vs FA/h)")})
        job = run_dir.parent.name
        lineage = _lineage(run, cfg, job)
        student = wandb_artifact(f"{cfg.run.experiment}-{job}-{run_dir.name}-student", "model", {
            "architecture": report.get("model"), "best_step": report.get("best_step"), "lineage": lineage,
            **{f"{prefix}/{k}": _finite(report.get(k)) for k in TEST_SUMMARY_KEYS}})
        student.add_dir(str(run_dir / "best"))
        run.log_artifact(student, aliases=["best", "latest"])


def log_export(cfg, run_dir: Path, result: dict) -> None:
    """ONNX sizes, parity and the int8 − fp32 test deltas into the summary (``export/*``), and
    the ONNX files (+ export.json) as an ``onnx`` artifact with the same lineage."""
    with results_run(cfg, run_dir) as run:
        if run is None:
            return
        summary = {"export/onnx_bytes": result["onnx_bytes"], "export/int8_bytes": result.get("int8_bytes"),
                   "export/max_abs_diff": max(result["max_abs_diff"].values())}
        for key, value in (result.get("int8_minus_fp32") or {}).items():
            summary[f"export/int8_minus_fp32/{key}"] = value
        for key, value in (result.get("test_int8") or {}).items():
            summary[f"export/test_int8/{key}"] = value
        for key, value in summary.items():
            run.summary[key] = _finite(value)
        lineage = _lineage(run, cfg, run_dir.parent.name)
        onnx = wandb_artifact(f"{cfg.run.experiment}-{run_dir.parent.name}-{run_dir.name}-onnx", "onnx",
                              {"opset": result.get("opset"), "lineage": lineage, **summary})
        for path in (result["onnx_path"], result.get("int8_path"), run_dir / "export.json"):
            if path and Path(path).is_file():
                onnx.add_file(str(path), name=Path(path).name)
        run.log_artifact(onnx, aliases=["latest"])
