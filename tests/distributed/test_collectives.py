"""The cross-rank reductions the recipe and the teacher placement share (wakeword_dist/collectives.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distributed_helpers import run_ranks
from wakeword_dist import collectives

PROGRAM = Path(__file__).with_name("collectives_program.py")


def test_without_a_process_group_each_returns_its_input():
    cpu = torch.device("cpu")
    assert collectives.world_size() == 1
    assert collectives.sum_over_ranks([1, 2.5, True], cpu) == [1.0, 2.5, 1.0]
    assert collectives.max_over_ranks(3, cpu) == 3.0
    assert collectives.min_over_ranks(2 ** 40 + 1, cpu) == 2 ** 40 + 1
    best = {"step": 4}
    assert collectives.broadcast_object(best) is best


@pytest.mark.multiprocess
def test_two_gloo_ranks_agree_on_sums_extremes_and_rank_0s_object():
    procs = run_ranks(PROGRAM, timeout=120)
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
    results = [json.loads(proc.stdout.strip().splitlines()[-1]) for proc in procs]
    for r in results:
        assert r["world_size"] == 2
        assert r["sum"] == [2.0, 1.0, 0.5]
        assert r["max"] == 11.0
        assert r["min"] == 40 * 2 ** 30 + 3
        assert r["broadcast"] == {"from": 0}
