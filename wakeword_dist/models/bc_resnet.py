"""BC-ResNet (Kim et al., Interspeech 2021): broadcasted residual learning for KWS.

Follows the authors' reference layout (Qualcomm-AI-research/bcresnet): a 5×5 stride-(2,1) head,
four stages of [2, 2, 4, 4] BC-ResBlocks with channels [8, 12, 16, 20]·τ, frequency stride 2 in the
first block of stages 2 and 3, time dilations 1, 2, 4, 8, then a depthwise 5×5 + 1×1 (32·τ)
classifier. τ = 8·width channels base: BC-ResNet-1 ≈ 10k params, BC-ResNet-8 ≈ 320k.
"""

from __future__ import annotations

from torch import Tensor, nn

_BLOCKS_PER_STAGE = (2, 2, 4, 4)
_FREQ_STRIDE_STAGES = (1, 2)
# Sub-spectral norm splits the frequency axis into 5 sub-bands (the paper's choice for 40 mels).
_SUB_BANDS = 5


def _ceil_half(n: int) -> int:
    return (n + 1) // 2


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics per frequency sub-band: (B, C, F, T) → (B, C, F, T)."""

    def __init__(self, channels: int, freq: int, sub_bands: int = _SUB_BANDS):
        super().__init__()
        # Fall back to plain BN when the frequency axis does not split evenly (non-40-mel inputs).
        self.sub_bands = sub_bands if freq % sub_bands == 0 else 1
        self.bn = nn.BatchNorm2d(channels * self.sub_bands)

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, t = x.shape
        x = self.bn(x.reshape(b, c * self.sub_bands, f // self.sub_bands, t))
        return x.reshape(b, c, f, t)


class BCResBlock(nn.Module):
    """f2 (frequency-wise depthwise 3×1 + SSN) → mean over frequency → f1 (temporal depthwise
    1×3 dilated + BN + swish + 1×1) broadcast back over frequency; identity shortcut unless the
    channel count changes (transition block)."""

    def __init__(self, c_in: int, c_out: int, freq: int, freq_stride: int, dilation: int, dropout: float):
        super().__init__()
        self.transition = c_in != c_out
        layers: list[nn.Module] = []
        if self.transition:
            layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [
            nn.Conv2d(c_out, c_out, (3, 1), (freq_stride, 1), (1, 0), groups=c_out, bias=False),
            SubSpectralNorm(c_out, _ceil_half(freq) if freq_stride == 2 else freq),
        ]
        self.f2 = nn.Sequential(*layers)
        self.f1 = nn.Sequential(
            nn.Conv2d(c_out, c_out, (1, 3), 1, (0, dilation), dilation=(1, dilation), groups=c_out, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(inplace=True),
            nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x2 = self.f2(x)  # (B, C, F', T)
        x1 = self.f1(x2.mean(dim=2, keepdim=True))  # (B, C, 1, T), broadcast over frequency
        y = x2 + x1
        if not self.transition:
            y = y + shortcut
        return nn.functional.relu(y)


class BCResNet(nn.Module):
    """Features (B, 1, F, T) → logits (B, C)."""

    def __init__(self, num_classes: int, *, n_mels: int = 40, width: float = 1.0, dropout: float = 0.1):
        super().__init__()
        base = max(2, int(round(8 * width)))
        chans = [base * 2, base, int(base * 1.5), base * 2, int(base * 2.5), base * 4]
        self.head = nn.Sequential(
            nn.Conv2d(1, chans[0], 5, (2, 1), 2, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        )
        freq = _ceil_half(n_mels)
        blocks: list[nn.Module] = []
        for stage, n in enumerate(_BLOCKS_PER_STAGE):
            dilation = 2**stage
            for i in range(n):
                c_in = chans[stage] if i == 0 else chans[stage + 1]
                stride = 2 if (i == 0 and stage in _FREQ_STRIDE_STAGES) else 1
                blocks.append(BCResBlock(c_in, chans[stage + 1], freq, stride, dilation, dropout))
                if stride == 2:
                    freq = _ceil_half(freq)
        self.blocks = nn.Sequential(*blocks)
        c_last = chans[-2]
        # Depthwise 5×5 without frequency padding collapses 5 mel rows (40 mels) to 1.
        k_freq = min(5, freq)
        self.classifier = nn.Sequential(
            nn.Conv2d(c_last, c_last, (k_freq, 5), padding=(0, 2), groups=c_last, bias=False),
            nn.Conv2d(c_last, chans[-1], 1, bias=False),
            nn.BatchNorm2d(chans[-1]),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(chans[-1], num_classes, 1),
        )

    def forward(self, feats: Tensor) -> Tensor:
        return self.classifier(self.blocks(self.head(feats))).flatten(1)
