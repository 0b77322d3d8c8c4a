"""LogMel front end: shapes, per-clip dB floor (batch-independence), CMVN, SpecAugment."""

import pytest
import torch
import torchaudio

from wakeword_dist.models import LogMel, SpecAugment, compute_cmvn


def _mixed_batch():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000) / 16000
    loud = 0.9 * torch.sin(2 * torch.pi * 440 * t)
    quiet = 1e-4 * torch.randn(16000, generator=g)
    mid = 0.05 * torch.randn(16000, generator=g)
    silent = torch.zeros(16000)
    return torch.stack([loud, quiet, mid, silent])


def test_shape_and_units():
    fe = LogMel()
    feats = fe(torch.randn(3, 16000) * 0.1)
    assert feats.shape == (3, 1, 40, 101) and feats.dtype == torch.float32
    assert fe.num_frames(16000) == 101
    assert fe(torch.randn(2, 1, 8000)).shape == (2, 1, 40, 51)
    # dB floor: each clip spans at most top_db below its own peak.
    span = feats.amax(dim=(2, 3)) - feats.amin(dim=(2, 3))
    assert torch.all(span <= 80.0 + 1e-4)


def test_matches_torchaudio_db():
    x = torch.randn(2, 16000) * 0.1
    fe = LogMel(top_db=None)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, win_length=400, hop_length=160, f_min=20, n_mels=40)
    ref = torchaudio.transforms.AmplitudeToDB("power", top_db=None)(mel(x))
    torch.testing.assert_close(fe(x)[:, 0], ref, atol=1e-4, rtol=0)


def test_single_clip_equals_batched():
    fe = LogMel()
    batch = _mixed_batch()
    together = fe(batch)
    for i in range(batch.shape[0]):
        torch.testing.assert_close(fe(batch[i : i + 1]), together[i : i + 1], atol=1e-5, rtol=0)


def test_bad_rank_raises():
    with pytest.raises(ValueError, match=r"expected raw audio \(B, S\) or \(B, 1, S\), got shape \(16000,\)"):
        LogMel()(torch.randn(16000))
    with pytest.raises(ValueError, match="got shape"):
        LogMel()(torch.randn(2, 2, 16000))


def test_cmvn_roundtrip():
    fe = LogMel()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 16000, generator=g) * s for s in (0.01, 0.1, 0.5)]
    mean, std = compute_cmvn(fe, [(b, None) for b in batches])
    assert mean.shape == std.shape == (40,)
    fe.set_cmvn(mean, std)
    feats = torch.cat([fe(b) for b in batches])  # (N, 1, 40, T)
    per_bin = feats.transpose(0, 2).reshape(40, -1)
    torch.testing.assert_close(per_bin.mean(1), torch.zeros(40), atol=1e-3, rtol=0)
    torch.testing.assert_close(per_bin.std(1, unbiased=False), torch.ones(40), atol=1e-3, rtol=0)
    # compute_cmvn ignores CMVN already set, and the stats live in the state dict.
    mean2, _ = compute_cmvn(fe, batches)
    torch.testing.assert_close(mean2, mean)
    assert {"cmvn_mean", "cmvn_std"} <= set(fe.state_dict())
    with pytest.raises(ValueError):
        fe.set_cmvn(torch.zeros(3), torch.ones(3))


def test_float32_under_autocast():
    fe = LogMel()
    x = torch.randn(2, 16000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fe(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, fe(x))


def test_specaugment_training_only():
    sa = SpecAugment(freq_masks=2, freq_width=8, time_masks=2, time_width=20)
    feats = torch.randn(8, 1, 40, 101)
    sa.eval()
    assert sa(feats) is feats
    sa.train()
    torch.manual_seed(0)
    out = sa(feats)
    assert out.shape == feats.shape
    changed = (out != feats).float().mean().item()
    assert 0.0 < changed < 0.8
    # Masked cells carry the clip mean.
    diff = out != feats
    i = int(diff.flatten(1).any(1).nonzero()[0])
    fill = feats[i].mean()
    torch.testing.assert_close(out[i][diff[i]], fill.expand(int(diff[i].sum())))
