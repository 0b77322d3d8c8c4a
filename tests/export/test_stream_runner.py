"""Torch-free streaming runner finds synthetic tone "wake words" in a wav."""
import subprocess
import sys

import numpy as np
import soundfile as sf
from tests.standins import SR, tone_stream

from wakeword_dist.export.stream import detect


def test_detect_finds_events_once_each(tone_onnx, tmp_path):
    wav = tmp_path / "events.wav"
    sf.write(wav, tone_stream(12.0, [3.0, 7.2]), SR)
    hits = detect(tone_onnx, wav, threshold=0.5, positive_index=1, lockout_s=1.0)
    times = [t for t, _ in hits]
    assert len(times) == 2
    assert 3.0 < times[0] < 4.0 and 7.2 < times[1] < 8.2     # window end after burst start
    assert all(0.5 <= s <= 1.0 for _, s in hits)


def test_detect_resamples_other_rates(tone_onnx, tmp_path):
    from scipy.signal import resample_poly
    x = resample_poly(tone_stream(8.0, [4.0]), 1, 2).astype(np.float32)   # 8 kHz file
    wav = tmp_path / "8k.wav"
    sf.write(wav, x, 8000)
    times = [t for t, _ in detect(tone_onnx, wav, threshold=0.5)]
    assert len(times) == 1 and 4.0 < times[0] < 5.0


def test_cli_prints_detections_without_torch(tone_onnx, tmp_path):
    wav = tmp_path / "cli.wav"
    sf.write(wav, tone_stream(6.0, [2.0]), SR)
    code = ("import sys, runpy; sys.argv = ['stream', %r, %r, '--threshold', '0.5', "
            "'--positive-index', '1']; runpy.run_module('wakeword_dist.export.stream', "
            "run_name='__main__', alter_sys=True)" % (str(tone_onnx), str(wav)))
    guard = "import sys; sys.modules['torch'] = None; "           # any torch import would fail
    proc = subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("detection at ") and "(score " in lines[0]
    t = float(lines[0].split()[2])
    assert 2.0 < t < 3.0
