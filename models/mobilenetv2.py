"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR), adapted to CIFAR.

Each inverted residual is 1x1 expand (ReLU6) → 3x3 depthwise (ReLU6) → 1x1 linear
projection, with a residual ``Add`` when stride is 1 and the width is kept. The depthwise
conv (``group == channels``) ties its input and output channels. ReLU6 exports as ``Clip``.
For 32x32 inputs the stem and the second stage use stride 1 instead of 2 (the usual
CIFAR adaptation), so the last feature map is 4x4.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, ConvBNAct, make_divisible, seeded

CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    # expansion t, channels c, repeats n, first stride s (paper Table 2, CIFAR strides)
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand → depthwise → project, plus identity shortcut when shapes match
    (Sandler et al. 2018, Fig. 3b and Table 1).

    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H / stride, W / stride)``.
    With ``expansion == 1`` there is no expand conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=nn.ReLU6))
        layers.append(ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers.append(ConvBNAct(hidden, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """Stem 3x3 conv → inverted residual stages → 1x1 conv to ``1280 · width`` → global
    average pool → Flatten → Linear.

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``. Channel counts are
    ``make_divisible(c · width, 8)``.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(3, in_channels, 3, 1, act=nn.ReLU6)]
        for expansion, channels, repeats, stride in CIFAR_SETTINGS:
            out_channels = make_divisible(channels * width)
            for i in range(repeats):
                layers.append(
                    InvertedResidual(in_channels, out_channels, stride if i == 0 else 1, expansion)
                )
                in_channels = out_channels
        last_channels = make_divisible(1280 * width)
        layers.append(ConvBNAct(in_channels, last_channels, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def mobilenetv2(seed: int = 0) -> MobileNetV2:
    """MobileNetV2 at width 0.5 for CIFAR, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(lambda: MobileNetV2(width=0.5), CIFAR_INPUT_SHAPE, seed)
