"""Log-mel front end and SpecAugment, both plain ``nn.Module`` s that run on the device.

The front end lives *inside* every student so that one module maps raw 16 kHz audio to logits and
exports to ONNX with raw audio in. It is computed in float32 whatever the surrounding autocast:
the power spectrum of a full-scale clip reaches ~6e4 (n_fft=512), at the edge of fp16's range.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torchaudio
from torch import Tensor, nn

# Power floor before the log: 1e-10 → -100 dB, far below any top_db floor of a non-silent clip.
_POWER_FLOOR = 1e-10


def as_batch_audio(audio: Tensor) -> Tensor:
    """Return raw audio as (B, S); accepts (B, S) or (B, 1, S). Any other rank is an error."""
    if audio.dim() == 3 and audio.shape[1] == 1:
        return audio.squeeze(1)
    if audio.dim() != 2:
        raise ValueError(
            f"expected raw audio (B, S) or (B, 1, S), got shape {tuple(audio.shape)}"
        )
    return audio


def _float32_region(device_type: str):
    """Disable autocast only when it is on, so exported graphs carry no autocast node."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return _NullContext()


class _NullContext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class LogMel(nn.Module):
    """Raw audio (B, S) float → log-mel (B, 1, n_mels, T) in dB (optionally CMVN-normalised).

    T = S // hop + 1 (centred frames, reflect padding). The top_db floor is applied per clip
    (max over that clip's own mel bins and frames), so a clip's features never depend on the other
    clips in its batch: single-clip inference equals batched inference.

    Args:
        sample_rate: Hz.
        n_mels: mel bins.
        win_ms: analysis window, ms (25 ms = 400 samples at 16 kHz).
        hop_ms: frame hop, ms (10 ms = 160 samples at 16 kHz → 101 frames per 1 s clip).
        n_fft: FFT size in samples; None → next power of two ≥ window (512 at 16 kHz / 25 ms).
        f_min: lowest mel edge, Hz (20 Hz drops DC and rumble).
        f_max: highest mel edge, Hz; None → sample_rate / 2.
        top_db: dynamic range kept below each clip's loudest bin, dB; None → no floor.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        f_min: float = 20.0,
        f_max: float | None = None,
        top_db: float | None = 80.0,
    ) -> None:
        super().__init__()
        win_length = int(round(sample_rate * win_ms / 1000.0))
        hop_length = int(round(sample_rate * hop_ms / 1000.0))
        if n_fft is None:
            n_fft = 1 << (win_length - 1).bit_length()
        if n_fft < win_length:
            raise ValueError(f"n_fft={n_fft} is shorter than the window ({win_length} samples)")
        if top_db is not None and top_db <= 0:
            raise ValueError(f"top_db must be > 0 dB or None, got {top_db}")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.top_db = top_db
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
        )
        # torch's periodic Hann window is a view into an (N + 1)-sample buffer; safetensors
        # (Accelerate's save_state) refuses to save a tensor that does not own its storage.
        self.mel.spectrogram.window = self.mel.spectrogram.window.clone()
        # Global CMVN per mel bin (dB); identity until set_cmvn. Persistent: saved with the model
        # and baked into the ONNX graph as constants.
        self.register_buffer("cmvn_mean", torch.zeros(n_mels))
        self.register_buffer("cmvn_std", torch.ones(n_mels))

    def set_cmvn(self, mean: Tensor, std: Tensor) -> None:
        """Set global per-bin normalisation: features become (x − mean) / std; mean, std (n_mels,)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.n_mels or std.numel() != self.n_mels:
            raise ValueError(
                f"CMVN stats must have n_mels={self.n_mels} entries, got {mean.numel()} / {std.numel()}"
            )
        if not torch.all(std > 0):
            raise ValueError("CMVN std must be > 0 in every bin")
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std)

    def num_frames(self, num_samples: int) -> int:
        """Frames T for a clip of ``num_samples`` samples (centred STFT)."""
        return num_samples // self.hop_length + 1

    def log_mel(self, audio: Tensor) -> Tensor:
        """(B, S) audio → (B, n_mels, T) log-mel in dB with the per-clip top_db floor, no CMVN."""
        audio = as_batch_audio(audio)
        with _float32_region(audio.device.type):
            power = self.mel(audio.float())  # (B, n_mels, T), power spectrum on the mel scale
            return self.power_to_db(power)

    def power_to_db(self, power: Tensor) -> Tensor:
        """(B, n_mels, T) mel power → dB with the per-clip top_db floor (the clip = one row B).

        Public so stream scoring (``eval.stream_features``) can assemble a window's mel power from
        a whole-stream spectrogram and finish it exactly as ``log_mel`` does.
        """
        db = 10.0 * torch.log10(power.clamp_min(_POWER_FLOOR))
        if self.top_db is not None:
            # Per-clip peak: max over this clip's own bins, never over the batch.
            peak = db.amax(dim=(-2, -1), keepdim=True)
            db = torch.maximum(db, peak - self.top_db)
        return db

    def normalize(self, db: Tensor) -> Tensor:
        """(B, n_mels, T) dB → (B, 1, n_mels, T) features after the global CMVN."""
        db = (db - self.cmvn_mean[:, None]) / self.cmvn_std[:, None]
        return db.unsqueeze(1)

    def forward(self, audio: Tensor) -> Tensor:
        """(B, S) or (B, 1, S) audio → (B, 1, n_mels, T) float32 features."""
        return self.normalize(self.log_mel(audio))


@torch.no_grad()
def compute_cmvn(frontend: LogMel, batches: Iterable) -> tuple[Tensor, Tensor]:
    """Global per-mel-bin mean and std (dB) of ``frontend.log_mel`` over every frame of ``batches``.

    ``batches`` yields raw audio (B, S) tensors, or tuples/lists whose first item is the audio, or
    mappings with an ``"audio"`` key. Statistics are accumulated in float64 and exclude any CMVN
    already set. Returns (mean, std), each (n_mels,) float32; std is floored at 1e-5 dB.
    """
    total = None
    total_sq = None
    count = 0
    for batch in batches:
        if isinstance(batch, Mapping):
            batch = batch["audio"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        feats = frontend.log_mel(batch).double()  # (B, n_mels, T)
        s = feats.sum(dim=(0, 2))
        sq = (feats * feats).sum(dim=(0, 2))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += feats.shape[0] * feats.shape[2]
    if count == 0:
        raise ValueError("compute_cmvn got no batches")
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    return mean.float().cpu(), var.sqrt().clamp_min(1e-5).float().cpu()


class SpecAugment(nn.Module):
    """Training-only frequency and time masking on features (B, 1, F, T); identity in eval mode.

    Each clip gets ``freq_masks`` bands of width U{0..freq_width} mel bins and ``time_masks`` bands
    of width U{0..time_width} frames, at uniform random positions, filled with the clip's own mean
    (so masks are neutral with or without CMVN). Uses the global torch RNG of the input's device.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: int = 10):
        super().__init__()
        for name, v in (("freq_masks", freq_masks), ("freq_width", freq_width),
                        ("time_masks", time_masks), ("time_width", time_width)):
            if v < 0:
                raise ValueError(f"SpecAugment {name} must be >= 0, got {v}")
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width

    @staticmethod
    def _band_mask(batch: int, size: int, count: int, max_width: int, device) -> Tensor:
        """(B, size) bool, True inside any of ``count`` random bands of width ≤ max_width."""
        mask = torch.zeros(batch, size, dtype=torch.bool, device=device)
        if count == 0 or max_width == 0:
            return mask
        pos = torch.arange(size, device=device)
        for _ in range(count):
            width = torch.randint(0, min(max_width, size) + 1, (batch, 1), device=device)
            start = (torch.rand(batch, 1, device=device) * (size - width + 1)).floor().long()
            mask |= (pos >= start) & (pos < start + width)
        return mask

    def forward(self, feats: Tensor) -> Tensor:
        """(B, 1, F, T) → (B, 1, F, T)."""
        if not self.training:
            return feats
        b, _, f, t = feats.shape
        fmask = self._band_mask(b, f, self.freq_masks, self.freq_width, feats.device)
        tmask = self._band_mask(b, t, self.time_masks, self.time_width, feats.device)
        mask = fmask[:, None, :, None] | tmask[:, None, None, :]
        fill = feats.mean(dim=(1, 2, 3), keepdim=True)
        return torch.where(mask, fill, feats)
