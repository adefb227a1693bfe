"""MobileNetV3 (Howard et al. 2019, "Searching for MobileNetV3", ICCV), a shortened
MobileNetV3-Small adapted to CIFAR.

Inverted residuals (1x1 expand → kxk depthwise → optional SE → 1x1 linear projection,
with a residual ``Add`` when stride is 1 and the width is kept), hard-swish
(``nn.Hardswish``) or ReLU as the nonlinearity, and SE gates with a hard-sigmoid
(``nn.Hardsigmoid``) on the expanded width. At opset ≥ 14 the TorchScript exporter writes
``HardSwish`` and ``HardSigmoid`` nodes (below 14 hard-swish becomes
``HardSigmoid`` + ``Mul``). The head is MobileNetV3's: 1x1 conv → hard-swish → pool →
Linear → hard-swish → Linear.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import (
    CIFAR_INPUT_SHAPE,
    Activation,
    ConvBNAct,
    SqueezeExcite,
    make_divisible,
    seeded,
)

SMALL_SETTINGS: tuple[tuple[int, int, int, bool, str, int], ...] = (
    # kernel, expanded width, out channels, SE, nonlinearity, stride (paper Table 2, first
    # six rows, with stride 1 in the first block for 32x32 inputs)
    (3, 16, 16, True, "RE", 1),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
)

ACTIVATIONS: dict[str, Activation] = {"RE": nn.ReLU, "HS": nn.Hardswish}


class MobileNetV3Block(nn.Module):
    """MobileNetV3 bneck (Howard et al. 2019, Fig. 4): expand (skipped when
    ``expanded == in_channels``) → depthwise ``kernel`` x ``kernel`` (stride) → SE
    (hidden ``make_divisible(expanded / 4)``, ReLU, hard-sigmoid) → linear 1x1 projection.

    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self, in_channels: int, kernel: int, expanded: int, out_channels: int, se: bool, act: str, stride: int
    ) -> None:
        super().__init__()
        activation = ACTIVATIONS[act]
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvBNAct(in_channels, expanded, 1, act=activation))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=activation))
        if se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded / 4), gate=nn.Hardsigmoid))
        layers.append(ConvBNAct(expanded, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    """Stem 3x3 conv (16, hard-swish, stride 1 for CIFAR) → bnecks → 1x1 conv to 288 →
    hard-swish → global average pool → Flatten → Linear(288, 256) → hard-swish → Linear.

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``; the last feature map is 8x8.
    """

    def __init__(self, num_classes: int = 10, last_channels: int = 288, head: int = 256) -> None:
        super().__init__()
        in_channels = 16
        layers: list[nn.Module] = [ConvBNAct(3, in_channels, 3, act=nn.Hardswish)]
        for kernel, expanded, out_channels, se, act, stride in SMALL_SETTINGS:
            layers.append(MobileNetV3Block(in_channels, kernel, expanded, out_channels, se, act, stride))
            in_channels = out_channels
        layers.append(ConvBNAct(in_channels, last_channels, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(last_channels, head), nn.Hardswish(), nn.Linear(head, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def mobilenetv3(seed: int = 0) -> MobileNetV3:
    """Shortened MobileNetV3-Small for CIFAR, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(MobileNetV3, CIFAR_INPUT_SHAPE, seed)
