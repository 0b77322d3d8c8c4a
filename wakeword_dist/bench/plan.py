"""What one benchmark run measures: shapes, iteration counts, which variants.

Two presets, chosen by ``shapes``: ``auto`` = ``real`` on a CUDA machine, else ``tiny``.

- ``tiny`` (CPU): the config's own tiny teacher (``teacher.hidden_size`` ...), the config's
  batch (``data.batch_size``), 2 warm-ups + 3 rounds of 3 calls, a 256-clip loader run.
  ``quick`` (tests) cuts every count to one timed call.
- ``real`` (GPU): a wav2vec2-base-shaped teacher from random init (hidden 768, 12 layers,
  conv_dim 512 x 7, positional conv 128 taps / 16 groups), batches 256 and 1024, 2 warm-ups +
  3 rounds of 5 calls, bf16 student autocast, torch.compile at the largest batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from wakeword_dist.config import Config

# wav2vec2-base (facebook/wav2vec2-base) shapes; weights are random (only speed is measured).
WAV2VEC2_BASE = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
)

ENV_SHAPES, ENV_BATCH, ENV_COMPILE = "WAKEWORD_BENCH_SHAPES", "WAKEWORD_BENCH_BATCH", "WAKEWORD_BENCH_COMPILE"
ENV_QUICK, ENV_THREADS = "WAKEWORD_BENCH_QUICK", "WAKEWORD_BENCH_THREADS"


@dataclass
class BenchPlan:
    shapes: str                      # "tiny" | "real"
    device: torch.device
    batch_sizes: tuple               # clips per call of each timed workload
    clip_samples: int                # samples per clip (1 s at 16 kHz = 16000)
    warmup: int                      # untimed calls before timing
    iters: int                       # calls per timed round
    rounds: int                      # timed rounds (best and median kept)
    teacher_arch: dict               # build_teacher_from_scratch kwargs
    teacher_dtype: str               # run dtype of the teacher: P3 compares variants in it
    student_precision: str           # autocast of the student step: no | bf16 | fp16
    compile_batches: tuple           # batch sizes at which torch.compile variants are timed
    truncate_layers: tuple           # transformer-layer counts for the (inexact) truncation figure
    loader_clips: int                # clips per loader-benchmark epoch
    loader_formats: tuple            # audio formats the loader benchmark writes and reads
    loader_workers: int              # DataLoader workers of the loader and epoch benchmarks
    loader_repeats: int              # loader epochs timed per format (best kept)
    epoch_batch: int                 # batch of the loader + step epoch (P2)
    epoch_batches: int               # batches per epoch in the P2 measurement
    ddp_batch: int                   # per-rank batch of the weak-scaling run (P5)
    ddp_iters: int                   # timed steps per rank in the weak-scaling run
    ddp_warmup: int = 2              # untimed steps per rank
    ddp_rounds: int = 3              # timed rounds of ddp_iters steps (best kept)
    epoch_repeats: int = 2           # epochs timed each way for P2 (interleaved, best kept)
    epoch_workers: int = 0           # DataLoader workers of the P2 epochs
    threads: int | None = None       # torch intra-op threads while measuring (None = leave as is)

    @property
    def basis(self) -> str:
        """What the ratios P1-P3 divide: ``cpu`` = process CPU time per call (CPU runs, one thread:
        stable on a shared, loaded machine, equal to wall time on an idle core), ``wall`` (GPU)."""
        return "cpu" if self.device.type == "cpu" and self.threads == 1 else "wall"

    def to_dict(self) -> dict:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}
        d["device"], d["basis"] = str(self.device), self.basis
        return d


def _env_batches() -> tuple | None:
    raw = os.environ.get(ENV_BATCH, "").strip()
    return tuple(int(b) for b in raw.split(",") if b) if raw else None


def make_plan(cfg: Config, *, shapes: str = "auto", batch_sizes=None, compile: bool | None = None,
              quick: bool | None = None, device: str | torch.device | None = None) -> BenchPlan:
    """The plan for ``cfg`` on this machine. Arguments left at None fall back to the environment
    (``WAKEWORD_BENCH_SHAPES=tiny|real``, ``WAKEWORD_BENCH_BATCH=256,1024``,
    ``WAKEWORD_BENCH_COMPILE=0|1``, ``WAKEWORD_BENCH_QUICK=1``: for ``wakeword-dist bench``, which
    has no flags for them). ``quick``: one timed call per workload (tests: every figure, no accuracy)."""
    if quick is None:
        quick = os.environ.get(ENV_QUICK, "0") not in ("0", "", "false", "no")
    plan = _preset(cfg, shapes, batch_sizes, compile, device)
    if os.environ.get(ENV_THREADS):
        plan = replace(plan, threads=int(os.environ[ENV_THREADS]) or None)
    if quick:
        plan = replace(plan, warmup=1, iters=1, rounds=1, loader_repeats=1, loader_clips=min(plan.loader_clips, 256),
                       epoch_batches=min(plan.epoch_batches, 3), epoch_repeats=1, ddp_iters=2, ddp_warmup=1,
                       ddp_rounds=1)
    return plan


def _preset(cfg: Config, shapes: str, batch_sizes, compile: bool | None, device) -> BenchPlan:
    if shapes == "auto":
        shapes = os.environ.get(ENV_SHAPES, "auto")
    cuda = torch.cuda.is_available()
    if shapes == "auto":
        shapes = "real" if cuda else "tiny"
    if shapes not in ("tiny", "real"):
        raise ValueError(f"bench shapes must be auto, tiny or real, got {shapes!r}")
    device = torch.device(device) if device is not None else torch.device("cuda" if cuda else "cpu")
    batch_sizes = tuple(batch_sizes) if batch_sizes else _env_batches()
    if compile is None and os.environ.get(ENV_COMPILE):
        compile = os.environ[ENV_COMPILE] not in ("0", "false", "no")
    on_gpu = device.type == "cuda"
    t = cfg.teacher
    cpus = os.cpu_count() or 1
    if shapes == "real":
        batch_sizes = batch_sizes or ((256, 1024) if on_gpu else (4,))
        arch = dict(WAV2VEC2_BASE)
        layers = arch["num_hidden_layers"]
        return BenchPlan(
            shapes="real", device=device, batch_sizes=batch_sizes, clip_samples=cfg.data.clip_samples,
            warmup=2, iters=5 if on_gpu else 1, rounds=3 if on_gpu else 2, teacher_arch=arch,
            teacher_dtype=(t.dtype if t.dtype != "fp32" else "bf16") if on_gpu else "fp32",
            student_precision="bf16" if on_gpu else cfg.train.mixed_precision,
            compile_batches=(max(batch_sizes),) if (compile if compile is not None else on_gpu) else (),
            truncate_layers=(layers // 2, layers // 4),
            loader_clips=4096, loader_formats=("flac", "wav", "npy"),
            loader_workers=max(1, min(8, cpus // 2)), loader_repeats=2,
            epoch_batch=min(batch_sizes), epoch_batches=16, epoch_workers=max(1, min(8, cpus // 2)),
            ddp_batch=cfg.data.batch_size, ddp_iters=20, threads=None if on_gpu else 1)
    arch = dict(hidden_size=t.hidden_size, num_hidden_layers=t.num_hidden_layers,
                num_attention_heads=t.num_attention_heads, intermediate_size=t.intermediate_size,
                conv_dim=(t.conv_dim,) * 3)
    batch_sizes = batch_sizes or (cfg.data.batch_size,)
    return BenchPlan(
        shapes="tiny", device=device, batch_sizes=batch_sizes, clip_samples=cfg.data.clip_samples,
        warmup=2, iters=3, rounds=3, teacher_arch=arch,
        teacher_dtype=t.dtype if on_gpu or t.dtype == "fp32" else "fp32",
        student_precision=cfg.train.mixed_precision,
        compile_batches=(max(batch_sizes),) if compile else (),
        truncate_layers=(t.num_hidden_layers // 2,),
        loader_clips=256, loader_formats=(cfg.data.audio_format,),
        loader_workers=max(1, cfg.data.num_workers), loader_repeats=1,
        epoch_batch=min(batch_sizes), epoch_batches=8, epoch_workers=cfg.data.num_workers,
        ddp_batch=cfg.data.batch_size, ddp_iters=8, threads=None if on_gpu else 1)
