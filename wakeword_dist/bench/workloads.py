"""The measured workloads, built from the config the way the recipe builds them.

- ``StudentStep``: augment (``WaveAugment``) -> student (log-mel front end + SpecAugment + body)
  under the student autocast -> ``KDLoss`` -> backward -> grad clip -> AdamW, i.e. the work of
  ``Recipe._train_step`` minus Accelerate's wrappers. ``teacher=`` makes it the online KD step;
  ``logits=`` (pinned CPU logits copied in per step, as the loader delivers them) the cached one.
- ``teacher_variants``: the same random-init HF teacher as plain HF eager in fp32 / fp16 / bf16 and
  with each ``optimize_teacher`` rewrite in the run dtype, plus the (inexact) truncations.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

import numpy as np
import torch

from wakeword_dist.augment import WaveAugment
from wakeword_dist.bench.plan import BenchPlan
from wakeword_dist.config import Config
from wakeword_dist.distill.ahead import TeacherAhead
from wakeword_dist.distill.loss import KDLoss
from wakeword_dist.models.fast_teacher import optimize_teacher, truncated_copy
from wakeword_dist.models.teacher import DTYPES, TeacherModel, build_teacher_from_scratch


def label_names(cfg: Config) -> list[str]:
    """The dataset's labels when its train index exists, else negative + the wake phrase."""
    from pathlib import Path

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


def teacher_variants(plan: BenchPlan, batch: int) -> dict[str, dict]:
    """name -> {"dtype", "make": (hf, labels) -> module, "exact": bool, "note"}; in timing order."""
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
    if batch in plan.compile_batches:
        exact["exact_all+compile"] = dict(all_exact, compile=True)
    if gpu:  # cuDNN autotuning for the fixed conv shapes (the recipe leaves it off)
        variants[f"eager_{d}+cudnn_benchmark"] = {"dtype": d, "opts": None, "exact": True, "cudnn_benchmark": True,
                                                 "note": "plain HF model, torch.backends.cudnn.benchmark=True"}
    for name, opts in exact.items():
        variants[f"{name}_{d}"] = {"dtype": d, "opts": opts, "exact": True, "note": "optimize_teacher"}
    for n in plan.truncate_layers:
        variants[f"truncate{n}_{d}"] = {"dtype": d, "opts": None, "truncate": n, "exact": False,
                                        "note": f"only the first {n} transformer layers: changes the logits"}
    return variants


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
def _noise_bank(clips: int, samples: int, seed: int = 1) -> torch.Tensor:
    from wakeword_dist.data.noise import coloured_noise

    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([coloured_noise(rng, samples, "pink", -20.0) for _ in range(clips)]))


def augmenter(cfg: Config, device) -> WaveAugment:
    """``WaveAugment`` as the recipe configures it, with a generated noise bank in place of the
    background split (64 pink-noise clips; speed does not depend on which noise)."""
    a = cfg.augment
    noise = _noise_bank(64, cfg.data.clip_samples) if a.noise_prob > 0 else None
    return WaveAugment(noise_bank=noise, snr_db=(a.snr_db_min, a.snr_db_max), noise_prob=a.noise_prob,
                       rir_prob=a.rir_prob, gain_db=(-a.gain_db, a.gain_db), shift_ms=a.shift_ms,
                       sample_rate=cfg.data.sample_rate).to(device)


@contextlib.contextmanager
def no_host_syncs():
    """Bench-only: turn KDLoss's teacher-logit finiteness check (a device->host sync) off."""
    import wakeword_dist.distill.loss as loss_mod

    original = loss_mod.check_teacher_logits
    loss_mod.check_teacher_logits = lambda logits: None
    try:
        yield
    finally:
        loss_mod.check_teacher_logits = original


class StudentStep:
    """One training step of the configured student; call ``step(audio)`` with (B, S) on the device.

    Args:
        teacher: online KD (a frozen teacher module, run under no_grad on the augmented audio).
        logits: cached KD, (B, C) float32 logits on the CPU (pinned), copied in every step.
        recipe_syncs: also make the recipe's per-step host syncs (finite-loss flag and the three
            reduced loss values as Python floats); KDLoss's logit check syncs regardless.
    """

    def __init__(self, cfg: Config, labels: list[str], device, batch: int, precision: str, *,
                 teacher: Callable | None = None, logits: torch.Tensor | None = None,
                 recipe_syncs: bool = True, seed: int = 0):
        from wakeword_dist.train.components import trainable_model

        self.cfg, self.device = cfg, torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model, _ = trainable_model(cfg, "baseline", labels)
        self.model.to(self.device).train()
        self.augment = augmenter(cfg, self.device)
        kd = teacher is not None or logits is not None
        self.loss_fn = KDLoss(alpha=cfg.distill.alpha if kd else 0.0, temperature=cfg.distill.temperature,
                              hard_negative_weight=cfg.distill.hard_negative_weight)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.teacher, self.recipe_syncs = teacher, recipe_syncs
        self.logits = None
        if logits is not None:
            self.logits = logits.pin_memory() if self.device.type == "cuda" else logits
        gen = torch.Generator().manual_seed(seed + 1)
        self.labels = torch.randint(-1, len(labels), (batch,), generator=gen).to(self.device)
        self.hard = (torch.rand(batch, generator=gen) < 0.2).to(self.device)
        self.autocast = dict(device_type=self.device.type, dtype=DTYPES.get(precision, torch.float32),
                             enabled=precision in ("fp16", "bf16"))
        self.n = 0

    def teacher_logits(self, audio: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is not None:
            with torch.no_grad():
                return self.teacher(audio)
        if self.logits is not None:
            return self.logits.to(self.device, non_blocking=True)
        return None

    def augmented(self, audio: torch.Tensor) -> torch.Tensor:
        self.n += 1
        gen = torch.Generator(device=self.device).manual_seed(self.n)
        return self.augment(audio, gen)

    def student_update(self, audio: torch.Tensor, teacher_logits: torch.Tensor | None) -> dict:
        with torch.autocast(**self.autocast):
            logits = self.model(audio)
        losses = self.loss_fn(logits, teacher_logits, self.labels, self.hard)
        if self.recipe_syncs:
            bool(torch.isfinite(losses["loss"]))
        losses["loss"].backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.recipe_syncs:
            torch.stack([losses["loss"], losses["ce"], losses["kd"]]).detach().double().tolist()
        return losses

    def step(self, audio: torch.Tensor) -> dict:
        x = self.augmented(audio)
        return self.student_update(x, self.teacher_logits(x))


class OverlappedOnlineKD:
    """Online KD with the teacher one batch ahead, as the recipe runs it with
    ``distill.overlap_teacher`` (``distill/ahead.py``: a second CUDA stream on GPU).

    Step n launches the teacher forward of the next batch, then runs the student update of
    batch n with the logits launched during step n-1. The same batch is fed every step here:
    speed is what is measured."""

    def __init__(self, step: StudentStep):
        self.s = step
        self.ahead = TeacherAhead(step.teacher, step.device)
        self.n = 0

    def step(self, audio: torch.Tensor) -> dict:
        ready = self.ahead.take(self.n)
        if ready is None:  # the first step: nothing was launched for it
            x = self.s.augmented(audio)
            with torch.no_grad():
                ready = (x, self.s.teacher(x))
        self.n += 1
        self.ahead.launch(self.n, self.s.augmented(audio))
        return self.s.student_update(*ready)
