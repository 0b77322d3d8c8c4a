"""Batched waveform augmentation on the device: reverb (RIR), noise at an SNR, a telephone-like
channel (band-pass + 8-bit mu-law), gain, time shift.

All random draws come from an explicit ``torch.Generator`` in a fixed order (same count whatever
the probabilities hit), so a given generator state always gives the same output. Draws added
later go at the end of that order, so an older configuration still gets the same audio.

Where the RIRs come from (``wakeword_dist.train.data_setup.augmenter``): a folder of real RIRs
(``load_rirs``) when given, else the dataset's simulated ``rir`` split
(``wakeword_dist.data.rooms``), else ``generate_rirs``' decaying noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

_EPS = 1e-10  # power floor (≈ −100 dB re full scale) guarding divisions on silent clips
_LN_1000 = math.log(1000.0)  # RT60: amplitude falls by 60 dB = factor 1000
_CHANNEL_TAPS = 255  # band-pass FIR length, samples: ~200 Hz transition, ~44 dB stop band (Hann) at 16 kHz
_MU = 255.0  # G.711 mu-law constant, 8-bit codes


def generate_rirs(
    count: int = 32,
    *,
    sample_rate: int = 16000,
    rt60_s: tuple[float, float] = (0.2, 0.8),
    seed: int = 0,
) -> Tensor:
    """Synthetic room impulse responses: exponentially decaying white noise, (count, L).

    RT60 (time for a 60 dB decay) is drawn uniformly in ``rt60_s`` seconds per RIR; L covers the
    longest RT60. Each RIR starts with a unit direct-path tap at index 0 and has unit energy.
    """
    gen = torch.Generator().manual_seed(seed)
    length = int(math.ceil(rt60_s[1] * sample_rate))
    t = torch.arange(length, dtype=torch.float32) / sample_rate  # s
    rt60 = rt60_s[0] + (rt60_s[1] - rt60_s[0]) * torch.rand(count, 1, generator=gen)
    envelope = torch.exp(-_LN_1000 * t / rt60)  # amplitude 1e-3 at t = RT60
    rirs = torch.randn(count, length, generator=gen) * envelope
    rirs[:, 0] = 1.0  # direct path: keeps the dry signal aligned at lag 0
    return rirs / rirs.norm(dim=1, keepdim=True)


def load_rirs(folder: str | Path, sample_rate: int) -> Tensor:
    """Read every .wav/.flac under ``folder`` (recursively) as a mono RIR at ``sample_rate`` Hz.

    Returns (R, L) float32, each RIR zero-padded to the longest, shifted so its peak (the direct
    path) is at index 0, and scaled to unit energy.
    """
    import soundfile as sf
    import torchaudio.functional as AF

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if not files:
        raise FileNotFoundError(f"no .wav/.flac RIR files under {folder}")
    rirs = []
    for path in files:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        rir = torch.from_numpy(data).mean(dim=1)  # mix down to mono
        if sr != sample_rate:
            rir = AF.resample(rir, sr, sample_rate)
        rir = rir[int(rir.abs().argmax()):]
        energy = rir.norm()
        if energy <= 0:
            raise ValueError(f"RIR {path} is silent")
        rirs.append(rir / energy)
    out = torch.zeros(len(rirs), max(r.numel() for r in rirs))
    for i, r in enumerate(rirs):
        out[i, : r.numel()] = r
    return out


def _where_rows(mask: Tensor, transform, x: Tensor, all_rows: bool | None = None) -> Tensor:
    """``torch.where(mask, transform(rows), x)``: clips whose ``mask`` (B, 1) is true get
    ``transform(rows)`` (rows: an index tensor into the batch; it returns those rows transformed).

    On a CPU only the chosen rows are computed: reverb alone on all 64 clips of a demo batch costs
    about as much as the student's forward, backward and AdamW, and a clip gets it with p = 0.2. On an
    accelerator every row is computed and masked, because a data-dependent row count would force
    a host sync each step (and stall the teacher running ahead). Each clip's result is the same
    either way: every transform works clip by clip (``all_rows`` overrides the device's choice)."""
    every_row = x.device.type != "cpu" if all_rows is None else all_rows
    if every_row:
        return torch.where(mask, transform(torch.arange(x.shape[0], device=x.device)), x)
    rows = mask[:, 0].nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    out = x.clone()
    out[rows] = transform(rows)
    return out


def _rms_power(x: Tensor) -> Tensor:
    """Mean square per clip: (B, S) → (B, 1)."""
    return x.pow(2).mean(dim=1, keepdim=True)


class WaveAugment(nn.Module):
    """Raw audio (B, S) → augmented (B, S), on the input's device; call as ``aug(audio, generator)``.

    Order: reverb → additive noise → channel → gain → time shift (room, then what the mic picks
    up, then the line it is sent over). Each step applies to a clip with its own probability; the
    parameters are drawn per clip.

    Args:
        noise_bank: (K, N) noise clips, or None (no additive noise). Clips shorter than S are
            tiled; longer ones are cropped at a random offset.
        snr_db: (low, high) signal-to-noise ratio in dB, uniform per clip.
        noise_prob: probability a clip gets noise.
        rir_prob: probability a clip gets reverb.
        rirs: (R, L) impulse responses, or None → ``generate_rirs(num_rirs, rt60_s, rir_seed)``.
        gain_db: (low, high) gain in dB, uniform per clip.
        gain_prob: probability a clip gets a gain change.
        shift_ms: maximum time shift, ms (uniform in [−shift_ms, shift_ms]).
        shift_prob: probability a clip is shifted.
        shift_mode: "circular" (roll) or "zero" (shift in silence).
        sample_rate: Hz.
        num_rirs, rt60_s, rir_seed: the decaying-noise RIRs made when ``rirs`` is None.
        channel_prob: probability a clip goes through the telephone-like channel: a linear-phase
            band-pass FIR (``_CHANNEL_TAPS`` taps) from ``channel_band_hz`` (each edge jittered
            by ×U(1 − channel_jitter, 1 + channel_jitter) per clip), re-scaled to the input RMS.
        channel_band_hz: (low, high) pass band, Hz (300-3400 = the telephone band).
        channel_mulaw_prob: probability a channelled clip is also 8-bit mu-law coded (G.711
            quantisation; samples saturate at ±1).
        speed_prob: probability a clip is played faster or slower (first, before the room): a
            factor ×U(speed_range) scales tempo, pitch and formants together, so one talker
            sounds like another (a larger or smaller vocal tract); linear interpolation about
            the clip's centre, silence where the slowed clip runs out.
        speed_range: (low, high) speed factors (0.85-1.15 ≈ ±2.5 semitones).
        all_rows: compute every transform on every clip and mask (True), or only on the clips
            that drew it (False); None = by device: only the chosen clips on a CPU, every clip on
            an accelerator (``_where_rows``). The audio is the same either way, up to float rounding.
    """

    def __init__(
        self,
        noise_bank: Tensor | None = None,
        snr_db: tuple[float, float] = (0.0, 20.0),
        noise_prob: float = 0.5,
        rir_prob: float = 0.3,
        rirs: Tensor | None = None,
        gain_db: tuple[float, float] = (-6.0, 6.0),
        gain_prob: float = 1.0,
        shift_ms: float = 100.0,
        shift_prob: float = 1.0,
        shift_mode: str = "circular",
        sample_rate: int = 16000,
        num_rirs: int = 32,
        rt60_s: tuple[float, float] = (0.2, 0.8),
        rir_seed: int = 0,
        channel_prob: float = 0.0,
        channel_band_hz: tuple[float, float] = (300.0, 3400.0),
        channel_mulaw_prob: float = 0.5,
        channel_jitter: float = 0.2,
        speed_prob: float = 0.0,
        speed_range: tuple[float, float] = (0.85, 1.15),
        all_rows: bool | None = None,
    ) -> None:
        super().__init__()
        for name, p in (("noise_prob", noise_prob), ("rir_prob", rir_prob),
                        ("gain_prob", gain_prob), ("shift_prob", shift_prob),
                        ("channel_prob", channel_prob), ("channel_mulaw_prob", channel_mulaw_prob),
                        ("speed_prob", speed_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if shift_mode not in ("circular", "zero"):
            raise ValueError(f"shift_mode must be 'circular' or 'zero', got {shift_mode!r}")
        if snr_db[0] > snr_db[1] or gain_db[0] > gain_db[1]:
            raise ValueError("snr_db and gain_db must be (low, high) ranges")
        low_hz, high_hz = channel_band_hz
        if not 0 <= channel_jitter < 1:
            raise ValueError(f"channel_jitter must be in [0, 1), got {channel_jitter}")
        j = channel_jitter
        if channel_prob > 0 and not (0 < low_hz * (1 + j) < high_hz * (1 - j) and high_hz * (1 + j) < sample_rate / 2):
            raise ValueError(f"channel_band_hz must keep 0 < low < high < Nyquist ({sample_rate / 2:g} Hz) "
                             f"after ×(1 ± channel_jitter={j}) per edge, got {tuple(channel_band_hz)}")
        if not 0 < speed_range[0] <= speed_range[1]:
            raise ValueError(f"speed_range must be (low, high) with 0 < low <= high, got {tuple(speed_range)}")
        if noise_prob > 0 and noise_bank is None:
            raise ValueError("noise_prob > 0 needs a noise_bank (K, N)")
        if noise_bank is not None and (noise_bank.dim() != 2 or noise_bank.shape[0] == 0):
            raise ValueError(f"noise_bank must be (K, N) with K >= 1, got {tuple(noise_bank.shape)}")
        if rirs is None and rir_prob > 0:
            rirs = generate_rirs(num_rirs, sample_rate=sample_rate, rt60_s=rt60_s, seed=rir_seed)
        if rirs is not None and rirs.dim() != 2:
            raise ValueError(f"rirs must be (R, L), got {tuple(rirs.shape)}")
        # Non-persistent buffers: move with .to(device) but stay out of checkpoints.
        self.register_buffer("noise_bank", None if noise_bank is None else noise_bank.float(), persistent=False)
        self.register_buffer("rirs", None if rirs is None else rirs.float(), persistent=False)
        self.snr_db = tuple(snr_db)
        self.noise_prob = noise_prob
        self.rir_prob = rir_prob
        self.gain_db = tuple(gain_db)
        self.gain_prob = gain_prob
        self.shift = int(round(shift_ms * sample_rate / 1000.0))  # samples
        self.shift_prob = shift_prob
        self.shift_mode = shift_mode
        self.sample_rate = sample_rate
        self.channel_prob = channel_prob
        self.channel_band_hz = (float(low_hz), float(high_hz))
        self.channel_mulaw_prob = channel_mulaw_prob
        self.channel_jitter = channel_jitter
        self.speed_prob = speed_prob
        self.speed_range = (float(speed_range[0]), float(speed_range[1]))
        self.all_rows = all_rows

    @staticmethod
    def _uniform(gen: torch.Generator, b: int, low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(b, 1, generator=gen, device=gen.device)

    @staticmethod
    def _coin(gen: torch.Generator, b: int, p: float) -> Tensor:
        return torch.rand(b, 1, generator=gen, device=gen.device) < p

    def _reverb(self, x: Tensor, idx: Tensor) -> Tensor:
        """FFT convolution with RIR ``idx`` per clip, truncated to S, re-scaled to the dry RMS."""
        s = x.shape[1]
        rir = self.rirs.to(x.device)[idx]  # (B, L)
        n = s + rir.shape[1] - 1
        n_fft = 1 << (n - 1).bit_length()
        wet = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(rir, n_fft), n_fft)[:, :s]
        return wet * torch.sqrt((_rms_power(x) + _EPS) / (_rms_power(wet) + _EPS))

    def _noise(self, b: int, s: int, idx: Tensor, offset: Tensor) -> Tensor:
        """(B, S) noise segments: clip ``idx`` from ``offset`` (tiled when shorter than S)."""
        n = self.noise_bank.shape[1]
        pos = (offset + torch.arange(s, device=idx.device)[None, :]) % n  # (B, S)
        return self.noise_bank.to(idx.device)[idx[:, None], pos]

    def _channel(self, x: Tensor, low_hz: Tensor, high_hz: Tensor, mulaw: Tensor) -> Tensor:
        """Band-pass each clip of x (B, S) between low_hz and high_hz (B, 1) Hz with a Hann-windowed
        sinc FIR (zero phase: the filter's delay is cut), back to the input RMS, then 8-bit mu-law
        where ``mulaw`` (B, 1) is true."""
        s, taps = x.shape[1], _CHANNEL_TAPS
        n = torch.arange(taps, device=x.device, dtype=x.dtype) - (taps - 1) / 2  # samples from centre
        fl, fh = low_hz / self.sample_rate, high_hz / self.sample_rate  # cycles / sample, (B, 1)
        h = 2 * fh * torch.sinc(2 * fh * n) - 2 * fl * torch.sinc(2 * fl * n)  # ideal band-pass
        h = h * torch.hann_window(taps + 2, periodic=False, device=x.device, dtype=x.dtype)[1:-1]
        n_fft = 1 << (s + taps - 2).bit_length()
        y = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(h, n_fft), n_fft)
        y = y[:, (taps - 1) // 2:(taps - 1) // 2 + s]
        y = y * torch.sqrt((_rms_power(x) + _EPS) / (_rms_power(y) + _EPS))
        # mu-law: compress, quantise to 256 codes, expand (what a G.711 line does to the samples).
        c = y.clamp(-1.0, 1.0)
        code = torch.round((torch.sign(c) * torch.log1p(_MU * c.abs()) / math.log1p(_MU) + 1) / 2 * _MU)
        e = code / _MU * 2 - 1
        coded = torch.sign(e) * torch.expm1(e.abs() * math.log1p(_MU)) / _MU
        return torch.where(mulaw, coded, y)

    @staticmethod
    def _speed(x: Tensor, factor: Tensor) -> Tensor:
        """Play each clip of x (B, S) ``factor`` (B, 1) times faster about its centre: output
        sample t reads input c + (t - c)·factor (c = centre), linearly interpolated; 0 outside."""
        s = x.shape[1]
        c = (s - 1) / 2
        src = c + (torch.arange(s, device=x.device, dtype=x.dtype)[None, :] - c) * factor  # (B, S)
        left = src.floor()
        frac = src - left
        i0, i1 = left.long(), left.long() + 1
        inside = (i0 >= 0) & (i1 < s)
        a = x.gather(1, i0.clamp(0, s - 1))
        b = x.gather(1, i1.clamp(0, s - 1))
        return torch.where(inside, a + (b - a) * frac, torch.zeros((), device=x.device, dtype=x.dtype))

    def _shift(self, x: Tensor, k: Tensor) -> Tensor:
        """Shift each clip right by k samples (negative = left): (B, S), k (B, 1)."""
        s = x.shape[1]
        src = torch.arange(s, device=x.device)[None, :] - k  # (B, S) source index
        if self.shift_mode == "circular":
            return x.gather(1, src % s)
        inside = (src >= 0) & (src < s)
        return torch.where(inside, x.gather(1, src.clamp(0, s - 1)), torch.zeros((), device=x.device))

    @torch.no_grad()
    def forward(self, audio: Tensor, generator: torch.Generator) -> Tensor:
        """audio (B, S) float → (B, S) float32 on audio's device."""
        if audio.dim() != 2:
            raise ValueError(f"expected raw audio (B, S), got shape {tuple(audio.shape)}")
        x = audio.float()
        b, s = x.shape
        dev = x.device
        g = generator
        # Draw everything up front, in a fixed order, on the generator's device.
        do_rir = self._coin(g, b, self.rir_prob).to(dev)
        rir_idx = torch.randint(0, 1 if self.rirs is None else self.rirs.shape[0], (b,), generator=g, device=g.device).to(dev)
        do_noise = self._coin(g, b, self.noise_prob).to(dev)
        noise_idx = torch.randint(0, 1 if self.noise_bank is None else self.noise_bank.shape[0], (b,), generator=g, device=g.device).to(dev)
        noise_off = torch.randint(0, 1 << 30, (b, 1), generator=g, device=g.device).to(dev)
        snr = self._uniform(g, b, *self.snr_db).to(dev)
        do_gain = self._coin(g, b, self.gain_prob).to(dev)
        gain = self._uniform(g, b, *self.gain_db).to(dev)
        do_shift = self._coin(g, b, self.shift_prob).to(dev)
        shift = torch.randint(-self.shift, self.shift + 1, (b, 1), generator=g, device=g.device).to(dev)
        do_channel = self._coin(g, b, self.channel_prob).to(dev)
        j = self.channel_jitter
        low_hz = self.channel_band_hz[0] * self._uniform(g, b, 1 - j, 1 + j).to(dev)
        high_hz = self.channel_band_hz[1] * self._uniform(g, b, 1 - j, 1 + j).to(dev)
        do_mulaw = self._coin(g, b, self.channel_mulaw_prob).to(dev)
        do_speed = self._coin(g, b, self.speed_prob).to(dev)  # drawn last: older draws unchanged
        speed = self._uniform(g, b, *self.speed_range).to(dev)

        if self.speed_prob > 0:
            x = _where_rows(do_speed, lambda r: self._speed(x[r], speed[r]), x, self.all_rows)
        if self.rirs is not None and self.rir_prob > 0:
            x = _where_rows(do_rir, lambda r: self._reverb(x[r], rir_idx[r]), x, self.all_rows)
        if self.noise_bank is not None and self.noise_prob > 0:
            def noisy(r):
                noise = self._noise(r.numel(), s, noise_idx[r], noise_off[r])
                # Scale noise so 10·log10(P_signal / P_noise) = snr (powers as mean squares).
                scale = torch.sqrt(_rms_power(x[r]) / ((_rms_power(noise) + _EPS) * 10.0 ** (snr[r] / 10.0)))
                return x[r] + scale * noise
            x = _where_rows(do_noise, noisy, x, self.all_rows)
        if self.channel_prob > 0:
            x = _where_rows(do_channel, lambda r: self._channel(x[r], low_hz[r], high_hz[r], do_mulaw[r]), x,
                            self.all_rows)
        if self.gain_prob > 0:
            x = torch.where(do_gain, x * 10.0 ** (gain / 20.0), x)
        if self.shift > 0 and self.shift_prob > 0:
            x = torch.where(do_shift, self._shift(x, shift), x)
        return x
