"""Short real distillation runs on the GPU (tests/gpu/distill_probe.py, in its own process): bf16
teacher + bf16 autocast serial and with distill.overlap_teacher; fp16 teacher + fp16 autocast and
its loss scaler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.mark.parametrize("run", ["bf16_serial", "bf16_ahead", "fp16_serial"])
def test_short_distill_run_on_cuda(tmp_path, run):
    for module in ("soundfile", "torchaudio", "yaml"):
        pytest.importorskip(module)
    out = tmp_path / "distill.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(HERE / "distill_probe.py"), "--work", str(tmp_path), "--out", str(out),
                           "--only", run], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text())["runs"][run]
    assert proc.returncode == 0 and not report["problems"], (report, (proc.stdout + proc.stderr)[-3000:])
    assert report["device"].startswith("cuda") and report["kd_steps"] == 16
    print(f"{run}: kd loss {report['kd_loss_first']:.4f} -> {report['kd_loss_last']:.4f}, "
          f"{report['clips_per_s_median']} clips/s, val {report['final_val']}")
