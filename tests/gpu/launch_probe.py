"""A short distillation under `accelerate launch` with ONE process: the process group (NCCL on a
GPU through launch/accelerate/multi_gpu.yaml, gloo on CPU through cpu_ddp.yaml) and the teacher
placement (replicate, or ZeRO-3 at world size 1) of the real recipe.

    accelerate launch --config_file launch/accelerate/multi_gpu.yaml --num_processes 1 \\
        tests/gpu/launch_probe.py --work /tmp/w --out probe.json --placement zero3 [--steps 8]

Writes one JSON object to --out (and prints it): backend, world size, distributed type, the
run's figures (``gpu_helpers.summarize_run``), for ZeRO-3 the teacher's logits against the same
weights replicated, and ``problems`` (empty = passed). Exit 0 only without problems.
``launch_command`` builds the launcher line; tests/gpu/test_gpu_teacher.py and
launch/gpu_check.py both run it from there. ``process_exit.end_process`` is the last statement:
DeepSpeed leaves process-group state behind (wakeword_dist/process_exit.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def launch_command(work, out, placement: str, steps: int, cuda: bool) -> tuple[list[str], dict]:
    """(argv, extra environment) of the one-process `accelerate launch` of this probe."""
    config = "multi_gpu.yaml" if cuda else "cpu_ddp.yaml"
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "launch" / "accelerate" / config), "--num_processes", "1", str(Path(__file__).resolve()),
            "--work", str(work), "--out", str(out), "--placement", placement, "--steps", str(steps)]
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")) if p)}
    if not cuda:
        env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    return argv, env


def _probe(a, report: dict) -> None:
    import torch

    from gpu_helpers import rel, run_inputs, run_overrides, summarize_run
    from wakeword_dist.config import load_config
    from wakeword_dist.models.teacher import load_teacher
    from wakeword_dist.train.recipe import Recipe

    cuda = torch.cuda.is_available()
    shards, teacher_dir, report["data"] = run_inputs(a.work)
    runs = Path(a.work) / f"launch-{a.placement}"
    dtype = "fp16" if cuda else "fp32"
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", run_overrides(
        shards, teacher_dir, runs, steps=a.steps, batch=64 if cuda else 16, **{
            "teacher.placement": a.placement, "teacher.dtype": dtype,
            "train.mixed_precision": "bf16" if cuda else "no", "train.resume": "never"}))
    problems = report["problems"]
    t0 = time.perf_counter()
    recipe = Recipe(cfg).setup()
    try:
        acc = recipe.accelerator
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        report.update(backend=torch.distributed.get_backend() if dist else None, world_size=acc.num_processes,
                      distributed_type=str(acc.distributed_type), device=str(acc.device),
                      placement=recipe.placement.get("placement"))
        expected_backend = "nccl" if cuda else "gloo"
        if report["backend"] != expected_backend or acc.num_processes != 1:
            problems.append(f"process group {report['backend']} world size {acc.num_processes}, "
                            f"expected {expected_backend} world size 1")
        if report["placement"] != a.placement:
            problems.append(f"teacher placement {report['placement']}, asked for {a.placement}")
        if a.placement == "zero3":  # the partitioned teacher computes the replicated one's logits
            x = (0.1 * torch.randn(8, cfg.data.clip_samples, generator=torch.Generator().manual_seed(1))).to(acc.device)
            reference = load_teacher(teacher_dir, label_names=recipe.label_names, dtype=dtype, device=acc.device)
            with torch.no_grad():
                report["zero3_rel_err"] = err = rel(recipe.teacher_fn(x), reference(x))
            del reference
            if not err < 1e-2:
                problems.append(f"ZeRO-3 teacher logits off the replicated ones by {err:.2e} (limit 1e-2)")
        result = recipe.train()
    finally:
        recipe.cleanup()
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["run"] = run = summarize_run(cfg.job_dir())
    if result["step"] != cfg.train.epochs * cfg.train.batches_per_epoch or not run["kd_all_finite"]:
        problems.append(f"run ended at step {result['step']} with KD losses finite={run['kd_all_finite']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="folder for shards, teacher and run folders (reused)")
    p.add_argument("--out", required=True, help="JSON file for the result")
    p.add_argument("--placement", choices=("replicate", "zero3"), default="replicate")
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    report: dict = {"placement_asked": a.placement, "problems": []}
    code = 1
    try:
        _probe(a, report)
        code = 0 if not report["problems"] else 1
    except BaseException as exc:  # noqa: BLE001 - recorded, and still the clean exit below
        traceback.print_exc()
        report["problems"].append(f"{type(exc).__name__}: {exc}"[:500])
    finally:
        Path(a.out).write_text(json.dumps(report, indent=2, default=str))
        print(json.dumps(report, default=str), flush=True)
        from wakeword_dist.process_exit import PROCESS, end_process

        end_process(code, PROCESS)


if __name__ == "__main__":
    main()
