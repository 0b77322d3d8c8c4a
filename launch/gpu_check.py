"""The GPU check behind launch/gpu_check.sh: environment probe, `pytest -m gpu tests/gpu`, benchmark.

    python3 launch/gpu_check.py --out OUT_DIR [--budget-s 450] [--batch 256,1024] [--no-bench]

Writes ``OUT_DIR/gpu_check.json`` (environment, test outcome, benchmark goals and key figures),
``OUT_DIR/bench.json`` (every benchmark figure), ``OUT_DIR/gpu_tests.xml`` (JUnit). Without CUDA
the GPU tests skip, the benchmark runs its quick CPU preset, and the exit code is 0. Exit 1 when
a GPU test fails or the benchmark could not run at all.

Time: the tests get at most a third of ``--budget-s``, the benchmark what is left (less a margin);
torch.compile (1-3 min) is timed only when at least 4 minutes remain for the benchmark. Every
benchmark section is written to bench.json as soon as it finishes, so a timeout keeps the
sections done by then.

Needs only the standard library to start; when pytest is not installed the GPU tests run under a
small stand-in (``--mini-pytest``) that supports what tests/gpu uses.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULES = ("torch", "transformers", "accelerate", "torchaudio", "soundfile", "numpy", "yaml", "safetensors",
           "scipy", "tqdm", "rich", "psutil", "pytest", "deepspeed", "webdataset", "wandb", "onnx", "onnxruntime",
           "triton")
# teacher first (P3), then what uses its result (P1), the rest by importance; see bench/run.py
BENCH_ORDER = "teacher,online_kd,student,cached_kd,ddp,loader"


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


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


def _subprocess_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled", WANDB_SILENT="true",
               TOKENIZERS_PARALLELISM="false")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO) not in paths:
        paths.append(str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _run(cmd: list[str], timeout: float) -> tuple[int, float]:
    """Run ``cmd`` in the repo with output passed through; (exit code, seconds). 124 = timed out."""
    log("$ " + " ".join(cmd) + f"   (timeout {timeout:.0f} s)")
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, cwd=REPO, env=_subprocess_env(), timeout=max(1.0, timeout)).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, round(time.perf_counter() - t0, 1)


# ------------------------------------------------------------------------------------- tests
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
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                reason = (el.get("message") or "").splitlines()[:1]
                cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                              "reason": reason[0][:300] if reason else ""})
                break
        else:
            cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "seconds": float(case.get("time", 0))})
    counts["cases"] = cases
    return counts


def run_tests(out_dir: Path, timeout: float) -> dict:
    junit = out_dir / "gpu_tests.xml"
    if importlib.util.find_spec("pytest") is not None:
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={junit}"]
        runner = "pytest"
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--mini-pytest", "tests/gpu", "--junit", str(junit)]
        runner = "mini-pytest (pytest not installed)"
    rc, seconds = _run(cmd, timeout)
    result = {"runner": runner, "exit_code": rc, "seconds": seconds, **_junit_counts(junit)}
    # pytest: 0 passed, 5 no tests collected (all deselected); both fine here
    result["ok"] = rc in (0, 5)
    return result


# ------------------------------------------------------------------------------------- bench
def run_bench(out_dir: Path, timeout: float, cuda: bool, batches: str) -> dict:
    bench_json = out_dir / "bench.json"
    cmd = [sys.executable, "-m", "wakeword_dist.bench.run", BENCH_ORDER, "--out", str(bench_json), "--keep-going"]
    if cuda:
        compile_ok = timeout >= 240
        cmd += ["--shapes", "real", "--batch", batches, "--compile" if compile_ok else "--no-compile"]
    else:  # CPU: prove the path works, quickly
        cmd += ["--shapes", "tiny", "--quick", "--config", str(REPO / "configs" / "ci_tiny.yaml")]
    rc, seconds = _run(cmd, timeout)
    result = {"exit_code": rc, "seconds": seconds, "file": str(bench_json), "command": " ".join(cmd[1:])}
    if bench_json.is_file():
        result.update(summarize(json.loads(bench_json.read_text())))
    result["ok"] = bench_json.is_file() and rc in (0, 1, 124)  # 1: a section failed (recorded), 124: timeout
    return result


def summarize(bench: dict) -> dict:
    """The figures worth reading first: goals, teacher variants per batch, KD ratios, scaling."""
    out = {"goals": bench.get("goals"), "machine": bench.get("machine"), "sections": {}}
    for name in ("loader", "student", "teacher", "online_kd", "cached_kd", "ddp"):
        if name in bench:
            sec = bench[name]
            out["sections"][name] = {"seconds": sec.get("section_s"), "error": sec.get("error")}
    teacher = bench.get("teacher", {}).get("batches", {})
    out["teacher_clips_per_s"] = {
        b: {n: {"clips_per_s": r.get("clips_per_s"), "ms": r.get("ms"), "max_rel_err": r.get("max_rel_err"),
                "first_call_s": r.get("first_call_s"), "error": r.get("error")} for n, r in rows.items()}
        for b, rows in teacher.items()}
    out["p3_per_batch"] = bench.get("teacher", {}).get("p3")
    out["online_kd"] = {b: {n: {k: (v["ratio"] if isinstance(v, dict) and "ratio" in v else v)
                                for k, v in r.items() if k != "basis"} for n, r in rows.items()}
                        for b, rows in bench.get("online_kd", {}).get("batches", {}).items()}
    out["student"] = {b: {n: r.get("clips_per_s") for n, r in rows.items()}
                      for b, rows in bench.get("student", {}).get("batches", {}).items()}
    out["cached_kd_epoch"] = bench.get("cached_kd", {}).get("epoch")
    out["ddp_efficiency"] = bench.get("ddp", {}).get("efficiency")
    return out


# ------------------------------------------------------------------------------------- mini pytest
class _Skipped(Exception):
    pass


def _mini_pytest_module():
    """Just enough of pytest for tests/gpu: marks (parametrize), skip, importorskip, tmp_path."""
    import types

    class _Mark:
        def __init__(self, name, args=()):
            self.name, self.args = name, args

        def __call__(self, *args, **kwargs):
            if args and callable(args[0]) and len(args) == 1 and not kwargs:
                fn = args[0]
                fn.__dict__.setdefault("_marks", []).append(self)
                return fn
            return _Mark(self.name, args)

    class _Marks:
        def __getattr__(self, name):
            return _Mark(name)

    def skip(reason=""):
        raise _Skipped(reason)

    def importorskip(name, *a, **k):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise _Skipped(f"could not import {name!r}: {exc}") from None

    mod = types.ModuleType("pytest")
    mod.mark, mod.skip, mod.importorskip = _Marks(), skip, importorskip
    mod.fixture = lambda *a, **k: (a[0] if a and callable(a[0]) else (lambda f: f))
    return mod


def mini_pytest(folder: str, junit: str | None) -> int:
    import inspect
    import tempfile

    sys.modules.setdefault("pytest", _mini_pytest_module())
    folder_path = (REPO / folder).resolve()
    sys.path[:0] = [str(folder_path), str(REPO)]
    import torch

    no_cuda = None if torch.cuda.is_available() else "needs a CUDA device (tests/conftest.py rule)"
    cases, failed = [], 0
    for path in sorted(folder_path.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, fn in vars(module).items():
            if not (name.startswith("test_") and callable(fn)):
                continue
            params = [m for m in getattr(fn, "_marks", []) if m.name == "parametrize"]
            runs = [{}]
            if params:
                names, values = params[0].args[0], params[0].args[1]
                names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
                runs = [dict(zip(names, v if len(names) > 1 else (v,))) for v in values]
            for kwargs in runs:
                label = f"{path.stem}::{name}{'[' + ','.join(map(str, kwargs.values())) + ']' if kwargs else ''}"
                t0 = time.perf_counter()
                try:
                    marks = getattr(module, "pytestmark", [])
                    marks = (marks if isinstance(marks, list) else [marks]) + getattr(fn, "_marks", [])
                    if no_cuda and any(getattr(m, "name", "") == "gpu" for m in marks):
                        raise _Skipped(no_cuda)
                    with tempfile.TemporaryDirectory() as tmp:
                        if "tmp_path" in inspect.signature(fn).parameters:
                            kwargs = {**kwargs, "tmp_path": Path(tmp)}
                        fn(**kwargs)
                    outcome, reason = "passed", ""
                except _Skipped as exc:
                    outcome, reason = "skipped", str(exc)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    outcome, reason, failed = "failed", f"{type(exc).__name__}: {exc}"[:300], failed + 1
                print(f"{outcome.upper():8s} {label} ({time.perf_counter() - t0:.1f} s) {reason}", flush=True)
                cases.append((label, outcome, reason, time.perf_counter() - t0))
    if junit:
        import xml.etree.ElementTree as ET

        suite = ET.Element("testsuite", tests=str(len(cases)), failures=str(failed), errors="0",
                           skipped=str(sum(c[1] == "skipped" for c in cases)))
        for label, outcome, reason, seconds in cases:
            case = ET.SubElement(suite, "testcase", classname=label.split("::")[0], name=label.split("::")[1],
                                 time=f"{seconds:.2f}")
            if outcome != "passed":
                ET.SubElement(case, "failure" if outcome == "failed" else "skipped", message=reason)
        ET.ElementTree(suite).write(junit)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench_out" / "gpu_check"),
                   help="folder (or .json file) for gpu_check.json, bench.json, gpu_tests.xml")
    p.add_argument("--budget-s", type=float, default=450.0, help="seconds for tests + benchmark together")
    p.add_argument("--batch", default="256,1024", help="benchmark batch sizes on the GPU")
    p.add_argument("--no-tests", action="store_true")
    p.add_argument("--no-bench", action="store_true")
    p.add_argument("--mini-pytest", metavar="FOLDER", help=argparse.SUPPRESS)
    p.add_argument("--junit", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.mini_pytest:
        return mini_pytest(a.mini_pytest, a.junit)

    t_start = time.perf_counter()
    out = Path(a.out)
    out_dir, report_path = (out.parent, out) if out.suffix == ".json" else (out, out / "gpu_check.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": a.budget_s}

    def left() -> float:
        return a.budget_s - (time.perf_counter() - t_start)

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        report_path.write_text(json.dumps(report, indent=2, default=str))

    report["env"] = env = probe()
    log(f"python {env['python']}, cuda={env.get('cuda')} {env.get('gpu', '')}, modules: "
        + ", ".join(f"{k}={'-' if v is None else v}" for k, v in env["modules"].items()))
    missing = [m for m in ("deepspeed", "webdataset", "wandb", "soundfile", "torchaudio", "pytest", "rich")
               if env["modules"].get(m) is None]
    if missing:
        log(f"not installed (their checks skip): {', '.join(missing)}; see docs/performance.md for carrying wheels")
    save()
    ok = True
    if not a.no_tests:
        report["tests"] = tests = run_tests(out_dir, timeout=min(left() / 3 if env.get("cuda") else left(), 300))
        log(f"tests: exit {tests['exit_code']}, {tests.get('tests', '?')} run, {tests.get('failures', '?')} failed, "
            f"{tests.get('skipped', '?')} skipped, {tests['seconds']} s")
        ok &= tests["ok"]
        save()
    if not a.no_bench:
        report["bench"] = bench = run_bench(out_dir, timeout=left() - 10, cuda=bool(env.get("cuda")), batches=a.batch)
        for key, g in (bench.get("goals") or {}).items():
            state = "not measured" if g["met"] is None else ("met" if g["met"] else "MISSED")
            log(f"{key}: {g['value']} (goal {g['goal']}) {state} - {g['detail']}")
        ok &= bench["ok"]
        save()
    report["ok"] = ok
    save()
    log(f"{'OK' if ok else 'FAILED'} in {report['seconds']} s; report {report_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
