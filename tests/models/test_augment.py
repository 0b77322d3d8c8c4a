"""WaveAugment: SNR accuracy, identity at zero probabilities, determinism, RIR loading."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from wakeword_dist.augment import WaveAugment, generate_rirs, load_rirs


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _speechlike(b=6, s=16000, seed=0):
    g = _gen(seed)
    t = torch.arange(s) / 16000
    f0 = 100 + 300 * torch.rand(b, 1, generator=g)
    amp = 10 ** (-2 * torch.rand(b, 1, generator=g))  # −40..0 dB clip levels
    return amp * torch.sin(2 * math.pi * f0 * t) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))


def _off(**kw):
    base = dict(noise_prob=0.0, rir_prob=0.0, gain_prob=0.0, shift_prob=0.0)
    base.update(kw)
    return base


def test_snr_matches_request():
    noise = torch.randn(3, 7000, generator=_gen(1)) * torch.tensor([[0.01], [0.3], [1.0]])
    x = _speechlike()
    for snr in (0.0, 7.5, 20.0):
        aug = WaveAugment(noise, snr_db=(snr, snr), **_off(noise_prob=1.0))
        y = aug(x, _gen(2))
        added = y - x
        achieved = 10 * torch.log10(x.pow(2).mean(1) / added.pow(2).mean(1))
        assert torch.all((achieved - snr).abs() < 0.5), achieved


def test_identity_when_all_probs_zero():
    x = _speechlike()
    aug = WaveAugment(torch.randn(2, 16000), **_off())
    assert torch.equal(aug(x, _gen()), x)


def test_deterministic_given_generator():
    x = _speechlike()
    aug = WaveAugment(torch.randn(4, 20000, generator=_gen(3)), noise_prob=0.5, rir_prob=0.5)
    a, b = aug(x, _gen(7)), aug(x, _gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(8)))
    assert a.shape == x.shape and a.dtype == torch.float32


def test_gain_and_shift():
    x = _speechlike(2)
    y = WaveAugment(None, gain_db=(6.0, 6.0), **_off(gain_prob=1.0))(x, _gen())
    torch.testing.assert_close(y, x * 10 ** (6 / 20))
    # 10 ms max shift = 160 samples; circular shift preserves energy exactly, zero-padding loses some.
    circ = WaveAugment(None, shift_ms=10, **_off(shift_prob=1.0))(x, _gen(4))
    torch.testing.assert_close(circ.pow(2).sum(1), x.pow(2).sum(1))
    matches = [any(torch.equal(circ[i], torch.roll(x[i], k)) for k in range(-160, 161)) for i in range(2)]
    assert all(matches)
    zero = WaveAugment(None, shift_ms=10, shift_mode="zero", **_off(shift_prob=1.0))(x, _gen(4))
    assert torch.all(zero.pow(2).sum(1) <= x.pow(2).sum(1) + 1e-6)


def test_reverb_keeps_level():
    x = _speechlike(4)
    y = WaveAugment(None, **_off(rir_prob=1.0))(x, _gen(5))
    assert not torch.equal(x, y)
    torch.testing.assert_close(y.pow(2).mean(1), x.pow(2).mean(1), rtol=1e-3, atol=1e-9)


def test_generated_rirs_decay():
    rirs = generate_rirs(4, rt60_s=(0.3, 0.3), seed=1)
    assert rirs.shape == (4, 4800)
    torch.testing.assert_close(rirs.norm(dim=1), torch.ones(4))
    assert torch.equal(rirs, generate_rirs(4, rt60_s=(0.3, 0.3), seed=1))
    # Energy in the last 10 % is tens of dB below the first 10 %.
    head, tail = rirs[:, 1:480].pow(2).sum(1), rirs[:, -480:].pow(2).sum(1)
    assert torch.all(10 * torch.log10(head / tail) > 30)


def test_load_rirs(tmp_path):
    folder = tmp_path / "rirs"
    folder.mkdir()
    rir = np.zeros(800, dtype=np.float32)
    rir[10] = 1.0
    rir[200] = 0.5
    sf.write(folder / "a.wav", rir, 16000)
    sf.write(folder / "b.flac", np.stack([rir[:400], rir[:400]], 1), 8000)  # stereo, 8 kHz
    (folder / "notes.txt").write_text("ignored")
    rirs = load_rirs(folder, 16000)
    assert rirs.shape[0] == 2
    torch.testing.assert_close(rirs.norm(dim=1), torch.ones(2))
    assert int(rirs[0].abs().argmax()) == 0  # peak moved to lag 0
    with pytest.raises(FileNotFoundError):
        load_rirs(tmp_path / "empty", 16000)


def test_argument_checks():
    with pytest.raises(ValueError, match="noise_bank"):
        WaveAugment(None, noise_prob=0.5)
    with pytest.raises(ValueError, match="rir_prob"):
        WaveAugment(None, noise_prob=0.0, rir_prob=2.0)
    with pytest.raises(ValueError, match="expected raw audio"):
        WaveAugment(None, noise_prob=0.0)(torch.zeros(16000), _gen())
