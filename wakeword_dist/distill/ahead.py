"""Online distillation with the teacher one batch ahead (``distill.overlap_teacher``).

Step n launches the teacher forward of batch n+1, then runs the student update of batch n with
the logits launched during step n-1. On a GPU the teacher runs on a second CUDA stream, so the
student's small kernels fill the SMs its large ones leave idle, and the host queues the student
step while the teacher still runs: the naive step costs teacher + student, this one about
max(teacher, student) (goal P1, docs/performance.md). On CPU there is no second stream; the order
changes and nothing else.

Results are the same as the serial step: batch n+1 is augmented with step n+1's own generator
(seeded by seed, rank and step), the teacher is frozen and draws no random numbers, and step
n+1 uses exactly the tensor its teacher saw. The cost is one more batch of audio and logits in
memory. Only for a replicated teacher: a ZeRO-3 teacher all-gathers its weights on every call,
which must stay on the main stream in the same order on every rank.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


class TeacherAhead:
    """Holds the one teacher forward launched ahead: ``launch(step, audio)``, then ``take(step)``."""

    def __init__(self, teacher_fn: Callable[[Tensor], Tensor], device: torch.device):
        self.teacher_fn = teacher_fn
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        self._pending: tuple[int, Tensor, Tensor, torch.cuda.Event | None] | None = None

    def launch(self, step: int, audio: Tensor) -> None:
        """Start the teacher on ``audio``, the augmented batch of training step ``step``."""
        if self.stream is None:
            with torch.no_grad():
                self._pending = (step, audio, self.teacher_fn(audio), None)
            return
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)  # the augmented audio is written on the main stream
        with torch.cuda.stream(self.stream), torch.no_grad():
            logits = self.teacher_fn(audio)
            done = torch.cuda.Event()
            done.record(self.stream)
        audio.record_stream(self.stream)  # not freed while the side stream still reads it
        self._pending = (step, audio, logits, done)

    def take(self, step: int) -> tuple[Tensor, Tensor] | None:
        """``(audio, logits)`` launched for ``step``, or None (nothing launched for it: the first
        step of an epoch or after a resume); a pending forward for another step is dropped."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != step:
            return None
        _, audio, logits, done = pending
        if done is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_event(done)  # this batch's teacher only, not one launched after it
            logits.record_stream(main)
        return audio, logits
