"""Pieces shared by every reference architecture: the Conv-BN-activation block,
channel rounding, and the one deterministic, non-trivial initialisation path.

Why BatchNorm needs care: a freshly constructed ``nn.BatchNorm2d`` is the identity in
eval mode (γ=1, β=0, running mean 0, running variance 1). Pruning criteria that read
BN (|γ|, Network Slimming) would then see ties, and folding BN into Conv would be a
no-op that hides bugs. Random running statistics alone are not enough either: in eval
mode BN then does not normalise, PyTorch's default conv init shrinks activations by
about √3 per layer, and the output stops depending on the input (measured: outputs for
two random inputs differ by 4e-7 on VGG-16, 3e-8 on MobileNetV2). ``randomize_bn``
therefore draws γ and β at random and measures the running statistics on a batch of
noise, which makes them random, positive, different per channel, and keeps every layer
at unit scale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

CIFAR_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 32, 32)
"""NCHW shape of one CIFAR-10 image (Krizhevsky 2009)."""

IMAGENET_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 224, 224)
"""NCHW shape of one ImageNet image at the usual 224x224 crop."""

Activation = Callable[[], nn.Module]
"""A zero-argument factory for an activation module, e.g. ``nn.ReLU`` or ``nn.SiLU``."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never dropping
    more than 10% below ``value`` (the rule of Sandler et al. 2018, reused by YOLOv8)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → optional activation, with "same" padding.

    Input ``(N, in_channels, H, W)``, output
    ``(N, out_channels, ceil(H / stride), ceil(W / stride))`` for odd ``kernel_size``.
    ``groups == in_channels == out_channels`` gives a depthwise convolution.
    ``act=None`` leaves the output linear (projection layers, shortcuts).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        groups: int = 1,
        act: Activation | None = nn.ReLU,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            bn=nn.BatchNorm2d(out_channels),
        )
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)


def randomize_bn(
    module: nn.Module,
    generator: torch.Generator,
    calibration_input: torch.Tensor | None = None,
) -> None:
    """Make every BatchNorm layer in ``module`` a non-identity with per-channel variety.

    γ ~ U(0.5, 1.5) and β ~ U(-0.25, 0.25); every affine ``nn.LayerNorm`` (ConvNeXt,
    transformers) gets the same draw, since a fresh one (γ=1, β=0) would tie every
    channel for γ-based criteria. Running statistics: if ``calibration_input``
    (a batch that ``module`` accepts, N ≥ 2) is given, they are measured on it by one
    forward pass in train mode with a cumulative average, so that every BN normalises
    its real input and activations keep unit scale (given enough values per channel:
    see ``models.yolo.yolo_c2f``); otherwise variance ~ U(0.5, 2) (positive) and
    mean ~ U(-0.5, 0.5). Deterministic for a given ``generator`` state and input.
    Leaves ``module`` in eval mode.

    Measured statistics are not jittered afterwards: in eval mode BN no longer
    renormalises, and a ±20% per-channel jitter, compounded through the 57 BN layers of
    the YOLO net, made its outputs 2-4x larger.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    layer_norms = [
        m for m in module.modules()
        if isinstance(m, nn.LayerNorm) and m.elementwise_affine and m.weight is not None
    ]
    with torch.no_grad():
        for bn in bns:
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5, generator=generator)
                bn.bias.uniform_(-0.25, 0.25, generator=generator)
        # After every BN draw, so models without LayerNorm keep their exact weights.
        for ln in layer_norms:
            ln.weight.uniform_(0.5, 1.5, generator=generator)
            if ln.bias is not None:
                ln.bias.uniform_(-0.25, 0.25, generator=generator)
        tracked = [bn for bn in bns if bn.track_running_stats]
        if calibration_input is None:
            for bn in tracked:
                bn.running_var.uniform_(0.5, 2.0, generator=generator)
                bn.running_mean.uniform_(-0.5, 0.5, generator=generator)
        else:
            momenta = [bn.momentum for bn in tracked]
            for bn in tracked:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative moving average: exactly this batch
            module.train()
            module(calibration_input)
            for bn, momentum in zip(tracked, momenta):
                bn.momentum = momentum
    module.eval()


def seeded(
    factory: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    seed: int = 0,
    calibration_batch: int = 32,
) -> nn.Module:
    """Build ``factory()`` with deterministic weights and non-trivial BatchNorm, in eval mode.

    Conv/Linear weights are PyTorch's default initialisation under
    ``torch.manual_seed(seed)``; the caller's global RNG state is restored afterwards.
    BN is randomised by :func:`randomize_bn`, calibrated on ``calibration_batch``
    standard-normal samples of shape ``input_shape[1:]``.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    noise = torch.randn((calibration_batch, *input_shape[1:]), generator=generator)
    randomize_bn(model, generator, noise)
    return model


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate ``x * gate(expand(act(reduce(mean_hw(x)))))`` with an
    explicit hidden width (Hu et al. 2018; the MobileNetV3, EfficientNet and RegNetY
    variants differ only in ``hidden``, ``act`` and ``gate``).

    Input and output ``(N, channels, H, W)``; the gate is ``(N, channels, 1, 1)``, so in
    ONNX the final ``Mul`` broadcasts and couples the trunk with the expand conv's outputs.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        act: Activation = nn.ReLU,
        gate: Activation = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = act()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
