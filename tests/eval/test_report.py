"""evaluate_model end to end with a stand-in student; dedup; report files."""
import json

import numpy as np
import pytest
import torch
from tests.standins import SR, tone_stream

from wakeword_dist.eval.report import dedup_by_key, evaluate_model, write_report

NAMES = ["negative", "wake", "unknown"]


def _clips():
    """Positives: tone clips; negatives: noise clips. One duplicated key, one ignored label."""
    pos = [tone_stream(1.0, [0.2], seed=i) for i in range(4)]
    neg = [tone_stream(1.0, [], seed=10 + i) for i in range(4)]
    audio = torch.tensor(np.stack(pos + neg))
    labels = torch.tensor([1] * 4 + [0] * 4)
    keys = [f"p{i}" for i in range(4)] + [f"n{i}" for i in range(4)]
    yield {"audio": audio[:5], "label": labels[:5], "key": keys[:5]}
    # second "rank" batch repeats p0 (gather padding) and has an unlabelled clip (−1)
    yield {"audio": torch.cat([audio[5:], audio[:1], audio[:1]]),
           "label": torch.cat([labels[5:], torch.tensor([1, -1])]),
           "key": keys[5:] + ["p0", "x"]}


def _streams():
    # 30 s + 42 s of wake-free audio, one tone burst at 20 s in the second (a false accept)
    return [("s1", tone_stream(30.0, [], seed=1), SR), ("s2", tone_stream(42.0, [20.0], seed=2), SR),
            ("s1", tone_stream(30.0, [], seed=1), SR)]   # duplicate key is skipped


def test_dedup_by_key_keeps_first():
    keys, a, b = dedup_by_key(["x", "y", "x", "z"], np.array([1, 2, 3, 4]), ["a", "b", "c", "d"])
    assert keys == ["x", "y", "z"]
    np.testing.assert_array_equal(a, [1, 2, 4])
    assert b == ["a", "b", "d"]


def test_evaluate_model_given_threshold(tone_student):
    rep = evaluate_model(tone_student, clip_batches=_clips(), stream_items=_streams(),
                         positive_index=1, label_names=NAMES, smoothing_frames=3,
                         lockout_s=2.0, target_fa_per_hour=10.0, threshold=0.5, progress=False)
    assert rep["n_clips"] == 8 and rep["n_positive_clips"] == 4    # dedup + ignore −1
    assert rep["accuracy"] == pytest.approx(1.0)
    assert rep["frr_at_target"] == 0.0
    assert rep["n_streams"] == 2
    assert rep["stream_hours"] == pytest.approx(72.0 / 3600)        # measured from the data
    assert rep["fa_count"] == 1
    assert rep["fa_per_hour"] == pytest.approx(1 / (72.0 / 3600))
    assert rep["activations"]["s1"] == []
    (t,) = rep["activations"]["s2"]
    assert 20.0 < t < 21.5                                           # window end, burst 20–20.5 s
    assert not rep["meets_target"] and rep["threshold_source"] == "given"
    assert rep["clip_auc"] == pytest.approx(1.0)


def test_evaluate_model_chooses_threshold(tone_student, tmp_path):
    rep = evaluate_model(tone_student, clip_batches=_clips(), stream_items=_streams(),
                         positive_index=1, label_names=NAMES, smoothing_frames=1,
                         lockout_s=1.0, target_fa_per_hour=60.0, progress=False)
    assert rep["threshold_source"] == "chosen_on_split"
    assert rep["fa_per_hour"] <= 60.0 and rep["meets_target"]
    assert rep["frr_at_target"] == 0.0
    paths = write_report(rep, tmp_path / "val")
    loaded = json.loads((tmp_path / "val" / "report.json").read_text())
    assert loaded["threshold"] == pytest.approx(rep["threshold"])
    assert set(loaded["det"]) >= {"thresholds", "frr", "fa_per_hour", "eer"}
    assert (tmp_path / "val" / "det.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["det.png", "report.json"]
    assert paths["report"].endswith("report.json")


def test_build_report_without_streams():
    from wakeword_dist.eval.report import build_report
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
    rep = build_report(probs, np.array([1, 0]), [], [], positive_index=1, label_names=NAMES,
                       hop_s=0.1, window_s=1.0, smoothing_frames=1, lockout_s=1.0,
                       target_fa_per_hour=1.0)
    assert rep["accuracy"] == 1.0 and rep["threshold"] == 0.5
    assert rep["threshold_source"] == "default_no_streams" and np.isnan(rep["fa_per_hour"])


def test_det_frr_is_what_the_splits_own_streams_allow_at_the_target():
    """det_frr_at_target reads θ off the split's own DET; frr_at_target uses the θ given (from val).
    Half an hour of stream with one 0.5 peak: one false accept is 2 FA/h, so ≤ 1 FA/h needs θ > 0.5
    and passes 3 of the 4 positives; a given θ of 0.92 (a val that placed it too high) passes 1."""
    from wakeword_dist.eval.report import build_report
    pos = np.array([0.3, 0.6, 0.9, 0.95])
    probs = np.stack([1 - pos, pos, np.zeros(4)], axis=1)
    stream = np.zeros(18_000)
    stream[9_000] = 0.5
    kwargs = dict(positive_index=1, label_names=NAMES, hop_s=0.1, window_s=1.0, smoothing_frames=1,
                  lockout_s=1.0, target_fa_per_hour=1.0)
    given = build_report(probs, np.ones(4, dtype=int), [stream], [1800.0], threshold=0.92, **kwargs)
    assert given["frr_at_target"] == pytest.approx(0.75)
    assert given["det_frr_at_target"] == pytest.approx(0.25)
    chosen = build_report(probs, np.ones(4, dtype=int), [stream], [1800.0], **kwargs)
    assert chosen["det_frr_at_target"] == chosen["frr_at_target"] == pytest.approx(0.25)
    no_streams = build_report(probs, np.ones(4, dtype=int), [], [], **kwargs)
    assert np.isnan(no_streams["det_frr_at_target"])


class _WindowProbe(torch.nn.Module):
    """(B, S) -> (B, 2) logits [0, k·mean(window)]: the positive probability is a function of
    the window's samples alone, so scores reveal which windows the model saw."""

    def forward(self, audio):
        return torch.stack([torch.zeros(len(audio)), 50.0 * audio.mean(-1)], dim=-1)


def test_stream_scores_use_the_detectors_windows():
    """score_streams scores exactly detector.frame_windows (the ONNX stream runner's windows),
    tail zero-padded: T = 1 + ceil((N − W) / H)."""
    from wakeword_dist.eval.detector import frame_windows
    from wakeword_dist.eval.report import score_streams

    rng = np.random.default_rng(0)
    wave = rng.uniform(-1, 1, 2 * SR + 1234).astype(np.float32)   # 2.08 s: the last window is padded
    _, scores, durations = score_streams(_WindowProbe(), [("s", wave, SR)], positive_index=1,
                                         batch_size=7, progress=False)
    windows = frame_windows(wave, SR, SR // 10)
    assert len(scores[0]) == len(windows) == 1 + int(np.ceil((wave.size - SR) / (SR // 10)))
    expected = torch.softmax(_WindowProbe()(torch.from_numpy(np.ascontiguousarray(windows))), -1)[:, 1]
    np.testing.assert_allclose(scores[0], expected.numpy(), rtol=1e-6)
    assert durations == [pytest.approx(wave.size / SR)]


def test_the_one_json_writer_is_strict_sorted_and_numpy_aware(tmp_path):
    from wakeword_dist.atomic import write_json_atomic

    path = write_json_atomic(tmp_path / "r.json", {"b": np.float32(0.5), "a": float("nan"),
                                                   "c": [np.int64(3), float("inf")], 2: np.arange(2)})
    text = path.read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}"))
    assert strict == {"2": [0, 1], "a": None, "b": 0.5, "c": [3, None]}
    assert list(strict) == ["2", "a", "b", "c"], "sorted keys: equal content, equal bytes"
