"""`wakeword-dist compare`: N seeds x {baseline, distill}, evaluated, aggregated, plotted.

Runs each (job, seed) itself -- in this process one after another, as `accelerate launch`
subprocesses, or as the SLURM job array -- skipping runs that already finished, then reads
every `report.json` and writes `comparison.json` / `comparison.png` in runs/<experiment>/.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

from wakeword_dist.config import Config, save_config

JOBS = ("baseline", "distill")
REPO = Path(__file__).resolve().parents[2]


def with_job(cfg: Config, job: str, seed: int) -> Config:
    out = copy.deepcopy(cfg)
    out.train.job, out.train.seed = job, seed
    return out


def _run_one(cfg: Config, launcher: str, cfg_file: Path) -> None:
    if launcher == "sequential":
        from wakeword_dist.train.recipe import run

        run(cfg)
        return
    overrides = [f"train.job={cfg.train.job}", f"train.seed={cfg.train.seed}"]
    if launcher == "accelerate":
        import torch

        env = dict(os.environ)
        if not torch.cuda.is_available():  # else `--multi_gpu` on CPU starts lone 1-rank replicas
            env["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
               str(cfg.compare.num_processes), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no"]
        if cfg.compare.num_processes > 1:
            cmd.append("--multi_gpu")
        cmd += [str(REPO / "launch" / "train.py"), "--config", str(cfg_file), *overrides]
    else:  # slurm: one single-node sbatch --wait per run; slurm/compare.sbatch is the array form
        env = dict(os.environ)
        cmd = ["sbatch", "--wait", "--nodes=1", str(REPO / "slurm" / "train.sbatch"), "--config", str(cfg_file),
               *overrides]
    print(f"[compare] {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=env)


def run_jobs(cfg: Config) -> dict:
    """Train and evaluate every (job, seed) that has no report yet; returns {job: {seed: report}}."""
    from wakeword_dist.stages.evaluate import evaluate_run

    root = Path(cfg.run.runs_dir) / cfg.run.experiment
    cfg_file = root / "compare_config.yaml"
    save_config(cfg, cfg_file)
    reports: dict = {job: {} for job in JOBS}
    for seed in cfg.compare.seeds:
        for job in JOBS:
            run_cfg = with_job(cfg, job, seed)
            run_dir = run_cfg.job_dir()
            if not (run_dir / "final.json").exists():
                print(f"[compare] training {job} seed {seed} -> {run_dir}", flush=True)
                _run_one(run_cfg, cfg.compare.launcher, cfg_file)
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
