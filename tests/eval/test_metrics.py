"""Clip metrics and ROC against hand-computed values and scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_curve

from wakeword_dist.eval.metrics import clip_metrics, clip_roc, frr_at

NAMES = ["neg", "wake", "other"]


def onehot(preds, c=3):
    p = np.full((len(preds), c), 0.1)
    p[np.arange(len(preds)), preds] = 0.8
    return p


def test_clip_metrics_hand_computed():
    labels = np.array([0, 0, 1, 1, 1, 2, -1])
    preds = np.array([0, 1, 1, 1, 0, 2, 2])          # last one is ignored (label −1)
    m = clip_metrics(onehot(preds), labels, NAMES)
    assert m["n_clips"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    # class 0: P = 1/2, R = 1/2 ; class 1: P = 2/3, R = 2/3 ; class 2: P = R = 1
    assert m["per_class"]["neg"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["wake"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["wake"]["support"] == 3
    assert m["f1_macro"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    y, p = labels[:6], preds[:6]
    assert m["f1_macro"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["precision_macro"] == pytest.approx(precision_score(y, p, average="macro"))
    assert m["recall_macro"] == pytest.approx(recall_score(y, p, average="macro"))


def test_clip_metrics_zero_division_and_shape_check():
    m = clip_metrics(onehot([0, 0]), np.array([0, 0]), NAMES)
    assert m["per_class"]["wake"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    with pytest.raises(ValueError):
        clip_metrics(np.zeros((2, 2)), np.array([0, 1]), NAMES)


def test_frr_at():
    s = np.array([0.1, 0.4, 0.5, 0.9])
    assert frr_at(s, 0.5) == pytest.approx(0.5)        # 0.5 itself is accepted (>=)
    assert frr_at(s, 0.0) == 0.0
    assert np.isnan(frr_at(np.array([]), 0.5))


def test_clip_roc_matches_sklearn():
    rng = np.random.default_rng(0)
    pos = np.round(rng.beta(5, 2, 300), 2)                 # rounding → ties
    neg = np.round(rng.beta(2, 5, 500), 2)
    roc = clip_roc(pos, neg)
    y = np.r_[np.ones_like(pos), np.zeros_like(neg)]
    fpr, tpr, th = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    np.testing.assert_allclose(roc["fpr"], fpr)
    np.testing.assert_allclose(roc["tpr"], tpr)
    np.testing.assert_allclose(roc["thresholds"][1:], th[1:])
    # EER lies between the bracketing sweep points
    fnr = 1 - np.asarray(roc["tpr"])
    i = int(np.argmax(np.asarray(roc["fpr"]) >= fnr))
    lo, hi = sorted([roc["fpr"][i - 1], roc["fpr"][i]])
    assert lo - 1e-12 <= roc["eer"] <= max(hi, fnr[i - 1]) + 1e-12
    assert 0.5 < roc["auc"] <= 1.0


def test_clip_roc_perfect_separation():
    roc = clip_roc(np.array([0.9, 0.8]), np.array([0.1, 0.2]))
    assert roc["auc"] == pytest.approx(1.0)
    assert roc["eer"] == pytest.approx(0.0)
