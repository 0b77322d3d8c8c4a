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


# ------------------------------------------------------------------------- telephone channel
def _tones(freqs_hz, s=16000, b=2):
    t = torch.arange(s) / 16000
    return sum(0.1 * torch.sin(2 * math.pi * f * t) for f in freqs_hz).expand(b, s).clone()


def _level_db(x, f_hz):
    """Level of the f_hz component of each clip (Hann-windowed 1-s spectrum), dB: (B,)."""
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[1]), dim=1).abs()
    return 20 * torch.log10(spec[:, int(f_hz)])  # 1-s clips: bin k = k Hz


def test_channel_attenuates_out_of_band_tones():
    x = _tones((100.0, 1000.0, 6000.0))
    y = WaveAugment(None, **_off(channel_prob=1.0), channel_mulaw_prob=0.0)(x, _gen(11))
    for f in (100.0, 6000.0):  # outside 300-3400 Hz (edges jittered ±20 %: 240-4080 Hz at worst)
        drop = (_level_db(y, f) - _level_db(y, 1000.0)) - (_level_db(x, f) - _level_db(x, 1000.0))
        assert torch.all(drop < -30), (f, drop)
    torch.testing.assert_close(y.pow(2).mean(1), x.pow(2).mean(1), rtol=1e-3, atol=0)  # back to input RMS
    # An in-band pair keeps its balance.
    z = _tones((700.0, 2000.0))
    w = WaveAugment(None, **_off(channel_prob=1.0), channel_mulaw_prob=0.0)(z, _gen(11))
    balance = (_level_db(w, 700.0) - _level_db(w, 2000.0)) - (_level_db(z, 700.0) - _level_db(z, 2000.0))
    assert torch.all(balance.abs() < 1.0), balance


def test_channel_mulaw_quantises_like_g711():
    x = _tones((440.0, 1320.0))
    kw = dict(**_off(channel_prob=1.0))
    clean = WaveAugment(None, **kw, channel_mulaw_prob=0.0)(x, _gen(12))
    coded = WaveAugment(None, **kw, channel_mulaw_prob=1.0)(x, _gen(12))
    snr = 10 * torch.log10(clean.pow(2).mean(1) / (coded - clean).pow(2).mean(1))
    assert torch.all((snr > 30) & (snr < 45)), snr  # 8-bit mu-law: ~38 dB on a loud signal
    assert coded.unique().numel() <= 256  # at most 256 codes


def test_channel_is_drawn_last_and_deterministic():
    """The channel's draws come after all older ones, so turning it on changes only the clips its
    coin picks: the others are bit-identical to the channel-off output of the same generator state
    (an older config keeps its audio). Same count of draws whatever the probabilities."""
    x = _speechlike(16)
    noise = torch.randn(4, 20000, generator=_gen(3))
    off = WaveAugment(noise, noise_prob=0.5, rir_prob=0.5, channel_prob=0.0)
    on = WaveAugment(noise, noise_prob=0.5, rir_prob=0.5, channel_prob=0.5)
    g_off, g_on = _gen(7), _gen(7)
    expected, a = off(x, g_off), on(x, g_on)
    assert torch.equal(g_off.get_state(), g_on.get_state())
    assert torch.equal(a, on(x, _gen(7)))
    same = [torch.equal(a[i], expected[i]) for i in range(16)]
    assert 0 < sum(same) < 16, same


def test_channel_argument_checks():
    with pytest.raises(ValueError, match="channel_band_hz"):
        WaveAugment(None, **_off(channel_prob=0.5), channel_band_hz=(3000.0, 3400.0))
    with pytest.raises(ValueError, match="Nyquist"):
        WaveAugment(None, **_off(channel_prob=0.5), channel_band_hz=(300.0, 7000.0))
    WaveAugment(None, **_off(), sample_rate=8000)  # the channel off: its band is not checked
    with pytest.raises(ValueError, match="channel_prob"):
        WaveAugment(None, **_off(channel_prob=1.5))


# ------------------------------------------------------------------ where the recipe's RIRs come from
@pytest.fixture
def recipe_augmenter(tmp_path):
    """``data_setup.augmenter`` on a dataset root with no splits but what a test writes."""
    from accelerate import PartialState

    from wakeword_dist.config import load_config
    from wakeword_dist.train.data_setup import DataSplits, augmenter

    def build(*overrides):
        cfg = load_config(None, [f"data.root={tmp_path}", "augment.noise_prob=0", "augment.rir_prob=1",
                                 *overrides])
        data = DataSplits(root=tmp_path, train_dir=tmp_path / "train", val_dir=tmp_path / "val",
                          test_dir=tmp_path / "test", stream_dir=tmp_path / "stream",
                          background_dir=tmp_path / "background", label_names=["negative", "hey_nova"],
                          positive_index=1, train_index={})
        return augmenter(cfg, data, "cpu")

    yield build
    PartialState._reset_state()  # augmenter printed through the process-wide state


def test_augmenter_prefers_rir_dir_then_rir_split_then_generated(recipe_augmenter, tmp_path, capsys):
    from wakeword_dist.data import rooms

    aug = recipe_augmenter()
    assert aug.rir_source.startswith("generated decaying-noise")
    assert torch.equal(aug.rirs, generate_rirs(32))
    assert "augment: reverb from generated" in capsys.readouterr().out

    rooms.write_rir_split(tmp_path / "rir", 3, seed=1, max_seconds=0.5)
    aug = recipe_augmenter()
    assert aug.rir_source.startswith("rir split") and tuple(aug.rirs.shape) == (3, 8000)
    torch.testing.assert_close(aug.rirs, rooms.load_rir_split(tmp_path / "rir", 16000))
    assert "3 simulated RIRs" in capsys.readouterr().out
    assert tuple(recipe_augmenter("augment.rir_max=2").rirs.shape) == (2, 8000)

    real = tmp_path / "real_rirs"
    real.mkdir()
    for i in range(2):
        rir = np.zeros(400, np.float32)
        rir[0], rir[50 + i] = 1.0, 0.3
        sf.write(real / f"r{i}.wav", rir, 16000)
    aug = recipe_augmenter(f"augment.rir_dir={real}")
    assert aug.rir_source.startswith("augment.rir_dir") and tuple(aug.rirs.shape) == (2, 400)
    # No reverb asked for: no bank is loaded (nor generated) at all.
    assert recipe_augmenter("augment.rir_prob=0").rirs is None


def test_channel_config_errors_name_the_key():
    from wakeword_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="augment.channel_high_hz.*Nyquist"):
        load_config(None, ["augment.channel_prob=0.1", "augment.channel_high_hz=7000"])
    with pytest.raises(ConfigError, match="augment.channel_low_hz"):
        load_config(None, ["augment.channel_prob=0.1", "augment.channel_low_hz=3000"])
    load_config(None, ["data.sample_rate=8000"])  # the channel off: 8 kHz data is not refused for it
    with pytest.raises(ConfigError, match="augment.channel_prob"):
        load_config(None, ["augment.channel_prob=2"])
    cfg = load_config(None, ["augment.channel_prob=0.1"])
    assert (cfg.augment.channel_low_hz, cfg.augment.channel_high_hz) == (300.0, 3400.0)


def test_speed_scales_a_tone_and_keeps_older_draws():
    import math

    import torch

    from wakeword_dist.augment import WaveAugment

    sr, s = 16000, 16000
    t = torch.arange(s) / sr
    tone = torch.sin(2 * math.pi * 500 * t)[None].repeat(2, 1)
    plain = dict(noise_prob=0.0, rir_prob=0.0, gain_prob=0.0, shift_prob=0.0)
    sped = WaveAugment(**plain, speed_prob=1.0, speed_range=(1.2, 1.2))(tone, torch.Generator().manual_seed(0))
    peak_hz = torch.fft.rfft(sped[0, 4000:12000]).abs().argmax().item() * sr / 8000
    assert abs(peak_hz - 600) <= 2  # 500 Hz played 1.2x faster
    assert torch.allclose(sped[0], sped[1])
    # speed drawn after every older draw: with speed_prob=0 the output equals the old augmenter's
    full = dict(noise_prob=0.0, rir_prob=0.5, gain_prob=1.0, shift_prob=1.0)
    noise = torch.randn(4, s, generator=torch.Generator().manual_seed(1)) * 0.1
    a = WaveAugment(**full)(noise, torch.Generator().manual_seed(3))
    b = WaveAugment(**full, speed_prob=0.0, speed_range=(0.5, 2.0))(noise, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_cpu_computes_only_the_chosen_clips_and_matches_the_all_rows_path(monkeypatch):
    """On a CPU each transform runs on the clips that drew it; an accelerator runs it on every
    clip and masks (no host sync). Both give each clip the same audio, up to float rounding
    (a rounding step can move a mu-law code: 1/255 of full scale at most)."""
    import wakeword_dist.augment as augment

    x = _speechlike(b=32, seed=4)
    x[5] = 0.0  # a silent clip through every transform
    bank = torch.randn(6, 20000, generator=_gen(2)) * 0.05
    kw = dict(noise_bank=bank, noise_prob=0.5, rir_prob=0.3, rirs=generate_rirs(8, seed=1),
              channel_prob=0.3, speed_prob=0.5)
    chosen, computed = [], []  # per transform: clips that drew it, clips it was run on
    real = augment._where_rows

    def counted(mask, transform, xs, all_rows=None):
        chosen.append(int(mask.sum()))
        computed.append(0)

        def run(rows):
            computed[-1] = rows.numel()
            return transform(rows)
        return real(mask, run, xs, all_rows)

    monkeypatch.setattr(augment, "_where_rows", counted)
    subset = WaveAugment(**kw)(x, _gen(7))
    assert len(chosen) == 4 and computed == chosen  # speed, reverb, noise, channel
    assert 0 < sum(computed) < 4 * 32
    monkeypatch.undo()
    every = WaveAugment(**kw, all_rows=True)(x, _gen(7))  # what an accelerator computes
    assert torch.allclose(subset, every, atol=2 / 255, rtol=0)
    assert (subset - every).abs().median() < 1e-6
    assert torch.isfinite(subset).all()
