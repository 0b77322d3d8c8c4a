"""Launcher plumbing without a cluster: the accelerate YAMLs, slurm/_task.sh's accelerate command
line (with a fake `accelerate` on PATH), the sbatch headers, and a real 2-process cpu_ddp launch."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
YAMLS = sorted((REPO / "launch" / "accelerate").glob("*.yaml"))
SBATCH = sorted((REPO / "slurm").glob("*.sbatch"))


def test_accelerate_yamls_exist():
    names = {p.stem for p in YAMLS}
    assert {"cpu_ddp", "single_gpu", "multi_gpu", "multi_node", "deepspeed_teacher"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_accelerate_yaml_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))  # unknown keys raise here
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1
    if cfg.num_machines > 1:
        assert cfg.num_processes % cfg.num_machines == 0, "num_processes is the total over machines"


@pytest.mark.parametrize("path", [*SBATCH, *(REPO / "slurm").glob("*.sh"), REPO / "launch" / "slurm_cluster.sh"],
                         ids=lambda p: p.name)
def test_shell_syntax(path):
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("path", SBATCH, ids=lambda p: p.name)
def test_sbatch_preemption_header(path):
    directives = re.findall(r"^#SBATCH (\S+)", path.read_text(), flags=re.M)
    # B: makes the signal reach the batch shell, whose trap forwards it and requeues.
    assert "--signal=B:USR1@120" in directives
    assert "--requeue" in directives and "--open-mode=append" in directives
    assert "--ntasks-per-node=1" in directives, "one task (= one accelerate machine) per node"


def run_task(tmp_path: Path, procid: int, ntasks: int, **env) -> tuple[list[str], str | None]:
    """Runs slurm/_task.sh as SLURM task `procid` of `ntasks`; returns (accelerate argv, ACCELERATE_USE_CPU)."""
    fake = tmp_path / "bin" / "accelerate"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/usr/bin/env bash\n'
                    'python3 -c \'import json,os,sys; print(json.dumps({"argv": sys.argv[1:], '
                    '"cpu": os.environ.get("ACCELERATE_USE_CPU"), '
                    '"signals": os.environ.get("PET_SIGNALS_TO_HANDLE")}))\' "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    full_env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_PROCID": str(procid),
                "SLURM_NTASKS": str(ntasks), "SLURM_NODEID": "0", "WW_HEAD_NODE": "node001", "WW_PORT": "23456",
                **env}
    out = subprocess.run(["bash", str(REPO / "slurm" / "_task.sh"), "launch/train.py", "--config", "c.yaml", "a.b=1"],
                         env=full_env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert "SIGUSR1" in result["signals"].split(","), "torchrun must forward the preemption signal"
    return result["argv"], result["cpu"]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_task_machine_rank_from_procid_not_nodeid(tmp_path):
    # Two tasks on one host (SLURM_NODEID 0 for both) must still be machine ranks 0 and 1.
    for procid in (0, 1):
        argv, _ = run_task(tmp_path, procid, 2, SLURM_GPUS_ON_NODE="8")
        assert flag(argv, "--machine_rank") == str(procid)
        assert flag(argv, "--num_machines") == "2"
        assert flag(argv, "--num_processes") == "16", "accelerate wants the total over machines"
        assert flag(argv, "--main_process_ip") == "node001" and flag(argv, "--main_process_port") == "23456"
        assert flag(argv, "--rdzv_backend") == "c10d"
        assert flag(argv, "--rdzv_conf") == f"is_host={1 - procid}"
        assert "--multi_gpu" in argv
        assert argv[-4:] == ["launch/train.py", "--config", "c.yaml", "a.b=1"]


def test_task_cpu_mode_sets_use_cpu_env(tmp_path):
    argv, cpu = run_task(tmp_path, 0, 2, WW_CPU="1", WW_PROCS_PER_NODE="1")
    assert cpu == "1" and "--cpu" not in argv  # --cpu would start a single process
    assert flag(argv, "--num_processes") == "2" and "--multi_gpu" in argv


def test_task_single_machine_single_process(tmp_path):
    argv, cpu = run_task(tmp_path, 0, 1, WW_CPU="1")
    assert cpu == "1" and "--multi_gpu" not in argv and "--machine_rank" not in argv
    assert flag(argv, "--num_processes") == "1"


def test_task_accelerate_config_passed(tmp_path):
    argv, _ = run_task(tmp_path, 0, 1, WW_ACCELERATE_CONFIG="launch/accelerate/deepspeed_teacher.yaml",
                       SLURM_GPUS_ON_NODE="8")
    assert flag(argv, "--config_file") == "launch/accelerate/deepspeed_teacher.yaml"
    assert flag(argv, "--num_processes") == "8" and "--mixed_precision" not in argv


@pytest.mark.multiprocess
def test_cpu_ddp_yaml_starts_two_ranks(tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(json.dumps({"run": {"runs_dir": str(tmp_path / "runs")},
                               "train": {"steps": 2, "step_seconds": 0, "expect_world_size": 2}}))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(REPO / "launch" / "accelerate" / "cpu_ddp.yaml"),
                           str(REPO / "tests" / "slurm" / "toy_ddp.py"), "--config", str(cfg)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "toy" / "baseline" / "seed0" / "ranks").iterdir()]
    assert sorted((r["rank"], r["world_size"]) for r in ranks) == [(0, 2), (1, 2)]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck():
    scripts = [*SBATCH, *(REPO / "slurm").glob("*.sh"), REPO / "launch" / "slurm_cluster.sh"]
    proc = subprocess.run(["shellcheck", "-x", *map(str, scripts)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
