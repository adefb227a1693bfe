"""VGG-16 with batch normalisation (Simonyan & Zisserman 2015, "Very Deep Convolutional
Networks for Large-Scale Image Recognition", ICLR; configuration D, BN as in Ioffe &
Szegedy 2015), with a CIFAR-style classifier head.

The head is Flatten → Linear → ReLU → Linear, so the export contains ``Flatten`` followed
by ``Gemm`` and a hidden MLP width that can be pruned. The fifth max-pool is left out so
that a 32x32 input reaches the head as a 2x2 map: each channel of the last conv then
feeds 4 consecutive Flatten features, which exercises a real (non-trivial) index map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, ConvBNAct, seeded

VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
"""Output channels of the 3x3 convs of VGG configuration D, one tuple per stage."""


class VGG(nn.Module):
    """Stages of 3x3 Conv-BN-ReLU separated by 2x2 max-pools (none after the last stage),
    then Flatten → Linear(C·h·w, hidden) → ReLU → Linear(hidden, num_classes).

    Input ``(N, 3, input_size, input_size)``, output ``(N, num_classes)``; with k stages
    the head sees ``h = w = input_size / 2**(k-1)``. ``width`` scales every conv and the
    hidden width (a width of 1.0 is the paper's).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]] = VGG16_STAGES,
        width: float = 1.0,
        hidden: int = 512,
        num_classes: int = 10,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for index, stage in enumerate(stages):
            if index > 0:
                layers.append(nn.MaxPool2d(2))
            for channels in stage:
                out_channels = max(1, round(channels * width))
                layers.append(ConvBNAct(in_channels, out_channels, 3))
                in_channels = out_channels
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** (len(stages) - 1)
        hidden_width = max(1, round(hidden * width))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * side * side, hidden_width),
            nn.ReLU(),
            nn.Linear(hidden_width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def vgg16_bn(seed: int = 0) -> VGG:
    """VGG-16-BN at width 0.5 for CIFAR, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(lambda: VGG(width=0.5), CIFAR_INPUT_SHAPE, seed)
