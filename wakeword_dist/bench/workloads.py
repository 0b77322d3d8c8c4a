"""The measured workloads, built from the config the way the recipe builds them.

- ``BenchStep``: the recipe's own training step (``train/step.py: train_step``: augment, teacher,
  student under autocast, KD/CE loss, the step's all-reduce, backward, clip, AdamW, scheduler) on
  one fixed batch shaped like the loader's (host tensors). ``teacher=`` makes it the online KD
  step (``overlap=True``: the teacher one batch ahead, ``distill.overlap_teacher``); ``logits=``
  the cached one (logits in the batch, copied in per step as the loader delivers them).
- ``teacher_variants``: the same random-init HF teacher as plain HF eager in fp32 / fp16 / bf16 and
  with each ``optimize_teacher`` rewrite in the run dtype, plus the (inexact) truncations.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from wakeword_dist.bench.plan import BenchPlan
from wakeword_dist.config import Config
from wakeword_dist.distill.ahead import TeacherAhead
from wakeword_dist.distill.loss import KDLoss
from wakeword_dist.models.fast_teacher import optimize_teacher, truncated_copy
from wakeword_dist.models.teacher import TeacherModel, build_teacher_from_scratch
from wakeword_dist.train.signals import StopFlag
from wakeword_dist.train.step import StepParts, StepResult, train_step


def label_names(cfg: Config) -> list[str]:
    """The dataset's labels when its train index exists, else negative + the wake phrase."""
    index = Path(cfg.data.root) / "train" / "index.json"
    if index.is_file():
        import json

        return list(json.loads(index.read_text())["label_names"])
    return ["negative", cfg.data.wake_phrase.replace(" ", "_")]


def random_audio(batch: int, samples: int, device, seed: int = 0) -> torch.Tensor:
    """(B, S) float32 noise at about -20 dBFS RMS (speed does not depend on the content)."""
    gen = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(batch, samples, generator=gen)).to(device)


# ------------------------------------------------------------------------------ teacher
def master_teacher(plan: BenchPlan, labels: list[str], seed: int = 0) -> torch.nn.Module:
    """The HF classifier all teacher variants copy (float32, CPU, eval, random init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = build_teacher_from_scratch(labels, **plan.teacher_arch)
    return hf.eval()


def frozen(hf: torch.nn.Module, labels: list[str], dtype: str, device) -> TeacherModel:
    """A frozen ``TeacherModel`` over a deep copy of ``hf`` in ``dtype`` on ``device``."""
    t = TeacherModel(copy.deepcopy(hf), label_names=labels, name_or_path="bench:random-init", dtype=dtype)
    return t.freeze().to(device)


def teacher_variants(plan: BenchPlan) -> dict[str, dict]:
    """name -> {"dtype", "opts", "exact": bool, "note", ...}; in timing order (torch.compile: see
    ``compile_variant``)."""
    d = plan.teacher_dtype
    gpu = plan.device.type == "cuda"
    variants = {f"eager_{x}": {"dtype": x, "opts": None, "exact": True,
                               "note": "plain HF model (SDPA attention)"} for x in ("fp32", "fp16", "bf16")}
    all_exact = dict(fold_weight_norm=True, channels_last_encoder=True, dense_pos_conv=True)
    exact = {
        "fold_wn": dict(fold_weight_norm=True),
        "fold_wn+fused_fe": dict(fold_weight_norm=True, fuse_feature_norm=True),
        "fold_wn+cl_encoder": dict(fold_weight_norm=True, channels_last_encoder=True),
        "fold_wn+dense_pos": dict(fold_weight_norm=True, dense_pos_conv=True),
        "exact_all": all_exact,
    }
    if gpu:
        exact["exact_all+cuda_graphs"] = dict(all_exact, cuda_graphs=True)
    if gpu:  # cuDNN autotuning for the fixed conv shapes (the recipe leaves it off)
        variants[f"eager_{d}+cudnn_benchmark"] = {"dtype": d, "opts": None, "exact": True, "cudnn_benchmark": True,
                                                 "note": "plain HF model, torch.backends.cudnn.benchmark=True"}
    for name, opts in exact.items():
        variants[f"{name}_{d}"] = {"dtype": d, "opts": opts, "exact": True, "note": "optimize_teacher"}
    for n in plan.truncate_layers:
        variants[f"truncate{n}_{d}"] = {"dtype": d, "opts": None, "truncate": n, "exact": False,
                                        "note": f"only the first {n} transformer layers: changes the logits"}
    return variants


def compile_variant(plan: BenchPlan) -> tuple[str, dict]:
    """(name, spec) of the all-exact-rewrites teacher under torch.compile (the teacher_compile section)."""
    opts = dict(fold_weight_norm=True, channels_last_encoder=True, dense_pos_conv=True, compile=True)
    return f"exact_all+compile_{plan.teacher_dtype}", {"dtype": plan.teacher_dtype, "opts": opts, "exact": True,
                                                       "note": "optimize_teacher + torch.compile"}


def build_variant(spec: dict, hf, labels, device) -> torch.nn.Module:
    teacher = frozen(hf, labels, spec["dtype"], device)
    if spec.get("truncate") is not None:
        return truncated_copy(teacher, spec["truncate"])
    if spec["opts"]:
        teacher = optimize_teacher(teacher, **spec["opts"])
    return teacher


def max_rel_err(z: torch.Tensor, ref: torch.Tensor) -> float:
    """max |z - ref| / max |ref| over the batch: error relative to the reference logit scale
    (element-wise relative error is meaningless for logits near 0)."""
    return float((z.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


@contextlib.contextmanager
def reference_precision(device: torch.device):
    """True fp32 for the reference logits: no TF32 in cuDNN convs or cuBLAS matmuls."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


# ------------------------------------------------------------------------------ student
_NOISE_DIRS: dict = {}  # (clips, samples, sample rate) -> TemporaryDirectory with a background split


def _background_split(clips: int, samples: int, sample_rate: int) -> Path:
    """A background split of ``clips`` pink-noise clips (wav), written once per process: the
    recipe's augmenter reads its noise bank from such a split (speed does not depend on which noise)."""
    key = (clips, samples, sample_rate)
    if key not in _NOISE_DIRS:
        from wakeword_dist.data.noise import coloured_noise
        from wakeword_dist.data.shard_writer import ShardWriter

        tmp = tempfile.TemporaryDirectory(prefix="bench-noise-")
        rng = np.random.default_rng(1)
        with ShardWriter(Path(tmp.name) / "background", 1000, "wav", sample_rate, label_names=["noise"],
                         source="bench", seed=1) as w:
            for i in range(clips):
                w.write(f"noise-{i:05d}", coloured_noise(rng, samples, "pink", -20.0),
                        {"label": 0, "label_name": "noise"})
        _NOISE_DIRS[key] = tmp
    return Path(_NOISE_DIRS[key].name) / "background"


def augmenter(cfg: Config, device):
    """The recipe's augmenter (``train/data_setup.py: augmenter``) with a generated 64-clip
    background split when the config's data root has none."""
    from wakeword_dist.train import data_setup

    root = Path(cfg.data.root)
    background = root / "background"
    if not (background / "index.json").is_file():
        background = _background_split(64, cfg.data.clip_samples, cfg.data.sample_rate)
    return data_setup.augmenter(cfg, SimpleNamespace(root=root, background_dir=background), device)


def bench_accelerator(precision: str, device) -> "Accelerator":  # noqa: F821 - accelerate imported here
    """An Accelerator with the student autocast ``precision`` on ``device``'s type.

    Accelerate keeps one process-wide state whose mixed precision cannot change once set; the
    benchmark times steps of another precision than a recipe or test run before it in the same
    process may have used, so it starts that state afresh when it must (the process group, if
    any, is kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    cpu = torch.device(device).type == "cpu"
    if state and (state.get("_mixed_precision") != precision or (cpu and state["device"].type != "cpu")):
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision, cpu=cpu)


def bench_batch(batch: int, samples: int, n_classes: int, *, seed: int = 0, logits: torch.Tensor | None = None) -> dict:
    """A batch as the train loader yields it (host tensors): ``audio`` (B, S) float32 noise at about
    -20 dBFS RMS, ``label`` (B,) int64 in [0, C), ``hard_negative`` (B,) bool (a fifth), ``key``,
    and ``teacher_logits`` (B, C) when ``logits`` is given (cached mode)."""
    gen = torch.Generator().manual_seed(seed)
    out = {"audio": 0.1 * torch.randn(batch, samples, generator=gen),
           "label": torch.randint(0, n_classes, (batch,), generator=gen),
           "hard_negative": torch.rand(batch, generator=gen) < 0.2,
           "key": [f"bench-{seed}-{i:07d}" for i in range(batch)]}
    if logits is not None:
        out["teacher_logits"] = logits
    return out


class BenchStep:
    """The recipe's training step (``train/step.py: train_step``) on a fixed batch; ``step()`` is one
    call of it, with the step index counting up (per-step augmentation seed, LR schedule).

    Built as ``Recipe.setup`` builds it: student from ``trainable_model`` (seeded), KDLoss with the
    job's alpha, AdamW + warm-up/cosine LambdaLR, ``accelerator.prepare(model, optimizer)``.

    Args:
        teacher: online KD, a frozen teacher module ((B, S) -> (B, C)), called under no_grad.
        logits: cached KD, (B, C) float32 CPU logits carried in the batch.
        overlap: with ``teacher``: the teacher one batch ahead (``distill.overlap_teacher``); the
            same batch is fed as the next one every step (speed is what is measured).
        accelerator: share one (DDP ranks, a test next to a recipe); default ``bench_accelerator``.
        batch_dict: the batch to train on; default ``bench_batch(batch, ...)``.
    """

    def __init__(self, cfg: Config, labels: list[str], device, batch: int, precision: str, *,
                 teacher: Callable | None = None, logits: torch.Tensor | None = None, overlap: bool = False,
                 seed: int = 0, accelerator=None, batch_dict: dict | None = None):
        from wakeword_dist.train.model_setup import trainable_model
        from wakeword_dist.train.recipe import warmup_cosine

        if overlap and teacher is None:
            raise ValueError("BenchStep: overlap=True needs a teacher (online KD)")
        self.accelerator = acc = accelerator or bench_accelerator(precision, device)
        self.device = acc.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _ = trainable_model(cfg, "baseline", labels)
        model.to(self.device)
        kd = "online" if teacher is not None else "cached" if logits is not None else None
        t = cfg.train
        optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(t.warmup_steps, t.epochs * t.batches_per_epoch))
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.augment = augmenter(cfg, self.device)
        self.parts = StepParts(
            accelerator=acc, model=self.model, optimizer=self.optimizer, scheduler=scheduler,
            loss_fn=KDLoss(alpha=cfg.distill.alpha if kd else 0.0, temperature=cfg.distill.temperature,
                           hard_negative_weight=cfg.distill.hard_negative_weight),
            augment=self.augment, stop=StopFlag(), seed=t.seed, grad_clip=t.grad_clip,
            label_fraction=cfg.data.label_fraction, kd=kd, teacher_fn=teacher,
            ahead=TeacherAhead(teacher, self.device) if overlap else None, teacher_dtype=cfg.teacher.dtype)
        self.batch = batch_dict if batch_dict is not None else bench_batch(
            batch, cfg.data.clip_samples, len(labels), seed=seed + 1, logits=logits)
        self.n = 0

    def step(self, batch: dict | None = None) -> StepResult:
        """One training step on ``batch`` (default: the fixed one), as step number ``self.n``."""
        batch = self.batch if batch is None else batch
        result = train_step(self.parts, batch, self.n, batch if self.parts.ahead else None)
        self.n += 1
        return result
