"""W&B holds the answers: after the tiny pipeline (wandb offline), each student's W&B run --
read back from its own .wandb files -- holds the test figures at val's θ, the DET table, the
int8 deltas, and the best student and ONNX files as artifacts with their lineage."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from tests.stages.wandb_records import read_run

pytestmark = pytest.mark.slow


def _md5_b64(path: Path) -> str:
    """W&B's manifest digest of a file."""
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def _run(run_dir: Path) -> dict:
    run_id = json.loads((run_dir / "wandb_run.json").read_text())["id"]
    return read_run(run_dir / "wandb", run_id)


def _artifact(run: dict, kind: str, name: str) -> dict:
    found = [a for a in run["artifacts"] if a["type"] == kind and a["name"] == name]
    assert found, f"no {kind} artifact {name}; have {[(a['type'], a['name']) for a in run['artifacts']]}"
    return found[-1]


def test_evaluate_and_export_write_into_the_training_run(pipeline_run):
    root = pipeline_run["root"]
    run_dir = root / "distill" / "seed0"
    run = _run(run_dir)
    # training, evaluate and export: three sessions of ONE run id, same group and job type
    assert run["sessions"] == 3 and set(run["job_types"]) == {"distill"} and set(run["groups"]) == {"ci_tiny"}
    report = json.loads((run_dir / "report.json").read_text())
    for key in ("frr_at_target", "fa_per_hour", "threshold", "clip_auc", "det_eer", "f1_macro"):
        assert run["summary"][f"test/{key}"] == pytest.approx(report[key]), key
    assert run["summary"]["test/det/_type"] == "table-file"
    assert run["summary"]["test/det/nrows"] == len(report["det"]["thresholds"])
    export = json.loads((run_dir / "export.json").read_text())
    for key, value in export["int8_minus_fp32"].items():
        assert run["summary"][f"export/int8_minus_fp32/{key}"] == pytest.approx(value), key
    assert run["summary"]["export/onnx_bytes"] == export["onnx_bytes"]
    assert "train/loss" in run["history_keys"], "the training curves are in the same run"

    student = _artifact(run, "model", "ci_tiny-distill-seed0-student")
    assert student["files"]["model.safetensors"] == _md5_b64(run_dir / "best" / "model.safetensors")
    onnx = _artifact(run, "onnx", "ci_tiny-distill-seed0-onnx")
    for name in ("model.onnx", "model.int8.onnx"):
        assert onnx["files"][name] == _md5_b64(run_dir / name), name
    # lineage: the train split's index.json by content hash, and the teacher's weights
    index = Path(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["root"]) / "train" / "index.json"
    index_sha = hashlib.sha256(index.read_bytes()).hexdigest()
    teacher_sha = hashlib.sha256((root / "teacher" / "best" / "model.safetensors").read_bytes()).hexdigest()
    for artifact in (student, onnx):
        lineage = artifact["metadata"]["lineage"]
        assert lineage["dataset"]["index_sha256"] == index_sha
        assert lineage["teacher"]["files_sha256"]["model.safetensors"] == teacher_sha
    dataset = _artifact(run, "dataset", lineage["dataset"]["artifact"])
    assert dataset["files"]["index.json"] == _md5_b64(index)
    assert _artifact(run, "model", "ci_tiny-teacher")["metadata"]["files_sha256"]["model.safetensors"] == teacher_sha


def test_a_baseline_run_has_no_teacher_lineage(pipeline_run):
    run_dir = pipeline_run["root"] / "baseline" / "seed1"
    run = _run(run_dir)
    assert run["sessions"] == 2, "training + evaluate (only seed 0 is exported)"
    student = _artifact(run, "model", "ci_tiny-baseline-seed1-student")
    assert "teacher" not in student["metadata"]["lineage"] and "dataset" in student["metadata"]["lineage"]
    assert not [a for a in run["artifacts"] if a["name"].endswith("-teacher")]
