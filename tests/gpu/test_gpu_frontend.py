"""Student front end and student on CUDA give the CPU's features and logits."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _audio(batch=16, samples=16000, seed=3):
    g = torch.Generator().manual_seed(seed)
    # speech-like level plus one silent and one full-scale clip (the top_db floor and fp16-range edges)
    x = 0.1 * torch.randn(batch, samples, generator=g)
    x[0] = 0.0
    x[1] = torch.sin(torch.arange(samples) * 0.3)
    return x


def test_logmel_on_cuda_matches_cpu():
    pytest.importorskip("torchaudio")
    from wakeword_dist.models.frontend import LogMel

    fe = LogMel()
    x = _audio()
    cpu = fe(x)
    gpu = fe.to("cuda")(x.cuda()).cpu()
    assert gpu.shape == cpu.shape == (16, 1, 40, 101)
    assert torch.allclose(gpu, cpu, atol=1e-2, rtol=0), float((gpu - cpu).abs().max())  # dB
    with torch.autocast("cuda", dtype=torch.bfloat16):  # the recipe's student autocast
        under_autocast = fe(x.cuda()).cpu()
    assert under_autocast.dtype == torch.float32 and torch.allclose(under_autocast, cpu, atol=1e-2, rtol=0)


@pytest.mark.parametrize("name", ["tiny_conv", "bc_resnet", "mobilenetv3_small"])
def test_student_logits_on_cuda_match_cpu(name):
    pytest.importorskip("torchaudio")
    from wakeword_dist.models.registry import build_student

    torch.manual_seed(0)
    model = build_student(name, 2).eval()
    x = _audio()
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to("cuda")(x.cuda()).cpu()
    scale = cpu.abs().max().clamp_min(1e-6)
    assert float((gpu - cpu).abs().max() / scale) < 1e-3
