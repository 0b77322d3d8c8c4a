"""Helpers of tests/reliability: real 2-rank launches and their process trees, corrupted shards,
broken teachers, one-line CLI errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CI_TINY = REPO / "configs" / "ci_tiny.yaml"
CPU_DDP = REPO / "launch" / "accelerate" / "cpu_ddp.yaml"
TRAIN_ENTRY = REPO / "launch" / "train.py"
FAULT_ENTRY = Path(__file__).resolve().parent / "train_with_faults.py"


# ----------------------------------------------------------------------------- launching
def child_env(**extra) -> dict:
    """Environment of a training subprocess: deterministic CPU threads, wandb offline, and this
    checkout's package first on the path (a script's own folder, not the cwd, is sys.path[0])."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path, **extra}


def start_two_ranks(entry: Path, args: list[str], log: Path, env_extra: dict | None = None) -> subprocess.Popen:
    """`accelerate launch` (cpu_ddp.yaml, 2 gloo ranks) of `entry args`, in its own session,
    stdout+stderr to `log`. The caller waits / kills with a timeout."""
    env = child_env(ACCELERATE_USE_CPU="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_DDP),
           "--num_processes", "2", str(entry), *args]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _ppid_map() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            out[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (torchrun puts each rank in its own session, so a
    process-group kill of the launcher does not reach them)."""
    children: dict[int, list[int]] = {}
    for child, parent in _ppid_map().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _env_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def rank_pids(launcher: subprocess.Popen, world_size: int = 2, timeout: float = 60.0) -> dict[int, int]:
    """{rank: pid} of the worker processes of an `accelerate launch` (their RANK env var)."""
    deadline = time.monotonic() + timeout
    while True:
        ranks = {}
        for pid in descendants(launcher.pid):
            env = _env_of(pid)
            if "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
                ranks.setdefault(int(env["RANK"]), pid)
        if len(ranks) == world_size:
            return ranks
        if time.monotonic() > deadline or launcher.poll() is not None:
            raise AssertionError(f"found ranks {ranks}, expected {world_size} (launcher rc {launcher.poll()})")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill9_job(launcher: subprocess.Popen, timeout: float = 30.0) -> list[int]:
    """SIGKILL the launcher and every process below it at once (a node losing power).
    Returns the pids killed, after checking that none survives."""
    pids = [launcher.pid, *descendants(launcher.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    launcher.wait(timeout=timeout)
    wait_for(lambda: not any(alive(p) for p in pids), timeout, what="killed processes to vanish")
    return pids


def wait_for(predicate, timeout: float, *, proc: subprocess.Popen | None = None, log: Path | None = None,
             what: str = "condition", poll_s: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(f"process exited (rc {proc.returncode}) before {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """Wait for a launch with a hard timeout (a hang fails the test instead of the CI job)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill9_job(proc)
        raise AssertionError(f"launch hung for {timeout} s:\n{log.read_text()[-3000:]}") from None
    return log.read_text()


def logged_steps(run_dir: Path) -> list[int]:
    """Steps with a train/loss row in metrics.jsonl, in file order (torn lines ignored)."""
    from wakeword_dist.train.run_logger import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    return [m["step"] for m in read_metrics(run_dir) if "train/loss" in m] if path.exists() else []


# ----------------------------------------------------------------------------- CLI in-process
def run_cli(capsys, args: list[str]) -> tuple[int, list[str]]:
    """`wakeword-dist <args>` in this process: (exit code, the CLI's own stderr lines).
    A failing stage must end with its one-line message: no traceback, nothing after it."""
    from wakeword_dist.cli import main

    code = main(args)
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("wakeword-dist ")]
    if code != 0:
        assert "Traceback" not in err, err[-3000:]
        assert ours and err.rstrip().splitlines()[-1] == ours[-1], f"the error is not one line:\n{err[-3000:]}"
    return code, ours


# ----------------------------------------------------------------------------- bad data
def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


def _rewrite_tar(path: Path, edit) -> None:
    """Rewrite a shard, `edit(member_name, data) -> data` on every member, order kept."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            data = edit(info.name, data)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _keys(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    return list(dict.fromkeys(n.split(".", 1)[0] for n in names))


def corrupt_copy(src: Path, dst: Path) -> dict:
    """Copy a dataset and damage its train split: in shard 0 one wav that does not decode, one
    clip of the wrong length; in shard 1 one clip at 8 kHz; shard 2 cut in the middle of its
    last member (truncated download). Returns {"bad": [(shard, key, kind)], "lost_tail": shard}."""
    shutil.copytree(src, dst)
    train = dst / "train"
    shards = sorted(train.glob("shard-*.tar"))
    bad = []

    k0 = _keys(shards[0])
    plan = {(shards[0], k0[1]): "undecodable", (shards[0], k0[5]): "short",
            (shards[1], _keys(shards[1])[2]): "8khz"}

    for shard in shards[:2]:
        def edit(name, data, shard=shard):
            key, ext = name.split(".", 1)
            kind = plan.get((shard, key))
            if kind is None or ext != "wav":
                return data
            if kind == "undecodable":
                return b"RIFF\x00\x00\x00\x00WAVEthis is not audio"
            if kind == "short":
                return wav_bytes(np.zeros(8000, np.int16), 16000)
            return wav_bytes(np.zeros(16000, np.int16), 8000)
        _rewrite_tar(shard, edit)
    bad = [(s.name, k, kind) for (s, k), kind in plan.items()]

    last = shards[2]
    with tarfile.open(last) as tar:
        tail = [m for m in tar.getmembers() if m.isfile()][-1]
    with open(last, "r+b") as fh:
        fh.truncate(tail.offset_data + tail.size // 2)
    return {"bad": bad, "truncated": last.name}


# ----------------------------------------------------------------------------- broken teachers
def teacher_variant(src: Path, dst: Path, *, nan: bool = False, scale: float | None = None,
                    labels: list[str] | None = None, remote_code: bool = False) -> Path:
    """A copy of a saved HF teacher folder with one fault: a NaN classifier bias, classifier
    head scaled (its outputs overflow fp16), another label map, or a config that needs remote code."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if nan or scale is not None:
        weights_path = next(dst.glob("*.safetensors"))
        state = load_file(str(weights_path))
        if nan:
            state["classifier.bias"][0] = float("nan")
        if scale is not None:  # head only: the activations it makes outgrow fp16, not its weights
            for name in ("projector.weight", "projector.bias", "classifier.weight", "classifier.bias"):
                state[name] *= scale
        save_file(state, str(weights_path), metadata={"format": "pt"})
    if labels is not None or remote_code:
        config_path = dst / "config.json"
        config = json.loads(config_path.read_text())
        if labels is not None:
            config["id2label"] = {str(i): n for i, n in enumerate(labels)}
            config["label2id"] = {n: i for i, n in enumerate(labels)}
        if remote_code:
            config["model_type"] = "kws_custom"
            config["auto_map"] = {"AutoModelForAudioClassification": "modeling_kws.KwsForAudioClassification"}
        config_path.write_text(json.dumps(config))
    return dst
