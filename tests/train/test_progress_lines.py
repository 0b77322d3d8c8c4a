"""Progress where stderr is a file (SLURM .out, CI): plain lines every N seconds and at the
end, no carriage-return redraws."""

from __future__ import annotations

import io
import subprocess
import sys

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.train import progress


def test_line_progress_prints_every_n_seconds_and_at_close(monkeypatch):
    clock = iter([0.0, 10.0, 31.0, 40.0, 62.0, 70.0])  # time.monotonic() calls, s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress.LineProgress(total=5, initial=0, desc="distill", every_s=30.0, stream=out)  # t=0
    bar.set_postfix(loss="0.512")
    for _ in range(4):          # t = 10, 31 (line), 40, 62 (line)
        bar.update(1)
    bar.close()                 # nothing new since the line at t = 62: no line, no clock read
    lines = out.getvalue().splitlines()
    assert lines == ["distill: step 2/5 (40 %), 0.06 step/s, loss=0.512",
                     "distill: step 4/5 (80 %), 0.06 step/s, loss=0.512"]
    assert "\r" not in out.getvalue()


def test_a_training_run_logged_to_a_file_writes_lines(tiny_shards, tmp_path):
    log = tmp_path / "train.err"
    overrides = tiny_overrides(tiny_shards, tmp_path / "runs", **{
        "train.job": "baseline", "train.max_steps": 3, "logging.wandb": "disabled", "logging.progress": "true"})
    with open(log, "w") as err:  # stderr is a file, as under SLURM
        proc = subprocess.run([sys.executable, "-m", "wakeword_dist.cli", "train", "--config",
                               str(REPO / "configs" / "ci_tiny.yaml"), *overrides],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, timeout=300)
    text = log.read_bytes().decode()  # not read_text: universal newlines would turn \r into \n
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text, "tqdm redraws in a log file"
    assert [line for line in text.splitlines() if line.startswith("baseline: step")] == \
        [line for line in text.splitlines() if line.startswith("baseline: step 3/")], text[-2000:]
    assert "baseline: step 3/" in text
