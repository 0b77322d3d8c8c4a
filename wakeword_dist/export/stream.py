"""Streaming wake-word runner on an exported ONNX model alone (onnxruntime + numpy; no torch).

    python -m wakeword_dist.export.stream model.onnx file.wav [--threshold 0.5] [--positive-index 1]

Slides windows of the model's input length (1 s) at ``hop_s`` (0.1 s) over the file,
applies the same smoothing + lockout detector as evaluation
(``wakeword_dist.eval.detector.count_activations``) and prints one line per activation:
``detection at 12.30 s (score 0.97)``. Times are window ends — when a live detector
would fire. Audio at another sample rate is resampled with scipy's polyphase filter
(``scipy.signal.resample_poly``); without scipy such a file is refused with an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from wakeword_dist.eval.detector import (activation_frames, frame_windows, lockout_frames,
                                         smooth_scores)


def load_model(onnx_path: str | Path):
    """(session, sample_rate Hz, window_samples) from the model and its export metadata."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    sample_rate = int(meta.get("sample_rate", 16000))
    shape = session.get_inputs()[0].shape                 # ["batch", clip_samples]
    window = int(meta["clip_samples"]) if "clip_samples" in meta else int(shape[1])
    return session, sample_rate, window


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 (N,) at ``sample_rate`` Hz; channels are averaged."""
    import soundfile as sf
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        try:
            from scipy.signal import resample_poly
        except ImportError as e:
            raise SystemExit(f"{path} is at {sr} Hz but the model expects {sample_rate} Hz and scipy "
                             f"is not installed to resample; convert it first (e.g. sox in.wav -r "
                             f"{sample_rate} out.wav)") from e
        ratio = Fraction(sample_rate, sr)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
    return audio


def frame_scores(session, audio: np.ndarray, window: int, hop: int, positive_index: int,
                 batch_size: int = 64) -> np.ndarray:
    """(T,) positive-class probability of each window (window t starts at t·hop samples)."""
    windows = frame_windows(audio, window, hop)
    name = session.get_inputs()[0].name
    out = np.empty(len(windows), dtype=np.float64)
    for start in range(0, len(windows), batch_size):
        chunk = np.ascontiguousarray(windows[start:start + batch_size], dtype=np.float32)
        out[start:start + len(chunk)] = session.run(None, {name: chunk})[0][:, positive_index]
    return out


def detect(onnx_path: str | Path, audio_path: str | Path, *, threshold: float = 0.5,
           positive_index: int = 1, hop_s: float = 0.1, smoothing_frames: int = 1,
           lockout_s: float = 1.0) -> list[tuple[float, float]]:
    """[(time_s at window end, smoothed score)] for each activation in the file."""
    session, sample_rate, window = load_model(onnx_path)
    audio = load_audio(audio_path, sample_rate)
    hop = round(hop_s * sample_rate)
    smoothed = smooth_scores(frame_scores(session, audio, window, hop, positive_index),
                             smoothing_frames)
    fired = activation_frames(smoothed, threshold, lockout_frames(lockout_s, hop_s))
    return [((t * hop + window) / sample_rate, float(smoothed[t])) for t in fired.tolist()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wakeword_dist.export.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="exported .onnx (fp32 or int8)")
    p.add_argument("audio", help="wav/flac file")
    p.add_argument("--threshold", type=float, default=0.5, help="on the smoothed probability")
    p.add_argument("--positive-index", type=int, default=1, help="wake-word class index")
    p.add_argument("--hop-s", type=float, default=0.1, help="window hop in seconds")
    p.add_argument("--smoothing-frames", type=int, default=1, help="causal moving average, frames")
    p.add_argument("--lockout-s", type=float, default=1.0, help="no new activation for this long (s)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    args = p.parse_args(argv)
    hits = detect(args.model, args.audio, threshold=args.threshold,
                  positive_index=args.positive_index, hop_s=args.hop_s,
                  smoothing_frames=args.smoothing_frames, lockout_s=args.lockout_s)
    if args.json:
        print(json.dumps([{"time_s": t, "score": s} for t, s in hits]))
    else:
        for t, s in hits:
            print(f"detection at {t:.2f} s (score {s:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
