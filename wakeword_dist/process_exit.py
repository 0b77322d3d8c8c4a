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
"""

from __future__ import annotations

import logging
import os
import sys


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
