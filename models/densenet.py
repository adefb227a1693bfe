"""DenseNet-BC (Huang et al. 2017, "Densely Connected Convolutional Networks", CVPR), small CIFAR variant.

Every layer of a dense block reads the ``Concat`` of the block input and all previous
layers' outputs, and the block returns the ``Concat`` of all of them. Layers are
pre-activation (BN → ReLU → Conv), so BatchNormalization sits on a concatenated tensor
and cannot be folded into the conv that precedes it. Transitions (BN → ReLU → 1x1 Conv
→ 2x2 average pool) compress the width by ``compression``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, seeded


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Pre-activation unit BN → ReLU → Conv (no bias), "same" padding.

    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H, W)``.
    """
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    )


class DenseLayer(nn.Module):
    """Bottleneck layer: 1x1 to ``bottleneck · growth`` channels, then 3x3 to ``growth``
    (the "B" of DenseNet-BC). Input: a list of ``(N, c_i, H, W)`` tensors whose channels
    sum to ``in_channels``; output ``(N, growth, H, W)``."""

    def __init__(self, in_channels: int, growth: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.reduce = bn_relu_conv(in_channels, bottleneck * growth, 1)
        self.conv = bn_relu_conv(bottleneck * growth, growth, 3)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0] if len(features) == 1 else torch.cat(features, 1)
        return self.conv(self.reduce(x))


class DenseBlock(nn.Module):
    """``layers`` dense layers. Input ``(N, C, H, W)``, output ``(N, C + layers · growth, H, W)``."""

    def __init__(self, in_channels: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth, growth) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """3x3 stem to ``2 · growth`` channels → dense blocks separated by transitions →
    BN → ReLU → global average pool → Flatten → Linear.

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``.
    """

    def __init__(
        self,
        growth: int = 12,
        block_layers: tuple[int, ...] = (4, 4, 4),
        compression: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for index, count in enumerate(block_layers):
            layers.append(DenseBlock(channels, count, growth))
            channels += count * growth
            if index < len(block_layers) - 1:
                out_channels = int(channels * compression)
                layers.append(nn.Sequential(bn_relu_conv(channels, out_channels, 1), nn.AvgPool2d(2)))
                channels = out_channels
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def densenet(seed: int = 0) -> DenseNet:
    """DenseNet-BC (growth 12, 3 blocks of 4 layers) for CIFAR, seeded and in eval mode:
    ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(DenseNet, CIFAR_INPUT_SHAPE, seed)
