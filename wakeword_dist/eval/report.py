"""Score a model on a split (clips + streams) and build / write its report.

Three layers, so multi-rank evaluation can gather in between:
  score_clips / score_streams  (model forward, any rank)
  → caller gathers + ``dedup_by_key``
  → build_report               (pure numpy, main process)
``evaluate_model`` chains them for the single-process case.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wakeword_dist.atomic import to_jsonable, write_json_atomic  # noqa: F401 (to_jsonable: re-export)
from wakeword_dist.eval.det import choose_threshold, det_curve, plot_det
from wakeword_dist.eval.detector import count_activations, frame_windows, stream_hours
from wakeword_dist.eval.metrics import IGNORE_LABEL, clip_metrics, clip_roc, frr_at

NO_STREAM_THRESHOLD = 0.5   # θ when a split has no streams to choose it on (probability)


def dedup_by_key(keys: Sequence, *arrays) -> tuple:
    """Keep the first occurrence of each key (order preserved) in keys and every array.

    Multi-rank gathers pad the last batch with repeated samples; scoring them twice
    would bias the metrics. Arrays are numpy arrays or lists with len == len(keys).
    Returns (keys, *arrays) as (list, numpy arrays / lists of the same type).
    """
    seen, idx = set(), []
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            idx.append(i)
    out = [[keys[i] for i in idx]]
    for arr in arrays:
        if len(arr) != len(keys):
            raise ValueError(f"array of length {len(arr)} vs {len(keys)} keys")
        out.append(np.asarray(arr)[idx] if isinstance(arr, np.ndarray) else [arr[i] for i in idx])
    return tuple(out)


@torch.inference_mode()
def _probs(model: torch.nn.Module, audio: torch.Tensor, device: str) -> np.ndarray:
    """(B, S) float audio → (B, C) float64 class probabilities."""
    logits = model(audio.to(device=device, dtype=torch.float32))
    return torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)


def score_clips(model: torch.nn.Module, clip_batches: Iterable[dict], *,
                device: str = "cpu") -> tuple[list, np.ndarray, np.ndarray]:
    """Class probabilities of every clip.

    clip_batches: dicts {audio (B, S) float, label (B,) int, key list of B}.
    Returns (keys, probs (N, C), labels (N,)). The model must already live on ``device``.
    """
    was_training = model.training
    model.eval()
    keys, probs, labels = [], [], []
    try:
        for batch in clip_batches:
            probs.append(_probs(model, torch.as_tensor(batch["audio"]), device))
            labels.append(np.asarray(torch.as_tensor(batch["label"]).cpu()).reshape(-1))
            keys.extend(batch["key"])
    finally:
        model.train(was_training)
    if not probs:
        return [], np.zeros((0, 0)), np.zeros((0,), dtype=np.int64)
    return keys, np.concatenate(probs), np.concatenate(labels).astype(np.int64)


def score_streams(model: torch.nn.Module, stream_items: Iterable[tuple], *, positive_index: int,
                  sample_rate: int = 16000, window_s: float = 1.0, hop_s: float = 0.1,
                  device: str = "cpu", batch_size: int = 256, progress: bool = True,
                  exact_windows: bool = False) -> tuple[list, list[np.ndarray], list[float]]:
    """Sliding-window positive-class scores of each stream.

    stream_items: (key, waveform (N,) float32, sample_rate); resampled to ``sample_rate``
    if needed. Frame t is the window [t·hop_s, t·hop_s + window_s); the tail is zero-padded
    so every sample is covered (T = 1 + ceil(max(N − W, 0) / H) frames): the windows are
    ``detector.frame_windows``, the ONNX stream runner's too, and go through the model
    ``batch_size`` at a time.
    A Student whose LogMel hop divides the window hop is scored by
    ``stream_features.stream_scores`` (the same scores to float error, each STFT frame computed
    once instead of ~10 times); ``exact_windows=True`` forces the model on every raw window (the
    path ONNX adapters always take).
    Returns (keys, [frame scores (T_i,)], [duration_s]); repeated keys are skipped.
    """
    import torchaudio.functional as AF

    from wakeword_dist.eval.stream_features import fast_frontend, stream_scores

    win, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    fast = None if exact_windows else fast_frontend(model, win, hop)
    was_training = model.training
    model.eval()
    keys, scores, durations = [], [], []
    seen = set()
    try:
        for key, waveform, sr in stream_items:
            if key in seen:
                continue
            seen.add(key)
            x = np.asarray(waveform, dtype=np.float32).reshape(-1)
            if int(sr) != sample_rate:
                x = AF.resample(torch.from_numpy(x), int(sr), sample_rate).numpy()
            bar = lambda starts: tqdm(starts, desc=f"stream {key}", leave=False,  # noqa: E731
                                      disable=not progress)
            if fast is not None:
                out = stream_scores(model, fast[1], x, window_samples=win, hop_samples=hop,
                                    positive_index=positive_index, device=device,
                                    batch_size=batch_size, progress=bar)
            else:
                windows = frame_windows(x, win, hop)               # (T, win) strided view
                out = np.empty(len(windows), dtype=np.float64)
                for start in bar(range(0, len(windows), batch_size)):
                    chunk = torch.from_numpy(np.array(windows[start:start + batch_size]))  # writable copy
                    out[start:start + chunk.shape[0]] = _probs(model, chunk, device)[:, positive_index]
            keys.append(key)
            scores.append(out)
            durations.append(np.asarray(waveform).size / float(sr))   # measured, not assumed
    finally:
        model.train(was_training)
    return keys, scores, durations


def build_report(probs: np.ndarray, labels: np.ndarray, stream_scores: Sequence[np.ndarray],
                 stream_durations_s: Sequence[float], *, positive_index: int,
                 label_names: Sequence[str], hop_s: float, window_s: float,
                 smoothing_frames: int, lockout_s: float, target_fa_per_hour: float,
                 threshold: float | None = None, stream_keys: Sequence | None = None) -> dict:
    """All metrics of one split from scores (pure numpy; see module doc for the keys).

    probs (N, C), labels (N,) (−1 ignored); stream_scores list of (T_i,) frame scores;
    stream_durations_s measured stream lengths. threshold None → chosen on this split for
    ``target_fa_per_hour`` (val); otherwise used as given (test, with θ from val).
    Without streams (teacher validation) FA/h-based entries are NaN and θ defaults to 0.5.
    """
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    report = clip_metrics(probs, labels, label_names)
    keep = labels != IGNORE_LABEL
    pos_scores = probs[keep & (labels == positive_index), positive_index]
    neg_scores = probs[keep & (labels != positive_index), positive_index]
    hours = stream_hours(stream_durations_s)
    det = det_curve(pos_scores, stream_scores, hop_s, total_hours=hours,
                    smoothing_frames=smoothing_frames, lockout_s=lockout_s)
    if threshold is not None:
        source = "given"
    elif len(stream_scores) == 0:                 # nothing to measure FA/h on
        threshold, source = NO_STREAM_THRESHOLD, "default_no_streams"
    else:
        threshold, source = choose_threshold(det, target_fa_per_hour)["threshold"], "chosen_on_split"
    # What this split's own DET curve allows at the target, as if θ had been placed on these
    # streams: on test, the gap to frr_at_target is what placing θ on val cost (val's streams
    # are short and hear other voices), apart from how well the model ranks.
    det_frr = choose_threshold(det, target_fa_per_hour)["frr"] if len(stream_scores) else float("nan")
    keys = list(stream_keys) if stream_keys is not None else list(range(len(stream_scores)))
    activations = {str(k): count_activations(s, hop_s, threshold, smoothing_frames, lockout_s,
                                             time_offset_s=window_s)
                   for k, s in zip(keys, stream_scores)}
    fa_count = sum(len(v) for v in activations.values())
    roc = clip_roc(pos_scores, neg_scores)
    report.update({
        "label_names": list(label_names),
        "positive_index": int(positive_index),
        "positive_name": label_names[positive_index],
        "target_fa_per_hour": float(target_fa_per_hour),
        "threshold": float(threshold),
        "threshold_source": source,
        "frr_at_target": frr_at(pos_scores, threshold),
        "det_frr_at_target": float(det_frr),
        "fa_per_hour": fa_count / hours if hours > 0 else float("nan"),
        "fa_count": int(fa_count),
        "meets_target": bool(hours > 0 and fa_count / hours <= target_fa_per_hour),
        "n_positive_clips": int(pos_scores.size),
        "n_negative_clips": int(neg_scores.size),
        "n_streams": len(stream_scores),
        "stream_hours": hours,
        "clip_auc": roc["auc"],
        "clip_eer": roc["eer"],
        "clip_eer_threshold": roc["eer_threshold"],
        "det_eer": det["eer"],
        "det_eer_threshold": det["eer_threshold"],
        "det": det,
        "activations": activations,   # stream key → activation times (s, window end)
        "detector": {"window_s": window_s, "hop_s": hop_s,
                     "smoothing_frames": int(smoothing_frames), "lockout_s": lockout_s},
    })
    return report


def evaluate_model(model: torch.nn.Module, *, clip_batches: Iterable[dict],
                   stream_items: Iterable[tuple], positive_index: int,
                   label_names: Sequence[str], window_s: float = 1.0, hop_s: float = 0.1,
                   smoothing_frames: int = 1, lockout_s: float = 1.0,
                   target_fa_per_hour: float = 1.0, threshold: float | None = None,
                   device: str = "cpu", batch_size: int = 256, sample_rate: int = 16000,
                   progress: bool = True) -> dict:
    """Score ``model`` ((B, S) raw 16 kHz audio → (B, C) logits) on one split; report dict.

    Single-process convenience: score_clips + score_streams + dedup + build_report.
    threshold None → chosen on this split for target FA/h (val); test passes val's θ.
    """
    keys, probs, labels = score_clips(model, clip_batches, device=device)
    keys, probs, labels = dedup_by_key(keys, probs, labels)
    s_keys, s_scores, s_dur = score_streams(
        model, stream_items, positive_index=positive_index, sample_rate=sample_rate,
        window_s=window_s, hop_s=hop_s, device=device, batch_size=batch_size, progress=progress)
    if len(probs) == 0:
        probs = np.zeros((0, len(label_names)))
    return build_report(probs, labels, s_scores, s_dur, positive_index=positive_index,
                        label_names=label_names, hop_s=hop_s, window_s=window_s,
                        smoothing_frames=smoothing_frames, lockout_s=lockout_s,
                        target_fa_per_hour=target_fa_per_hour, threshold=threshold,
                        stream_keys=s_keys)


def write_report(report: dict, out_dir: str | Path, *, name: str = "model") -> dict:
    """Write ``report.json`` (strict JSON, atomic) and ``det.png`` into out_dir; returns their paths."""
    out_dir = Path(out_dir)
    json_path = write_json_atomic(out_dir / "report.json", report)
    png_tmp = out_dir / ".det.tmp.png"
    plot_det({name: report["det"]}, png_tmp)
    os.replace(png_tmp, out_dir / "det.png")
    return {"report": str(json_path), "det_png": str(out_dir / "det.png")}
