"""A CIFAR-style ResNet-8 for 32x32 single-channel inputs: the embedded default model.

Source: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016 (arXiv:1512.03385), section 4.2: the CIFAR-10 networks,
a 3x3 stem and three stages of BasicBlocks at 16/32/64 channels. Here each stage
has one block (n=1, so 6n+2 = 8 weighted layers). Shortcuts that change shape
use a 1x1 conv + BN projection (option B of the paper).

Shapes, for a batch of B:

    input                  [B, 1, 32, 32]
    stem conv3x3 + BN + ReLU  [B, 16, 32, 32]
    stage1 BasicBlock s=1  [B, 16, 32, 32]   identity shortcut
    stage2 BasicBlock s=2  [B, 32, 16, 16]   1x1 conv + BN shortcut
    stage3 BasicBlock s=2  [B, 64,  8,  8]   1x1 conv + BN shortcut
    global average pool    [B, 64, 1, 1]
    flatten                [B, 64]
    linear                 [B, 10]            logits

The residual Adds couple channels: the stem and stage1 share one channel group,
which makes this a small but honest test case for coupled-channel pruning.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "DigitsResNet", "digits_resnet8"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, ReLU after the first and after the residual Add."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=False)
        if stride != 1 or in_ch != out_ch:
            self.downsample: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class DigitsResNet(nn.Module):
    """CIFAR-style ResNet: stem, one BasicBlock per stage, GAP, linear head.

    Input ``[B, in_ch, 32, 32]`` (any spatial size works thanks to the global
    pool), output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_ch: int = 1,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_ch, w1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = BasicBlock(w1, w1, stride=1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(w3, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def digits_resnet8(seed: int = 0) -> nn.Module:
    """ResNet-8 for ``[B, 1, 32, 32]`` inputs and 10 classes, initialised from ``seed``.

    The seed only affects the initial weights; the global torch RNG state is
    restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitsResNet(in_ch=1, num_classes=10)
