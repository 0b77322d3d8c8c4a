"""One training step, the only one: the recipe trains with it and the benchmark times it.

    result = train_step(parts, batch, step, next_batch)

``batch`` is what the train loader yields (CPU tensors): ``audio`` (B, S) or (B, 1, S) float32 raw
16 kHz audio, ``label`` (B,) int64 (−1 = unlabelled), ``hard_negative`` (B,) bool, ``key`` (B,)
clip keys, and in cached mode ``teacher_logits`` (B, C). In order, a step:

1. moves the batch to the device and hides the labels the student may not see (``label_keep_mask``);
2. augments the audio with the generator of (seed, rank, step) (``augment_for_step``);
3. gets the teacher's (B, C) logits: online (``teacher_fn`` under no_grad), cached (from the batch),
   or ahead (``TeacherAhead``: launched during the previous step; the next batch's is launched
   here, before the student, so it overlaps the student on a GPU);
4. runs the student under the accelerator's autocast and the KD/CE loss in float32; non-finite
   teacher logits never reach the loss: the step turns NaN and is skipped on every rank;
5. makes the step's one small all-reduce: finite flag, stop vote (``signals.StopFlag``), three losses;
6. backward, grad clip (the norm is always taken: a NaN/inf gradient never reaches AdamW),
   optimizer step, zero_grad, scheduler step. Under fp16 mixed precision an inf gradient is first
   the loss scaler's business: its step skips the update and lowers the scale (``overflow``).

What the caller keeps: the step counter, the run of non-finite steps and when to give up.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from wakeword_dist import collectives
from wakeword_dist.distill.ahead import TeacherAhead
from wakeword_dist.models.frontend import as_batch_audio


def label_keep_mask(keys: list[str], fraction: float) -> torch.Tensor:
    """Which clips keep their label for the student: a stable hash of the key, not the RNG,
    so baseline and distill hide exactly the same labels whatever the rank or resume point."""
    if fraction >= 1.0:
        return torch.ones(len(keys), dtype=torch.bool)
    return torch.tensor([(zlib.crc32(k.encode()) % 10_000) < fraction * 10_000 for k in keys])


@dataclass
class StepParts:
    """What a training step works with; the recipe builds one per step from its current attributes
    (tests and fault injectors swap ``teacher_fn`` / ``loss_fn`` on a set-up recipe)."""

    accelerator: object                 # accelerate.Accelerator: device, autocast, backward, clip, all-reduce
    model: torch.nn.Module              # the trainable model, as returned by accelerator.prepare
    optimizer: torch.optim.Optimizer    # prepared
    scheduler: object                   # LambdaLR, stepped once per step (kept out of prepare)
    loss_fn: Callable                   # KDLoss (student_logits, teacher_logits, labels, hard_negative) -> dict
    augment: Callable                   # WaveAugment (audio (B, S), generator) -> (B, S)
    stop: object                        # signals.StopFlag: vote() / settle(votes)
    seed: int                           # train.seed: with rank and step, seeds the augmentation
    grad_clip: float                    # train.grad_clip; 0 = no clipping (the norm is still taken)
    label_fraction: float = 1.0         # data.label_fraction (1.0 = every label kept: the teacher job)
    kd: str | None = None               # None (no teacher) | "online" | "cached"
    teacher_fn: Callable | None = None  # (B, S) -> (B, C) float32 logits, for kd="online"
    ahead: TeacherAhead | None = None   # distill.overlap_teacher: the teacher one batch ahead
    teacher_dtype: str = ""             # for the non-finite-logits message only


@dataclass
class StepResult:
    """Losses are means over ranks of the per-rank batch means; ``finite``: the step was applied;
    ``overflow``: not applied because fp16 loss scaling overflowed (the scaler lowered its scale:
    expected now and then, most at the start; not a sign of a broken model)."""

    loss: float
    ce: float
    kd: float
    finite: bool
    overflow: bool = False


def augment_for_step(parts: StepParts, batch: dict, step: int) -> Tensor:
    """(B, S) augmented audio of ``batch`` on the device, with the generator of training step ``step``.

    One generator per (seed, rank, step): augmentation is identical for baseline and distill,
    exactly reproducible after a resume without saving generator state, and the same when a
    batch is augmented a step early for the teacher running ahead."""
    acc = parts.accelerator
    # (B, 1, S) is squeezed, anything else but (B, S) raises: never a silent teacher skip.
    audio = as_batch_audio(batch["audio"]).to(acc.device, non_blocking=True)
    gen = torch.Generator(device=acc.device).manual_seed(
        (parts.seed * 1_000_003 + acc.process_index * 10_007 + step) % (2**63))
    return parts.augment(audio, gen)


def train_step(parts: StepParts, batch: dict, step: int, next_batch: dict | None = None) -> StepResult:
    """Train on ``batch`` as 0-based step ``step``; ``next_batch`` (ahead mode) is the one after it."""
    acc = parts.accelerator
    labels = batch["label"].to(acc.device)
    if parts.label_fraction < 1.0:
        keep = label_keep_mask(batch["key"], parts.label_fraction).to(acc.device)
        labels = torch.where(keep, labels, torch.full_like(labels, -1))
    hard_negative = batch["hard_negative"].to(acc.device)
    parts.model.train()

    teacher_logits = None
    ready = parts.ahead.take(step) if parts.ahead else None
    if ready is not None:  # augmented and sent through the teacher during the previous step
        audio, teacher_logits = ready
    else:
        audio = augment_for_step(parts, batch, step)
    if parts.kd == "cached":
        teacher_logits = batch["teacher_logits"].to(acc.device)
    elif parts.kd == "online" and teacher_logits is None:
        with torch.no_grad():
            teacher_logits = parts.teacher_fn(audio)
    if parts.ahead and next_batch is not None:  # before the student: it overlaps on a GPU
        parts.ahead.launch(step + 1, augment_for_step(parts, next_batch, step + 1))

    with acc.autocast():
        logits = parts.model(audio)
    if teacher_logits is not None and not bool(torch.isfinite(teacher_logits).all()):
        # A half-precision teacher overflowing on a loud clip: skip the step on every rank like
        # a NaN loss (below), never feed the loss; max_nonfinite_steps stops a broken teacher.
        acc.print(f"step {step + 1}: non-finite teacher logits (teacher.dtype={parts.teacher_dtype})")
        nan = torch.full((), float("nan"), device=acc.device)
        losses = {"loss": nan, "ce": nan, "kd": nan}
    else:
        losses = parts.loss_fn(logits, teacher_logits, labels, hard_negative)

    # Every rank must agree to skip a non-finite step, or DDP's all-reduce would hang, and to
    # stop at this step's boundary (signals.py). One all-reduce carries both flags and the
    # three losses: the step's only collective besides DDP's (a gloo call costs ~1 ms).
    finite = float(torch.isfinite(losses["loss"]).item())
    sums = collectives.sum_over_ranks([finite, parts.stop.vote(), losses["loss"].item(), losses["ce"].item(),
                                       losses["kd"].item()], acc.device)
    all_finite = sums[0] >= acc.num_processes - 0.5
    parts.stop.settle(sums[1])
    loss, ce, kd = (v / acc.num_processes for v in sums[2:])
    overflow = False
    if all_finite:
        acc.backward(losses["loss"])
        # The norm is taken even without clipping (max_norm=inf only measures): a NaN/inf
        # gradient must never reach the optimizer.
        grad_norm = acc.clip_grad_norm_(parts.model.parameters(), parts.grad_clip or float("inf"))
        if torch.isfinite(torch.as_tensor(grad_norm)):
            parts.optimizer.step()
        else:
            all_finite = False
            if getattr(acc, "scaler", None) is not None:
                # fp16 loss scaling: the gradients were unscaled (clip) and hold an inf, so the
                # scaler's step skips AdamW and update() lowers the scale. Without this call
                # the scale never drops and the next unscale_ raises (once per update only).
                parts.optimizer.step()
                overflow = True
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scheduler.step()
    return StepResult(loss=loss, ce=ce, kd=kd, finite=all_finite, overflow=overflow)
