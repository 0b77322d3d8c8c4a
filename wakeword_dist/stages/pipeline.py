"""`wakeword-dist pipeline`: synth -> teacher -> (annotate) -> students x seeds -> evaluate ->
compare -> export -> report.html, from one config. Finished stages are skipped, so a rerun resumes."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from wakeword_dist.config import Config


@contextlib.contextmanager
def _timed(name: str, timings: dict):
    """Print a stage header and footer; record the stage's wall time in `timings` (s)."""
    t0 = time.perf_counter()
    print(f"\n=== {name} ===", flush=True)
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"=== {name}: {timings[name]} s ===", flush=True)


def synthesize_from_config(cfg: Config) -> dict:
    """`synth` with the config's data settings into ``data.root``; returns synth's report."""
    from wakeword_dist.data.synth import synthesize

    d = cfg.data
    return synthesize(d.root, wake_phrase=d.wake_phrase, seed=d.synth_seed, size=d.synth_size,
                      clip_seconds=d.clip_seconds, engines=d.engines, speakers_per_voice=d.speakers_per_voice or None,
                      audio_format=d.audio_format, stream_near_miss_rate=d.stream_near_miss_rate, progress=True)


def ensure_teacher(cfg: Config) -> None:
    """Train the from-scratch teacher of ``cfg``'s experiment unless given or already done."""
    from wakeword_dist.stages.compare import with_job
    from wakeword_dist.train.recipe import run

    teacher_cfg = with_job(cfg, "teacher", cfg.train.seed)
    if cfg.teacher.name_or_path:
        print(f"using the given teacher {cfg.teacher.name_or_path}; skipped")
    elif (teacher_cfg.job_dir() / "final.json").exists():
        print(f"teacher exists in {teacher_cfg.job_dir()}; skipped")
    else:
        run(teacher_cfg)


def pipeline(cfg: Config) -> dict:
    from wakeword_dist.stages.compare import compare, with_job
    from wakeword_dist.stages.export import export_run

    timings: dict = {}
    root = Path(cfg.run.runs_dir) / cfg.run.experiment
    data_root = Path(cfg.data.root)
    with _timed("synth", timings):
        if (data_root / "train" / "index.json").exists():
            print(f"shards exist in {data_root}; skipped")
        else:
            synthesize_from_config(cfg)
            from wakeword_dist.data.inspect_shards import inspect_shards, print_inspection

            inspection = inspect_shards(data_root)  # every member decodes, counts match the index
            print_inspection(inspection)
            if inspection["problems"]:
                raise RuntimeError(f"{data_root}: {len(inspection['problems'])} shard problems, first: "
                                   f"{inspection['problems'][0]}")
    with _timed("teacher", timings):
        ensure_teacher(cfg)
    if cfg.distill.mode == "cached":
        with _timed("annotate", timings):
            from wakeword_dist.stages.annotate import annotate

            annotate(cfg)
    with _timed("students, evaluate, compare", timings):
        comparison = compare(cfg)
    with _timed("export", timings):
        exported = {}
        for job in cfg.export.jobs:
            run_dir = with_job(cfg, job, cfg.compare.seeds[0]).job_dir()
            if (run_dir / "export.json").exists():
                print(f"{run_dir / 'model.onnx'} exists; skipped")
            else:
                export_run(cfg, run_dir)
            exported[job] = str(run_dir / "model.onnx")
    with _timed("report", timings):
        from wakeword_dist.stages.html_report import write_html_report

        report_html = write_html_report(root)  # always rewritten: it reads every stage's output
    outputs = {
        "report": str(report_html),
        "comparison": str(root / "comparison.json"),
        "comparison_plot": str(root / "comparison.png"),
        "teacher": cfg.teacher_path(),
        "onnx": exported,
        "timings_s": timings,
    }
    print("\noutputs:")
    for key, value in outputs.items():
        print(f"  {key}: {value}")
    return {"comparison": comparison, **outputs}
