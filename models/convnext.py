"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s", CVPR), a small ConvNeXt for CIFAR.

A ConvNeXt block is ``x + γ · Linear(GELU(Linear(LN(dwconv7x7(x)))))``: a 7x7 depthwise
conv in NCHW, then ``permute(0, 2, 3, 1)`` to channels-last, ``LayerNorm`` over the
channels, the 4x inverted-bottleneck MLP as two ``Linear`` layers, a per-channel layer
scale γ, and ``permute`` back before the residual ``Add`` (Fig. 4 and the reference code).
The stem and the downsampling layers use a channels-first LayerNorm, written as
permute → ``LayerNorm`` → permute (torchvision's ``LayerNorm2d``).

At opset 17 the TorchScript exporter writes each LayerNorm as one
``LayerNormalization`` node (``axis=-1``) between two ``Transpose`` nodes; at opset < 17
it writes ``ReduceMean → Sub → Pow → ReduceMean → Add → Sqrt → Div → Mul → Add``. The
``Linear`` layers on the 4-D channels-last tensor become ``MatMul`` + ``Add``, GELU
becomes ``Div → Erf → Add → Mul → Mul``, and γ is a ``Mul`` by a ``[C]`` constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.common import CIFAR_INPUT_SHAPE, seeded


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor: permute to NHWC, normalise the
    last axis, permute back. Input and output ``(N, C, H, W)``; ``normalized_shape = C``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 → permute → LayerNorm → Linear(C, 4C) → GELU → Linear(4C, C) → ·γ →
    permute → + x (Liu et al. 2022, Fig. 4). Input and output ``(N, C, H, W)``.

    γ (layer scale, Touvron et al. 2021) starts at 1e-6 in the paper, which would make
    every block an identity; here it is drawn from U(0.5, 1.5) per channel so that the
    branch matters and γ is a non-trivial per-channel constant.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.empty(channels).uniform_(0.5, 1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Stem (2x2 conv, stride 2, + LayerNorm2d) → stages of ConvNeXt blocks, with
    LayerNorm2d + 2x2 stride-2 conv between stages → global average pool → LayerNorm →
    Linear.

    Input ``(N, 3, 32, 32)``, output ``(N, num_classes)``. With the default dims
    (32, 64, 128) and depths (1, 1, 2) the stages run at 16x16, 8x8 and 4x4 (the paper's
    stem is 4x4 with stride 4, for 224x224 inputs).
    """

    def __init__(
        self, dims: Sequence[int] = (32, 64, 128), depths: Sequence[int] = (1, 1, 2), num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 2, stride=2), LayerNorm2d(dims[0])]
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            if i > 0:
                layers += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean(dim=(-2, -1))))


def convnext(seed: int = 0) -> ConvNeXt:
    """ConvNeXt with dims (32, 64, 128) and depths (1, 1, 2) for CIFAR, seeded and in eval
    mode: ``(1, 3, 32, 32)`` → ``(1, 10)``."""
    return seeded(ConvNeXt, CIFAR_INPUT_SHAPE, seed)
