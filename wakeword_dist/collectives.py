"""Reductions of a few plain numbers (and one object broadcast) over the ranks of the process group.

The one place for them: the recipe (`train/`: step flags and losses, data counts, the teacher
gate, the best model) and `distill/` (the placement's free memory, annotate's ZeRO-3 lockstep)
call these. They are plain ``torch.distributed``, the call Accelerate's ``reduce`` / ``gather`` /
``broadcast_object_list`` make on GPU and CPU ranks, so that `distill/` needs no Accelerator.

Collective: when a process group of more than one rank is up, every rank must call the same
function in the same order. Without one (a single process) each returns its input unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Ranks in the process group; 1 when none is up."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def reduce_over_ranks(values, op: str, device) -> list[float]:
    """``values`` (numbers) reduced element-wise over the ranks with ``op`` ("sum", "max", "min").

    ``device``: this rank's device; the tensor goes there under NCCL, to the CPU under gloo.
    Float64: integers up to 2**53 (byte counts included) come back exact."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if world_size() == 1:
        return t.tolist()
    on = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = t.to(on)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t.tolist()


def sum_over_ranks(values, device) -> list[float]:
    return reduce_over_ranks(values, "sum", device)


def max_over_ranks(value: float, device) -> float:
    return reduce_over_ranks([value], "max", device)[0]


def min_over_ranks(value: float, device) -> float:
    return reduce_over_ranks([value], "min", device)[0]


def broadcast_object(obj, from_rank: int = 0):
    """Rank ``from_rank``'s ``obj`` (picklable) on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=from_rank)
    return box[0]
