"""Timing helpers: warm-up, several timed rounds, device synchronisation, best-of.

Best-of rounds because load from other jobs on a shared machine only ever slows a run down; the
median is kept too. On CPU the process CPU time per iteration is recorded as well (it moves
less than the wall clock when other processes compete for the cores).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA); a no-op on CPU, where ops run synchronously."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], *, device: torch.device, clips: int, warmup: int, iters: int,
            rounds: int) -> dict:
    """Run ``fn`` ``warmup`` times, then ``rounds`` rounds of ``iters`` calls each.

    The device is synchronised only at round boundaries, so queued GPU work overlaps host work as
    it would in training. Returns ms per call (best round and median round), clips/s from the best
    round (``clips`` per call), and on CPU the process CPU ms per call (all threads) and the
    clips per CPU-second it implies.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    sync(device)
    walls, cpus = [], []
    for _ in range(max(1, rounds)):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(max(1, iters)):
            fn()
        sync(device)
        walls.append((time.perf_counter() - t0) / iters)
        cpus.append((time.process_time() - c0) / iters)
    best = min(walls)
    out = {"ms": round(best * 1e3, 3), "ms_median": round(statistics.median(walls) * 1e3, 3),
           "clips_per_s": round(clips / best, 1), "iters": iters, "rounds": rounds}
    if device.type == "cpu":
        out["cpu_ms"] = round(min(cpus) * 1e3, 3)
        out["cpu_clips_per_s"] = round(clips / min(cpus), 1)
    return out


def first_call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call including device sync (compile / graph-capture cost)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return round(time.perf_counter() - t0, 3)


def machine_info(device: torch.device) -> dict:
    """What the figures were measured on."""
    import platform

    import transformers

    info = {"device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()})
    return info
