"""Teacher placement in one process: the auto decision, estimates, replicate (ZeRO-3: test_two_ranks)."""

from __future__ import annotations

import json

import pytest
import torch

from wakeword_dist.distill.placement import (
    decide_placement, estimate_activation_bytes, place_teacher, teacher_param_bytes)

from distributed_helpers import audio_batch

DECISION_FIELDS = {"placement", "teacher_param_bytes", "activation_bytes_estimate", "free_bytes",
                   "memory_share", "reason"}
GIB = 2 ** 30


def test_auto_decision_replicates_when_it_fits_and_shards_when_not():
    fits = decide_placement(placement="auto", teacher_param_bytes=200 * 2 ** 20, activation_bytes_estimate=2 ** 20,
                            free_bytes=8 * GIB, memory_share=0.5, world_size=2)
    assert fits["placement"] == "replicate" and DECISION_FIELDS <= fits.keys()
    tight = decide_placement(placement="auto", teacher_param_bytes=200 * 2 ** 20, activation_bytes_estimate=2 ** 20,
                             free_bytes=8 * GIB, memory_share=0.01, world_size=2)
    assert tight["placement"] == "zero3" and "does not fit" in tight["reason"]
    alone = decide_placement(placement="auto", teacher_param_bytes=200 * 2 ** 20, activation_bytes_estimate=2 ** 20,
                             free_bytes=8 * GIB, memory_share=0.01, world_size=1)
    assert alone["placement"] == "replicate" and "cannot shard" in alone["reason"]
    forced = decide_placement(placement="zero3", teacher_param_bytes=1, activation_bytes_estimate=1,
                              free_bytes=GIB, memory_share=0.5, world_size=2)
    assert forced["placement"] == "zero3" and forced["requested"] == "zero3"
    with pytest.raises(ValueError, match="teacher.placement"):
        decide_placement(placement="zero2", teacher_param_bytes=1, activation_bytes_estimate=1,
                         free_bytes=GIB, memory_share=0.5, world_size=2)


def test_estimates_scale_with_dtype_and_batch(teacher):
    n = sum(p.numel() for p in teacher.parameters())
    assert teacher_param_bytes(teacher, torch.float16) >= 2 * n
    assert teacher_param_bytes(teacher, torch.float32) >= 4 * n
    one = estimate_activation_bytes(teacher, batch_size=1, clip_samples=16000, dtype=torch.float16)
    eight = estimate_activation_bytes(teacher, batch_size=8, clip_samples=16000, dtype=torch.float16)
    assert eight == 8 * one
    # first conv: 32 channels x 3199 frames, fp16, input + output (GroupNorm) x headroom 2
    assert one >= 2 * 32 * 3199 * 2


def test_auto_replicates_tiny_teacher_and_matches_direct_forward(teacher):
    audio = audio_batch()
    expected = teacher(audio)
    fn, decision = place_teacher(teacher, placement="auto", device=torch.device("cpu"), batch_size=3,
                                 clip_samples=16000, dtype=torch.float32, memory_share=0.5, world_size=1)
    assert decision["placement"] == "replicate", decision
    assert DECISION_FIELDS <= decision.keys()
    json.dumps(decision)  # recorded with the run
    logits = fn(audio)
    assert logits.dtype == torch.float32 and logits.shape == (3, 3) and not logits.requires_grad
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    assert not fn.lockstep


def test_replicate_casts_to_bf16_and_returns_float32(teacher):
    audio = audio_batch()
    expected = teacher(audio)
    fn, decision = place_teacher(teacher, placement="replicate", device=torch.device("cpu"), batch_size=3,
                                 clip_samples=16000, dtype=torch.bfloat16, memory_share=0.5, world_size=1)
    assert decision["dtype"] == "bfloat16"
    assert {p.dtype for p in fn.module.parameters()} == {torch.bfloat16}
    logits = fn(audio)
    assert logits.dtype == torch.float32
    assert (logits - expected).abs().max() < 0.1  # bf16: ~3 significant digits
