"""Grouped-convolution residual networks: ResNeXt (Xie et al. 2017, "Aggregated Residual
Transformations for Deep Neural Networks", CVPR) and RegNetY (Radosavovic et al. 2020,
"Designing Network Design Spaces", CVPR), both at CIFAR scale.

Both use the bottleneck 1x1 → grouped 3x3 → 1x1 with a residual ``Add``; the grouped 3x3
(``1 < group < channels``, not depthwise) ties its input and output channels one
conv-group at a time. They differ in how the groups are set:

* ResNeXt fixes the **cardinality** (number of groups) and lets the group width grow
  with the stage (paper Table 1, template "C x d").
* RegNet fixes the **group width** ``g`` and lets the number of groups grow
  (``groups = w / g``: 3, 7 and 19 groups here); RegNetY adds a squeeze-excitation gate
  after the grouped conv, whose hidden width is a quarter of the *block input* width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, ConvBNAct, SqueezeExcite, seeded
from models.resnet import shortcut


class ResNeXtBottleneck(nn.Module):
    """1x1 reduce to ``width`` → 3x3 grouped conv (``groups``, stride) → 1x1 expand to
    ``out_channels`` (no activation) → + shortcut → ReLU (Xie et al. 2017, Fig. 3c).
    An optional SE gate sits after the grouped conv (RegNetY).

    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        groups: int,
        stride: int = 1,
        se_hidden: int = 0,
    ) -> None:
        super().__init__()
        if width % groups:
            raise ValueError(f"width {width} is not a multiple of groups {groups}")
        self.reduce = ConvBNAct(in_channels, width, 1)
        self.grouped = ConvBNAct(width, width, 3, stride, groups=groups)
        self.se = SqueezeExcite(width, se_hidden) if se_hidden else nn.Identity()
        self.expand = ConvBNAct(width, out_channels, 1, act=None)
        self.shortcut = shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.expand(self.se(self.grouped(self.reduce(x)))) + self.shortcut(x))


class GroupedResNet(nn.Module):
    """Stem 3x3 Conv-BN-ReLU → stages of :class:`ResNeXtBottleneck` → global average
    pool → Flatten → Linear.

    ``stages`` lists ``(blocks, width, out_channels, groups, stride)``; the first block of
    a stage carries the stride. ``se_ratio > 0`` adds RegNetY's SE gate with hidden width
    ``round(se_ratio · block input width)``. Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``.
    """

    def __init__(
        self,
        stem: int,
        stages: Sequence[tuple[int, int, int, int, int]],
        se_ratio: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, stem, 3)]
        in_channels = stem
        for blocks, width, out_channels, groups, stride in stages:
            for i in range(blocks):
                se_hidden = max(1, round(se_ratio * in_channels)) if se_ratio else 0
                layers.append(ResNeXtBottleneck(
                    in_channels, width, out_channels, groups, stride if i == 0 else 1, se_hidden
                ))
                in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


RESNEXT_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # blocks, bottleneck width (= cardinality 4 x d), out channels, groups, stride
    (1, 32, 64, 4, 1),
    (2, 64, 128, 4, 2),
    (1, 128, 256, 4, 2),
)
"""ResNeXt "4x8d" at CIFAR scale: cardinality 4, group width 8/16/32, widths doubling per stage."""

REGNETY_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # blocks, width, out channels (bottleneck ratio 1), groups = width / 8, stride
    (1, 24, 24, 3, 2),
    (1, 56, 56, 7, 2),
    (2, 152, 152, 19, 2),
)
"""The first three stages of RegNetY-200MF (widths 24/56/152, depths 1/1/4 → 1/1/2,
group width 8; Radosavovic et al. 2020, Appendix)."""


def resnext(seed: int = 0) -> GroupedResNet:
    """ResNeXt-14 (4x8d) for CIFAR, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(lambda: GroupedResNet(32, RESNEXT_STAGES), CIFAR_INPUT_SHAPE, seed)


def regnet(seed: int = 0) -> GroupedResNet:
    """RegNetY-style net (group width 8, SE ratio 0.25) for CIFAR with a 32-channel
    stride-1 stem, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(lambda: GroupedResNet(32, REGNETY_STAGES, se_ratio=0.25), CIFAR_INPUT_SHAPE, seed)
