"""`compare` runs its jobs through the real launchers: here as 2-rank `accelerate launch` subprocesses."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.cli import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def test_compare_with_the_accelerate_launcher(tiny_shards, tiny_teacher_dir, tmp_path):
    overrides = tiny_overrides(tiny_shards, tmp_path, **{
        "teacher.name_or_path": str(tiny_teacher_dir), "compare.launcher": "accelerate",
        "compare.num_processes": 2, "compare.seeds": "[0]", "train.max_steps": 2, "logging.wandb": "disabled"})
    assert main(["compare", "--config", str(REPO / "configs" / "ci_tiny.yaml"), *overrides]) == 0
    root = tmp_path / "ci_tiny"
    for job in ("baseline", "distill"):
        final = json.loads((root / job / "seed0" / "final.json").read_text())
        assert final["world_size"] == 2 and final["step"] == 2
        assert (root / job / "seed0" / "report.json").is_file()
    comparison = json.loads((root / "comparison.json").read_text())
    assert comparison["jobs"]["distill"]["f1_macro"]["n"] == 1


def test_side_by_side_runs_keep_going_past_a_failed_run_and_resume(tiny_shards, tiny_teacher_dir, tmp_path, capsys):
    """compare.parallel_runs=2: runs train two at a time, each a real `launch/train.py` process
    with one thread and its own log. A distill run whose teacher is missing fails; the baseline
    beside it still finishes, and the error names the failed run and its log. The rerun with the
    teacher and a second seed trains only the three unfinished runs, two of them at once."""
    from wakeword_dist.config import load_config
    from wakeword_dist.stages.compare import compare

    config = REPO / "configs" / "ci_tiny.yaml"
    common = {"compare.parallel_runs": 2, "train.max_steps": 2, "logging.wandb": "disabled"}
    broken = tiny_overrides(tiny_shards, tmp_path, **common, **{"compare.seeds": "[0]",
                                                                "teacher.name_or_path": str(tmp_path / "no-teacher")})
    with pytest.raises(RuntimeError, match=r"distill seed0 failed \(exit 1\); its log: .*distill-seed0\.log"):
        compare(load_config(config, broken))
    root = tmp_path / "ci_tiny"
    assert (root / "baseline" / "seed0" / "final.json").is_file()
    assert not (root / "distill" / "seed0" / "final.json").exists()
    assert "job=baseline seed=0" in (root / "logs" / "baseline-seed0.log").read_text()
    out = capsys.readouterr().out
    assert "OMP_NUM_THREADS=1" in out and "[baseline seed0] " in out  # its share, its lines prefixed

    good = tiny_overrides(tiny_shards, tmp_path, **common, **{"compare.seeds": "[0, 1]",
                                                              "teacher.name_or_path": str(tiny_teacher_dir)})
    assert main(["compare", "--config", str(config), *good]) == 0
    out = capsys.readouterr().out
    assert "[compare] started baseline seed0" not in out  # finished runs are not retrained
    assert out.count("[compare] started ") == 3 and "[compare] 3 runs, 2 at a time" in out
    for job, seed in (("baseline", 0), ("distill", 0), ("baseline", 1), ("distill", 1)):
        final = json.loads((root / job / f"seed{seed}" / "final.json").read_text())
        assert final["step"] == 2 and final["world_size"] == 1, (job, seed)
    comparison = json.loads((root / "comparison.json").read_text())
    assert comparison["jobs"]["distill"]["f1_macro"]["n"] == 2


def test_side_by_side_shares_split_cpus_or_gpus():
    from wakeword_dist.config import load_config
    from wakeword_dist.stages.compare import _train_command
    from wakeword_dist.stages.side_by_side import run_shares

    # multi-rank runs ask accelerate for a free rendezvous port: two side by side never share 29500
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", ["compare.num_processes=2"])
    cmd = _train_command(cfg, "accelerate", REPO / "c.yaml")
    assert cmd[cmd.index("--main_process_port") + 1] == "0" and "--multi_gpu" in cmd
    assert "--main_process_port" not in _train_command(cfg, "sequential", REPO / "c.yaml")

    assert run_shares(2, 1, cpus=2, gpus=None) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 2
    assert run_shares(3, 2, cpus=16, gpus=[])[0]["OMP_NUM_THREADS"] == "2"
    assert run_shares(4, 1, cpus=2, gpus=None)[0]["OMP_NUM_THREADS"] == "1"  # never 0 threads
    assert [s["CUDA_VISIBLE_DEVICES"] for s in run_shares(2, 2, cpus=8, gpus=["0", "1", "4", "5"])] == ["0,1", "4,5"]
    assert len(run_shares(3, 2, cpus=8, gpus=["0", "1", "2", "3"])) == 2  # as many as the GPUs hold
    assert run_shares(2, 1, cpus=16, gpus=["3"]) == [{"CUDA_VISIBLE_DEVICES": "3"}]  # one GPU: one at a time
    with pytest.raises(ValueError, match=r"compare.num_processes=2 GPUs per run, but this machine shows 1 \(0\)"):
        run_shares(1, 2, cpus=8, gpus=["0"])
