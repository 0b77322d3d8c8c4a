"""Shared helpers of tests/gpu (run by launch/gpu_check.sh on a CUDA machine; skipped elsewhere)."""

from __future__ import annotations

import copy

import torch

LABELS = ["negative", "hey_nova", "other"]
# wav2vec2-base layout (7 convs, stride 320 -> 49 frames/s; positional conv 128 taps / 16 groups)
# at reduced widths, so each test builds its teacher in well under a second.
SMALL_W2V2 = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  conv_dim=(128,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def teacher(dtype: str = "fp32", device="cuda", seed: int = 0, **arch):
    """A frozen random-init ``TeacherModel`` (``SMALL_W2V2`` unless ``arch`` given) on ``device``."""
    from wakeword_dist.models.teacher import TeacherModel, build_teacher_from_scratch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = build_teacher_from_scratch(LABELS, **(arch or SMALL_W2V2))
    return TeacherModel(hf, label_names=LABELS, name_or_path="gpu-test", dtype=dtype).freeze().to(device)


def recast(t, dtype: str):
    """A deep copy of a frozen teacher in another dtype."""
    from wakeword_dist.models.teacher import DTYPES

    out = copy.deepcopy(t)
    out.dtype_name = dtype
    return out.to(DTYPES[dtype])


def audio(batch: int = 8, samples: int = 16000, seed: int = 1, device="cuda") -> torch.Tensor:
    return (0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))).to(device)


def rel(z: torch.Tensor, ref: torch.Tensor) -> float:
    """max |z - ref| / max |ref| (the benchmark's logit-error measure)."""
    return float((z.float() - ref.float()).abs().max() / ref.float().abs().max())


class NoTF32:
    """True fp32 on the GPU for reference logits."""

    def __enter__(self):
        self.old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.old
        return False
