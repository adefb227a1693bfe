"""Plain-torch reference architectures, seeded and in eval mode, for exporting to ONNX.

``ARCHITECTURES`` maps a registry name to an :class:`Architecture`; :func:`build` makes
one. Every build is deterministic for a given seed and has non-trivial BatchNorm (see
:mod:`models.common`). Export with :func:`models.export.export_onnx`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.common import CIFAR_INPUT_SHAPE, IMAGENET_INPUT_SHAPE
from models.densenet import densenet
from models.mobilenetv2 import mobilenetv2
from models.resnet import resnet20, resnet50, resnet56
from models.senet import se_resnet
from models.vgg import vgg16_bn
from models.yolo import YOLO_INPUT_SHAPE, yolo_c2f


@dataclass(frozen=True)
class Architecture:
    """One registered model: ``build(seed=0)`` returns it in eval mode; it takes one
    float32 input of ``input_shape`` (NCHW, batch 1)."""

    name: str
    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("resnet20", resnet20, CIFAR_INPUT_SHAPE,
                     "CIFAR ResNet-20, option-B 1x1 conv shortcuts (He et al. 2016)"),
        Architecture("resnet56", resnet56, CIFAR_INPUT_SHAPE,
                     "CIFAR ResNet-56, option-B 1x1 conv shortcuts (He et al. 2016)"),
        Architecture("vgg16_bn", vgg16_bn, CIFAR_INPUT_SHAPE,
                     "VGG-16-BN at width 0.5, Flatten→Linear→ReLU→Linear head "
                     "(Simonyan & Zisserman 2015)"),
        Architecture("mobilenetv2", mobilenetv2, CIFAR_INPUT_SHAPE,
                     "CIFAR MobileNetV2 at width 0.5: depthwise convs, inverted residuals, ReLU6 "
                     "(Sandler et al. 2018)"),
        Architecture("densenet", densenet, CIFAR_INPUT_SHAPE,
                     "DenseNet-BC, growth 12, 3 blocks of 4 layers, dense Concats (Huang et al. 2017)"),
        Architecture("yolo_c2f", yolo_c2f, YOLO_INPUT_SHAPE,
                     "YOLOv8n-style detector: C2f Split/Concat, SPPF, PAN neck, one output "
                     "(Ultralytics YOLOv8)"),
        Architecture("se_resnet", se_resnet, CIFAR_INPUT_SHAPE,
                     "CIFAR SE-ResNet-14: squeeze-excitation Sigmoid·Mul gates (Hu et al. 2018)"),
        Architecture("resnet50", resnet50, IMAGENET_INPUT_SHAPE,
                     "ImageNet ResNet-50, bottleneck blocks (He et al. 2016)"),
    )
}


def build(name: str, seed: int = 0) -> nn.Module:
    """Build the registered architecture ``name`` with weights seeded by ``seed``, in eval mode."""
    try:
        arch = ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None
    return arch.build(seed=seed)


__all__ = ["ARCHITECTURES", "Architecture", "build"]
