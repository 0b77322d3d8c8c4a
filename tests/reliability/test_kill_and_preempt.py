"""Preempted, then killed, then resumed: a 2-rank run through the real launcher never loses work.

One story on a damaged dataset (bad clips on both ranks' shards), four launches of
`accelerate launch --config_file launch/accelerate/cpu_ddp.yaml` (gloo, world size 2 asserted):

  reference  12 steps straight through.
  preempted  SIGUSR1 to rank 1 only -> both ranks stop at one step boundary, one checkpoint,
             both exit 75 (the launcher itself exits 1: torchrun reports its ranks' 75s).
  killed     resumed; rank 0 is frozen half way through a checkpoint (Accelerate state written
             into .tmp-step-N/, no train_state.json yet) and the launcher and every rank get
             SIGKILL at once.
  resumed    a planted `.tmp-step-99999999` (complete-looking) and `step-99999998` (no train
             state) are ignored; the run continues from the newest complete checkpoint, ends at
             exactly 12 steps, each step logged once, with parameters equal to the reference.

Deterministic CPU config (OMP_NUM_THREADS=1, fixed seeds): the parameters match bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from reliability_helpers import (CI_TINY, FAULT_ENTRY, TRAIN_ENTRY, alive, child_env, finish, kill9_job, logged_steps,
                                 rank_pids, start_two_ranks, wait_for)
from safetensors.torch import load_file

from tests.conftest import tiny_overrides
from wakeword_dist.train.checkpoint import checkpoint_name, complete_checkpoints, latest_checkpoint
from wakeword_dist.train.run_logger import read_metrics

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

STEPS = 12          # 3 epochs x 4 batches per rank
EVERY = 3           # checkpoints at steps 3, 6, 9, 12; epochs end at 4, 8, 12: most are mid-epoch
LAUNCH_TIMEOUT = 300  # s; a hung collective fails the test, not the CI job
STOP_TIMEOUT = 90     # s from the stop signal to both ranks gone


def _args(shards, runs, **extra) -> list[str]:
    return ["--config", str(CI_TINY), *tiny_overrides(shards, runs, **{
        "train.job": "baseline", "train.epochs": 3, "train.batches_per_epoch": 4,
        "train.checkpoint_every": EVERY, "train.eval_every": 0, "train.keep_checkpoints": 2,
        # the tiny train split is 160 clips read ahead through a 1000-clip shuffle buffer, which
        # charges the truncated shard once per pass: ~12% counted bad (docs/reliability.md)
        "train.max_bad_fraction": 0.5, "train.resume": "auto", "logging.wandb": "disabled", **extra})]


def _run_dir(runs):
    return runs / "ci_tiny" / "baseline" / "seed0"


@pytest.fixture(scope="module")
def reference(bad_shards, tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    log = runs / "launch.log"
    proc = start_two_ranks(TRAIN_ENTRY, _args(bad_shards[0], runs), log)
    text = finish(proc, log, LAUNCH_TIMEOUT)
    assert proc.returncode == 0, text[-3000:]
    assert "world_size=2" in text
    return _run_dir(runs)


@pytest.fixture(scope="module")
def preempted(bad_shards, tmp_path_factory):
    runs = tmp_path_factory.mktemp("story")
    run_dir, log = _run_dir(runs), runs / "preempted.log"
    proc = start_two_ranks(TRAIN_ENTRY, _args(bad_shards[0], runs), log)
    ranks = rank_pids(proc)
    wait_for(lambda: max(logged_steps(run_dir), default=0) >= 2, LAUNCH_TIMEOUT, proc=proc, log=log,
             what="step 2 in metrics.jsonl")
    sent_after = max(logged_steps(run_dir))
    t0 = time.monotonic()
    os.kill(ranks[1], signal.SIGUSR1)
    text = finish(proc, log, STOP_TIMEOUT)
    return {"runs": runs, "run_dir": run_dir, "rc": proc.returncode, "log": text, "ranks": ranks,
            "sent_after": sent_after, "stop_s": time.monotonic() - t0}


@pytest.fixture(scope="module")
def killed(bad_shards, preempted):
    runs, run_dir = preempted["runs"], preempted["run_dir"]
    stop = max(logged_steps(run_dir))
    hang = (stop // EVERY + 1) * EVERY + EVERY  # one complete periodic checkpoint after the stop one
    assert hang <= STEPS, f"the stop came too late (step {stop}) to leave room for the kill"
    log, marker = runs / "killed.log", runs / "hang.marker"
    proc = start_two_ranks(FAULT_ENTRY, _args(bad_shards[0], runs), log,
                           env_extra={"WWD_HANG_IN_CHECKPOINT": str(hang), "WWD_HANG_MARKER": str(marker)})
    ranks = rank_pids(proc)
    wait_for(marker.exists, LAUNCH_TIMEOUT, proc=proc, log=log, what=f"rank 0 frozen in checkpoint {hang}")
    killed_pids = kill9_job(proc)
    ckpts = run_dir / "checkpoints"
    return {"hang": hang, "stop": stop, "ranks": ranks, "killed": killed_pids, "log": log.read_text(),
            "entries": sorted(p.name for p in ckpts.iterdir()), "latest": latest_checkpoint(ckpts),
            "steps": logged_steps(run_dir)}


@pytest.fixture(scope="module")
def resumed(bad_shards, preempted, killed):
    runs, run_dir = preempted["runs"], preempted["run_dir"]
    ckpts = run_dir / "checkpoints"
    newest = killed["latest"]
    # a leftover that looks complete but was never renamed, and a step folder without its state
    fake_tmp = ckpts / f".tmp-{checkpoint_name(99_999_999)}"
    shutil.copytree(newest, fake_tmp)
    state = json.loads((fake_tmp / "train_state.json").read_text())
    (fake_tmp / "train_state.json").write_text(json.dumps({**state, "step": 99_999_999}))
    no_state = ckpts / checkpoint_name(99_999_998)
    shutil.copytree(newest, no_state)
    (no_state / "train_state.json").unlink()

    log = runs / "resumed.log"
    proc = start_two_ranks(TRAIN_ENTRY, _args(bad_shards[0], runs), log)
    text = finish(proc, log, LAUNCH_TIMEOUT)
    return {"rc": proc.returncode, "log": text, "resumed_from": newest, "fakes": (fake_tmp, no_state)}


def test_sigusr1_to_one_rank_stops_both_at_one_step_with_one_checkpoint_and_exit_75(preempted):
    text, run_dir = preempted["log"], preempted["run_dir"]
    assert "world_size=2" in text and sorted(preempted["ranks"]) == [0, 1]
    stops = re.findall(r"stop signal received; checkpoint at step (\d+) written; exit 75", text)
    assert len(stops) == 2 and len(set(stops)) == 1, f"both ranks must stop at the same step:\n{text[-3000:]}"
    stop = int(stops[0])
    # torchrun's failure report lists each rank with its exit code; the launcher exits 1
    per_rank = dict(re.findall(r"rank\s+:\s+(\d+) \(local_rank.*\n\s+exitcode\s+:\s+(-?\d+)", text))
    assert per_rank == {"0": "75", "1": "75"}, text[-3000:]
    assert preempted["rc"] == 1
    # the next step boundary after the signal (measured from outside: within 3 steps)
    assert preempted["sent_after"] <= stop <= preempted["sent_after"] + 3 < STEPS
    assert max(logged_steps(run_dir)) == stop, "no step may run after the stop checkpoint"
    newest = latest_checkpoint(run_dir / "checkpoints")
    assert newest.name == checkpoint_name(stop)
    state = json.loads((newest / "train_state.json").read_text())
    assert state["step"] == stop and state["world_size"] == 2
    assert not (run_dir / "final.json").exists()
    print(f"stop at step {stop} (signal after step {preempted['sent_after']}), "
          f"both ranks gone {preempted['stop_s']:.1f} s after the signal")


def test_kill9_mid_checkpoint_leaves_only_complete_checkpoints_visible(killed, preempted):
    hang, entries = killed["hang"], killed["entries"]
    run_dir = preempted["run_dir"]
    assert sorted(killed["ranks"]) == [0, 1]
    assert f"resumed from {run_dir / 'checkpoints' / checkpoint_name(killed['stop'])}" in killed["log"]
    half = run_dir / "checkpoints" / f".tmp-{checkpoint_name(hang)}"
    assert half.name in entries, entries
    assert (half / "model.safetensors").is_file() and not (half / "train_state.json").exists()
    assert killed["latest"].name == checkpoint_name(hang - EVERY)
    assert checkpoint_name(hang) not in entries
    assert max(killed["steps"]) == hang, "the kill came during the checkpoint of the step just logged"


def test_resume_after_kill_ends_at_exact_steps_equal_to_uninterrupted(resumed, reference, preempted, killed):
    text, run_dir = resumed["log"], preempted["run_dir"]
    assert resumed["rc"] == 0, text[-3000:]
    assert "world_size=2" in text
    assert f"resumed from {resumed['resumed_from']} at step {killed['hang'] - EVERY}" in text

    final = json.loads((run_dir / "final.json").read_text())
    assert final["step"] == STEPS and final["completed"] and final["world_size"] == 2
    assert final["ranks"][0]["weights_sha1"] == final["ranks"][1]["weights_sha1"], "replicas diverged"
    assert sorted(logged_steps(run_dir)) == list(range(1, STEPS + 1)), "each step logged exactly once"
    assert any(m.get("data/skipped", 0) > 0 for m in read_metrics(run_dir)), "the bad clips were skipped"

    ckpts = run_dir / "checkpoints"
    assert [p.name for p in complete_checkpoints(ckpts)] == [checkpoint_name(STEPS - EVERY), checkpoint_name(STEPS)]
    fake_tmp, no_state = resumed["fakes"]
    assert fake_tmp.is_dir() and no_state.is_dir(), "foreign folders are left alone"
    assert not (ckpts / f".tmp-{checkpoint_name(killed['hang'])}").exists(), "the dead half checkpoint is cleaned"

    ours = load_file(str(ckpts / checkpoint_name(STEPS) / "model.safetensors"))
    ref = load_file(str(reference / "checkpoints" / checkpoint_name(STEPS) / "model.safetensors"))
    assert ours.keys() == ref.keys()
    worst = max(float((ours[k].double() - ref[k].double()).abs().max()) for k in ours)
    print(f"max |param difference| resumed vs uninterrupted: {worst:.3g}")
    for key in ours:
        torch.testing.assert_close(ours[key], ref[key], rtol=0, atol=1e-6, msg=key)


def test_kill9_of_the_launcher_alone_stops_its_orphaned_ranks_with_a_checkpoint(tiny_shards, tmp_path):
    """torchrun starts each rank in its own session, so a kill of the launcher alone (an OOM
    killer, `kill -9 <pid>` on the wrong process) used to leave both ranks training on as
    orphans (measured: all 40 steps), racing any restarted job for the run folder. signals.py
    asks for SIGTERM on launcher death: the ranks stop together with a checkpoint.

    On the way, rank 1 alone sees a NaN loss at step 2: both ranks skip that step and stay in
    step (a rank that stepped alone would desynchronise the collectives and hang)."""
    runs, log = tmp_path, tmp_path / "launch.log"
    run_dir = _run_dir(runs)
    proc = start_two_ranks(FAULT_ENTRY, _args(tiny_shards, runs, **{
        "train.epochs": 10, "train.checkpoint_every": 0}), log, env_extra={"WWD_NAN_AT": "1:1"})
    ranks = rank_pids(proc)
    wait_for(lambda: max(logged_steps(run_dir), default=0) >= 3, LAUNCH_TIMEOUT, proc=proc, log=log,
             what="step 3 in metrics.jsonl")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    try:
        wait_for(lambda: not any(alive(p) for p in ranks.values()), STOP_TIMEOUT, what="orphaned ranks to stop")
    finally:
        for pid in ranks.values():  # never leave them running, whatever happened
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    stops = re.findall(r"stop signal received; checkpoint at step (\d+) written; exit 75", text)
    assert len(stops) == 2 and len(set(stops)) == 1, text[-3000:]
    stop = int(stops[0])
    assert stop < 40 and max(logged_steps(run_dir)) == stop
    assert latest_checkpoint(run_dir / "checkpoints").name == checkpoint_name(stop)
    assert not (run_dir / "final.json").exists()
    skipped = {m["step"]: m["train/nonfinite_skipped"] for m in read_metrics(run_dir) if "train/loss" in m}
    assert [skipped[s] for s in (1, 2, 3)] == [0.0, 1.0, 0.0]


def test_a_stop_signal_during_setup_exits_75(tiny_shards, tmp_path):
    proc = subprocess.run([sys.executable, str(FAULT_ENTRY), *_args(tiny_shards, tmp_path)],
                          env=child_env(WWD_SIGNAL_IN_SETUP="SIGUSR1"),
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 75, f"rc {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "stop signal received" in proc.stderr
    assert not logged_steps(_run_dir(tmp_path)), "no step after the signal"
