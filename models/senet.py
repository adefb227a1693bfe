"""Squeeze-and-Excitation ResNet (Hu et al. 2018, "Squeeze-and-Excitation Networks", CVPR).

The SE gate rescales each channel of a residual branch by a weight computed from the
branch itself: GlobalAveragePool → 1x1 Conv (reduce) → ReLU → 1x1 Conv (expand) →
Sigmoid → Mul. In ONNX the ``Mul`` broadcasts ``(N, C, H, W) * (N, C, 1, 1)``, so the
trunk's channels are coupled with the expand conv's output channels, while the reduced
hidden width is an independent prunable group.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, Activation, seeded
from models.resnet import ResNet, cifar_resnet


class SqueezeExcitation(nn.Module):
    """Channel gate ``x * gate(W2 · relu(W1 · mean_hw(x)))`` (Hu et al. 2018, Fig. 2).

    Input and output ``(N, channels, H, W)``; the hidden width is
    ``max(1, channels // reduction)``. ``gate`` is ``nn.Sigmoid`` as in the paper, or
    ``nn.Hardsigmoid`` as in MobileNetV3.
    """

    def __init__(self, channels: int, reduction: int = 4, gate: Activation = nn.Sigmoid) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def se_cifar_resnet(depth: int = 14, reduction: int = 4, num_classes: int = 10) -> ResNet:
    """CIFAR ResNet-``depth`` with an SE gate on every basic block's residual branch.

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``. The paper's reduction of 16
    would leave one hidden channel at width 16, hence a default of 4.
    """
    return cifar_resnet(depth, num_classes, gate=partial(SqueezeExcitation, reduction=reduction))


def se_resnet(seed: int = 0) -> ResNet:
    """SE-ResNet-14 for CIFAR, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(se_cifar_resnet, CIFAR_INPUT_SHAPE, seed)
