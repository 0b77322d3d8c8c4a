"""Student registry: ``build_student(name, num_classes, ...)`` → raw audio (B, S) → logits (B, C)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .bc_resnet import BCResNet
from .frontend import LogMel, SpecAugment, as_batch_audio
from .mobilenet import MobileNetV3Small
from .tiny_conv import TinyConv


class Student(nn.Module):
    """Front end + (training-only) SpecAugment + body: audio (B, S) or (B, 1, S) → logits (B, C).

    ``arch_args`` holds the exact ``build_student`` arguments, so a checkpoint can rebuild the
    module (``build_student(**arch_args)``).
    """

    def __init__(self, frontend: LogMel, body: nn.Module, specaugment: SpecAugment | None, arch_args: dict):
        super().__init__()
        self.frontend = frontend
        self.specaugment = specaugment
        self.body = body
        self.arch_args = dict(arch_args)

    def forward(self, audio: Tensor) -> Tensor:
        feats = self.frontend(as_batch_audio(audio))  # (B, 1, n_mels, T)
        if self.specaugment is not None and self.training:
            feats = self.specaugment(feats)
        return self.body(feats)


@dataclass(frozen=True)
class StudentSpec:
    body: Callable[..., nn.Module]
    base_width: float  # multiplied by build_student's ``width``
    description: str


STUDENTS: dict[str, StudentSpec] = {
    "tiny_conv": StudentSpec(TinyConv, 1.0, "4-layer plain CNN, ≤100k params"),
    "mobilenetv3_small": StudentSpec(MobileNetV3Small, 1.0, "MobileNetV3-Small on 1-ch log-mel"),
    "bc_resnet": StudentSpec(BCResNet, 1.0, "BC-ResNet, width τ (BC-ResNet-τ)"),
    "bc_resnet1": StudentSpec(BCResNet, 1.0, "BC-ResNet-1 (~10k params)"),
    "bc_resnet8": StudentSpec(BCResNet, 8.0, "BC-ResNet-8 (~320k params)"),
}


def build_student(
    name: str,
    num_classes: int,
    *,
    sample_rate: int = 16000,
    n_mels: int = 40,
    width: float = 1.0,
    specaugment: dict | None = None,
    **frontend_kwargs: Any,
) -> Student:
    """Build a registered student: raw audio (B, S) at ``sample_rate`` Hz → logits (B, num_classes).

    Args:
        name: a key of ``STUDENTS``.
        num_classes: output classes C.
        sample_rate: Hz of the raw input audio.
        n_mels: mel bins of the front end.
        width: channel multiplier (for the ``bc_resnet1``/``bc_resnet8`` aliases it multiplies τ).
        specaugment: ``SpecAugment`` kwargs ({} = its defaults), or None for no feature masking.
        **frontend_kwargs: extra ``LogMel`` kwargs (win_ms, hop_ms, n_fft, f_min, f_max, top_db).
    """
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; known: {sorted(STUDENTS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    spec = STUDENTS[name]
    frontend = LogMel(sample_rate=sample_rate, n_mels=n_mels, **frontend_kwargs)
    body = spec.body(num_classes, n_mels=n_mels, width=width * spec.base_width)
    augment = SpecAugment(**specaugment) if specaugment is not None else None  # {} = defaults
    arch_args = dict(
        name=name, num_classes=num_classes, sample_rate=sample_rate, n_mels=n_mels, width=width,
        specaugment=dict(specaugment) if specaugment is not None else None, **frontend_kwargs,
    )
    return Student(frontend, body, augment, arch_args)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def list_students(num_classes: int = 12) -> dict[str, int]:
    """Name → parameter count at width 1, 40 mels, ``num_classes`` outputs (12 = Speech Commands)."""
    return {name: count_parameters(build_student(name, num_classes)) for name in STUDENTS}
