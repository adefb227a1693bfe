"""GoogLeNet / Inception (Szegedy et al. 2015, "Going Deeper with Convolutions", CVPR) with
batch normalization and the 5x5 branch factorised into two 3x3 convs, as in BN-Inception
(Ioffe & Szegedy 2015, "Batch Normalization", ICML) and Inception-v3 (Szegedy et al. 2016,
"Rethinking the Inception Architecture for Computer Vision", CVPR, Fig. 5), at CIFAR scale.

Each Inception module runs four branches on the same input and joins them with one
channel ``Concat`` of four tensors:

1. 1x1 conv;
2. 1x1 reduce → 3x3;
3. 1x1 reduce → 3x3 → 3x3 (the factorised 5x5);
4. 3x3 max-pool (stride 1) → 1x1 "pool projection".

For a pruner the Concat is an offset map: each branch's last conv owns a slice of the
consumer's input channels, and the module input fans out to four consumers.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, ConvBNAct, seeded


class InceptionModule(nn.Module):
    """Four parallel branches joined by a channel ``Concat`` (Szegedy et al. 2015, Fig. 2b).

    Input ``(N, in_channels, H, W)``; output ``(N, c1 + c3 + c5 + pool_proj, H, W)``.
    ``c3r`` and ``c5r`` are the 1x1 reduce widths of the 3x3 and double-3x3 branches.
    """

    def __init__(
        self, in_channels: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = ConvBNAct(in_channels, c1, 1)
        self.branch3 = nn.Sequential(ConvBNAct(in_channels, c3r, 1), ConvBNAct(c3r, c3, 3))
        self.branch5 = nn.Sequential(
            ConvBNAct(in_channels, c5r, 1), ConvBNAct(c5r, c5, 3), ConvBNAct(c5, c5, 3)
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), ConvBNAct(in_channels, pool_proj, 1)
        )
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x))
        return torch.cat(branches, dim=1)


class GoogLeNet(nn.Module):
    """3x3 stem (48 channels) → Inception 3a, 3b at 32x32 → 3x3/2 max-pool → Inception 4a
    at 16x16 → global average pool → Flatten → Linear.

    Branch widths are the paper's (Table 1) divided by 4. Input ``(N, 3, 32, 32)``,
    output ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 48, 3)
        inception3a = InceptionModule(48, 16, 24, 32, 4, 8, 8)
        inception3b = InceptionModule(inception3a.out_channels, 32, 32, 48, 8, 24, 16)
        pool = nn.MaxPool2d(3, stride=2, padding=1)
        inception4a = InceptionModule(inception3b.out_channels, 48, 24, 52, 4, 12, 16)
        self.features = nn.Sequential(inception3a, inception3b, pool, inception4a)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(inception4a.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(self.stem(x)))))


def inception(seed: int = 0) -> GoogLeNet:
    """BN-GoogLeNet at width 1/4 with factorised 5x5 branches for CIFAR, seeded and in eval
    mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(GoogLeNet, CIFAR_INPUT_SHAPE, seed)
