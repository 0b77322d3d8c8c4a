"""Stand-in students for eval and export tests: (B, S) 16 kHz audio → (B, 3) logits, log-mel inside;
and ``Unwrapped``, an accelerator stand-in for code that only asks it to unwrap a model.

Real students plug in with the same interface. ``ToneStudent`` has hand-set weights: its
"wake" logit follows the log-energy of a 1 kHz tone relative to the other mel bands, so a
stream with tone bursts is a stream with known wake-word events.
"""
import numpy as np
import torch
import torchaudio

SR = 16000
TONE_HZ = 1000.0


class Unwrapped:
    """Accelerator stand-in for ``best_store.save_best``, which only asks the accelerator to unwrap."""

    @staticmethod
    def unwrap_model(model):
        return model


class TinyStudent(torch.nn.Module):
    """MelSpectrogram → log → Conv1d → ReLU → time mean → Linear. (B, S) → (B, C)."""

    def __init__(self, num_classes: int = 3, n_mels: int = 40):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=400, hop_length=160, n_mels=n_mels)
        self.conv = torch.nn.Conv1d(n_mels, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, num_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        feats = torch.log(self.mel(audio) + 1e-6)          # (B, n_mels, frames)
        return self.head(torch.relu(self.conv(feats)).mean(-1))


class ToneStudent(TinyStudent):
    """Wake logit = 2·mean_t(logmel[tone band] − mean_bands logmel) − 10; others 0."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(self.mel.n_mels, 1, 1)
        self.head = torch.nn.Linear(1, 3)
        fb = self.mel.mel_scale.fb                         # (n_freqs, n_mels)
        tone_bin = int(fb[round(TONE_HZ / (SR / 400))].argmax())
        with torch.no_grad():
            self.conv.weight.fill_(-1.0 / self.mel.n_mels)
            self.conv.weight[0, tone_bin, 0] += 1.0
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([[0.0], [2.0], [0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, -10.0, 0.0]))


def tone_stream(seconds: float, events_s, *, seed: int = 0, burst_s: float = 0.5):
    """Low white noise with 1 kHz bursts of burst_s starting at each time in events_s."""
    rng = np.random.default_rng(seed)
    x = (0.003 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    t = np.arange(int(burst_s * SR)) / SR
    for e in events_s:
        i = int(e * SR)
        x[i:i + t.size] += (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[: x.size - i]
    return x

