"""`wakeword-dist compare`: N seeds x {baseline, distill}, evaluated, aggregated, plotted.

Runs each (job, seed) itself -- in this process one after another, as `accelerate launch`
subprocesses, `compare.parallel_runs` at a time side by side (stages/side_by_side.py), or all at
once as one SLURM job array (slurm/compare.sbatch, polled) --
skipping runs that already finished, then evaluates them here and reads
every `report.json` and writes `comparison.json` / `comparison.png` in runs/<experiment>/.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from wakeword_dist.config import Config, save_config

JOBS = ("baseline", "distill")
REPO = Path(__file__).resolve().parents[2]


def with_job(cfg: Config, job: str, seed: int) -> Config:
    out = copy.deepcopy(cfg)
    out.train.job, out.train.seed = job, seed
    return out


def _train_command(cfg: Config, launcher: str, cfg_file: Path) -> list[str]:
    """The subprocess that trains run ``cfg``: ``accelerate launch`` with ``compare.num_processes``
    ranks, or (launcher sequential, side by side) one plain ``python launch/train.py`` process."""
    overrides = [f"train.job={cfg.train.job}", f"train.seed={cfg.train.seed}"]
    if launcher == "sequential":
        return [sys.executable, str(REPO / "launch" / "train.py"), "--config", str(cfg_file), *overrides]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
           str(cfg.compare.num_processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no"]
    if cfg.compare.num_processes > 1:
        # port 0: accelerate picks a free rendezvous port, so runs side by side never share 29500
        cmd += ["--multi_gpu", "--main_process_port", "0"]
    return cmd + [str(REPO / "launch" / "train.py"), "--config", str(cfg_file), *overrides]


def _subprocess_env() -> dict[str, str]:
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():  # else `--multi_gpu` on CPU starts lone 1-rank replicas
        env["ACCELERATE_USE_CPU"] = "1"
    return env


def _run_one(cfg: Config, launcher: str, cfg_file: Path) -> None:
    if launcher == "sequential":
        from wakeword_dist.train.recipe import run

        run(cfg)
        return
    cmd = _train_command(cfg, launcher, cfg_file)
    print(f"[compare] {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=_subprocess_env())


def _run_slurm_array(cfg: Config, pending: dict[tuple[int, str], Config], cfg_file: Path, root: Path) -> None:
    """All pending runs as ONE job array of slurm/compare.sbatch, so the cluster runs them side
    by side; returns when no element is queued or running any more (requeues included).

    Element i trains seed ``WW_SEEDS[i // 2]`` and job ``JOBS[i % 2]``; only unfinished runs are
    submitted. The elements' logs go beside the comparison: ``<experiment>/slurm-*.out``.
    """
    seeds = list(cfg.compare.seeds)
    element = {(seed, job): 2 * seeds.index(seed) + JOBS.index(job) for seed, job in pending}
    env = dict(os.environ, WW_SEEDS=" ".join(str(s) for s in seeds))
    cmd = ["sbatch", "--parsable", f"--array={','.join(str(i) for i in element.values())}",
           f"--output={root}/slurm-%x-%A_%a.out", str(REPO / "slurm" / "compare.sbatch"),
           "--config", str(cfg_file)]
    print(f"[compare] WW_SEEDS='{env['WW_SEEDS']}' {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch refused the compare array: {proc.stderr.strip() or proc.stdout.strip()}")
    job_id = proc.stdout.strip().split(";")[0]
    print(f"[compare] job array {job_id}: {len(pending)} runs; logs {root}/slurm-ww-compare-{job_id}_*.out",
          flush=True)
    wait_for_slurm_job(job_id, len(pending))
    for (seed, job), index in element.items():
        if not (pending[seed, job].job_dir() / "final.json").exists():
            raise RuntimeError(f"{job} seed {seed} did not finish under SLURM; "
                               f"its log is {root}/slurm-ww-compare-{job_id}_{index}.out")


def wait_for_slurm_job(job_id: str, elements: int, poll_s: float = 5.0, max_query_failures: int = 12) -> None:
    """Poll ``squeue`` until nothing of the job is left, printing the element states whenever
    they change (long work shows progress: a comparison on a cluster can take hours)."""
    last, failures = None, 0
    while True:
        # -r: one line per array element (else all pending elements share one line)
        proc = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if proc.returncode != 0 and "invalid job id" in proc.stderr.lower():
            proc.stdout = ""  # ended long enough ago for the controller to forget it
        elif proc.returncode != 0:  # a busy controller: ask again, but not forever
            failures += 1
            if failures >= max_query_failures:
                raise RuntimeError(f"squeue failed {failures} times for job {job_id}: {proc.stderr.strip()}")
            time.sleep(poll_s)
            continue
        failures = 0
        states = [line.strip().lower() for line in proc.stdout.splitlines() if line.strip()]
        if not states:
            print(f"[compare] job array {job_id}: all {elements} runs ended", flush=True)
            return
        counts = {state: states.count(state) for state in sorted(set(states))}
        if counts != last:
            summary = ", ".join(f"{n} {state}" for state, n in counts.items())
            print(f"[compare] job array {job_id}: {summary}; {elements - len(states)} of {elements} ended",
                  flush=True)
            last = counts
        time.sleep(poll_s)


def run_jobs(cfg: Config) -> dict:
    """Train and evaluate every (job, seed) that has no report yet; returns {job: {seed: report}}."""
    from wakeword_dist.stages.evaluate import evaluate_run

    root = Path(cfg.run.runs_dir) / cfg.run.experiment
    cfg_file = root / "compare_config.yaml"
    save_config(cfg, cfg_file)
    runs = {(seed, job): with_job(cfg, job, seed) for seed in cfg.compare.seeds for job in JOBS}
    pending = {run: run_cfg for run, run_cfg in runs.items() if not (run_cfg.job_dir() / "final.json").exists()}
    for (seed, job), run_cfg in pending.items():
        print(f"[compare] training {job} seed {seed} -> {run_cfg.job_dir()}", flush=True)
    if pending and cfg.compare.launcher == "slurm":
        _run_slurm_array(cfg, pending, cfg_file, root)
    elif len(pending) > 1 and cfg.compare.parallel_runs > 1:
        from wakeword_dist.stages.side_by_side import run_side_by_side

        commands = {run: _train_command(run_cfg, cfg.compare.launcher, cfg_file) for run, run_cfg in pending.items()}
        run_side_by_side(commands, cfg, root / "logs", _subprocess_env())
    else:
        for run_cfg in pending.values():
            _run_one(run_cfg, cfg.compare.launcher, cfg_file)
    reports: dict = {job: {} for job in JOBS}
    for (seed, job), run_cfg in runs.items():
        run_dir = run_cfg.job_dir()
        if not (run_dir / "report.json").exists():
            evaluate_run(run_cfg, run_dir)
        reports[job][seed] = json.loads((run_dir / "report.json").read_text())
    return reports


def compare(cfg: Config) -> dict:
    from wakeword_dist import compare as stats
    from wakeword_dist.train.run_logger import resolve_wandb_mode

    reports = run_jobs(cfg)
    root = Path(cfg.run.runs_dir) / cfg.run.experiment
    comparison = stats.aggregate(reports)
    det_curves = {f"{job} seed{seed}": rep["det"] for job, by_seed in reports.items() for seed, rep in by_seed.items()}
    stats.write_comparison(comparison, root / "comparison.json")
    stats.plot_comparison(comparison, det_curves, root / "comparison.png")
    stats.print_table(comparison)
    stats.log_to_wandb(comparison, project=cfg.logging.project, group=cfg.run.experiment,
                       mode=resolve_wandb_mode(cfg.logging.wandb), out_dir=root)
    return comparison
