"""The README's main job end to end on the tiny config: synth -> teacher -> students x seeds ->
evaluate -> compare -> export -> report.html, then a rerun that skips every finished stage."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from wakeword_dist.cli import main

pytestmark = pytest.mark.slow


def test_pipeline_end_to_end_then_resumes(pipeline_run, capsys):
    root = pipeline_run["root"]
    comparison = json.loads((root / "comparison.json").read_text())
    assert set(comparison["jobs"]) == {"baseline", "distill"}
    assert comparison["paired"]["distill"]["f1_macro"]["n"] == 2
    assert (root / "comparison.png").stat().st_size > 10_000
    assert (root / "teacher" / "best" / "config.json").is_file()
    for job in ("baseline", "distill"):
        for seed in (0, 1):
            run_dir = root / job / f"seed{seed}"
            report = json.loads((run_dir / "report.json").read_text())
            assert report["split"] == "test" and report["threshold_source"] == "given"
            assert (run_dir / "det.png").is_file()
    # export.jobs defaults to the distilled student: the detector the pipeline ships
    assert not (root / "baseline" / "seed0" / "export.json").exists()
    onnx_path = root / "distill" / "seed0" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "audio"
    export = json.loads((root / "distill" / "seed0" / "export.json").read_text())
    assert max(export["max_abs_diff"].values()) <= 1e-4 and export["int8_path"]
    # its fp32 figures are evaluate's (same checkpoint, same data), not scored a second time
    report = json.loads((root / "distill" / "seed0" / "report.json").read_text())
    assert "report.json" in export["fp32_scored_as"]
    assert {k: export["test_fp32"][k] for k in ("threshold", "frr_at_target", "fa_per_hour", "clip_auc")} == \
        {k: report[k] for k in ("threshold", "frr_at_target", "fa_per_hour", "clip_auc")}
    assert "comparison.png" in pipeline_run["out"] and f"report: {root / 'report.html'}" in pipeline_run["out"]
    assert (root / "report.html").stat().st_size > 10_000
    # every JSON the stages wrote is strict (an undefined metric is null, never a bare NaN):
    # the teacher's quality.json (its val has no streams: FA/h undefined), reports, states, indexes
    written = [p for base in (root, root.parents[1] / "shards") for p in base.rglob("*.json") if "wandb" not in p.parts]
    assert root / "teacher" / "best" / "quality.json" in written and len(written) > 20
    for path in written:
        json.loads(path.read_text(), parse_constant=lambda c, path=path: pytest.fail(f"bare {c} in {path}"))
    assert json.loads((root / "teacher" / "best" / "quality.json").read_text())["val"]["fa_per_hour"] is None

    # rerun: everything is found and skipped; nothing is retrained
    mtimes = {p: p.stat().st_mtime for p in root.rglob("final.json")}
    assert main(pipeline_run["args"]) == 0
    assert {p: p.stat().st_mtime for p in root.rglob("final.json")} == mtimes
    out = capsys.readouterr().out
    assert "shards exist" in out and "teacher exists" in out and "exists; skipped" in out


def test_export_without_a_report_scores_val_and_test_itself_and_gets_evaluates_figures(pipeline_run, tmp_path):
    """A run that `evaluate` never saw (no report.json): export chooses θ on val and scores test
    itself, and lands on the figures the pipeline's evaluate wrote for the same checkpoint."""
    import shutil

    from wakeword_dist.config import load_config
    from wakeword_dist.stages.export import export_run

    src = pipeline_run["root"] / "distill" / "seed0"
    run_dir = tmp_path / "distill-seed0"
    shutil.copytree(src / "best", run_dir / "best")
    args = pipeline_run["args"]
    cfg = load_config(args[args.index("--config") + 1], [a for a in args[3:] if "=" in a] + ["logging.wandb=disabled"])
    result = export_run(cfg, run_dir)
    assert result["fp32_scored_as"].startswith("pytorch student scored here")
    report = json.loads((src / "report.json").read_text())
    for key in ("threshold", "frr_at_target", "fa_per_hour", "clip_auc", "f1_macro"):
        assert result["test_fp32"][key] == pytest.approx(report[key], abs=1e-9), key
    assert (run_dir / "model.int8.onnx").is_file() and json.loads((run_dir / "export.json").read_text())

