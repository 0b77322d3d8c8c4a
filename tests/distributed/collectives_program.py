"""One rank of the 2-rank collectives test (started twice by ``run_ranks``): each rank reduces
its own numbers and prints what came back as one JSON line.

Usage: collectives_program.py
"""

from __future__ import annotations

import json

import torch
import torch.distributed as dist

from wakeword_dist import collectives

dist.init_process_group("gloo")  # rank, world size and rendezvous from the torchrun environment
rank = dist.get_rank()
cpu = torch.device("cpu")
free_bytes = [150 * 2 ** 30 + 1, 40 * 2 ** 30 + 3][rank]  # byte counts above 2**32: exact in float64
print(json.dumps({
    "world_size": collectives.world_size(),
    "sum": collectives.sum_over_ranks([1, rank, 0.5 * rank], cpu),
    "max": collectives.max_over_ranks(10 + rank, cpu),
    "min": int(collectives.min_over_ranks(free_bytes, cpu)),
    "broadcast": collectives.broadcast_object({"from": rank}),
}))
dist.destroy_process_group()
