"""Fixtures of the distributed-teacher tests (placement, annotate).

Two-rank tests start real interpreters with the torchrun environment (``run_ranks`` in
distributed_helpers), not ``accelerate.debug_launcher``: that forks the pytest process, and a fork
of a process that already ran a parallel CPU op deadlocks in GNU OpenMP. One launch (~20-30 s on
2 busy cores, mostly imports) serves every test in test_two_ranks.py.
"""

from __future__ import annotations

import pytest

from distributed_helpers import tiny_teacher


@pytest.fixture
def teacher():
    """A fresh frozen tiny fp32 teacher (placement modifies the module it is given)."""
    return tiny_teacher()
