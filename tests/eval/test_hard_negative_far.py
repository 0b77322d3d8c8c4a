"""report["hard_negative_far"]: the share of near-miss clips accepted at θ, overall and by kind."""

import math

import numpy as np

from wakeword_dist.train.validate import hard_negative_accepts


def test_near_misses_accepted_at_theta_overall_and_by_kind():
    keys = ["pos", "conf-a", "conf-b", "part", "speech", "unlabelled"]
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.05, 0.95], [0.0, 1.0]])
    labels = np.array([1, 0, 0, 0, 0, -1])
    kinds = {"pos": "positive", "conf-a": "confusable", "conf-b": "confusable", "part": "partial",
             "speech": "speech", "unlabelled": "confusable"}
    hard = {"conf-a": True, "conf-b": True, "part": True, "unlabelled": True}
    meta = {k: {"kind": kind, "hard_negative": hard.get(k, False)} for k, kind in kinds.items()}
    out = hard_negative_accepts(keys, probs, labels, meta, positive_index=1, threshold=0.5)
    assert out["n_hard_negative_clips"] == 3  # not the positive, the plain speech or the unlabelled clip
    assert out["hard_negative_far"] == 2 / 3
    assert out["hard_negative_far_by_kind"] == {"confusable": 0.5, "partial": 1.0}
    assert hard_negative_accepts(keys, probs, labels, meta, 1, 0.85)["hard_negative_far"] == 0
    none = hard_negative_accepts(keys, probs, labels, {k: {"kind": kind} for k, kind in kinds.items()}, 1, 0.5)
    assert math.isnan(none["hard_negative_far"]) and none["hard_negative_far_by_kind"] == {}
