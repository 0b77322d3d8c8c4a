"""Graceful stop: SIGTERM / SIGUSR1 on any rank stops all ranks at the same step.

The handler only sets a flag. At each step boundary the ranks all-reduce the flag (max), so
either all of them stop at that step or none does: no rank waits in a collective for a peer
that already left. The recipe then writes one checkpoint and exits with EXIT_REQUEUE, which
`slurm/train.sbatch` turns into `scontrol requeue`.
"""

from __future__ import annotations

import signal

import torch

from wakeword_dist.errors import EXIT_REQUEUE  # noqa: F401 - re-exported for the recipe

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopFlag:
    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def install(self) -> "StopFlag":
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):  # noqa: ARG002 - signal API
        self.received = signum

    def agreed(self, accelerator) -> bool:
        """Collective: True on every rank when any rank received a stop signal."""
        flag = torch.tensor([1.0 if self.received is not None else 0.0], device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)
