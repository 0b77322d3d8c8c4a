"""One real tiny pipeline per session (configs/ci_tiny.yaml, wandb offline), shared by the
pipeline, report.html and W&B tests so the ~50 s of stages run once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO


def pipeline_args(tmp: Path) -> list[str]:
    return ["pipeline", "--config", str(REPO / "configs" / "ci_tiny.yaml"), f"data.root={tmp / 'shards'}",
            f"run.runs_dir={tmp / 'runs'}", "logging.wandb=offline", "train.max_steps=4"]


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> dict:
    """{"args": the CLI arguments, "root": runs/ci_tiny, "out": the first run's stdout}."""
    import contextlib
    import io

    from wakeword_dist.cli import main

    tmp = tmp_path_factory.mktemp("pipeline")
    args = pipeline_args(tmp)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    assert code == 0, out.getvalue()[-3000:]
    return {"args": args, "root": tmp / "runs" / "ci_tiny", "out": out.getvalue()}
