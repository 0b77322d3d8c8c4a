"""2-rank DDP through the real launcher (`accelerate launch` + launch/accelerate/cpu_ddp.yaml, gloo).

Asserts the world size it expects, so a one-process run cannot pass for two (the trap:
`accelerate launch --cpu --num_processes 2` silently starts one process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.train.run_logger import read_metrics

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def accelerate_launch(args: list[str], num_processes: int = 2, timeout: int = 300, env_extra=None):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           **(env_extra or {})}
    if num_processes > 1:
        launcher = ["--config_file", str(REPO / "launch" / "accelerate" / "cpu_ddp.yaml"),
                    "--num_processes", str(num_processes)]
    else:
        launcher = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher, *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_two_rank_distill_run(tiny_shards, tiny_teacher_dir, tmp_path):
    overrides = tiny_overrides(tiny_shards, tmp_path, **{
        "teacher.name_or_path": str(tiny_teacher_dir), "train.job": "distill"})
    cfg_args = ["--config", str(REPO / "configs" / "ci_tiny.yaml"), *overrides]
    proc = accelerate_launch([str(REPO / "launch" / "train.py"), *cfg_args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stdout + proc.stderr

    run_dir = tmp_path / "ci_tiny" / "distill" / "seed0"
    final = json.loads((run_dir / "final.json").read_text())
    assert final["world_size"] == 2 and len(final["ranks"]) == 2
    rank0, rank1 = final["ranks"]
    assert rank0["keys_sha1"] != rank1["keys_sha1"], "both ranks trained on the same clips"
    assert rank0["weights_sha1"] == rank1["weights_sha1"], "DDP replicas diverged"

    # metrics.jsonl written once (one line per step and key set), one W&B run
    rows = read_metrics(run_dir)
    train_steps = Counter(m["step"] for m in rows if "train/loss" in m)
    assert train_steps and set(train_steps.values()) == {1}
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1

    # validation gathered over 2 ranks == a 1-process evaluation of the same weights
    ev_args = ["-m", "wakeword_dist.cli", "evaluate", *cfg_args]
    for n in (2, 1):
        proc = accelerate_launch(ev_args, num_processes=n)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir / f"val_report_{n}.json").write_text((run_dir / "val_report.json").read_text())
    def strict(c):
        raise AssertionError(f"val_report.json is not strict JSON: {c}")

    two = json.loads((run_dir / "val_report_2.json").read_text(), parse_constant=strict)
    one = json.loads((run_dir / "val_report_1.json").read_text(), parse_constant=strict)
    index = json.loads((tiny_shards / "val" / "index.json").read_text())
    assert two["n_unique_keys"] == one["n_unique_keys"] == index["num_samples"]
    assert two["confusion_matrix"] == one["confusion_matrix"]
    for key in ("accuracy", "f1_macro", "frr_at_target", "fa_per_hour", "threshold", "clip_auc", "stream_hours"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
