"""The slurm/ scripts, submitted to a real SLURM cluster (CI: `launch/slurm_cluster.sh start`).

Two tasks on one host stand in for two nodes: `--nodes=1 --ntasks=2` gives SLURM_PROCID 0 and 1
(machine ranks) while SLURM_NODEID is 0 for both, which is what slurm/_task.sh must cope with.
Runs are CPU (WW_CPU=1: gloo) with one process per "machine", so world size 2 = 2 machines.

The two-machine and compare-array tests run tests/slurm/toy_ddp.py (a test asset with the
recipe's command line and run-directory layout, see its docstring) to check the cluster
mechanics alone and cheaply; the preemption test runs the real launch/train.py on
configs/ci_tiny.yaml (the toy until those exist).

Skipped unless a cluster answers: set WW_SLURM=1 to make a missing cluster an error instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = Path(os.environ.get("WW_SLURM_DIR", "/tmp/ww-slurm"))
TOY = "tests/slurm/toy_ddp.py"


def _slurm_env() -> dict[str, str]:
    env = dict(os.environ)
    if "SLURM_CONF" not in env and not Path("/etc/slurm/slurm.conf").exists() and (SLURM_DIR / "slurm.conf").exists():
        env["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
    # Do not let a surrounding SLURM job (if pytest itself runs in one) leak into the submissions.
    for key in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
        del env[key]
    env.update(WW_CPU="1", WW_PROCS_PER_NODE="1", OMP_NUM_THREADS="1", WANDB_MODE="offline",
               WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return env


def _skip_reason() -> str | None:
    if os.environ.get("WW_SLURM"):
        return None  # CI promised a cluster: failures below are real failures
    if shutil.which("sbatch") is None:
        return "no SLURM cluster: sbatch not on PATH and WW_SLURM unset (start one: launch/slurm_cluster.sh start)"
    try:
        subprocess.run(["sinfo", "-h"], env=_slurm_env(), check=True, capture_output=True, timeout=15)
    except (subprocess.SubprocessError, OSError):
        return "sbatch is installed but no SLURM controller answers and WW_SLURM is unset (launch/slurm_cluster.sh start)"
    return None


pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skips (once per session, and only when these tests are selected) without a cluster."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


class Slurm:
    """Submits from the repository root and cancels whatever is still queued at teardown."""

    def __init__(self, logs: Path):
        self.env = _slurm_env()
        self.logs = logs
        self.jobs: list[str] = []

    def run(self, *cmd: str, env: dict[str, str] | None = None, timeout: float = 30) -> str:
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
        return proc.stdout

    def submit(self, script: str, sbatch_args: list[str], script_args: list[str], *, env: dict[str, str]) -> str:
        out = self.run("sbatch", "--parsable", f"--output={self.logs}/%x-%A_%a.out", *sbatch_args, script,
                       *script_args, env=env)
        job_id = out.strip().split(";")[0]
        self.jobs.append(job_id)
        return job_id

    def jobs_info(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` as dicts: one per array element (one for a plain job)."""
        out = self.run("scontrol", "show", "job", "-o", job_id)
        return [dict(item.split("=", 1) for item in line.split() if "=" in item) for line in out.splitlines()]

    def job(self, job_id: str) -> dict[str, str]:
        return self.jobs_info(job_id)[0]

    def wait_completed(self, job_id: str, timeout: float) -> list[dict[str, str]]:
        """Polls until nothing of the job is queued or running; asserts every element COMPLETED."""
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-j", job_id, "-o", "%i").strip():
            assert time.monotonic() < deadline, f"job {job_id} did not finish in {timeout} s\n{self.log_text()}"
            time.sleep(1)
        infos = self.jobs_info(job_id)
        assert all(i["JobState"] == "COMPLETED" for i in infos), \
            f"{[(i['JobId'], i['JobState'], i['ExitCode']) for i in infos]}\n{self.log_text()}"
        return infos

    def wait_requeued(self, job_id: str, timeout: float) -> None:
        """Polls until the job is back in the queue after its self-requeue.

        The restart waits out cred_expire (5 s on launch/slurm_cluster.sh's cluster, 120 s by
        default). Do not lift that with `scontrol update StartTime=now`: slurmd still holds the old
        run's revoked credential and the job then FAILS ("Job credential revoked", measured)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] == "PENDING" and int(info["Restarts"]) >= 1:
                return
            assert info["JobState"] in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"), \
                f"job {info['JobState']} instead of requeued (did the run end before the signal?)\n{self.log_text()}"
            assert time.monotonic() < deadline, f"job was not requeued in {timeout} s\n{self.log_text()}"
            time.sleep(0.5)

    def log_text(self, tail: int | None = 4000) -> str:
        """The jobs' logs, each cut to its last `tail` characters (for failure messages); tail=None
        for the whole text (what assertions search: a requeued job appends both starts to one file,
        and the second start's shutdown warnings can push the first one out of any tail)."""
        texts = [(p.name, p.read_text()) for p in sorted(self.logs.glob("*.out"))]
        return "\n".join(f"--- {name}\n{text[-tail:] if tail else text}" for name, text in texts)

    def cancel_all(self) -> None:
        for job_id in self.jobs:
            subprocess.run(["scancel", job_id], env=self.env, capture_output=True, timeout=30)


@pytest.fixture
def slurm(slurm_cluster, tmp_path):
    logs = tmp_path / "slurm-logs"
    logs.mkdir()
    cluster = Slurm(logs)
    yield cluster
    cluster.cancel_all()


def toy_config(tmp_path: Path, **train) -> Path:
    cfg = {"run": {"runs_dir": str(tmp_path / "runs"), "experiment": "toy"}, "train": train}
    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def read_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def rank_records(run_dir: Path, restart: int) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob(f"restart{restart}-rank*.json"))]


TWO_MACHINES = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2"]


@pytest.mark.timeout(300)
def test_train_sbatch_two_machines(slurm, tmp_path):
    cfg = toy_config(tmp_path, steps=8, step_seconds=0.05, expect_world_size=2)
    job_id = slurm.submit("slurm/train.sbatch", TWO_MACHINES, ["--config", str(cfg)], env={"WW_ENTRY": TOY})
    slurm.wait_completed(job_id, timeout=240)

    run_dir = tmp_path / "runs" / "toy" / "baseline" / "seed0"
    assert json.loads((run_dir / "final.json").read_text()) == {"step": 8, "completed": True}
    assert read_steps(run_dir) == list(range(1, 9))
    ranks = rank_records(run_dir, restart=0)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert sorted(r["machine_rank"] for r in ranks) == [0, 1], "both tasks joined as the same machine"
    assert sorted(r["slurm_procid"] for r in ranks) == ["0", "1"]


@pytest.mark.timeout(360)
def test_compare_sbatch_array_seeds_by_jobs(slurm, tmp_path):
    cfg = toy_config(tmp_path, steps=3, step_seconds=0.0)
    # 2 seeds x {baseline, distill}; one process per element keeps 4 elements cheap on 2 cores.
    job_id = slurm.submit("slurm/compare.sbatch", ["--array=0-3"], ["--config", str(cfg)], env={"WW_ENTRY": TOY})
    assert len(slurm.wait_completed(job_id, timeout=300)) == 4
    for seed in (0, 1):
        for job in ("baseline", "distill"):
            run_dir = tmp_path / "runs" / "toy" / job / f"seed{seed}"
            assert json.loads((run_dir / "final.json").read_text()) == {"step": 3, "completed": True}, run_dir
            assert read_steps(run_dir) == [1, 2, 3]


# --- preemption: the real recipe ---------------------------------------------------------------

CI_TINY = REPO / "configs" / "ci_tiny.yaml"


def recipe_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sorted(r["step"] for r in rows if "train/loss" in r)


@pytest.fixture
def preemptible_run(tiny_shards, tmp_path):
    """(sbatch script args, extra env, run dir, steps configured, steps-so-far function)."""
    epochs, per_epoch = 6, 4  # 24 steps: room to land a signal in the middle
    args = ["--config", str(CI_TINY), f"data.root={tiny_shards}", f"run.runs_dir={tmp_path / 'runs'}",
            "train.job=baseline", f"train.epochs={epochs}", f"train.batches_per_epoch={per_epoch}"]
    return args, {}, tmp_path / "runs" / "ci_tiny" / "baseline" / "seed0", epochs * per_epoch, recipe_steps


@pytest.mark.timeout(420)
def test_train_sbatch_preempt_requeue_resume(slurm, preemptible_run):
    """USR1 as `#SBATCH --signal=B:USR1@120` sends it before the time limit: the run checkpoints,
    the job requeues itself, resumes (train.resume=auto) and ends with exactly the configured
    steps, each logged once. Runs launch/train.py on configs/ci_tiny.yaml."""
    args, env, run_dir, steps, steps_so_far = preemptible_run
    job_id = slurm.submit("slurm/train.sbatch", TWO_MACHINES, args, env=env)

    deadline = time.monotonic() + 200
    while not ((run_dir / "metrics.jsonl").exists() and len(steps_so_far(run_dir)) >= 2):
        assert time.monotonic() < deadline, f"training never started\n{slurm.log_text()}"
        assert slurm.job(job_id)["JobState"] in ("PENDING", "RUNNING"), slurm.log_text()
        time.sleep(0.3)
    slurm.run("scancel", "--signal=USR1", "--batch", job_id)
    slurm.wait_requeued(job_id, timeout=150)
    [info] = slurm.wait_completed(job_id, timeout=240)
    assert info["Restarts"] == "1"

    final = json.loads((run_dir / "final.json").read_text())
    assert final["completed"] is True and final["step"] == steps
    assert final["world_size"] == 2
    assert steps_so_far(run_dir) == list(range(1, steps + 1)), "steps lost or repeated across the requeue"
    log = slurm.log_text(tail=None)
    assert "requeueing job" in log and "restart 1" in log
    assert log.count("world_size=2") >= 2, "both starts: 2 ranks"


@pytest.mark.timeout(300)
def test_annotate_sbatch_module_entry(slurm, tmp_path):
    # annotate.sbatch launches a module by default (`-m wakeword_dist.cli annotate`); the toy as a
    # module checks that path: WW_ENTRY split into words, `accelerate launch -m ...`, one machine.
    cfg = toy_config(tmp_path, steps=2, step_seconds=0.0)
    job_id = slurm.submit("slurm/annotate.sbatch", [], ["--config", str(cfg), "train.job=annotate"],
                          env={"WW_ENTRY": "-m tests.slurm.toy_ddp"})
    slurm.wait_completed(job_id, timeout=240)
    run_dir = tmp_path / "runs" / "toy" / "annotate" / "seed0"
    assert json.loads((run_dir / "final.json").read_text()) == {"step": 2, "completed": True}


@pytest.mark.timeout(400)
def test_compare_with_the_slurm_launcher_runs_the_real_recipe_as_one_array(slurm, tiny_shards,
                                                                           tiny_teacher_dir, tmp_path):
    # seed 3: the array element -> seed mapping must come from the config (WW_SEEDS), not i / 2
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "wakeword_dist.cli", "compare", "--config", str(CI_TINY), f"data.root={tiny_shards}",
           f"run.runs_dir={runs}", f"teacher.name_or_path={tiny_teacher_dir}", "compare.launcher=slurm",
           "compare.seeds=[3]", "train.max_steps=2", "logging.wandb=disabled"]
    proc = subprocess.run(cmd, env=slurm.env, cwd=REPO, capture_output=True, text=True, timeout=380)
    experiment = runs / "ci_tiny"
    logs = sorted(experiment.glob("slurm-ww-compare-*.out"))
    log_text = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in logs)
    assert proc.returncode == 0, proc.stderr[-3000:] + log_text[-6000:]
    assert "--array=0,1" in proc.stdout, "both runs in ONE array"
    # progress while it waits: element states as they change, then the end
    assert re.search(r"job array \d+: .*\b(pending|running)\b.*; [01] of 2 ended", proc.stdout), proc.stdout
    assert "all 2 runs ended" in proc.stdout
    assert len(logs) == 2, "one log per array element, beside the comparison"
    for job in ("baseline", "distill"):
        run_dir = experiment / job / "seed3"
        assert json.loads((run_dir / "final.json").read_text())["completed"], run_dir
        assert (run_dir / "report.json").is_file(), "evaluated after the array"
        assert f"train.job={job} train.seed=3" in log_text
    assert json.loads((experiment / "comparison.json").read_text())
    assert (experiment / "comparison.png").stat().st_size > 0

    # a second compare finds every run finished and submits nothing
    again = subprocess.run(cmd, env=slurm.env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "sbatch" not in again.stdout, again.stdout[-2000:]
