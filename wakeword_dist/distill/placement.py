"""Where the frozen teacher lives during online distillation: replicated on every rank, or
sharded over the ranks with DeepSpeed ZeRO-3 (inference only, no optimizer).

``place_teacher`` returns ``(teacher_fn, decision)``: ``teacher_fn(audio (B, S)) -> logits (B, C)``
float32, always under ``torch.no_grad`` and in eval mode; ``decision`` is a JSON-able dict the
recipe logs and stores with the run (placement chosen, the byte estimates behind it, the reason).

``auto`` estimates, per rank,

    need = teacher_param_bytes (parameters + buffers at ``dtype``)
         + activation_bytes_estimate (see ``estimate_activation_bytes``)

and replicates when ``need <= memory_share * free_bytes``; otherwise ZeRO-3. ``free_bytes`` is
``torch.cuda.mem_get_info`` on a GPU, and on CPU ``psutil`` available RAM divided by the ranks on
the node (they share it). Every rank must make the same choice (a rank that replicates while its
peers shard leaves the peers waiting in an all-gather forever), so ``free_bytes`` is the minimum
over ranks when a process group is up.

ZeRO-3 rules the recipe must keep:
- every rank calls ``teacher_fn`` the same number of times (each call all-gathers the parameters
  layer by layer; a missing call on one rank hangs the others). Batch shapes may differ;
- at the end call ``shutdown_teacher()``; the process then ends through
  ``process_exit.end_process(code, PROCESS)`` (the CLI's ``exit_with`` does it), which leaves a
  process that ran DeepSpeed by ``os._exit`` (see there for why). Engines made here are
  registered in ``process_exit.PROCESS``, the state that exit is given.

On CPU, fp16 and bf16 matmuls run in torch 2.14 but are slower than fp32 on most CPUs; the
dtype asked for is kept anyway (it is what the GPU run will use), and CPU tests use fp32.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import torch
from torch import Tensor, nn

from wakeword_dist.collectives import min_over_ranks
from wakeword_dist.models.frontend import as_batch_audio
from wakeword_dist.process_exit import PROCESS

logger = logging.getLogger(__name__)

PLACEMENTS = ("auto", "replicate", "zero3")
# Headroom on the largest single-layer activation: the residual stream a parent module still holds
# while a layer runs, attention / GELU temporaries and allocator fragmentation (x2, a round guess).
ACTIVATION_HEADROOM = 2.0



class TeacherFn:
    """``teacher_fn(audio (B, S) float) -> logits (B, C) float32``, no grad, eval mode.

    Attributes:
        module: the placed module (the nn.Module, or the DeepSpeed engine for ZeRO-3).
        placement: "replicate" or "zero3".
        lockstep: True when every rank must make the same number of calls (ZeRO-3).
        device: where inputs are moved before the call.
    """

    def __init__(self, module: nn.Module, *, placement: str, device: torch.device, input_dtype: torch.dtype):
        self.module = module
        self.placement = placement
        self.lockstep = placement == "zero3"
        self.device = device
        # A TeacherModel takes float32 audio (it normalises per clip in float32, then casts itself);
        # a bare HF classifier needs its input in the parameters' dtype.
        self.input_dtype = input_dtype

    @torch.no_grad()
    def __call__(self, audio: Tensor) -> Tensor:
        x = as_batch_audio(audio).to(device=self.device, dtype=self.input_dtype)
        out = self.module(x)
        logits = out.logits if hasattr(out, "logits") else out
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return logits.float()


# ------------------------------------------------------------------------------------ estimates
def teacher_param_bytes(teacher: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of parameters plus floating-point buffers once cast to ``dtype``."""
    size = torch.empty((), dtype=dtype).element_size()
    n = sum(p.numel() for p in teacher.parameters())
    n_float_buffers = sum(b.numel() for b in teacher.buffers() if b.is_floating_point())
    other = sum(b.numel() * b.element_size() for b in teacher.buffers() if not b.is_floating_point())
    return (n + n_float_buffers) * size + other


def estimate_activation_bytes(teacher: nn.Module, *, batch_size: int, clip_samples: int,
                              dtype: torch.dtype) -> int:
    """Peak inference activation bytes of one ``(batch_size, clip_samples)`` forward, estimated.

    Method: one 1-clip forward (no grad, where the teacher currently lives) with a hook on every
    leaf module recording its input + output bytes. Under ``no_grad`` a layer's input and output
    are what is live at its peak, so

        estimate = batch_size * max_leaf(input_bytes + output_bytes) * ACTIVATION_HEADROOM

    with the bytes rescaled to ``dtype``. For Wav2Vec2 the maximum is the first feature-encoder
    conv and its norm, (512 channels x S/5 frames) per clip: 3.3 MB in fp16 for 1 s at 16 kHz.
    Attention maps computed inside SDPA are not leaf outputs; at 1-2 s clips (T ~ 50-100 frames)
    they are far smaller than the conv activations.
    """
    target_size = torch.empty((), dtype=dtype).element_size()
    peak = 0

    def nbytes(obj) -> int:
        if isinstance(obj, Tensor):
            return obj.numel() * target_size if obj.is_floating_point() else obj.numel() * obj.element_size()
        if isinstance(obj, (tuple, list)):
            return sum(nbytes(o) for o in obj)
        if isinstance(obj, dict):  # includes HF ModelOutput
            return sum(nbytes(o) for o in obj.values())
        return 0

    def hook(module, inputs, output):
        nonlocal peak
        peak = max(peak, nbytes(inputs) + nbytes(output))

    leaves = [m for m in teacher.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = teacher.training
    try:
        param = next(teacher.parameters())
        teacher.eval()
        probe = TeacherFn(teacher, placement="replicate", device=param.device, input_dtype=_input_dtype(teacher))
        probe(torch.zeros(1, clip_samples, device=param.device))
    finally:
        for h in handles:
            h.remove()
        teacher.train(was_training)
    return int(batch_size * peak * ACTIVATION_HEADROOM)


def free_device_bytes(device: torch.device) -> int:
    """Free bytes for this rank: GPU free memory, or available RAM / ranks on this node (CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    ranks_on_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return int(psutil.virtual_memory().available // max(ranks_on_node, 1))


def decide_placement(*, placement: str, teacher_param_bytes: int, activation_bytes_estimate: int,
                     free_bytes: int, memory_share: float, world_size: int) -> dict:
    """The placement decision, a pure function of the estimates (unit-testable, no devices)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"teacher.placement must be one of {PLACEMENTS}, got {placement!r}")
    if not 0.0 < memory_share <= 1.0:
        raise ValueError(f"teacher.memory_share must be in (0, 1], got {memory_share}")
    need = teacher_param_bytes + activation_bytes_estimate
    budget = int(memory_share * free_bytes)
    mib = 2 ** 20
    sizes = (f"teacher {teacher_param_bytes / mib:.1f} MiB + activations {activation_bytes_estimate / mib:.1f} MiB "
             f"vs {memory_share:g} x {free_bytes / mib:.0f} MiB free = {budget / mib:.0f} MiB")
    if placement != "auto":
        chosen, reason = placement, f"asked for {placement} ({sizes})"
    elif need <= budget:
        chosen, reason = "replicate", f"fits: {sizes}"
    elif world_size > 1:
        chosen, reason = "zero3", f"does not fit: {sizes}; sharding parameters over {world_size} ranks"
    else:
        chosen, reason = "replicate", f"does not fit: {sizes}; one rank, ZeRO-3 cannot shard - replicating anyway"
    return {
        "placement": chosen,
        "requested": placement,
        "teacher_param_bytes": int(teacher_param_bytes),
        "activation_bytes_estimate": int(activation_bytes_estimate),
        "free_bytes": int(free_bytes),
        "memory_share": float(memory_share),
        "world_size": int(world_size),
        "zero3_param_bytes_per_rank": int(-(-teacher_param_bytes // max(world_size, 1))),
        "reason": reason,
    }


# ------------------------------------------------------------------------------------ placement
def _input_dtype(teacher: nn.Module) -> torch.dtype:
    from wakeword_dist.models.teacher import TeacherModel

    if isinstance(teacher, TeacherModel):
        return torch.float32
    return next(teacher.parameters()).dtype


def _freeze(teacher: nn.Module) -> nn.Module:
    teacher.requires_grad_(False)
    return teacher.eval()


def place_teacher(teacher: nn.Module, *, placement: str, device: torch.device, batch_size: int,
                  clip_samples: int, dtype: torch.dtype, memory_share: float,
                  world_size: int) -> tuple[TeacherFn, dict]:
    """Place a frozen teacher; returns ``(teacher_fn, decision)``.

    Args:
        teacher: an ``nn.Module`` mapping audio (B, S) to logits (B, C) or to an output with
            ``.logits`` (a ``TeacherModel`` or a bare HF ``*ForSequenceClassification``). Modified
            in place (cast, moved, frozen): each rank holds its own copy, no second copy is made.
        placement: "auto" | "replicate" | "zero3".
        device: this rank's device (``accelerator.device``).
        batch_size: clips per teacher call per rank (for the activation estimate and DeepSpeed).
        clip_samples: samples per clip (S) for the activation estimate.
        dtype: run-time teacher dtype (fp16 / bf16 on GPU; fp32 in CPU tests).
        memory_share: auto: share of free device memory the teacher may take, in (0, 1].
        world_size: number of ranks (``accelerator.num_processes``).

    Collective: every rank must call it (free memory is reduced to its minimum over ranks so all
    ranks choose alike, and ZeRO-3 partitions across them).

    ZeRO-3 needs a process group; the one Accelerate set up is reused (DeepSpeed creates none when
    one exists). With a single process and none up, a 1-rank group is created here.
    """
    device = torch.device(device)
    _freeze(teacher)
    param_bytes = teacher_param_bytes(teacher, dtype)
    act_bytes = estimate_activation_bytes(teacher, batch_size=batch_size, clip_samples=clip_samples, dtype=dtype)
    free = int(min_over_ranks(free_device_bytes(device), device))
    decision = decide_placement(placement=placement, teacher_param_bytes=param_bytes,
                                activation_bytes_estimate=act_bytes, free_bytes=free,
                                memory_share=memory_share, world_size=world_size)
    decision["dtype"] = str(dtype).replace("torch.", "")
    decision["device"] = str(device)
    if decision["placement"] == "replicate":
        teacher.to(device=device, dtype=dtype)
        fn = TeacherFn(_freeze(teacher), placement="replicate", device=device, input_dtype=_input_dtype(teacher))
    else:
        engine = _zero3_engine(teacher, device=device, batch_size=batch_size, dtype=dtype)
        fn = TeacherFn(engine, placement="zero3", device=device, input_dtype=_input_dtype(teacher))
        decision["zero3_local_param_numel"] = local_param_numel(engine.module)
        decision["param_numel"] = sum(p.ds_numel for p in engine.module.parameters())
    logger.info("teacher placement: %s - %s", decision["placement"], decision["reason"])
    return fn, decision


def zero3_config(batch_size: int, dtype: torch.dtype) -> dict:
    """DeepSpeed config for an inference-only ZeRO-3 teacher (no optimizer, no gradients)."""
    return {
        # DeepSpeed insists on a batch size; this is the per-rank teacher call size in clips.
        "train_micro_batch_size_per_gpu": int(batch_size),
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3},
        "fp16": {"enabled": dtype == torch.float16},
        "bf16": {"enabled": dtype == torch.bfloat16},
        "steps_per_print": 2 ** 31 - 1,  # no periodic DeepSpeed step logging (there are no steps)
        "wall_clock_breakdown": False,
    }


def _ensure_process_group(device: torch.device) -> None:
    if torch.distributed.is_initialized():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("teacher.placement=zero3 needs the process group Accelerate sets up; "
                           "create the Accelerator before place_teacher")
    import socket

    with socket.socket() as s:  # a free port for the 1-rank rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        os.environ.setdefault(key, value)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def _zero3_engine(teacher: nn.Module, *, device: torch.device, batch_size: int, dtype: torch.dtype):
    if device.type == "cpu":
        # Pick DeepSpeed's CPU accelerator explicitly instead of letting it guess (and warn).
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    _ensure_process_group(device)
    import deepspeed

    if device.type == "cpu":
        if dtype == torch.float16:
            raise ValueError("teacher.dtype=fp16 with ZeRO-3 on CPU is not supported by DeepSpeed; use bf16 or fp32")
        # DeepSpeed's CPU comm backend compiles a shared-memory all-reduce extension on first use
        # (20-70 s on 2 cores, needs a C++ compiler) that only tensor-parallel inference uses;
        # ZeRO-3 gathers parameters with torch.distributed. Marking it unavailable skips the build
        # (DeepSpeed caches this dict in the module so that such edits persist).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # The module arrives in ``dtype`` already; DeepSpeed would cast it to the fp16/bf16 of its config.
    teacher.to(dtype=dtype)
    engine, *_ = deepspeed.initialize(model=teacher, config=zero3_config(batch_size, dtype))
    engine.eval()
    _freeze(engine.module)
    PROCESS.add_engine(engine)  # released by shutdown_teacher() or, at the latest, by end_process
    return engine


def local_param_numel(module: nn.Module) -> int:
    """Parameter elements this rank holds: its ZeRO-3 partitions (``ds_tensor``), else the full tensors."""
    total = 0
    for p in module.parameters():
        ds_tensor = getattr(p, "ds_tensor", None)
        total += ds_tensor.numel() if ds_tensor is not None else p.numel()
    return total


# ------------------------------------------------------------------------------------ shutdown
def shutdown_teacher(teacher: Any = None) -> None:
    """Release every ZeRO-3 teacher engine made by ``place_teacher`` in this process.

    Removes DeepSpeed's module hooks and drops the engines, so nothing of DeepSpeed's is left
    to be torn down by the interpreter's exit. ``teacher`` (a ``TeacherFn``, the decision dict
    or None) is accepted for the caller's convenience and not needed. Safe to call more than once
    and with no ZeRO-3 teacher (it does nothing then). Collective-free: ranks need not call it
    in step.
    """
    # engine.destroy() also destroys engine.optimizer, here the DeepSpeedZeRoOffload that owns
    # the ZeRO-3 parameter fetch/release hooks.
    PROCESS.release_engines()
    if isinstance(teacher, TeacherFn):
        teacher.module = None
    gc.collect()
