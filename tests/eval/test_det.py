"""DET curve, threshold choice on val, best-checkpoint selection, DET plot."""
import numpy as np
import pytest

from wakeword_dist.eval.det import choose_threshold, det_curve, plot_det, select_best


def _streams():
    a = np.zeros(200); a[[10, 50, 120]] = [0.3, 0.6, 0.8]
    b = np.zeros(100); b[[40]] = [0.55]
    return [a, b]


def test_det_curve_points_by_hand():
    pos = np.array([0.2, 0.5, 0.7, 0.9])
    det = det_curve(pos, _streams(), 0.1, total_hours=0.5, thresholds=[0.15, 0.5, 0.7, 0.85])
    assert det["frr"] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert det["fa_count"] == [4, 3, 1, 0]
    assert det["fa_per_hour"] == pytest.approx([8.0, 6.0, 2.0, 0.0])
    assert det["window_far"] == pytest.approx([4 / 300, 3 / 300, 1 / 300, 0.0])


def test_det_fa_is_non_increasing_in_threshold():
    always_on = np.full(36000, 0.4)          # 1 h above 0.3: one run → one raw activation
    always_on[1000::1000] = 0.9               # 35 short peaks above 0.5
    det = det_curve(np.array([0.95]), [always_on], 0.1, total_hours=1.0, thresholds=[0.3, 0.5, 0.95])
    assert det["fa_count"] == [1, 35, 0]
    assert det["fa_per_hour"] == [35.0, 35.0, 0.0]
    c = choose_threshold(det, 2.0)
    assert c["threshold"] == 0.95             # θ = 0.3 is not a 1 FA/h point


def test_det_frr_matches_sklearn_roc():
    from sklearn.metrics import roc_curve
    rng = np.random.default_rng(1)
    pos, neg = rng.random(50), rng.random(80) * 0.8
    det = det_curve(pos, [neg], 0.1, total_hours=1.0)
    y = np.r_[np.ones(50), np.zeros(80)]
    fpr, tpr, th = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    for t, frr in zip(det["thresholds"], det["frr"]):
        i = np.searchsorted(-th, -t, side="right") - 1   # last sklearn threshold >= t
        expected = 1 - tpr[i] if i >= 0 else 1.0
        assert frr == pytest.approx(expected)


def test_choose_threshold_lowest_frr_under_target():
    det = {"thresholds": [0.3, 0.5, 0.7, 0.9], "frr": [0.0, 0.1, 0.1, 0.4],
           "fa_per_hour": [9.0, 2.0, 0.5, 0.0]}
    c = choose_threshold(det, 2.0)
    # 0.5 and 0.7 tie on FRR → lower FA/h (0.7)
    assert c == {"threshold": 0.7, "frr": 0.1, "fa_per_hour": 0.5, "meets_target": True}
    assert choose_threshold(det, 10.0)["threshold"] == 0.3
    det["fa_per_hour"] = [9.0, 8.0, 7.0, 6.0]
    c = choose_threshold(det, 1.0)
    assert c["threshold"] == 0.9 and not c["meets_target"]


def test_select_best_returns_the_winning_candidate():
    cands = [
        {"frr_at_target": 0.05, "fa_per_hour": 3.0, "f1_macro": 0.99},   # over target
        {"frr_at_target": 0.10, "fa_per_hour": 0.5, "f1_macro": 0.80},
        {"frr_at_target": 0.10, "fa_per_hour": 1.0, "f1_macro": 0.90},   # tie → higher F1
        {"frr_at_target": 0.20, "fa_per_hour": 0.0, "f1_macro": 0.95},
    ]
    assert select_best(cands, 1.0) is cands[2]
    assert select_best(cands, 5.0) is cands[0]
    assert select_best(cands[:1], 1.0) is cands[0]      # none under target → lowest FA/h
    best, same = dict(cands[1]), dict(cands[1])
    assert select_best([best, same], 1.0) is best         # full tie → keep the earlier one
    nan = {"frr_at_target": 0.0, "fa_per_hour": float("nan"), "f1_macro": 1.0}
    assert select_best([nan, cands[3]], 1.0) is cands[3]  # NaN FA/h never meets the target


def test_det_curve_without_streams():
    det = det_curve(np.array([0.2, 0.9]), [], 0.1, total_hours=0.0, thresholds=[0.5])
    assert det["frr"] == [0.5] and np.isnan(det["fa_per_hour"][0])


def test_plot_det_writes_png(tmp_path):
    pos = np.array([0.2, 0.5, 0.7, 0.9])
    det = det_curve(pos, _streams(), 0.1, total_hours=0.5)
    p = plot_det({"a": det, "b": det}, tmp_path / "det.png")
    assert p.exists() and p.read_bytes()[:4] == b"\x89PNG"


def test_select_best_reads_strict_json_nulls_as_nan(tmp_path):
    """A best summary resumed from train_state.json holds None where the metric was NaN."""
    import json

    from wakeword_dist.atomic import write_json_atomic

    best = {"frr_at_target": float("nan"), "fa_per_hour": float("nan"), "f1_macro": 0.5}
    resumed = json.loads(write_json_atomic(tmp_path / "s.json", best).read_text())
    assert resumed["fa_per_hour"] is None
    candidate = {"frr_at_target": 0.9, "fa_per_hour": 0.5, "f1_macro": 0.1}
    assert select_best([resumed, candidate], 1.0) is candidate        # None FA/h: never under target
    assert select_best([resumed, dict(resumed)], 1.0) is resumed       # equal: the earlier one stays
