"""Graceful stop: SIGTERM / SIGUSR1 on any rank stops all ranks at the same step.

The handler only sets a flag. Every step the ranks sum their flags (inside the step's one
small all-reduce, with the finite flag and the losses), so either all of them stop at that
step's boundary or none does: no rank waits in a collective for a peer that already left.
The recipe then writes one checkpoint and exits with EXIT_REQUEUE, which
`slurm/train.sbatch` turns into `scontrol requeue`.

Under `accelerate launch` / torchrun each rank also asks the kernel for a SIGTERM when its
launcher dies (PR_SET_PDEATHSIG): torchrun starts ranks in their own sessions, so a `kill -9`
of the launcher alone used to leave both ranks training on as orphans (measured), racing any
restarted job for the same run folder. Now they stop at the next step with a checkpoint.
Tests: tests/reliability/test_kill_and_preempt.py.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import torch

from wakeword_dist.errors import EXIT_REQUEUE  # noqa: F401 - re-exported for the recipe

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_when_launcher_dies(signum: int = signal.SIGTERM) -> bool:
    """Linux, under torchrun only: have the kernel send `signum` when the launcher exits.

    Only for ranks started by an elastic agent (TORCHELASTIC_RUN_ID set): a plain
    `python launch/train.py` has a shell as parent, whose exit must not stop training.
    Returns whether the request was made."""
    if not sys.platform.startswith("linux") or not _under_elastic_agent():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _under_elastic_agent() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


class StopFlag:
    def __init__(self):
        self.received: int | None = None   # the signal this rank got, if any
        self.stopping = False               # all ranks agreed to stop (this rank got one or not)
        self._previous = {}

    def install(self) -> "StopFlag":
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        stop_when_launcher_dies(signal.SIGTERM)
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers, except on a rank that is stopping under torchrun: it
        ignores further stop signals while it leaves. The first rank to exit 75 makes the agent
        SIGTERM the others, which may still be on their way out (measured: a rank
        that had agreed to stop then reported -15 instead of 75)."""
        ignore = self.stopping and _under_elastic_agent()
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore else handler)
        self._previous.clear()

    def _handle(self, signum, frame):  # noqa: ARG002 - signal API
        self.received = signum

    def vote(self) -> float:
        """This rank's vote (1.0 = got a stop signal); sum it over ranks and pass it to ``settle``."""
        return 1.0 if self.received is not None else 0.0

    def settle(self, votes: float) -> bool:
        """Record the sum of all ranks' votes (from one all-reduce, so every rank decides the
        same): True when any rank received a stop signal."""
        self.stopping = votes > 0
        return self.stopping

    def agreed(self, accelerator) -> bool:
        """Collective: vote and settle in an all-reduce of its own (outside the training step)."""
        votes = torch.tensor([self.vote()], device=accelerator.device)
        if accelerator.num_processes > 1:
            votes = accelerator.reduce(votes, reduction="sum")
        return self.settle(float(votes.item()))
