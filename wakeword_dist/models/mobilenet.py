"""MobileNetV3-Small (Howard et al., 2019) adapted to one-channel log-mel input.

Adaptation for 40×101 log-mel instead of 224×224 RGB: 1 input channel, and the last stride-2
block runs at stride 1, so the total downsampling is 16× (40×101 → 3×7) rather than 32×
(which would leave a 2×4 map). Everything else follows the paper's Table 2: inverted residuals,
squeeze-and-excitation with hard-sigmoid gates, hardswish in the deeper half, 1024-wide head.
"""

from __future__ import annotations

from torch import Tensor, nn

# (kernel, expansion channels, output channels, squeeze-excite, hardswish, stride)
_SMALL_CONFIG = [
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 1),  # stride 2 in the paper; 1 here (see module docstring)
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10 % (as in the paper)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = make_divisible(channels / 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_exp: int, c_out: int, kernel: int, se: bool, hswish: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if c_exp != c_in:
            layers += [nn.Conv2d(c_in, c_exp, 1, bias=False), nn.BatchNorm2d(c_exp), act()]
        layers += [
            nn.Conv2d(c_exp, c_exp, kernel, stride, kernel // 2, groups=c_exp, bias=False),
            nn.BatchNorm2d(c_exp),
            act(),
        ]
        if se:
            layers.append(SqueezeExcite(c_exp))
        layers += [nn.Conv2d(c_exp, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3Small(nn.Module):
    """Features (B, 1, F, T) → logits (B, C). ~1.5M params at width 1 (1024-wide head)."""

    def __init__(self, num_classes: int, *, n_mels: int = 40, width: float = 1.0, dropout: float = 0.2):
        super().__init__()
        stem = make_divisible(16 * width)
        layers: list[nn.Module] = [
            nn.Conv2d(1, stem, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem),
            nn.Hardswish(),
        ]
        c_in = stem
        for kernel, exp, out, se, hs, stride in _SMALL_CONFIG:
            c_exp, c_out = make_divisible(exp * width), make_divisible(out * width)
            layers.append(InvertedResidual(c_in, c_exp, c_out, kernel, se, hs, stride))
            c_in = c_out
        last = make_divisible(576 * width)
        layers += [nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head = make_divisible(1024 * width)
        self.classifier = nn.Sequential(
            nn.Linear(last, head),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(head, num_classes),
        )

    def forward(self, feats: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(feats)).flatten(1))
