"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI), a two-level U-Net with BatchNorm and "same" padding.

The contracting path doubles the width after each 2x2 max-pool; the expanding path
upsamples, concatenates the encoder feature map of the same resolution (the skip) along
the channels, and runs two 3x3 convs. The two up steps use the two usual upsamplers:

* a learned ``ConvTranspose2d`` (kernel 2, stride 2; the paper's "up-convolution"), whose
  weight is ``[in, out, kH, kW]``, so its *output* channels sit on axis 1;
* ``nn.Upsample`` (bilinear, exported as ``Resize``) followed by a 1x1 conv, the variant
  common in re-implementations.

The output is a per-pixel class map, ``(N, num_classes, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, ConvBNAct, seeded


class DoubleConv(nn.Sequential):
    """Two 3x3 Conv-BN-ReLU. Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNAct(in_channels, out_channels, 3), ConvBNAct(out_channels, out_channels, 3))


class UNet(nn.Module):
    """Encoder 16 → 32 → 64 channels (32x32 → 16x16 → 8x8), decoder back to 32x32.

    ``up1``: ConvTranspose2d(64 → 32) to 16x16, Concat with the 32-channel skip, DoubleConv
    64 → 32. ``up2``: bilinear Upsample x2 to 32x32, 1x1 conv 32 → 16, Concat with the
    16-channel skip, DoubleConv 32 → 16. A 1x1 conv gives ``num_classes`` logits per pixel.

    Input ``(N, 3, H, W)`` with H, W multiples of 4, output ``(N, num_classes, H, W)``.
    """

    def __init__(self, num_classes: int = 2, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.enc1 = DoubleConv(3, w1)
        self.enc2 = DoubleConv(w1, w2)
        self.bottleneck = DoubleConv(w2, w3)
        self.pool = nn.MaxPool2d(2)
        self.up1 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec1 = DoubleConv(2 * w2, w2)
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(w2, w1, 1)
        )
        self.dec2 = DoubleConv(2 * w1, w1)
        self.head = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        y = self.bottleneck(self.pool(s2))
        y = self.dec1(torch.cat([self.up1(y), s2], dim=1))
        y = self.dec2(torch.cat([self.up2(y), s1], dim=1))
        return self.head(y)


def unet(seed: int = 0) -> UNet:
    """Two-level U-Net, base width 16, 2 classes, seeded and in eval mode:
    ``(1, 3, 32, 32)`` → ``(1, 2, 32, 32)``."""
    return seeded(UNet, CIFAR_INPUT_SHAPE, seed)
