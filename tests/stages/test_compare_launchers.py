"""`compare` runs its jobs through the real launchers: here as 2-rank `accelerate launch` subprocesses."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.cli import main

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def test_compare_with_the_accelerate_launcher(tiny_shards, tiny_teacher_dir, tmp_path):
    overrides = tiny_overrides(tiny_shards, tmp_path, **{
        "teacher.name_or_path": str(tiny_teacher_dir), "compare.launcher": "accelerate",
        "compare.num_processes": 2, "compare.seeds": "[0]", "train.max_steps": 2, "logging.wandb": "disabled"})
    assert main(["compare", "--config", str(REPO / "configs" / "ci_tiny.yaml"), *overrides]) == 0
    root = tmp_path / "ci_tiny"
    for job in ("baseline", "distill"):
        final = json.loads((root / job / "seed0" / "final.json").read_text())
        assert final["world_size"] == 2 and final["step"] == 2
        assert (root / job / "seed0" / "report.json").is_file()
    comparison = json.loads((root / "comparison.json").read_text())
    assert comparison["jobs"]["distill"]["f1_macro"]["n"] == 1
