"""How a wakeword-dist process ends: process group torn down, then, for ranks, ``os._exit``.

Why: a rank that leaves the interpreter's own shutdown to free torch.distributed state dies now
and then with "terminate called without an active exception" (SIGABRT, exit -6), and
`accelerate launch` / torchrun then fails the whole job. Seen in CI on a 2-rank `evaluate` (the
process group was still up) and on a 2-rank `train` whose process group had been destroyed
(DDP's reducer still held it): C++ threads of gloo and the c10d store are destroyed in arbitrary
order at interpreter teardown. Measured here: 1 abort in 12 two-rank evaluates before the
barrier + destroy below, 0 in 30 after; the train abort is rarer (0 in 30 runs of a loop, 1 in
~15 two-rank launches of a CI suite). After DeepSpeed it was reported in ~1 exit in 3.
``os._exit`` skips that teardown; it
also skips ``atexit`` handlers and unflushed buffers, so ``hard_exit`` flushes first and must
be the last statement (W&B runs are finished and files closed by then).

``end_process(code, state)`` is the one way out (the CLI's ``exit_with`` and the test programs
call it); ``state`` (an ``ExitState``, this process's is ``PROCESS``) carries what the exit must
undo: the ZeRO-3 teacher engines still alive (``distill/placement.py`` adds them) and whether
DeepSpeed ran here at all.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn


def was_launched_as_rank() -> bool:
    """One of several processes (torchrun / accelerate launch / srun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def end_process_group(*, barrier: bool) -> None:
    """Destroy the torch.distributed process group if one is up, after a barrier if asked: on
    success a rank that returned early (rank 1 of `evaluate` while rank 0 writes the report)
    waits for the others; after a failure the others may be gone, and destroying is local."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier:
        dist.barrier()
    dist.destroy_process_group()


def hard_exit(code: int) -> None:
    """Flush logs and standard streams, then ``os._exit(code)``: no interpreter teardown."""
    try:
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


@dataclass
class ExitState:
    """What ending a process must undo: the DeepSpeed (ZeRO-3 teacher) engines still alive, and
    whether DeepSpeed ran in this process at all -- even with its engines released, the
    interpreter's teardown of its threads is what aborted ~1 exit in 3, so such a process
    leaves by ``os._exit``."""

    engines: list[Any] = field(default_factory=list)
    ran_deepspeed: bool = False

    def add_engine(self, engine: Any) -> None:
        self.engines.append(engine)
        self.ran_deepspeed = True

    def release_engines(self) -> None:
        """Destroy every engine (DeepSpeed's parameter hooks with it); safe to call again. An
        engine still needs the process group, so this comes before ``end_process_group``."""
        while self.engines:
            self.engines.pop().destroy()
        gc.collect()


PROCESS = ExitState()  # this process's state: os._exit and the process group are per process


def end_process(code: int, state: ExitState, *, barrier: Callable[[], None] | None = None) -> NoReturn:
    """End the process with ``code``: release ``state``'s engines, wait at ``barrier`` if given
    (else a process-group barrier on success: a rank that returned early waits for the others),
    destroy the process group, then leave by ``os._exit`` for a launched rank or after DeepSpeed
    (``hard_exit``; why: this module's doc), by ``sys.exit`` otherwise. A failed teardown still
    ends such a process hard, with code 1 if ``code`` was 0: never leave it to the interpreter.
    The very last statement: after W&B ``finish()`` and after files are closed."""
    hard = state.ran_deepspeed or was_launched_as_rank()
    try:
        state.release_engines()
        if barrier is not None:
            barrier()
        end_process_group(barrier=barrier is None and code == 0)
    except BaseException:
        if not hard:
            raise
        logging.getLogger(__name__).exception("process teardown failed; leaving by os._exit")
        code = code or 1
    if hard:
        hard_exit(code)
    sys.exit(code)
