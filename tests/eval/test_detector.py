"""Streaming detector: smoothing, run-counts-once, lockout, FA/h from measured hours."""
import numpy as np
import pytest

from wakeword_dist.eval.detector import (count_activations, fa_per_hour, frame_windows,
                                         smooth_scores, stream_hours)


def test_smoothing_is_causal_moving_average():
    x = np.array([0.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(smooth_scores(x, 2), [0.0, 0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(smooth_scores(x, 3), [0.0, 0.5, 2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(smooth_scores(x, 1), x)
    # causal: changing a future frame leaves the past untouched
    y = x.copy()
    y[4] = 9.0
    np.testing.assert_allclose(smooth_scores(y, 3)[:4], smooth_scores(x, 3)[:4])


def test_activation_spanning_many_windows_counts_once():
    scores = np.zeros(100)
    scores[20:35] = 0.95                       # keyword seen by 15 overlapping windows
    assert count_activations(scores, 0.1, 0.5) == [pytest.approx(2.0)]
    assert count_activations(scores, 0.1, 0.5, time_offset_s=1.0) == [pytest.approx(3.0)]


def test_separate_runs_count_separately_without_lockout():
    scores = np.zeros(50)
    scores[[5, 6, 10, 30]] = 0.9
    assert count_activations(scores, 0.1, 0.5) == pytest.approx([0.5, 1.0, 3.0])


def test_lockout_suppresses_crossings_within_lockout():
    scores = np.zeros(100)
    scores[[10, 15, 19, 20, 45]] = 0.9       # 20 merges with 19 into one run
    # lockout 1.0 s = 10 frames: fires at 10; 15 and 19 are inside; 45 fires
    assert count_activations(scores, 0.1, 0.5, lockout_s=1.0) == pytest.approx([1.0, 4.5])
    # lockout measured from the last FIRED activation: 0.5 s → 10 fires, 15 fires (5 frames), 19 not
    assert count_activations(scores, 0.1, 0.5, lockout_s=0.5) == pytest.approx([1.0, 1.5, 4.5])


def test_crossing_swallowed_by_lockout_does_not_fire_later():
    scores = np.zeros(60)
    scores[10] = 0.9
    scores[12:40] = 0.9                       # crosses at 12 (locked out), stays high past 20
    assert count_activations(scores, 0.1, 0.5, lockout_s=1.0) == pytest.approx([1.0])


def test_smoothing_removes_single_frame_spike():
    scores = np.zeros(30)
    scores[10] = 1.0                          # spike: smoothed to 1/3 with 3 frames
    scores[20:23] = 0.9                       # sustained: smoothed reaches 0.9
    assert count_activations(scores, 0.1, 0.5) == pytest.approx([1.0, 2.0])
    assert count_activations(scores, 0.1, 0.5, smoothing_frames=3) == pytest.approx([2.1])


def test_fa_per_hour_uses_given_hours():
    a = np.zeros(100); a[[10, 50]] = 0.9
    b = np.zeros(10); b[3] = 0.9
    hours = stream_hours([1800.0, 1800.0])   # 1 h measured
    fa = fa_per_hour([a, b], 0.1, [0.5, 0.95], total_hours=hours)
    np.testing.assert_allclose(fa, [3.0, 0.0])
    fa2 = fa_per_hour([a, b], 0.1, [0.5], total_hours=stream_hours([900.0, 900.0]))
    np.testing.assert_allclose(fa2, [6.0])
    with pytest.raises(ValueError):
        fa_per_hour([a], 0.1, [0.5], total_hours=0.0)


def test_frame_windows_cover_tail():
    x = np.arange(25, dtype=np.float32)
    w = frame_windows(x, 10, 4)              # 1 + ceil(15/4) = 5 windows
    assert w.shape == (5, 10)
    np.testing.assert_array_equal(w[1], np.arange(4, 14))
    assert w[-1][-1] == 0 and w[-1][0] == 16
    assert frame_windows(np.ones(3), 10, 4).shape == (1, 10)
