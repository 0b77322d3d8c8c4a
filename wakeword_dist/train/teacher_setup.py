"""The teacher in a run: its from-scratch feature encoders, loading, freezing and placing it for
distillation, its quality gate, and the check that cached logits are its own.

Maps the typed config onto `models/teacher.py`, `models/fast_teacher.py` and `distill/placement.py`,
which never see a config object or an Accelerator.
"""

from __future__ import annotations

import torch

from wakeword_dist import collectives
from wakeword_dist.config import Config
from wakeword_dist.models.teacher import DTYPES
from wakeword_dist.train.data_setup import DataSplits, eval_loader


# ----------------------------------------------------------------------------- from-scratch encoders
def wav2vec2_conv_stack(channels: int) -> dict:
    """Wav2Vec2's own 7-layer feature encoder (total stride 320 = 20 ms frames at 16 kHz) at a
    chosen width. A shorter stack leaves hundreds of frames per second and the attention,
    quadratic in frames, dominates: 800 frames made a tiny teacher ~50x slower on CPU."""
    return {"conv_dim": (channels,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2)}


def filterbank_conv_stack(channels: int) -> dict:
    """A learned filter bank as the feature encoder: one conv of 400 taps (25 ms) at a 160-sample
    (10 ms) hop, like an STFT window, then a kernel-3 stride-2 conv to 20 ms frames (48 per 1-s clip).
    From scratch on the demo's few thousand clips it reached 0.90 val accuracy in 400 steps where
    HF's stack (first kernel 10 samples, 0.6 ms: no frequency resolution until deep layers) was at
    0.74 (docs/results.md); its steps were also faster in those runs (one conv at a 10-ms hop instead of 7 at full rate).
    `build_teacher_from_scratch` starts a first conv this long as mel-spaced Gabor filters
    (`models.teacher.init_gabor_filterbank`)."""
    return {"conv_dim": (channels, channels), "conv_kernel": (400, 3), "conv_stride": (160, 2)}


def teacher_conv_stack(kind: str, channels: int) -> dict:
    """The from-scratch teacher's conv feature encoder by name (``teacher.feature_encoder``)."""
    stacks = {"wav2vec2": wav2vec2_conv_stack, "filterbank": filterbank_conv_stack}
    return stacks[kind](channels)


# ----------------------------------------------------------------------------- frozen teacher
def quiet_transformers() -> None:
    """No per-tensor "Loading weights" bars in training logs (our own bar and banner say enough)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def frozen_teacher(cfg: Config, acc, label_names: list[str]):
    """Load, freeze and place the teacher. Returns (module, callable, placement decision)."""
    from wakeword_dist.distill.placement import place_teacher
    from wakeword_dist.models.fast_teacher import optimize_teacher
    from wakeword_dist.models.teacher import load_teacher

    quiet_transformers()
    teacher = load_teacher(cfg.teacher_path(), label_names=label_names, dtype=cfg.teacher.dtype,
                           trust_remote_code=cfg.teacher.trust_remote_code, device="cpu")
    # Exact and free: the positional conv's weight norm is folded once instead of every call.
    # Before placement, since ZeRO-3 partitions the weights.
    optimize_teacher(teacher, fold_weight_norm=True)
    fn, decision = place_teacher(
        teacher, placement=cfg.teacher.placement, device=acc.device, batch_size=cfg.data.batch_size,
        clip_samples=cfg.data.clip_samples, dtype=DTYPES[cfg.teacher.dtype],
        memory_share=cfg.teacher.memory_share, world_size=acc.num_processes)
    acc.print(f"teacher placement: {decision.get('placement')} - {decision.get('reason', '')}")
    if decision.get("placement") == "replicate":
        speed_up_teacher(teacher, cfg, acc.device)
    # recorded with the run (final.json "placement"): what the teacher really ran as
    decision["fast_teacher"] = dict(getattr(teacher, "fast_teacher", {}))
    return teacher, fn, decision


def speed_up_teacher(teacher, cfg: Config, device) -> None:
    """The configured rewrites, in place on the placed teacher (the placement's callable calls
    the same module). Only for a replicated teacher: ZeRO-3 has partitioned the weights, and
    its parameter-fetch hooks must see the original modules."""
    from wakeword_dist.models.fast_teacher import optimize_teacher

    rewrites = set(cfg.teacher.fast_forward)
    cuda_graphs = cfg.teacher.cuda_graphs and torch.device(device).type == "cuda"
    compile_mode = None if cfg.teacher.compile in ("none", "default") else cfg.teacher.compile
    if not (rewrites or cuda_graphs or cfg.teacher.compile != "none"):
        return
    optimize_teacher(teacher, fold_weight_norm=False,  # folded before placement (frozen_teacher)
                     fuse_feature_norm="fuse_feature_norm" in rewrites,
                     channels_last_encoder="channels_last_encoder" in rewrites,
                     dense_pos_conv="dense_pos_conv" in rewrites,
                     compile=cfg.teacher.compile != "none", compile_mode=compile_mode,
                     cuda_graphs=cuda_graphs)


def release_teacher(decision: dict) -> None:
    if decision.get("placement") == "zero3":
        from wakeword_dist.distill.placement import shutdown_teacher

        shutdown_teacher(decision)


# ----------------------------------------------------------------------------- checks
def teacher_quality_gate(cfg: Config, acc, teacher_fn, data: DataSplits) -> dict:
    """Refuse to distil from a teacher below `teacher.min_val_accuracy` on the val split.

    Every rank makes the same number of teacher calls (padding with silent batches), since
    a ZeRO-3 teacher hangs if one rank calls it fewer times than another."""
    loader = list(eval_loader(cfg, data, data.val_dir, batch_size=cfg.data.batch_size,
                              rank=acc.process_index, world_size=acc.num_processes, sources=data.sources))
    n_max = int(collectives.max_over_ranks(len(loader), acc.device))
    correct = total = nonfinite = 0
    for i in range(n_max):
        if i < len(loader):
            batch = loader[i]
            audio, labels = batch["audio"].to(acc.device), batch["label"].to(acc.device)
        else:
            audio, labels = torch.zeros(1, cfg.data.clip_samples, device=acc.device), None
        with torch.no_grad():
            logits = teacher_fn(audio)
        if labels is not None:
            nonfinite += int((~torch.isfinite(logits)).any(dim=-1).sum())
            keep = labels >= 0
            correct += int((logits.argmax(-1)[keep] == labels[keep]).sum())
            total += int(keep.sum())
    correct, total, nonfinite = collectives.sum_over_ranks([correct, total, nonfinite], acc.device)
    if nonfinite:  # every rank sees the same sums and raises together
        raise RuntimeError(
            f"teacher {cfg.teacher_path()} gives non-finite logits on {int(nonfinite)} of {int(total)} val clips "
            f"in teacher.dtype={cfg.teacher.dtype}; fix its weights or use teacher.dtype=bf16/fp32")
    accuracy = correct / max(total, 1)
    result = {"val_accuracy": accuracy, "val_clips": int(total), "min_val_accuracy": cfg.teacher.min_val_accuracy}
    acc.print(f"teacher val accuracy {accuracy:.4f} on {int(total)} clips (gate {cfg.teacher.min_val_accuracy})")
    if accuracy < cfg.teacher.min_val_accuracy and not cfg.teacher.skip_quality_gate:
        raise RuntimeError(
            f"teacher {cfg.teacher_path()} has val accuracy {accuracy:.4f} < teacher.min_val_accuracy="
            f"{cfg.teacher.min_val_accuracy}; train it longer or set teacher.skip_quality_gate=true")
    return result


def check_cached_logits(cfg: Config, data: DataSplits) -> None:
    """Cached distillation: the annotated split's logits must come from the configured teacher."""
    from wakeword_dist.distill.annotate import check_cached_fingerprint
    from wakeword_dist.models.teacher import load_teacher

    quiet_transformers()
    teacher = load_teacher(cfg.teacher_path(), label_names=data.label_names, dtype="fp32",
                           trust_remote_code=cfg.teacher.trust_remote_code, device="cpu")
    check_cached_fingerprint(data.train_index, teacher.fingerprint(), data.train_dir / "index.json")
