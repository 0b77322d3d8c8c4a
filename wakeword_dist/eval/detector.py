"""Streaming wake-word detector: smoothing, activations, false accepts per hour.

Numpy only (no torch) so the ONNX streaming runner can share it. A stream is scored as a
sequence of *frames*: frame t is the window of ``window_s`` seconds starting at
``t * hop_s`` seconds; ``frame_scores`` (T,) holds the positive-class probability of each.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def smooth_scores(frame_scores: np.ndarray, smoothing_frames: int) -> np.ndarray:
    """Causal moving average: s[t] = mean(x[max(0, t−k+1) .. t]) with k = smoothing_frames.

    The first k−1 frames average only the frames seen so far (no look-ahead, no zero
    padding). k = 1 returns the scores unchanged. (T,) in, (T,) float64 out.
    """
    x = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    k = int(smoothing_frames)
    if k < 1:
        raise ValueError(f"smoothing_frames must be >= 1, got {smoothing_frames}")
    if k == 1 or x.size == 0:
        return x.copy()
    csum = np.concatenate([[0.0], np.cumsum(x)])
    t = np.arange(1, x.size + 1)
    start = np.maximum(t - k, 0)
    return (csum[t] - csum[start]) / (t - start)


def lockout_frames(lockout_s: float, hop_s: float) -> int:
    """Lockout in whole frames: ceil(lockout_s / hop_s), tolerant to float error."""
    if lockout_s < 0 or hop_s <= 0:
        raise ValueError(f"need lockout_s >= 0 and hop_s > 0, got {lockout_s}, {hop_s}")
    return int(math.ceil(lockout_s / hop_s - 1e-9))


def activation_frames(smoothed: np.ndarray, threshold: float, lockout: int) -> np.ndarray:
    """Frame indices of activations on already smoothed scores; see ``count_activations``."""
    above = smoothed >= threshold
    # rising edges: above now, below (or before the stream) one frame earlier
    rising = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))
    if lockout <= 0 or rising.size <= 1:
        return rising
    fired = []
    next_allowed = -1
    for t in rising.tolist():
        if t >= next_allowed:
            fired.append(t)
            next_allowed = t + lockout
    return np.asarray(fired, dtype=np.int64)


def count_activations(frame_scores: np.ndarray, hop_s: float, threshold: float,
                      smoothing_frames: int = 1, lockout_s: float = 0.0,
                      time_offset_s: float = 0.0) -> list[float]:
    """Activation times (s) of the streaming detector on one stream.

    Exactly:
      1. s = ``smooth_scores(frame_scores, smoothing_frames)`` (causal moving average).
      2. A *crossing* is a frame t with s[t] >= threshold and (t == 0 or s[t−1] < threshold).
         A run of consecutive above-threshold frames therefore yields one crossing: a
         keyword spanning many overlapping windows counts ONCE, even with lockout_s = 0.
      3. Crossings are visited in time order; one fires unless it lies within the lockout
         of the previous *fired* activation, i.e. it fires iff
         t − t_last >= ceil(lockout_s / hop_s). A crossing swallowed by lockout does not
         fire later, even if its run outlasts the lockout (the score must drop below
         threshold and cross again).
      4. Frame t is reported at ``time_offset_s + t * hop_s`` seconds (window start;
         pass time_offset_s = window_s for the window end, when a live detector fires).

    frame_scores: (T,) positive-class scores, one per hop. Returns a list of floats.
    """
    smoothed = smooth_scores(frame_scores, smoothing_frames)
    frames = activation_frames(smoothed, threshold, lockout_frames(lockout_s, hop_s))
    return [float(time_offset_s + t * hop_s) for t in frames.tolist()]


def stream_hours(durations_s: Sequence[float]) -> float:
    """Total hours of audio from per-stream durations in seconds (measured, not assumed)."""
    return float(np.sum(np.asarray(durations_s, dtype=np.float64))) / 3600.0


def activation_counts(stream_frame_scores: Sequence[np.ndarray], hop_s: float,
                      thresholds: Sequence[float], smoothing_frames: int = 1,
                      lockout_s: float = 0.0) -> np.ndarray:
    """(K,) total activations over all streams for each of K thresholds."""
    lockout = lockout_frames(lockout_s, hop_s)
    smoothed = [smooth_scores(s, smoothing_frames) for s in stream_frame_scores]
    counts = np.zeros(len(thresholds), dtype=np.int64)
    for i, th in enumerate(thresholds):
        counts[i] = sum(activation_frames(s, float(th), lockout).size for s in smoothed)
    return counts


def fa_per_hour(stream_frame_scores: Sequence[np.ndarray], hop_s: float,
                thresholds: Sequence[float], *, smoothing_frames: int = 1,
                lockout_s: float = 0.0, total_hours: float) -> np.ndarray:
    """False accepts per hour on wake-word-free streams, one value per threshold.

    stream_frame_scores: list of (T_i,) frame scores, one array per stream.
    total_hours: hours of audio those streams hold, measured from the data — use
    ``stream_hours(durations_s)`` with each stream's len(waveform) / sample_rate.
    Returns (K,) float: activation_counts(...) / total_hours.
    """
    if not total_hours > 0:
        raise ValueError(f"total_hours must be > 0 (measured from the streams), got {total_hours}")
    counts = activation_counts(stream_frame_scores, hop_s, thresholds, smoothing_frames, lockout_s)
    return counts / float(total_hours)


def frame_windows(waveform: np.ndarray, window_samples: int, hop_samples: int) -> np.ndarray:
    """(T, window_samples) view of sliding windows; the tail is zero-padded.

    T = 1 + ceil(max(N − window, 0) / hop): every sample is covered by some window, and a
    stream shorter than one window gives one zero-padded window.
    """
    x = np.asarray(waveform, dtype=np.float32).reshape(-1)
    n_frames = 1 + math.ceil(max(x.size - window_samples, 0) / hop_samples)
    needed = window_samples + (n_frames - 1) * hop_samples
    if needed > x.size:
        x = np.concatenate([x, np.zeros(needed - x.size, dtype=np.float32)])
    return np.lib.stride_tricks.sliding_window_view(x, window_samples)[::hop_samples][:n_frames]
