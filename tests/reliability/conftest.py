"""Fixtures of tests/reliability: faults and bad input never lose work or hang a cluster.

What each test proves is tabled in docs/reliability.md. The 2-rank tests go through the real
launcher (`accelerate launch` + launch/accelerate/cpu_ddp.yaml) and assert world size 2; the
rest run the recipe in this process on the session's tiny dataset (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import corrupt_copy


@pytest.fixture(scope="session")
def bad_shards(tiny_shards, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny dataset with a damaged train split (see `corrupt_copy`): (root, what was damaged)."""
    root = tmp_path_factory.mktemp("bad") / "tiny"
    return root, corrupt_copy(tiny_shards, root)


@pytest.fixture(scope="session")
def finished_run(tiny_shards, tmp_path_factory) -> dict:
    """A 4-step baseline run with its checkpoint at step 4. Read-only: copy before changing it."""
    from reliability_helpers import CI_TINY

    from tests.conftest import tiny_overrides
    from wakeword_dist.config import load_config
    from wakeword_dist.train.recipe import run

    runs = tmp_path_factory.mktemp("finished")
    overrides = tiny_overrides(tiny_shards, runs, **{"train.job": "baseline", "train.max_steps": 4,
                                                     "train.eval_every": 0, "logging.wandb": "disabled"})
    cfg = load_config(CI_TINY, overrides)
    run(cfg)
    return {"runs": runs, "run_dir": cfg.job_dir(), "overrides": overrides}
