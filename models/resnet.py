"""Residual networks (He et al. 2016, "Deep Residual Learning for Image Recognition", CVPR).

Two flavours share one :class:`ResNet` body:

* CIFAR ResNet-(6n+2) (paper §4.2): a 3x3 stem, three stages of n basic blocks at
  16/32/64 channels, global average pooling and a 10-way Linear. Shortcuts that change
  shape use option B, a strided 1x1 Conv + BN, so every residual ``Add`` couples two
  prunable producers.
* ImageNet ResNet-50 (paper Table 1): a 7x7/2 stem with 3x3/2 max-pool, bottleneck
  blocks [3, 4, 6, 3] with expansion 4 (stride on the 3x3 conv, "v1.5"), 1000 classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, IMAGENET_INPUT_SHAPE, ConvBNAct, seeded

Gate = Callable[[int], nn.Module]
"""A factory ``channels -> module`` applied to a residual branch before the ``Add``
(e.g. squeeze-excitation); it must preserve the ``(N, channels, H, W)`` shape."""


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when the shape is kept, else option B: 1x1 Conv (stride) + BN, no activation.

    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H / stride, W / stride)``.
    """
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvBNAct(in_channels, out_channels, 1, stride, act=None)


class BasicBlock(nn.Module):
    """Two 3x3 Conv-BN with ReLU between, plus shortcut, then ReLU (He et al. 2016, Fig. 2).

    Input ``(N, in_channels, H, W)``, output ``(N, channels, H / stride, W / stride)``.
    ``gate`` (optional) rescales the residual branch before the addition.
    """

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, gate: Gate | None = None
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, channels, 3, stride)
        self.conv2 = ConvBNAct(channels, channels, 3, act=None)
        self.gate = gate(channels) if gate is not None else nn.Identity()
        self.shortcut = shortcut(in_channels, channels, stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.gate(self.conv2(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce → 3x3 (stride) → 1x1 expand ×4, plus shortcut, then ReLU
    (He et al. 2016, Fig. 5 right; stride on the 3x3 as in torchvision's "v1.5").

    Input ``(N, in_channels, H, W)``, output ``(N, 4 * channels, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, gate: Gate | None = None
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = ConvBNAct(in_channels, channels, 1)
        self.conv2 = ConvBNAct(channels, channels, 3, stride)
        self.conv3 = ConvBNAct(channels, out_channels, 1, act=None)
        self.gate = gate(out_channels) if gate is not None else nn.Identity()
        self.shortcut = shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv3(self.conv2(self.conv1(x)))
        return self.act(self.gate(branch) + self.shortcut(x))


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """Stem → stages of residual blocks (the first block of every stage but the first
    has stride 2) → global average pool → Flatten → Linear.

    Input ``(N, 3, H, W)``, output logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        stem: nn.Module,
        stem_channels: int,
        block: Block,
        depths: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        gate: Gate | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        stages: list[nn.Module] = []
        in_channels = stem_channels
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            blocks = []
            for i in range(depth):
                stride = 2 if index > 0 and i == 0 else 1
                blocks.append(block(in_channels, width, stride, gate))
                in_channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def cifar_resnet(
    depth: int, num_classes: int = 10, gate: Gate | None = None, widths: Sequence[int] = (16, 32, 64)
) -> ResNet:
    """CIFAR ResNet with ``depth = 6n + 2`` layers (n basic blocks per stage).

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``.
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    stem = ConvBNAct(3, widths[0], 3)
    return ResNet(stem, widths[0], BasicBlock, [n] * len(widths), widths, num_classes, gate)


def imagenet_resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: input ``(N, 3, 224, 224)``, output ``(N, num_classes)``; 25.6M parameters."""
    stem = nn.Sequential(ConvBNAct(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    return ResNet(stem, 64, Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), num_classes)


def resnet20(seed: int = 0) -> ResNet:
    """CIFAR ResNet-20, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(lambda: cifar_resnet(20), CIFAR_INPUT_SHAPE, seed)


def resnet56(seed: int = 0) -> ResNet:
    """CIFAR ResNet-56, seeded and in eval mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(lambda: cifar_resnet(56), CIFAR_INPUT_SHAPE, seed)


def resnet50(seed: int = 0) -> ResNet:
    """ImageNet ResNet-50, seeded and in eval mode: ``(1, 3, 224, 224)`` → ``(1, 1000)``."""
    return seeded(imagenet_resnet50, IMAGENET_INPUT_SHAPE, seed, calibration_batch=8)
