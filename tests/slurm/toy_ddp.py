"""Stand-in for `launch/train.py` that exercises the cluster mechanics, nothing else.

This is a TEST ASSET for the slurm/ scripts and the accelerate launch plumbing; it is not the
training recipe and trains nothing of interest (a 4→2 linear layer on random numbers). It speaks
the same command line and writes the same run-directory layout as the recipe's contract:

    accelerate launch tests/slurm/toy_ddp.py --config <yaml> [dotted.key=value ...]

    <runs_dir>/<experiment>/<job>/seed<k>/
        metrics.jsonl                 one JSON object per step (rank 0), key "step"
        checkpoints/step-XXXXXXXX/    accelerator.save_state + toy_state.json
        ranks/restart<r>-rank<i>.json one per rank per start: world size, rank, host, machine rank
        final.json                    {"step": N, "completed": true} at the very end

On SIGUSR1 or SIGTERM every rank sets a flag; the flags are all-reduced each step so all ranks
stop after the same step, save a checkpoint and exit 75. With train.resume=auto the next start
continues from the newest checkpoint. Config keys (YAML, nested): run.runs_dir, run.experiment,
train.job, train.seed, train.steps, train.step_seconds, train.checkpoint_every, train.resume,
train.expect_world_size (0 = do not check).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from accelerate import Accelerator

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, please requeue

DEFAULTS = {
    "run": {"runs_dir": "runs", "experiment": "toy"},
    "train": {
        "job": "baseline",
        "seed": 0,
        "steps": 20,
        "step_seconds": 0.1,  # sleep per step (s), so a signal can land mid-run
        "checkpoint_every": 0,  # steps; 0 = only on stop
        "resume": "none",  # none | auto
        "expect_world_size": 0,
    },
}


def load_config(path: str, overrides: list[str]) -> dict:
    cfg = json.loads(json.dumps(DEFAULTS))
    with open(path) as f:
        for section, values in (yaml.safe_load(f) or {}).items():
            cfg[section].update(values)
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in cfg or name not in cfg[section]:
            raise SystemExit(f"toy_ddp: unknown key {key!r}")
        cfg[section][name] = yaml.safe_load(value)
    return cfg


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    train = cfg["train"]

    stop_requested = False

    def on_signal(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    accelerator = Accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    # The launcher's WORLD_SIZE must equal what accelerate initialised: catches the silent
    # "N independent single-process runs" trap (see docs/distributed.md).
    launcher_world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != launcher_world:
        raise SystemExit(f"toy_ddp: accelerate sees world size {world}, launcher set {launcher_world}")
    if train["expect_world_size"] and world != train["expect_world_size"]:
        raise SystemExit(f"toy_ddp: world size {world} != expected {train['expect_world_size']}")
    check = torch.tensor([float(rank)])
    if dist.is_initialized():
        dist.all_reduce(check)
    assert check.item() == world * (world - 1) / 2, "all-reduce of ranks gave a wrong sum"

    run_dir = Path(cfg["run"]["runs_dir"]) / cfg["run"]["experiment"] / train["job"] / f"seed{train['seed']}"
    torch.manual_seed(train["seed"])
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)

    step, restart = 0, 0
    ckpt = latest_checkpoint(run_dir) if train["resume"] == "auto" else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "toy_state.json").read_text())
        step, restart = state["step"], state["restarts"] + 1
    accelerator.wait_for_everyone()

    (run_dir / "ranks").mkdir(parents=True, exist_ok=True)
    (run_dir / "ranks" / f"restart{restart}-rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": world, "local_rank": accelerator.local_process_index,
        "machine_rank": int(os.environ.get("GROUP_RANK", "0")), "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "slurm_procid": os.environ.get("SLURM_PROCID"),
        "start_step": step, "pid": os.getpid(),
    }))

    def save(step: int) -> None:
        path = run_dir / "checkpoints" / f"step-{step:08d}"
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            (path / "toy_state.json").write_text(json.dumps({"step": step, "restarts": restart}))
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        print(f"toy_ddp: world size {world}, start step {step}, run dir {run_dir}", flush=True)
    while step < train["steps"]:
        x = torch.randn(8, 4)
        loss = model(x).pow(2).mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        time.sleep(train["step_seconds"])
        step += 1
        loss = accelerator.reduce(loss.detach(), reduction="mean")
        if accelerator.is_main_process:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "train/loss": loss.item(), "world_size": world,
                                    "restart": restart}) + "\n")
        stop = torch.tensor([float(stop_requested)])
        if dist.is_initialized():
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item() and step < train["steps"]:
            save(step)
            if accelerator.is_main_process:
                print(f"toy_ddp: stop requested, checkpoint at step {step}, exit {EXIT_PREEMPTED}", flush=True)
            accelerator.wait_for_everyone()
            accelerator.end_training()
            return EXIT_PREEMPTED
        if train["checkpoint_every"] and step % train["checkpoint_every"] == 0:
            save(step)

    if accelerator.is_main_process:
        (run_dir / "final.json").write_text(json.dumps({"step": step, "completed": True}))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
