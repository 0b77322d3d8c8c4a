"""DET curve (FRR on positive clips vs FA/h on streams), threshold choice, checkpoint pick."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wakeword_dist.eval.detector import activation_counts, smooth_scores
from wakeword_dist.eval.metrics import _crossing, frr_at


def default_thresholds() -> np.ndarray:
    """0.000, 0.005, …, 1.000 plus 1 − 10^−k (k = 3…6): wake-word scores pile up near 1."""
    grid = np.linspace(0.0, 1.0, 201)
    tail = 1.0 - np.array([1e-3, 1e-4, 1e-5, 1e-6])
    return np.unique(np.concatenate([grid, tail]))


def det_curve(scores_pos: np.ndarray, stream_frame_scores: Sequence[np.ndarray], hop_s: float,
              *, total_hours: float, smoothing_frames: int = 1, lockout_s: float = 0.0,
              thresholds: Sequence[float] | None = None) -> dict:
    """FRR (positive clips) and FA/h (streams) over a threshold sweep.

    scores_pos: (P,) positive-class scores of the positive clips of the split.
    stream_frame_scores: list of (T_i,) frame scores of the wake-word-free streams.
    total_hours: measured hours of those streams.

    Returns {thresholds, frr, fa_per_hour, fa_count, window_far (lists, increasing
    threshold), eer, eer_threshold, eer_fa_per_hour}. ``fa_count`` is the raw activation
    count at each θ; ``fa_per_hour`` is fa_count / total_hours made non-increasing in θ
    (max over all θ' >= θ) — without that, an always-on stream (one run, one activation)
    would make θ → 0 look like a low-FA/h, zero-FRR operating point. With no streams, FA/h and window FAR
    are NaN (and the EER NaN). ``window_far`` is the fraction of
    smoothed stream frames >= threshold; the EER-style point is where FRR equals it
    (units match: both are per-decision rates), linearly interpolated.
    """
    th = np.asarray(default_thresholds() if thresholds is None else thresholds, dtype=np.float64)
    th = np.sort(th)
    frr = np.array([frr_at(scores_pos, t) for t in th])
    counts = activation_counts(stream_frame_scores, hop_s, th, smoothing_frames, lockout_s)
    if len(stream_frame_scores) == 0:             # no stream split (e.g. teacher validation)
        fa = np.full(th.shape, np.nan)
    elif not total_hours > 0:
        raise ValueError(f"total_hours must be > 0 (measured from the streams), got {total_hours}")
    else:
        # Envelope from the high-threshold end: at very low θ whole stretches of a stream
        # merge into one above-threshold run (counted once), so raw counts can *fall* as θ
        # drops; a detector is credited with no fewer FA/h than any stricter θ.
        fa = np.maximum.accumulate((counts / float(total_hours))[::-1])[::-1]
    smoothed = [smooth_scores(s, smoothing_frames) for s in stream_frame_scores]
    all_frames = np.concatenate(smoothed) if smoothed else np.zeros(0)
    if all_frames.size:
        srt = np.sort(all_frames)
        far = (srt.size - np.searchsorted(srt, th, side="left")) / srt.size
    else:
        far = np.full(th.shape, np.nan)
    if np.all(np.isnan(frr)) or np.all(np.isnan(far)):
        eer, eer_th = float("nan"), float("nan")
    else:
        eer, eer_th = _crossing(frr, far, th)   # FRR rises, window FAR falls with threshold
    eer_fa = float(fa[int(np.argmin(np.abs(th - eer_th)))]) if np.isfinite(eer_th) else float("nan")
    return {"thresholds": th.tolist(), "frr": frr.tolist(), "fa_per_hour": fa.tolist(),
            "fa_count": counts.tolist(), "window_far": far.tolist(), "eer": eer,
            "eer_threshold": eer_th, "eer_fa_per_hour": eer_fa}


def choose_threshold(det: Mapping, target_fa_per_hour: float) -> dict:
    """Threshold with the lowest FRR among sweep points with FA/h <= target.

    Ties on FRR → lower FA/h, then higher threshold (the more conservative point).
    If no point meets the target, the point with the lowest FA/h (then lowest FRR) is
    returned with ``meets_target`` False. Returns {threshold, frr, fa_per_hour, meets_target}.
    """
    th = np.asarray(det["thresholds"], dtype=np.float64)
    frr = np.nan_to_num(np.asarray(det["frr"], dtype=np.float64), nan=1.0)
    fa = np.asarray(det["fa_per_hour"], dtype=np.float64)
    ok = fa <= target_fa_per_hour
    if ok.any():
        idx = np.flatnonzero(ok)
        best = min(idx.tolist(), key=lambda i: (frr[i], fa[i], -th[i]))
    else:
        best = min(range(th.size), key=lambda i: (fa[i], frr[i], -th[i]))
    return {"threshold": float(th[best]), "frr": float(det["frr"][best]),
            "fa_per_hour": float(fa[best]), "meets_target": bool(ok[best])}


def select_best(candidates: Sequence[Mapping], target_fa_per_hour: float, *,
                frr_key: str = "frr_at_target", fa_key: str = "fa_per_hour",
                f1_key: str = "f1_macro") -> Mapping:
    """The best checkpoint's entry (the object itself) among ``candidates``.

    Lowest FRR among those with FA/h <= target; ties on FRR → higher F1; remaining ties →
    the earlier candidate (so a re-scored equal checkpoint does not replace the best).
    If none meets the target: lowest FA/h, then lowest FRR, then higher F1.
    candidates: report summaries (mappings with the three keys); NaN (or None) FRR counts as 1.0 and
    NaN (or None) FA/h as +inf. Compare the result with ``is`` to tell which one won.
    """
    if not candidates:
        raise ValueError("select_best needs at least one candidate")

    def val(c, key, nan):
        v = c[key]  # None: an undefined metric read back from strict JSON (train_state.json)
        return nan if v is None or np.isnan(float(v)) else float(v)

    def rank(i):
        c = candidates[i]
        return (val(c, frr_key, 1.0), -val(c, f1_key, -np.inf), i)

    fa = [val(c, fa_key, np.inf) for c in candidates]
    ok = [i for i in range(len(candidates)) if fa[i] <= target_fa_per_hour]
    if ok:
        return candidates[min(ok, key=rank)]
    return candidates[min(range(len(candidates)), key=lambda i: (fa[i], *rank(i)))]


def plot_det(curves: Mapping[str, Mapping], path: str | Path, *, title: str = "DET") -> Path:
    """Write a DET plot (FRR vs FA/h, log FA/h axis) for {name: det dict} to ``path``.

    FA/h = 0 points cannot sit on a log axis; they are drawn at half the smallest
    non-zero FA/h of the plot (marked in the axis label).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    nonzero = [f for d in curves.values() for f in d["fa_per_hour"] if f > 0]
    floor = 0.5 * min(nonzero) if nonzero else 1e-2
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, det in curves.items():
        fa = np.maximum(np.asarray(det["fa_per_hour"], dtype=np.float64), floor)
        ax.plot(fa, 100 * np.asarray(det["frr"], dtype=np.float64), label=name, lw=1.5)
    ax.set_xscale("log")
    ax.set_xlabel(f"false accepts per hour (0 drawn at {floor:.2g})")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
