"""launch/gpu_check.py rehearsed on CPU (--dry-run): every section at tiny shapes, the report's
schema, per-section time limits that kill a hung section with its children, a report kept when
a section fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "launch"))
import gpu_check  # noqa: E402

sys.path.pop(0)


def _no_cuda_probe() -> dict:  # the real probe imports deepspeed & co. into this test process
    return {"python": "3", "platform": "test", "cpus": 2, "modules": {"torch": "present"}, "cuda": False}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_hung_section_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    cmd = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    t0 = time.perf_counter()
    rc, seconds = gpu_check.run_limited(cmd, 1.5, tmp_path / "hang.log")
    assert rc == 124 and time.perf_counter() - t0 < 20 and seconds >= 1.5
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:  # reaped by init after SIGKILL
        time.sleep(0.1)
    assert not _alive(grandchild), "the section's child outlived its time limit"


def test_limits_keep_later_sections_their_reserve(tmp_path):
    check = gpu_check.Check(tmp_path, tmp_path / "r.json", 440.0, False, True, "256,1024", tmp_path,
                            t0=time.perf_counter())
    sections = list(gpu_check.SECTIONS)
    first = check.limit(sections[0], sections[1:])
    reserved = sum(s.estimate_s for s in sections[1:] if s.reserve)
    assert first == min(sections[0].cap_s, 440.0 - reserved) > 0
    assert sum(s.estimate_s for s in sections) <= 440, "the estimates must fit the budget"
    last = check.limit(sections[-1], [])  # bench_compile: whatever is left, up to its cap
    assert last == min(sections[-1].cap_s, check.left())


def test_failed_and_timed_out_sections_leave_a_valid_report(tmp_path, monkeypatch, capsys):
    """gpu_tests really runs (all GPU tests skip here); bench_student is made to hang past its
    limit, distill to fail at once: the report holds all three, the schema holds, exit 1."""
    hang = ["bash", "-c", "sleep 300"]
    monkeypatch.setattr(gpu_check.Check, "bench_student", lambda self: (hang, None, lambda rc: ({}, [])))
    monkeypatch.setattr(gpu_check.Check, "distill",
                        lambda self: ([sys.executable, "-c", "raise SystemExit(3)"], None,
                                      lambda rc: ({}, [f"exit {rc}"] if rc else [])))
    monkeypatch.setattr(gpu_check, "MIN_SECTION_S", 0.5)
    monkeypatch.setattr(gpu_check, "probe", _no_cuda_probe)
    monkeypatch.setattr(gpu_check, "SECTIONS", tuple(
        gpu_check.Section(s.name, s.what, s.estimate_s, 0.5 if s.name == "bench_student" else s.cap_s)
        for s in gpu_check.SECTIONS))
    out = tmp_path / "check"
    rc = gpu_check.main(["--dry-run", "--out", str(out), "--sections", "gpu_tests,distill,bench_student"])
    assert rc == 1
    report = json.loads((out / "gpu_check.json").read_text())
    sections = report["sections"]
    assert sections["gpu_tests"]["status"] == "ok", sections["gpu_tests"]
    tests = sections["gpu_tests"]["figures"]
    assert tests["tests"] >= 10 and tests["skipped"] == tests["tests"] and tests["failures"] == 0
    assert sections["distill"]["status"] == "failed" and sections["distill"]["exit_code"] == 3
    assert sections["bench_student"]["status"] == "timeout" and sections["bench_student"]["timeout_s"] == 2.0
    assert report["schema_problems"] == [] and report["ok"] is False
    assert gpu_check.check_report(report, ["gpu_tests", "distill", "bench_student"]) == []
    assert gpu_check.check_report({**report, "schema": "old"}, ["gpu_tests"])  # the check can fail
    assert (out / "logs" / "gpu_tests.log").is_file()


def test_without_cuda_the_gpu_run_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "probe", _no_cuda_probe)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dry-run" in err[0]


@pytest.mark.slow  # 2-3 min on the 2-core box (168 s at load ~3): eight sections, each its own process
def test_dry_run_of_every_section_passes_with_figures(tmp_path):
    out = tmp_path / "dry"
    proc = subprocess.run(["bash", str(REPO / "launch" / "gpu_check.sh"), str(out), "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads((out / "gpu_check.json").read_text())
    assert proc.returncode == 0, (report.get("sections"), proc.stdout[-3000:])
    assert report["mode"] == "dry-run" and report["schema_problems"] == [] and report["ok"]
    assert list(report["sections"]) == list(gpu_check.NAMES)
    assert all(s["status"] == "ok" for s in report["sections"].values())
    runs = report["sections"]["distill"]["figures"]["runs"]
    assert set(runs) == {"bf16_serial", "bf16_ahead", "fp16_serial"} and all(r["kd_steps"] == 4 for r in runs.values())
    for name, placement in (("nccl", "replicate"), ("zero3", "zero3")):
        probe = report["sections"][name]["figures"]
        assert probe["backend"] == "gloo" and probe["world_size"] == 1 and probe["placement"] == placement
    goals = report["summary"]["goals"]
    assert all(goals[k]["value"] is not None for k in ("P1", "P2", "P3"))
    assert isinstance(report["wheel_install_s"], (int, float))
