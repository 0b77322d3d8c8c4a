"""The GPU check behind launch/gpu_check.sh: every section in its own process, under its own time limit.

    python3 launch/gpu_check.py --out OUT_DIR [--budget-s 440] [--sections a,b] [--dry-run]

Sections, in order (``SECTIONS``: what each runs, its GPU time estimate and its cap):
  gpu_tests        pytest -m gpu tests/gpu, less the tests the sections below run themselves
  bench_teacher    benchmark, teacher forward variants at real shapes (P3)
  bench_online_kd  the recipe's online KD step, serial and teacher ahead, vs the teacher (P1)
  distill          short recipe runs on the device: bf16 serial, bf16 teacher ahead, fp16 + loss scaler
  nccl             `accelerate launch` (multi_gpu.yaml, one process): NCCL group, replicated teacher
  zero3            the same with the ZeRO-3 teacher at world size 1 (needs deepspeed)
  bench_student    benchmark, baseline student step and cached-logit KD (step and epoch)
  bench_compile    benchmark, torch.compile of the exact teacher at the largest batch (what time is left)

Time: a section's limit is its cap, cut so that every later section keeps its reserve (its
estimate; none for bench_compile) out of ``--budget-s``; a section that runs over is killed with
its whole process group and marked ``timeout``; one with under 10 s left is ``skipped``. The
report ``OUT_DIR/gpu_check.json`` is rewritten after every section, so a failure or a kill
keeps what came before. Benchmark sections share ``OUT_DIR/bench.json`` (``--append``).

``--dry-run`` (no CUDA needed): every section at tiny shapes on this machine (the GPU tests skip,
gloo instead of NCCL, the benchmark's quick CPU preset), caps x 4, and the report checked
against ``check_report``. Exit 0 when every section passed (or, on a GPU, was skipped for lack
of deepspeed / time), else 1. Standard library only in this process.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_TESTS = REPO / "tests" / "gpu"
SCHEMA = "gpu_check/2"
MODULES = ("torch", "transformers", "accelerate", "torchaudio", "soundfile", "numpy", "yaml", "safetensors",
           "scipy", "tqdm", "rich", "psutil", "pytest", "deepspeed", "webdataset", "wandb", "onnx", "onnxruntime",
           "triton")
STATUSES = ("ok", "failed", "timeout", "skipped")
MIN_SECTION_S = 10.0  # below this a section is not started: process start-up alone takes ~5 s


@dataclass(frozen=True)
class Section:
    name: str
    what: str
    estimate_s: float   # expected wall seconds on the H200 (docs/performance.md: an estimate, not a measurement)
    cap_s: float        # hard limit on the GPU; x4 in a dry run
    reserve: bool = True  # earlier sections leave this section its estimate


SECTIONS = (
    Section("gpu_tests", "pytest -m gpu tests/gpu (unit tier: teacher dtypes and rewrites on CUDA, CUDA graphs, "
            "front end, students, teacher ahead on a side stream, fp16 loss-scale overflow)", 40, 90),
    Section("bench_teacher", "benchmark: teacher forward variants, wav2vec2-base shapes, batches 256 and 1024 (P3)",
            70, 150),
    Section("bench_online_kd", "benchmark: the recipe's online KD step, serial and teacher ahead, vs the teacher "
            "alone (P1)", 35, 90),
    Section("distill", "recipe on CUDA: bf16 teacher serial, bf16 teacher ahead, fp16 teacher + fp16 autocast", 60, 150),
    Section("nccl", "accelerate launch, one process: NCCL process group, replicated fp16 teacher", 30, 90),
    Section("zero3", "accelerate launch, one process: ZeRO-3 teacher at world size 1 vs replicated logits", 40, 120),
    Section("bench_student", "benchmark: baseline student step, cached-logit KD step and epoch", 40, 90),
    Section("bench_compile", "benchmark: torch.compile of the all-exact teacher at the largest batch", 120, 240,
            reserve=False),
)
NAMES = tuple(s.name for s in SECTIONS)
# the tests of tests/gpu that sections distill / nccl / zero3 run by themselves (same probes)
PROBE_TESTS = "not test_short_distill_run_on_cuda and not test_one_process_accelerate_launch_on_nccl"


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- probe
def probe() -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
           "espeak_ng": shutil.which("espeak-ng") is not None, "modules": {}}
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            env["modules"][name] = None
            continue
        try:
            mod = importlib.import_module(name)
            env["modules"][name] = str(getattr(mod, "__version__", "present"))
        except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
            env["modules"][name] = f"import error: {type(exc).__name__}: {exc}"[:200]
    try:
        import torch

        env["cuda"] = torch.cuda.is_available()
        if env["cuda"]:
            p = torch.cuda.get_device_properties(0)
            env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda_version=torch.version.cuda,
                       gpu_count=torch.cuda.device_count())
    except Exception as exc:  # noqa: BLE001
        env["cuda"] = False
        env["torch_error"] = repr(exc)
    return env


def git_commit() -> dict:
    """The commit the check ran on, and whether the tree differed from it (None: no git here)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


# ------------------------------------------------------------------------------------- running
def _subprocess_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled", WANDB_SILENT="true",
               TOKENIZERS_PARALLELISM="false")
    env.update(extra or {})
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    for p in (str(REPO), str(GPU_TESTS)):
        if p not in paths:
            paths.append(p)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_limited(cmd: list[str], timeout: float, log_path: Path, env_extra: dict | None = None) -> tuple[int, float]:
    """Run ``cmd`` in the repo, output to ``log_path``; kill its whole process group after
    ``timeout`` s (launchers and ranks included). (exit code, seconds); 124 = timed out."""
    log("$ " + " ".join(cmd) + f"   (limit {timeout:.0f} s, log {log_path.name})")
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_subprocess_env(env_extra), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            rc = 124
        finally:  # whatever it left behind (a rank, a compile worker) goes with it
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return rc, round(time.perf_counter() - t0, 1)


def tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _junit_counts(path: Path) -> dict:
    if not path.is_file():
        return {}
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in suite.iter("testcase"):
        row = {"test": f"{case.get('classname')}::{case.get('name')}", "outcome": "passed",
               "seconds": float(case.get("time", 0))}
        for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                reason = (el.get("message") or "").splitlines()[:1]
                row.update(outcome=outcome, reason=reason[0][:300] if reason else "")
                break
        cases.append(row)
    counts["cases"] = cases
    return counts


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------- sections
class Check:
    """Runs the sections for one ``gpu_check.json``."""

    def __init__(self, out_dir: Path, report_path: Path, budget_s: float, dry_run: bool, cuda: bool,
                 batches: str, work: Path, t0: float):
        self.out_dir, self.report_path, self.budget_s = out_dir, report_path, budget_s
        self.dry_run, self.cuda, self.batches, self.work = dry_run, cuda, batches, work
        self.logs = out_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.bench_json = out_dir / "bench.json"
        self.t0 = t0  # the budget counts from the start of this process (the probe included)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def limit(self, section: Section, later: list[Section]) -> float:
        scale = 4.0 if self.dry_run else 1.0
        reserve = sum(s.estimate_s * scale for s in later if s.reserve)
        return min(section.cap_s * scale, self.left() - reserve)

    # --- each returns (cmd, env extra, reader(rc) -> (figures, problems))
    def gpu_tests(self):
        junit = self.out_dir / "gpu_tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-k", PROBE_TESTS, "-q", "-rs",
               "-p", "no:cacheprovider", f"--junitxml={junit}"]

        def read(rc):
            counts = _junit_counts(junit)
            problems = [] if rc in (0, 5) else [f"pytest exit {rc}"]  # 5: nothing collected
            bad = [c["test"] for c in counts.get("cases", []) if c["outcome"] in ("failed", "error")]
            problems += [f"failed: {t}" for t in bad]
            if self.cuda and counts.get("tests", 0) and counts.get("skipped") == counts.get("tests"):
                problems.append("every GPU test skipped on a CUDA machine")
            return counts, problems
        return cmd, None, read

    def _bench(self, sections: str, *, compile: bool):
        cmd = [sys.executable, "-m", "wakeword_dist.bench.run", sections, "--out", str(self.bench_json), "--append",
               "--keep-going"]
        if self.dry_run:
            cmd += ["--shapes", "tiny", "--quick", "--config", str(REPO / "configs" / "ci_tiny.yaml")]
        else:
            cmd += ["--shapes", "real", "--batch", self.batches]
        cmd += ["--compile" if compile else "--no-compile"]

        def read(rc):
            bench = _read_json(self.bench_json) or {}
            figures = {name: bench.get(name) for name in sections.split(",")}
            problems = [] if rc == 0 else [f"benchmark exit {rc}"]
            problems += [f"{n}: {f['error']}" for n, f in figures.items() if isinstance(f, dict) and "error" in f]
            problems += [f"{n}: no figures" for n, f in figures.items() if f is None]
            figures["goals"] = bench.get("goals")
            return figures, problems
        return cmd, None, read

    def bench_teacher(self):
        return self._bench("teacher", compile=False)

    def bench_online_kd(self):
        return self._bench("online_kd", compile=False)

    def bench_student(self):
        return self._bench("student,cached_kd", compile=False)

    def bench_compile(self):
        # dry run: the section's path without compiling (inductor on the tiny CPU teacher takes ~70 s)
        return self._bench("teacher_compile", compile=not self.dry_run)

    def distill(self):
        out = self.out_dir / "distill.json"
        cmd = [sys.executable, str(GPU_TESTS / "distill_probe.py"), "--work", str(self.work), "--out", str(out),
               "--steps", "4" if self.dry_run else "16"]

        def read(rc):
            report = _read_json(out) or {}
            runs = report.get("runs", {})
            problems = [f"{name}: {p}" for name, r in runs.items() for p in r.get("problems", [])]
            if rc != 0 and not problems:
                problems.append(f"distill probe exit {rc}")
            return report, problems
        return cmd, None, read

    def _launch(self, placement: str):
        sys.path.insert(0, str(GPU_TESTS))
        try:
            from launch_probe import launch_command
        finally:
            sys.path.pop(0)
        out = self.out_dir / f"{placement}_launch.json"
        cmd, env = launch_command(self.work, out, placement, steps=4 if self.dry_run else 8, cuda=self.cuda)

        def read(rc):
            report = _read_json(out) or {}
            problems = list(report.get("problems", []))
            if rc != 0 and not problems:
                problems.append(f"accelerate launch exit {rc}")
            return report, problems
        return cmd, env, read

    def nccl(self):
        return self._launch("replicate")

    def zero3(self):
        if importlib.util.find_spec("deepspeed") is None:
            return None  # skipped: see the reason in run()
        return self._launch("zero3")

    def run(self, section: Section, later: list[Section]) -> dict:
        row = {"what": section.what, "estimate_s": section.estimate_s, "status": "skipped", "seconds": 0.0,
               "timeout_s": None, "command": None, "exit_code": None, "figures": None, "problems": []}
        limit = self.limit(section, later)
        if limit < MIN_SECTION_S:
            row["reason"] = f"{max(limit, 0):.0f} s left for it (budget {self.budget_s:.0f} s)"
            return row
        if section.name == "gpu_tests" and importlib.util.find_spec("pytest") is None:
            row["reason"] = "pytest is not installed"
            return row
        job = getattr(self, section.name)()
        if job is None:
            row["reason"] = "deepspeed is not installed (carry its wheel: launch/fetch_gpu_wheels.sh)"
            return row
        cmd, env, read = job
        log_path = self.logs / f"{section.name}.log"
        row.update(timeout_s=round(limit, 1), command=" ".join(cmd[1:]), log=str(log_path.relative_to(self.out_dir)))
        rc, seconds = run_limited(cmd, limit, log_path, env)
        row.update(exit_code=rc, seconds=seconds)
        try:
            row["figures"], row["problems"] = read(rc)
        except Exception as exc:  # noqa: BLE001 - an unreadable result is this section's failure only
            row["problems"] = [f"reading the result: {type(exc).__name__}: {exc}"]
        row["status"] = "timeout" if rc == 124 else ("ok" if not row["problems"] else "failed")
        if row["status"] != "ok":
            row["log_tail"] = tail(log_path)
        return row


# ------------------------------------------------------------------------------------- report
def check_report(report: dict, sections: list[str]) -> list[str]:
    """What is missing or malformed in a report (empty = the schema holds)."""
    problems = []
    for key, kind in (("schema", str), ("mode", str), ("started", str), ("budget_s", (int, float)),
                      ("seconds", (int, float)), ("env", dict), ("git", dict), ("sections", dict), ("ok", bool)):
        if not isinstance(report.get(key), kind):
            problems.append(f"{key}: missing or not {kind}")
    if report.get("schema") != SCHEMA:
        problems.append(f"schema {report.get('schema')!r}, expected {SCHEMA!r}")
    for name in sections:
        row = report.get("sections", {}).get(name)
        if not isinstance(row, dict):
            problems.append(f"sections.{name}: missing")
            continue
        if row.get("status") not in STATUSES:
            problems.append(f"sections.{name}.status {row.get('status')!r} not in {STATUSES}")
        for key, kind in (("seconds", (int, float)), ("estimate_s", (int, float)), ("problems", list),
                          ("what", str)):
            if not isinstance(row.get(key), kind):
                problems.append(f"sections.{name}.{key}: missing or not {kind}")
        if row.get("status") in ("ok", "failed", "timeout") and not isinstance(row.get("timeout_s"), (int, float)):
            problems.append(f"sections.{name}.timeout_s: missing for a section that ran")
    if isinstance(report.get("summary"), dict):
        for key in ("goals", "p3_per_batch", "online_kd", "student"):
            if key not in report["summary"]:
                problems.append(f"summary.{key}: missing")
    return problems


def summarize(bench: dict) -> dict:
    """The figures worth reading first: goals, teacher variants per batch, KD ratios, student."""
    teacher = bench.get("teacher", {}).get("batches", {})
    return {
        "goals": bench.get("goals"),
        "p3_per_batch": bench.get("teacher", {}).get("p3"),
        "teacher_clips_per_s": {
            b: {n: {"clips_per_s": r.get("clips_per_s"), "ms": r.get("ms"), "max_rel_err": r.get("max_rel_err"),
                    "first_call_s": r.get("first_call_s"), "error": r.get("error")} for n, r in rows.items()}
            for b, rows in teacher.items()},
        "online_kd": {b: {n: {k: (v["ratio"] if isinstance(v, dict) and "ratio" in v else v)
                              for k, v in r.items() if k != "basis"} for n, r in rows.items()}
                      for b, rows in bench.get("online_kd", {}).get("batches", {}).items()},
        "student": {b: {n: r.get("clips_per_s") for n, r in rows.items()}
                    for b, rows in bench.get("student", {}).get("batches", {}).items()},
        "cached_kd_epoch": bench.get("cached_kd", {}).get("epoch"),
    }


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench_out" / "gpu_check"),
                   help="folder (or .json file) for gpu_check.json, bench.json, logs/")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for everything from this process's start (default 440 on a GPU, 1800 in a "
                        "dry run)")
    p.add_argument("--batch", default="256,1024", help="benchmark batch sizes on the GPU")
    p.add_argument("--sections", default=",".join(NAMES), help="comma-separated subset, in any order: "
                   + ", ".join(NAMES))
    p.add_argument("--dry-run", action="store_true", help="every section at tiny shapes on this machine (CPU)")
    p.add_argument("--work", default=None, help="scratch folder for shards and runs (default: a fresh one in /tmp)")
    p.add_argument("--wheel-install-s", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    wanted = [n for n in a.sections.split(",") if n]
    unknown = [n for n in wanted if n not in NAMES]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    chosen = [s for s in SECTIONS if s.name in wanted]

    out = Path(a.out)
    out_dir, report_path = (out.parent, out) if out.suffix == ".json" else (out, out / "gpu_check.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    bench_json = out_dir / "bench.json"
    if bench_json.exists():  # this run's figures only: --append must not mix in an older run
        bench_json.unlink()
    import tempfile

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = probe()
    cuda = bool(env.get("cuda"))
    if not cuda and not a.dry_run:
        print("gpu_check: no CUDA device here; pass --dry-run for the CPU rehearsal at tiny shapes", file=sys.stderr)
        return 2
    mode = "dry-run" if a.dry_run else "gpu"
    budget = a.budget_s if a.budget_s is not None else (1800.0 if a.dry_run else 440.0)
    report: dict = {"schema": SCHEMA, "mode": mode, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "budget_s": budget, "wheel_install_s": a.wheel_install_s, "git": git_commit(), "env": env,
                    "sections": {}, "seconds": 0.0, "ok": False,
                    "note": "estimate_s are estimates from reference figures (docs/performance.md), not measurements"}
    check = Check(out_dir, report_path, budget, a.dry_run, cuda, a.batch, work, t0)

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - check.t0, 1)
        bench = _read_json(bench_json)
        if bench is not None:
            report["summary"] = summarize(bench)
        write_json(report_path, report)

    log(f"{mode}: python {env['python']}, cuda={cuda} {env.get('gpu', '')}, budget {budget:.0f} s, sections "
        + ", ".join(s.name for s in chosen) + f"; git {report['git']['commit']}")
    missing = [m for m in ("deepspeed", "webdataset", "soundfile", "torchaudio", "pytest") if env["modules"].get(m) is None]
    if missing:
        log(f"not installed (their checks skip or fail): {', '.join(missing)}; see docs/performance.md")
    save()
    for i, section in enumerate(chosen):
        row = report["sections"][section.name] = check.run(section, chosen[i + 1:])
        save()
        log(f"{section.name}: {row['status']} in {row['seconds']} s (limit {row['timeout_s']}, estimate "
            f"{section.estimate_s} s){'; ' + '; '.join(row['problems'][:3]) if row['problems'] else ''}"
            f"{'; ' + row['reason'] if row.get('reason') else ''}")
        if row.get("log_tail"):
            print(row["log_tail"], flush=True)

    def passed(name: str, row: dict) -> bool:
        if row["status"] == "ok":
            return True
        # on a GPU, zero3 may be skipped for want of deepspeed, and bench_compile gets what time is
        # left (skipped or cut short); never in a rehearsal
        if a.dry_run:
            return False
        return (name == "zero3" and row["status"] == "skipped") or \
            (name == "bench_compile" and row["status"] in ("skipped", "timeout"))

    report["ok"] = all(passed(n, r) for n, r in report["sections"].items())
    if a.dry_run:
        save()
        report["schema_problems"] = check_report(report, [s.name for s in chosen])
        report["ok"] = report["ok"] and not report["schema_problems"]
    save()
    for key, g in ((report.get("summary") or {}).get("goals") or {}).items():
        state = "not measured" if g["met"] is None else ("met" if g["met"] else "MISSED")
        log(f"{key}: {g['value']} (goal {g['goal']}) {state} - {g['detail']}")
    log(f"{'OK' if report['ok'] else 'FAILED'} in {report['seconds']} s; report {report_path}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
