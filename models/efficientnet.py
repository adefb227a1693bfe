"""EfficientNet (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML), the first stages of EfficientNet-B0 at width 0.5 for CIFAR.

MBConv blocks (Sandler et al. 2018's inverted residual with squeeze-excitation): 1x1
expand (SiLU) → kxk depthwise (SiLU) → SE → 1x1 linear projection, residual ``Add`` when
stride is 1 and the width is kept. SiLU (``nn.SiLU``, "swish") exports as
``Sigmoid`` + ``Mul`` with the TorchScript exporter. The SE gate uses SiLU inside and a
``Sigmoid`` gate, and its hidden width is a quarter of the *block input* width (not the
expanded width), so the squeeze is narrower than MobileNetV3's.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import (
    CIFAR_INPUT_SHAPE,
    ConvBNAct,
    SqueezeExcite,
    make_divisible,
    seeded,
)

B0_SETTINGS: tuple[tuple[int, int, int, int, int], ...] = (
    # expansion, kernel, channels, repeats, first stride (paper Table 1, stages 2-5 with
    # 1 or 2 repeats; the stem has stride 1 for 32x32 inputs)
    (1, 3, 16, 1, 1),
    (6, 3, 24, 2, 2),
    (6, 5, 40, 1, 2),
    (6, 3, 80, 1, 2),
)


class MBConv(nn.Module):
    """MBConv``expansion`` k``kernel`` (Tan & Le 2019, Table 1; Tan et al. 2019, MnasNet).

    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H / stride, W / stride)``;
    no expand conv when ``expansion == 1``; SE hidden width ``max(1, in_channels // 4)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=nn.SiLU))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU))
        layers.append(SqueezeExcite(hidden, max(1, in_channels // 4), act=nn.SiLU, gate=nn.Sigmoid))
        layers.append(ConvBNAct(hidden, out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNet(nn.Module):
    """Stem 3x3 conv (SiLU) → MBConv stages → 1x1 head conv (SiLU) → global average
    pool → Flatten → Linear. Widths are ``make_divisible(c · width, 8)``.

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``; the last feature map is 4x4.
    """

    def __init__(self, width: float = 0.5, head: int = 320, num_classes: int = 10) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(3, in_channels, 3, act=nn.SiLU)]
        for expansion, kernel, channels, repeats, stride in B0_SETTINGS:
            out_channels = make_divisible(channels * width)
            for i in range(repeats):
                layers.append(MBConv(in_channels, out_channels, kernel, stride if i == 0 else 1, expansion))
                in_channels = out_channels
        layers.append(ConvBNAct(in_channels, head, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def efficientnet(seed: int = 0) -> EfficientNet:
    """EfficientNet-B0 stages 1-5 at width 0.5 for CIFAR, seeded and in eval mode:
    ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(EfficientNet, CIFAR_INPUT_SHAPE, seed)
