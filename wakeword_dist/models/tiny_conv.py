"""TinyConv: a four-layer plain CNN on log-mel, the plainest student (~40k params at width 1)."""

from __future__ import annotations

from torch import Tensor, nn


def _conv_bn_relu(c_in: int, c_out: int, stride: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyConv(nn.Module):
    """Features (B, 1, F, T) → logits (B, C).

    Four 3×3 conv-BN-ReLU layers; the first three halve both mel and time axes (40×101 →
    5×13 at the default front end), then global average pooling and a linear classifier.
    """

    def __init__(self, num_classes: int, *, n_mels: int = 40, width: float = 1.0, dropout: float = 0.1):
        super().__init__()
        chans = [max(4, int(round(c * width))) for c in (16, 32, 48, 48)]
        self.features = nn.Sequential(
            _conv_bn_relu(1, chans[0], (2, 2)),
            _conv_bn_relu(chans[0], chans[1], (2, 2)),
            _conv_bn_relu(chans[1], chans[2], (2, 2)),
            _conv_bn_relu(chans[2], chans[3], (1, 1)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(chans[3], num_classes)

    def forward(self, feats: Tensor) -> Tensor:
        x = self.pool(self.features(feats)).flatten(1)
        return self.classifier(self.dropout(x))
