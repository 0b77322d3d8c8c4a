"""Helpers for the distributed-teacher tests (placement, annotate).

Two-rank tests run in-process through ``accelerate.debug_launcher`` (fork, gloo over a FileStore:
no ports, ~1 s per launch once imports are warm). DeepSpeed compiles a small shared-memory comm
extension on first use (~20-70 s on 2 cores, cached under ~/.cache/torch_extensions afterwards).
"""

from __future__ import annotations

import os

import pytest
from distributed_helpers import tiny_teacher

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed: do not probe for GPUs in CPU tests


@pytest.fixture
def teacher():
    """A fresh frozen tiny fp32 teacher."""
    return tiny_teacher()
