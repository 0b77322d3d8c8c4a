"""launch/gpu_check.py on a machine without CUDA: GPU tests skip, the report is written, exit 0."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_check_without_cuda_skips_cleanly(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "gpu_check.py"), "--out", str(out), "--no-bench"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["ok"] and report["env"]["modules"]["torch"]
    tests = report["tests"]
    assert tests["tests"] >= 10 and tests["skipped"] == tests["tests"] and tests["failures"] == 0


def test_summary_of_a_bench_file_keeps_goals_and_teacher_table():
    sys.path.insert(0, str(REPO / "launch"))
    try:
        from gpu_check import summarize
    finally:
        sys.path.pop(0)
    bench = {"goals": {"P3": {"value": 2.1, "met": True}},
             "teacher": {"section_s": 3.0, "p3": {"256": {"best": "exact_all_bf16", "ratio": 2.1}},
                         "batches": {"256": {"eager_bf16": {"clips_per_s": 10.0, "ms": 1.0, "max_rel_err": 0.0}}}},
             "online_kd": {"batches": {"256": {"eager_bf16": {"ratio": 0.9, "basis": "wall",
                                                              "teacher_only": {"clips_per_s": 1}}}}}}
    s = summarize(bench)
    assert s["goals"]["P3"]["met"] and s["p3_per_batch"]["256"]["best"] == "exact_all_bf16"
    assert s["teacher_clips_per_s"]["256"]["eager_bf16"]["clips_per_s"] == 10.0
    assert s["online_kd"]["256"]["eager_bf16"]["ratio"] == 0.9
