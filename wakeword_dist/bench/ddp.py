"""Weak scaling of the baseline student step over CPU gloo ranks: 1 rank vs 2 ranks, same per-rank batch.

    python -m wakeword_dist.bench.ddp --config cfg.yaml --batch 16 --iters 4 --out ddp.json

Runs in its own process (``run_weak_scaling`` starts it): a fresh interpreter with CUDA hidden,
so forking the ranks (``accelerate.debug_launcher``: fork + gloo over a FileStore) never happens
from a process that initialised CUDA or ran a parallel OpenMP region. Each rank uses one
intra-op thread (GNU OpenMP is not fork-safe, and 2 ranks x 1 thread fill the 2-core dev box).

Per step a rank runs the recipe's own step (``train/step.py: train_step`` via ``BenchStep``):
augment, student forward/backward (DDP all-reduces the gradients), the step's one small
all-reduce (finite flag, stop vote, three losses), grad clip, AdamW, scheduler. Efficiency =
2-rank clips/s / (2 x 1-rank clips/s); ``cpu_efficiency`` the same from rank 0's CPU time per
step; ``small_allreduce`` what one such small collective costs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rank_main(cfg_path: str, batch: int, iters: int, warmup: int, rounds: int, out_path: str) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    torch.set_num_threads(1)  # first thing in the forked rank, before any parallel region

    from wakeword_dist.bench.workloads import BenchStep, bench_batch, label_names
    from wakeword_dist.config import load_config

    cfg = load_config(cfg_path)
    # A forked rank inherits the parent's Accelerate singletons: had the parent made an
    # Accelerator before (a test session, a pipeline), this rank would reuse its world size of 1.
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=True)
    torch.set_num_threads(1)  # after Accelerator: with OMP_NUM_THREADS unset it sets its own count
    labels = label_names(cfg)
    # same initial weights on every rank (DDP broadcasts them anyway), a different batch per rank
    step = BenchStep(cfg, labels, acc.device, batch, "no", seed=0, accelerator=acc,
                     batch_dict=bench_batch(batch, cfg.data.clip_samples, len(labels), seed=1 + acc.process_index))
    one = step.step

    for _ in range(warmup):
        one()
    walls, cpus = [], []
    for _ in range(rounds):  # best of `rounds`: other load on the machine only slows a round down
        acc.wait_for_everyone()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(iters):
            one()
        acc.wait_for_everyone()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall = min(walls)
    allreduce = None
    if acc.num_processes > 1:  # what one of the recipe's small per-step collectives costs
        flag = torch.ones(4)
        acc.wait_for_everyone()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(50):
            acc.reduce(flag, reduction="sum")
        allreduce = {"ms": round((time.perf_counter() - t0) / 50 * 1e3, 3),
                     "cpu_ms": round((time.process_time() - c0) / 50 * 1e3, 3)}
    if acc.is_main_process:
        world = acc.num_processes
        Path(out_path).write_text(json.dumps({
            "world_size": world, "per_rank_batch": batch, "iters": iters, "rounds": rounds,
            "ms": round(wall / iters * 1e3, 3),  # per step, best round
            "ms_median": round(sorted(walls)[len(walls) // 2] / iters * 1e3, 3),
            "clips_per_s": round(world * batch * iters / wall, 1),
            "cpu_ms": round(min(cpus) / iters * 1e3, 3),  # rank 0's own CPU per step (compute + comm)
            "cpu_clips_per_s": round(world * batch * iters / min(cpus), 1),  # if every rank had a core
            "model": type(step.model).__name__, "small_allreduce": allreduce}))
    acc.wait_for_everyone()
    acc.end_training()  # destroys the process group before the rank exits


def measure_in_this_process(cfg_path: str, batch: int, iters: int, warmup: int, rounds: int = 3) -> dict:
    """1-rank then 2-rank runs (forked); returns both and the efficiency."""
    from accelerate import debug_launcher

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, world in (("1_rank", 1), ("2_rank", 2)):
            out = os.path.join(tmp, f"{name}.json")
            debug_launcher(_rank_main, args=(cfg_path, batch, iters, warmup, rounds, out), num_processes=world)
            results[name] = json.loads(Path(out).read_text())
    one, two = results["1_rank"]["clips_per_s"], results["2_rank"]["clips_per_s"]
    results["efficiency"] = round(two / (2 * one), 4)
    # The same from rank 0's CPU time per step: what DDP adds to each rank's work, without the
    # waiting that other jobs on a shared machine cause (equal to the wall figure on idle cores).
    results["cpu_efficiency"] = round(results["1_rank"]["cpu_ms"] / results["2_rank"]["cpu_ms"], 4)
    results["threads_per_rank"] = 1
    return results


def run_weak_scaling(cfg, *, batch: int, iters: int, warmup: int, rounds: int = 3, isolate: bool | None = None,
                     timeout_s: float = 600) -> dict:
    """1- vs 2-rank figures for ``cfg``'s student. ``isolate`` (default: when CUDA is available)
    runs them from a fresh interpreter with CUDA hidden, as forking a process that initialised
    CUDA is unsafe; otherwise the ranks are forked from this process (saves the imports)."""
    import torch

    from wakeword_dist.config import save_config

    if isolate is None:
        isolate = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, out = os.path.join(tmp, "config.yaml"), os.path.join(tmp, "ddp.json")
        save_config(cfg, cfg_path)
        t0 = time.perf_counter()
        if not isolate:
            threads = torch.get_num_threads()
            try:
                result = measure_in_this_process(cfg_path, batch, iters, warmup, rounds)
            finally:
                torch.set_num_threads(threads)
            result["wall_s_including_start"] = round(time.perf_counter() - t0, 2)
            return result
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run(
            [sys.executable, "-m", "wakeword_dist.bench.ddp", "--config", cfg_path, "--batch", str(batch),
             "--iters", str(iters), "--warmup", str(warmup), "--rounds", str(rounds), "--out", out],
            env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"weak-scaling run failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(Path(out).read_text())
        result["wall_s_including_start"] = round(time.perf_counter() - t0, 2)
        return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--batch", type=int, required=True, help="clips per rank per step")
    p.add_argument("--iters", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of --iters steps; best kept")
    p.add_argument("--out", required=True, help="JSON file for the result")
    a = p.parse_args(argv)
    result = measure_in_this_process(a.config, a.batch, a.iters, a.warmup, a.rounds)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
