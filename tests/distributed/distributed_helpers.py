"""Shared helpers of tests/distributed: a tiny frozen teacher, random audio, small shard splits,
and a 2-rank launcher of real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

LABELS = ["negative", "hey_nova", "other"]
REPO = Path(__file__).resolve().parents[2]


def tiny_teacher(seed: int = 0, dtype: str = "fp32"):
    """A frozen tiny Wav2Vec2 TeacherModel (hidden 64, 2 layers, conv_dim 32x3), same weights per seed."""
    from wakeword_dist.models.teacher import TeacherModel, build_teacher_from_scratch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_teacher_from_scratch(LABELS, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=128, conv_dim=(32, 32, 32))
    return TeacherModel(model, label_names=LABELS, name_or_path="tiny-test-teacher", dtype=dtype).freeze()


def audio_batch(batch: int = 3, samples: int = 16000, seed: int = 1) -> torch.Tensor:
    """Random audio (B, S) in [-0.5, 0.5]."""
    return torch.rand(batch, samples, generator=torch.Generator().manual_seed(seed)) - 0.5


def make_split(split_dir: Path, *, num_samples: int = 13, per_shard: int = 5, seed: int = 0) -> dict:
    """A small split written by the data owner's ShardWriter: ceil(13 / 5) = 3 shards of 1 s wav
    clips (one 0.5 s clip to exercise length grouping), labels cycling over 0, 1, 2 and -1."""
    from wakeword_dist.data.shard_writer import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(split_dir, samples_per_shard=per_shard, audio_format="wav", sample_rate=16000,
                     label_names=LABELS, source="test", seed=seed) as writer:
        for i in range(num_samples):
            label = [0, 1, 2, -1][i % 4]
            samples = 8000 if i == 6 else 16000
            audio = (rng.uniform(-0.3, 0.3, samples)).astype(np.float32)
            writer.write(f"clip{i:03d}", audio, {"label": label, "label_name": LABELS[label] if label >= 0 else "unlabelled"})
        return writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script: Path, *args: str, world_size: int = 2, timeout: float = 300,
              env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Start ``world_size`` real ranks of ``script`` (the env torchrun / accelerate launch set:
    RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) and wait; returns each rank's result.

    Real interpreters, not forks: a fork of a process that already ran a parallel CPU op (any
    earlier test in the session) deadlocks in GNU OpenMP, so ``accelerate.debug_launcher`` is
    unsafe after other tests.
    """
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        rank_env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                    "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                    "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "GLOO_SOCKET_IFNAME": "lo",
                    "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]), **(env or {})}
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=rank_env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for rank, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results
