"""``compare.parallel_runs``: train several runs of a comparison at once on one machine.

Each run is its own process (``python launch/train.py``, or ``accelerate launch`` with
``compare.launcher=accelerate``) with its share of the machine: on CPU, ``cpus // (parallel_runs x
ranks)`` intra-op threads per rank; on GPUs, its own slice of ``CUDA_VISIBLE_DEVICES``. It pays
where one run cannot use the machine (a node with more GPUs than a run's ranks, many cores). On
the 2-core dev box it does not: the demo's six student runs took 439 s two at a time vs 385 s one
after another (docs/performance.md), as each process pays ~10 s of start-up and its teacher
runs on one thread. Every run draws from its own seeded generators, but the thread count changes
the order of float reductions, so weights differ from a one-at-a-time run at rounding level.

Every line a run prints goes to ``<experiment>/logs/<job>-seed<k>.log`` and to stdout, prefixed
with the run's name. A failed run does not stop the ones in flight: they finish and keep their
outputs, no further run starts, and the error names the failed run and its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from wakeword_dist.config import Config


def cpu_count() -> int:
    """CPUs this process may run on (a SLURM or container cpuset, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_shares(parallel: int, ranks_per_run: int, *, cpus: int, gpus: list[str] | None) -> list[dict]:
    """Environment overrides for each side-by-side slot: ``parallel`` of them, or on GPUs as many
    as the GPUs hold (a config says "up to N at a time", so the same file runs on a 2-core box
    and on a one-GPU node).

    ``gpus``: the visible GPU ids (None or [] on a CPU machine). With GPUs each slot gets
    ``ranks_per_run`` of them, in order; without, each rank gets ``cpus // (parallel x ranks)``
    threads (at least one)."""
    if parallel < 1 or ranks_per_run < 1:
        raise ValueError(f"parallel_runs and ranks per run must be >= 1, got {parallel} and {ranks_per_run}")
    if gpus:
        slots = min(parallel, len(gpus) // ranks_per_run)
        if slots == 0:
            raise ValueError(f"compare.num_processes={ranks_per_run} GPUs per run, but this machine shows "
                             f"{len(gpus)} ({','.join(gpus)})")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * ranks_per_run:(i + 1) * ranks_per_run])}
                for i in range(slots)]
    threads = str(max(1, cpus // (parallel * ranks_per_run)))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(parallel)]


def visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if listed:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _pump(stream, name: str, log_path: Path) -> None:
    """Copy a run's output line by line to its log and, prefixed with its name, to stdout."""
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        for line in iter(stream.readline, ""):
            log.write(line)
            log.flush()
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def _describe(share: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in share.items())


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]).rstrip()
    except OSError:
        return ""


def run_side_by_side(runs: dict[tuple[int, str], list[str]], cfg: Config, log_dir: Path,
                     base_env: dict[str, str]) -> None:
    """Run ``runs`` {(seed, job): command}, ``cfg.compare.parallel_runs`` at a time, in the order
    given; returns when all ended, raises RuntimeError naming each failed run and its log."""
    parallel = cfg.compare.parallel_runs
    ranks = cfg.compare.num_processes if cfg.compare.launcher == "accelerate" else 1
    shares = run_shares(parallel, ranks, cpus=cpu_count(), gpus=visible_gpus())
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(runs.items())
    free = list(range(len(shares)))
    running: dict[int, tuple[str, subprocess.Popen, threading.Thread, Path, float]] = {}
    failed: list[str] = []
    print(f"[compare] {len(queue)} runs, {len(shares)} at a time ({_describe(shares[0])} each); logs in {log_dir}",
          flush=True)
    while queue or running:
        while queue and free and not failed:
            slot = free.pop(0)
            (seed, job), cmd = queue.pop(0)
            name = f"{job} seed{seed}"
            log_path = log_dir / f"{job}-seed{seed}.log"
            log_path.write_text(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, env={**base_env, **shares[slot]}, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            pump = threading.Thread(target=_pump, args=(proc.stdout, name, log_path), daemon=True)
            pump.start()
            running[slot] = (name, proc, pump, log_path, time.perf_counter())
            print(f"[compare] started {name} ({_describe(shares[slot])})", flush=True)
        time.sleep(0.2)
        for slot, (name, proc, pump, log_path, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            pump.join()
            del running[slot]
            free.append(slot)
            if proc.returncode == 0:
                print(f"[compare] {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
            else:
                failed.append(f"{name} failed (exit {proc.returncode}); its log: {log_path}\n{_tail(log_path)}")
                print(f"[compare] {name} failed (exit {proc.returncode}); runs in flight go on, no new one starts",
                      flush=True)
    if failed:
        not_started = [f"{job} seed{seed}" for (seed, job), _ in queue]
        raise RuntimeError("\n".join(failed) + (f"\nnot started: {', '.join(not_started)}" if not_started else ""))
