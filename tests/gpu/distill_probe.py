"""Short real distillation runs of the recipe on this machine's device, one JSON report.

    python tests/gpu/distill_probe.py --work /tmp/w --out distill.json [--steps 16] [--only bf16_ahead]

Runs (the replicated teacher, online KD, ``configs/ci_tiny.yaml`` shapes with a 2-layer teacher):
- ``bf16_serial``: bf16 teacher, bf16 student autocast;
- ``bf16_ahead``: the same with ``distill.overlap_teacher`` (the teacher one batch ahead);
- ``fp16_serial``: fp16 teacher, fp16 autocast with its loss scaler (on CPU, where Accelerate has no
  fp16 autocast, the student runs in fp32).
Each run's figures (``gpu_helpers.summarize_run``) and ``problems`` (empty = passed) are written
to --out after every run. Exit 0 only without problems. Used by launch/gpu_check.py and
tests/gpu/test_gpu_distill.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

RUNS = {  # name: (teacher dtype, student precision on CUDA, overlap_teacher)
    "bf16_serial": ("bf16", "bf16", False),
    "bf16_ahead": ("bf16", "bf16", True),
    "fp16_serial": ("fp16", "fp16", False),
}


def one_run(name: str, work: Path, steps: int) -> dict:
    from accelerate.state import AcceleratorState

    from gpu_helpers import run_inputs, run_overrides, summarize_run
    from wakeword_dist.config import load_config
    from wakeword_dist.models.teacher import DTYPES
    from wakeword_dist.train.recipe import Recipe

    cuda = torch.cuda.is_available()
    dtype, precision, overlap = RUNS[name]
    if not cuda and precision == "fp16":
        precision = "no"
    shards, teacher_dir, source = run_inputs(work)
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", run_overrides(
        shards, teacher_dir, work / f"runs-{name}", steps=steps, batch=64 if cuda else 16, **{
            "teacher.dtype": dtype, "train.mixed_precision": precision, "distill.overlap_teacher": overlap,
            "train.resume": "never"}))
    # One process, several mixed precisions: Accelerate's process-wide state is fixed at the first.
    AcceleratorState._reset_state(reset_partial_state=False)
    out = {"teacher_dtype": dtype, "student_precision": precision, "overlap_teacher": overlap, "data": source}
    problems = out["problems"] = []
    t0 = time.perf_counter()
    recipe = Recipe(cfg).setup()
    try:
        out["device"] = str(recipe.accelerator.device)
        if cuda and recipe.accelerator.device.type != "cuda":
            problems.append(f"recipe on {recipe.accelerator.device}, not CUDA")
        teacher_dtype = next(recipe.teacher.parameters()).dtype
        if teacher_dtype != DTYPES[dtype]:
            problems.append(f"teacher parameters are {teacher_dtype}, asked for {dtype}")
        result = recipe.train()
    finally:
        recipe.cleanup()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out.update(summarize_run(cfg.job_dir()))
    if result["step"] != steps or out["kd_steps"] != steps or not out["kd_all_finite"]:
        problems.append(f"{result['step']} steps of {steps}, {out['kd_steps']} KD losses, "
                        f"all finite and >= 0: {out['kd_all_finite']}")
    placement = out["placement"] or {}
    if not out["completed"] or placement.get("placement") != "replicate":
        problems.append(f"completed={out['completed']}, placement={placement.get('placement')}")
    if placement.get("overlap_teacher") is not overlap:
        problems.append(f"overlap_teacher recorded {placement.get('overlap_teacher')}, asked {overlap}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="folder for shards, teacher and run folders")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--steps", type=int, default=16, help="steps per run (two epochs)")
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated runs: " + ", ".join(RUNS))
    a = p.parse_args(argv)
    names = [n for n in a.only.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        p.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    report = {"cuda": torch.cuda.is_available(), "steps": a.steps, "runs": {}}
    for name in names:
        try:
            report["runs"][name] = one_run(name, Path(a.work), a.steps)
        except Exception as exc:  # noqa: BLE001 - one failing run must not hide the others
            traceback.print_exc()
            report["runs"][name] = {"problems": [f"{type(exc).__name__}: {exc}"[:500]]}
        Path(a.out).write_text(json.dumps(report, indent=2, default=str))
        print(f"[distill_probe] {name}: {json.dumps(report['runs'][name], default=str)}", flush=True)
    return 0 if all(not r["problems"] for r in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
