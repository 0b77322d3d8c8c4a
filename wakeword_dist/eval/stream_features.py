"""Stream scoring without recomputing overlapping STFT frames: exact, the front end ~7x cheaper.

The per-window path (``report.score_streams(..., exact_windows=True)``) runs the whole student on
every 1-s window at a 0.1-s hop, so each 25-ms STFT frame is computed ~10 times. Here the mel
power of a run of consecutive windows is computed once from the stream and each window's
(n_mels, T) power is gathered from it. That is exact because a window starting at a multiple of
the STFT hop sees, in its *interior* frames, the very samples the stream STFT sees:

    frame t of a window of S samples is the n_fft samples [t·h − n_fft/2, t·h + n_fft/2) of the
    window (centred STFT, h = STFT hop); it is interior iff that span lies inside [0, S).

The few *edge* frames whose span crosses the window boundary hold reflect-padded samples of the
window itself (2 at each end for 1-s windows, 400-sample analysis window, 512 FFT, 160 hop); they
are computed by the front end's own transform on a short slice of the window (the first
L_left / last L_right samples), which pads them exactly as the per-window STFT does. Then the
per-window dB + top_db floor (``LogMel.power_to_db``: the peak is each window's own), CMVN
(``LogMel.normalize``) and the body, as ``Student.forward`` in eval mode (no SpecAugment).

On CPU the front end drops from ~1.5 to ~0.2 ms a window; what remains is the body's own cost
(tiny_conv ~4x faster overall, mobilenetv3_small / bc_resnet ~1.3-1.9x; docs/performance.md).

Memory is bounded: windows go ``batch_size`` at a time, each chunk's stream slice is
(batch_size − 1)·hop + window samples, so a multi-hour stream costs what one chunk does.

Benchmark (per-window vs this, side by side on one synthetic stream):

    python -m wakeword_dist.eval.stream_features --minutes 8 [--student tiny_conv]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from wakeword_dist.eval.detector import frame_windows
from wakeword_dist.models.frontend import LogMel, _float32_region
from wakeword_dist.models.registry import Student


@dataclass(frozen=True)
class WindowFrames:
    """Where a window's STFT frames come from (all in samples / frames of the STFT hop).

    frames: T frames per window; ratio: window hop / STFT hop (frames between window starts);
    left: frames [0, left) are left-edge; right_start: frames [right_start, T) are right-edge;
    left_len: samples of the window's head that reproduce the left-edge frames; right_from:
    first sample (a multiple of the STFT hop) of the window's tail that reproduces the right ones.
    """

    frames: int
    ratio: int
    left: int
    right_start: int
    left_len: int
    right_from: int


def plan_frames(frontend: LogMel, window_samples: int, hop_samples: int) -> WindowFrames | None:
    """The frame plan for windows of ``window_samples`` every ``hop_samples``, or None when the
    fast path does not apply (no centred reflect-padded STFT, window hop not a multiple of the
    STFT hop, windows that do not overlap, or windows so short that edges cover them)."""
    spec = frontend.mel.spectrogram
    h, n_fft, win = int(spec.hop_length), int(spec.n_fft), int(window_samples)
    if not (spec.center and spec.pad_mode == "reflect") or hop_samples % h or hop_samples >= win:
        return None
    pad = n_fft // 2                                  # torch.stft's centre padding, samples
    frames = win // h + 1
    left = math.ceil(pad / h)                         # t·h − pad < 0
    right_start = (win - (n_fft - pad)) // h + 1      # t·h − pad + n_fft > win
    # Head slice: the left-edge frames' spans end at (left − 1)·h − pad + n_fft; reflect padding
    # needs more than ``pad`` samples.
    left_len = max((left - 1) * h - pad + n_fft, pad + 1)
    # Tail slice: starts on the STFT grid at or before the first right-edge span; > pad samples.
    right_from = ((right_start * h - pad) // h) * h
    while right_from > 0 and win - right_from <= pad:
        right_from -= h
    if left >= right_start or left_len >= win or right_from <= 0 or win - right_from <= pad:
        return None
    return WindowFrames(frames, hop_samples // h, left, right_start, left_len, right_from)


def fast_frontend(model: torch.nn.Module, window_samples: int, hop_samples: int
                  ) -> tuple[LogMel, WindowFrames] | None:
    """(front end, plan) when ``model`` is a Student whose LogMel front end admits the fast
    path at this window / hop; None otherwise (ONNX adapters, other models: per-window path)."""
    if not isinstance(model, Student) or not isinstance(model.frontend, LogMel):
        return None
    plan = plan_frames(model.frontend, window_samples, hop_samples)
    return None if plan is None else (model.frontend, plan)


def window_mel_power(frontend: LogMel, plan: WindowFrames, windows: np.ndarray,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, window) consecutive windows (window i+1 starts ``hop`` samples after window i, as
    ``detector.frame_windows`` gives) → (B, n_mels, T) float32 mel power of each window, equal to
    ``frontend.mel(windows)``: interior frames from one STFT of the windows' stream slice, edge
    frames from each window's own head / tail."""
    b, win = windows.shape
    hop = plan.ratio * int(frontend.mel.spectrogram.hop_length)
    # The slice of stream these windows cover: each window's first hop samples, then the last
    # window whole ((B − 1)·hop + window samples).
    stream = np.concatenate([windows[:-1, :hop].reshape(-1), windows[-1]])
    with _float32_region(torch.device(device).type):
        stream_power = frontend.mel(torch.from_numpy(stream).to(device)[None])[0]  # (n_mels, F)
        # Window k's frames are stream frames k·ratio .. k·ratio + T − 1: a strided view, one copy.
        power = stream_power.unfold(1, plan.frames, plan.ratio)[:, :b]              # (n_mels, B, T)
        power = power.permute(1, 0, 2).contiguous()                                 # (B, n_mels, T)
        head = torch.from_numpy(np.array(windows[:, :plan.left_len])).to(device)
        power[:, :, :plan.left] = frontend.mel(head)[:, :, :plan.left]
        tail = torch.from_numpy(np.array(windows[:, plan.right_from:])).to(device)
        first = plan.right_from // int(frontend.mel.spectrogram.hop_length)        # tail frame 0
        power[:, :, plan.right_start:] = frontend.mel(tail)[:, :, plan.right_start - first:]
    return power


@torch.inference_mode()
def score_windows(model: Student, plan: WindowFrames, windows: np.ndarray, *,
                  positive_index: int, device: str | torch.device = "cpu") -> np.ndarray:
    """(B, window) consecutive windows → (B,) float64 positive-class probability, as
    ``softmax(model(windows))[:, positive_index]`` with the model in eval mode."""
    frontend = model.frontend
    with _float32_region(torch.device(device).type):
        feats = frontend.normalize(frontend.power_to_db(
            window_mel_power(frontend, plan, windows, device)))                     # (B, 1, F, T)
    logits = model.body(feats)
    probs = torch.softmax(logits.float(), dim=-1)[:, positive_index]
    return probs.cpu().numpy().astype(np.float64)


def stream_scores(model: Student, plan: WindowFrames, waveform: np.ndarray, *, window_samples: int,
                  hop_samples: int, positive_index: int, device: str | torch.device = "cpu",
                  batch_size: int = 256, progress=None) -> np.ndarray:
    """(N,) float32 stream → (T,) float64 frame scores over ``detector.frame_windows`` (tail
    zero-padded), ``batch_size`` windows at a time. ``progress``: wraps the chunk starts (tqdm)."""
    windows = frame_windows(waveform, window_samples, hop_samples)   # (T, window) strided view
    out = np.empty(len(windows), dtype=np.float64)
    starts = range(0, len(windows), batch_size)
    for start in (progress(starts) if progress is not None else starts):
        chunk = windows[start:start + batch_size]
        out[start:start + len(chunk)] = score_windows(model, plan, chunk,
                                                      positive_index=positive_index, device=device)
    return out


def _benchmark(argv: list[str] | None = None) -> int:
    from wakeword_dist.eval.report import score_streams
    from wakeword_dist.models.registry import STUDENTS, build_student

    p = argparse.ArgumentParser(prog="python -m wakeword_dist.eval.stream_features",
                                description="Time per-window vs shared-STFT stream scoring.")
    p.add_argument("--minutes", type=float, default=8.0, help="synthetic stream length, minutes")
    p.add_argument("--student", default="tiny_conv", choices=sorted(STUDENTS))
    p.add_argument("--batch-size", type=int, default=128,
                   help="windows per forward (128 = the eval.batch_size default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sr = 16000
    torch.manual_seed(args.seed)
    model = build_student(args.student, 2).eval()
    rng = np.random.default_rng(args.seed)
    n = int(args.minutes * 60 * sr)
    # Pink-ish noise with a slow loudness swing, so the per-window top_db floor varies (amplitude).
    wave = (np.cumsum(rng.standard_normal(n)) * 1e-3).astype(np.float32)
    wave -= np.convolve(wave, np.ones(400) / 400, mode="same").astype(np.float32)
    wave *= (0.5 + 0.45 * np.sin(np.arange(n) / sr * 0.7)).astype(np.float32)
    # Random-init BatchNorm stats (mean 0, var 1) against dB-scale features leave the scores of
    # mobilenetv3_small / bc_resnet constant to ~1e-9, so |diff| would prove nothing: calibrate
    # them on 256 of the stream's windows first (timing is unaffected).
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        norm.reset_running_stats()
        norm.momentum = None                      # cumulative average over the one pass
    model.train()
    with torch.no_grad():
        model.body(model.frontend(torch.from_numpy(np.array(frame_windows(wave, sr, sr // 10)[:256]))))
    model.eval()
    items = [("bench", wave, sr)]
    timings, scores = {}, {}
    for exact in (True, False):
        t0 = time.perf_counter()
        _, s, _ = score_streams(model, items, positive_index=1, batch_size=args.batch_size,
                                progress=False, exact_windows=exact)
        timings[exact], scores[exact] = time.perf_counter() - t0, s[0]
    diff = float(np.max(np.abs(scores[True] - scores[False])))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.student} {args.minutes:g} min ({len(scores[True])} windows), "
          f"torch threads {torch.get_num_threads()}, load {load:.1f}: per-window "
          f"{timings[True]:.2f} s, fast {timings[False]:.2f} s, ratio "
          f"{timings[True] / timings[False]:.1f}x, max |diff| {diff:.1e} (score std "
          f"{scores[True].std():.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(_benchmark())
