"""Clip-level metrics: pure numpy in, plain (JSON-ready) dicts out.

Shapes: ``probs`` (N, C) class probabilities, ``labels`` (N,) int class indices;
label −1 marks a sample to ignore (padding, unlabelled).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE_LABEL = -1


def _safe_div(num: float, den: float) -> float:
    """num / den, 0.0 when den == 0 (sklearn's ``zero_division=0``)."""
    return float(num) / float(den) if den else 0.0


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int counts; rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def clip_metrics(probs: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> dict:
    """Accuracy, per-class and macro precision / recall / F1, confusion matrix.

    probs: (N, C) class probabilities (or any scores; argmax is the prediction).
    labels: (N,) int; samples with label −1 are dropped before anything is counted.
    label_names: C names, index i names class i.

    Returns a dict with ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``
    (unweighted means over all C classes), ``per_class`` {name: {precision, recall, f1,
    support}}, ``confusion_matrix`` (list of C lists; rows true, columns predicted) and
    ``n_clips``. A ratio with a zero denominator is 0.0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    num_classes = len(label_names)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must be (N, {num_classes}), got {probs.shape}")
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{probs.shape[0]} probability rows vs {labels.shape[0]} labels")
    keep = labels != IGNORE_LABEL
    probs, labels = probs[keep], labels[keep]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels outside [0, {num_classes}) besides {IGNORE_LABEL}")
    preds = probs.argmax(axis=1) if labels.size else labels
    cm = confusion_matrix(labels, preds, num_classes)
    tp = np.diag(cm)
    per_class = {}
    for c, name in enumerate(label_names):
        precision = _safe_div(tp[c], cm[:, c].sum())
        recall = _safe_div(tp[c], cm[c, :].sum())
        f1 = _safe_div(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1,
                           "support": int(cm[c, :].sum())}
    return {
        "accuracy": _safe_div(tp.sum(), cm.sum()),
        "precision_macro": float(np.mean([v["precision"] for v in per_class.values()])),
        "recall_macro": float(np.mean([v["recall"] for v in per_class.values()])),
        "f1_macro": float(np.mean([v["f1"] for v in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "n_clips": int(labels.size),
    }


def frr_at(scores_pos: np.ndarray, threshold: float) -> float:
    """False-rejection rate: fraction of positive clips whose score is < threshold.

    scores_pos: (P,) positive-class scores of the positive clips. NaN when P == 0.
    """
    scores_pos = np.asarray(scores_pos, dtype=np.float64).reshape(-1)
    if scores_pos.size == 0:
        return float("nan")
    return float(np.mean(scores_pos < threshold))


def clip_roc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> dict:
    """Clip-level ROC of positive vs negative clips, AUC and EER.

    A clip is accepted when score >= threshold. Thresholds are the distinct scores in
    decreasing order preceded by +inf (the same points as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``).
    Returns {fpr, tpr, thresholds (lists), auc, eer, eer_threshold}; EER is where
    FPR = 1 − TPR, linearly interpolated between the two bracketing points.
    """
    pos = np.asarray(scores_pos, dtype=np.float64).reshape(-1)
    neg = np.asarray(scores_neg, dtype=np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        nan = float("nan")
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": nan, "eer": nan, "eer_threshold": nan}
    thresholds = np.concatenate([[np.inf], np.unique(np.concatenate([pos, neg]))[::-1]])
    # count of scores >= t for every t, via sorted search
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    tpr = (pos.size - np.searchsorted(pos_sorted, thresholds, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(neg_sorted, thresholds, side="left")) / neg.size
    auc = float(np.trapezoid(tpr, fpr))
    eer, eer_threshold = _crossing(fpr, 1.0 - tpr, thresholds)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist(),
            "auc": auc, "eer": eer, "eer_threshold": eer_threshold}


def _crossing(a: np.ndarray, b: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Point where a (rising along the sweep) meets b (falling); linear interpolation.

    Returns (rate at the crossing, threshold of the nearer sweep point).
    """
    diff = a - b
    idx = int(np.argmax(diff >= 0)) if np.any(diff >= 0) else len(diff) - 1
    if idx == 0 or diff[idx] < 0:
        return float((a[idx] + b[idx]) / 2), float(thresholds[idx])
    d0, d1 = diff[idx - 1], diff[idx]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0   # fraction of the way from idx-1 to idx
    rate = (1 - w) * a[idx - 1] + w * a[idx]
    nearer = idx if w >= 0.5 else idx - 1
    return float(rate), float(thresholds[nearer])
