"""Shared-STFT stream scoring (eval/stream_features) equals the per-window path.

The per-window path (``score_streams(..., exact_windows=True)``) runs the whole student on every
raw window, as the ONNX runner does; the fast path must give the same frame scores (≤ 1e-5 abs)
for every student, with and without CMVN, on streams of odd lengths.
"""
import numpy as np
import pytest
import torch

from wakeword_dist.eval.detector import frame_windows
from wakeword_dist.eval.report import score_streams
from wakeword_dist.eval.stream_features import (fast_frontend, plan_frames, stream_scores,
                                                window_mel_power)
from wakeword_dist.models.frontend import compute_cmvn
from wakeword_dist.models.registry import build_student

SR = 16000
WIN, HOP = SR, SR // 10          # 1-s windows every 0.1 s (samples)


def _stream(n: int, seed: int) -> np.ndarray:
    """(n,) float32: noise with loud bursts, a tone and digital silence, so the per-window top_db
    floor (80 dB below each window's peak) bites differently in different windows."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.05 * rng.standard_normal(n) * (1 + 3 * (np.sin(2 * np.pi * 0.7 * t) > 0.6))
    x += 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0.5)
    x[int(0.45 * n):int(0.55 * n)] = 0.0             # exact silence: power hits the 1e-10 floor
    return x.astype(np.float32)


# Lengths (samples): shorter than a window (one zero-padded window), a tail that needs
# zero-padding, an exact fit (W + 7·H), and a longer one spanning several batches.
STREAMS = [("short", _stream(5923, 1)), ("padded", _stream(2 * SR + 1234, 2)),
           ("exact", _stream(WIN + 7 * HOP, 3)), ("long", _stream(6 * SR + 777, 4))]


def _sensitive(model: torch.nn.Module) -> torch.nn.Module:
    """Make a random-init student's scores depend on its input, as a trained one's do.

    At random init BatchNorm's running stats (mean 0, var 1) meet dB-scale activations and the
    outputs of mobilenetv3_small / bc_resnet are constant to ~1e-9 / 1e-5 over the windows: a
    1e-5 comparison would prove nothing. So: calibrate every BatchNorm on these windows
    (cumulative average over one pass), then rescale and recentre the last layer so the logit
    gap has mean 0 and std 2 (scores spread over (0, 1))."""
    windows = torch.from_numpy(np.array(frame_windows(STREAMS[-1][1], WIN, HOP)))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None                     # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model.body(model.frontend(windows))      # no SpecAugment: calibrate on clean features
    model.eval()
    last = [m for m in model.body.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    gap = lambda: (lambda z: z[:, 1] - z[:, 0])(model(windows))  # noqa: E731
    with torch.no_grad():
        scale = 2.0 / float(gap().std())
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        last.bias[1] -= float(gap().mean())
    return model


def _model(name: str, cmvn: bool, **frontend_kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_student(name, 2, specaugment={}, **frontend_kwargs).eval()
    if cmvn:
        batches = [torch.from_numpy(np.array(frame_windows(x, WIN, HOP))) for _, x in STREAMS]
        model.frontend.set_cmvn(*compute_cmvn(model.frontend, batches))
    return _sensitive(model)


def _both(model, batch_size=16, **kw):
    items = [(k, x, SR) for k, x in STREAMS]
    exact = score_streams(model, items, positive_index=1, batch_size=batch_size, progress=False,
                          exact_windows=True, **kw)[1]
    fast = score_streams(model, items, positive_index=1, batch_size=batch_size, progress=False, **kw)[1]
    return exact, fast


@pytest.mark.parametrize("cmvn", [False, True], ids=["no_cmvn", "cmvn"])
@pytest.mark.parametrize("name", ["tiny_conv", "mobilenetv3_small", "bc_resnet"])
def test_fast_stream_scores_equal_per_window_scores(name, cmvn):
    model = _model(name, cmvn)
    assert fast_frontend(model, WIN, HOP) is not None, "the fast path must be the one under test"
    exact, fast = _both(model)
    for (key, x), e, f in zip(STREAMS, exact, fast):
        assert len(e) == len(f) == 1 + int(np.ceil(max(x.size - WIN, 0) / HOP)), key
        np.testing.assert_allclose(f, e, rtol=0, atol=1e-5, err_msg=key)
    spread = np.concatenate(exact)
    assert spread.max() - spread.min() > 0.3, "scores must vary, or the comparison is vacuous"


@pytest.mark.parametrize("frontend_kwargs", [dict(win_ms=50.0), dict(hop_ms=20.0)],
                         ids=["n_fft1024_4_edge_frames", "hop20ms_1_edge_frame"])
def test_other_front_end_geometries(frontend_kwargs):
    """The edge-frame count follows the STFT geometry: 800-sample window / 1024 FFT → 4 edge
    frames at each end; 20-ms hop → 1."""
    model = _model("tiny_conv", True, **frontend_kwargs)
    plan = plan_frames(model.frontend, WIN, HOP)
    assert (plan.left, plan.frames - plan.right_start) == ((4, 4) if "win_ms" in frontend_kwargs else (1, 1))
    for e, f in zip(*_both(model, batch_size=5)):
        np.testing.assert_allclose(f, e, rtol=0, atol=1e-5)


def test_window_power_equals_per_window_mel_and_edges_really_differ():
    """Power level: every frame (edges included) equals frontend.mel on the raw window; the edge
    frames of the stream STFT (real neighbouring samples instead of reflect padding) do not."""
    frontend = build_student("tiny_conv", 2).frontend
    plan = plan_frames(frontend, WIN, HOP)
    assert (plan.frames, plan.left, plan.right_start) == (101, 2, 99)   # 400 / 512 / 160 samples
    windows = frame_windows(STREAMS[-1][1], WIN, HOP)[3:40]               # not at the stream start
    with torch.inference_mode():
        want = frontend.power_to_db(frontend.mel(torch.from_numpy(np.ascontiguousarray(windows))))
        got = frontend.power_to_db(window_mel_power(frontend, plan, windows))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-3)          # dB
        stream = np.concatenate([windows[:-1, :HOP].reshape(-1), windows[-1]])
        naive = frontend.power_to_db(frontend.mel(torch.from_numpy(stream)[None]))[0]
        naive_first = naive[:, ::plan.ratio][:, :len(windows)]             # frame 0 of each window
        assert (naive_first - want[:, :, 0].T).abs().max() > 1.0, "edge frames must matter (dB)"


def test_falls_back_to_per_window_where_the_fast_path_does_not_apply():
    """A window hop that is not a multiple of the 160-sample STFT hop (0.105 s = 1680 samples),
    and a model that is no Student, take the per-window path — and still score."""
    model = _model("tiny_conv", False)
    assert plan_frames(model.frontend, WIN, 1680) is None
    exact, fast = _both(model, hop_s=0.105)
    for e, f in zip(exact, fast):
        np.testing.assert_array_equal(f, e)
    assert fast_frontend(torch.nn.Sequential(model.frontend, model.body), WIN, HOP) is None


def test_stream_scores_direct_call_matches_and_chunks_do_not_matter():
    model = _model("bc_resnet", True)
    plan = plan_frames(model.frontend, WIN, HOP)
    x = STREAMS[-1][1]
    a = stream_scores(model, plan, x, window_samples=WIN, hop_samples=HOP, positive_index=1,
                      batch_size=3, device=torch.device("cpu"))    # as validate passes acc.device
    b = stream_scores(model, plan, x, window_samples=WIN, hop_samples=HOP, positive_index=1,
                      batch_size=1000)
    # 1e-5, not 0: the body's convolutions round differently at other batch sizes (~1e-6 seen),
    # on the per-window path too.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
