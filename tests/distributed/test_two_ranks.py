"""ZeRO-3 teacher and annotate over 2 real gloo ranks (one launch shared by the tests here).

``two_rank_program.py`` runs once as 2 processes with the environment torchrun sets; each rank
writes what it saw to rank<r>.json and ends with ``process_exit.end_process``, as the CLI does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from distributed_helpers import make_split, run_ranks, tiny_teacher
from wakeword_dist.data.tario import iter_tar_samples

pytestmark = pytest.mark.multiprocess
PROGRAM = Path(__file__).with_name("two_rank_program.py")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_ranks")
    split = root / "train"
    index = make_split(split)
    assert len(index["shards"]) == 3  # rank 0 gets shards 0 and 2, rank 1 gets shard 1: uneven
    procs = run_ranks(PROGRAM, str(root), str(split), "clean")
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
    results = [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]
    return {"root": root, "split": split, "index": index, "results": results, "procs": procs}


def test_zero3_matches_replicate_and_each_rank_holds_half(two_ranks):
    for res in two_ranks["results"]:
        assert res["zero3_decision"]["placement"] == "zero3" and res["lockstep"]
        assert res["zero3_err"] <= 1e-5, res["zero3_err"]
        # each rank keeps 1/2 of every parameter (ZeRO pads each to a multiple of world size)
        half = res["n_params"] / 2
        assert half <= res["zero3_local_numel"] <= half + res["n_param_tensors"], res
        assert res["zero3_decision"]["zero3_local_param_numel"] == res["zero3_local_numel"]


def test_zero3_in_bf16_matches_a_bf16_replica(two_ranks):
    for res in two_ranks["results"]:
        assert res["bf16_zero3_vs_replicate"] <= 1e-3, res
        assert res["bf16_vs_fp32"] <= 0.05, res


def test_auto_shards_when_the_memory_share_is_tiny(two_ranks):
    for res in two_ranks["results"]:
        decision = res["auto_decision"]
        assert decision["placement"] == "zero3" and decision["requested"] == "auto"
        assert {"teacher_param_bytes", "activation_bytes_estimate", "free_bytes", "memory_share",
                "reason"} <= decision.keys()
        assert res["auto_err"] <= 1e-5
        assert res["replicate_decision"]["placement"] == "replicate"


@pytest.mark.parametrize("placement", ["zero3", "replicate"])
def test_annotate_two_ranks_every_sample_once_with_teacher_logits(two_ranks, placement):
    out = two_ranks["root"] / placement
    summaries = [res[f"annotate_{placement}"] for res in two_ranks["results"]]
    assert sorted(s for summary in summaries for s in summary["annotated"]) == two_ranks["index"]["shards"]
    assert summaries[0]["annotated"] == ["shard-000000.tar", "shard-000002.tar"]
    assert summaries[1]["annotated"] == ["shard-000001.tar"]

    teacher = tiny_teacher()
    keys = []
    for shard in two_ranks["index"]["shards"]:
        originals = dict(iter_tar_samples(two_ranks["split"] / shard))
        for key, parts in iter_tar_samples(out / shard):
            keys.append(key)
            assert {k: v for k, v in parts.items() if k != "teacher.npy"} == originals[key]  # byte-identical
            logits = np.load(io.BytesIO(parts["teacher.npy"]))
            assert logits.dtype == np.float16 and logits.shape == (3,)
            audio = np.frombuffer(parts["wav"][44:], dtype="<i2").astype(np.float32) / 32768.0
            import torch

            expected = teacher(torch.from_numpy(audio)[None])[0].numpy()
            np.testing.assert_allclose(logits.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert len(keys) == len(set(keys)) == two_ranks["index"]["num_samples"]

    index = json.loads((out / "index.json").read_text())
    assert index["teacher"] == teacher.fingerprint()
    assert index["shards"] == two_ranks["index"]["shards"]
    assert index["annotate"]["world_size"] == 2


def test_annotate_rerun_is_a_no_op(two_ranks):
    for res in two_ranks["results"]:
        rerun = res["annotate_zero3_rerun"]
        assert rerun["annotated"] == [] and rerun["skipped"] == res["annotate_zero3"]["annotated"]


def test_both_ranks_exit_cleanly_after_deepspeed(two_ranks):
    for proc in two_ranks["procs"]:
        assert proc.returncode == 0
        assert "Aborted" not in proc.stdout and "core dumped" not in proc.stdout
