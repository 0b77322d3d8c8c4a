"""The training step (train/step.py) on CUDA under fp16 autocast: a loss-scale overflow skips the
update, lowers the scale and training goes on (without the scaler's step the next unscale_
would raise)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_fp16_overflow_lowers_the_loss_scale_and_the_next_steps_run():
    from tests.conftest import REPO
    from wakeword_dist.bench.workloads import BenchStep
    from wakeword_dist.config import load_config

    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", ["data.root=/nonexistent"])
    step = BenchStep(cfg, ["negative", "hey_nova"], "cuda", 16, "fp16")
    scaler = step.accelerator.scaler
    assert scaler is not None, "fp16 on CUDA: Accelerate's GradScaler"
    assert step.step().finite  # first step at the default scale (2**16) initialises the scaler
    weights = [p.detach().clone() for p in step.model.parameters()]
    scaler.update(2.0**100)  # loss x 2**100 overflows every fp16 activation gradient
    for _ in range(2):  # twice: the second unscale_ is where a missing scaler step would raise
        before = scaler.get_scale()
        r = step.step()
        assert r.overflow and not r.finite and scaler.get_scale() < before
    assert all(torch.equal(a, b) for a, b in zip(weights, step.model.parameters())), "skipped steps changed weights"
    scaler.update(2.0**8)
    r = step.step()
    assert r.finite and not r.overflow
    assert any(not torch.equal(a, b) for a, b in zip(weights, step.model.parameters()))
