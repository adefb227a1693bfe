"""Plain-torch reference architectures, seeded and in eval mode, for exporting to ONNX.

``ARCHITECTURES`` maps a registry name to an :class:`Architecture`; :func:`build` makes
one. Every build is deterministic for a given seed and has non-trivial BatchNorm and
LayerNorm (see :mod:`models.common`). Export with :func:`models.export.export_onnx`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.common import CIFAR_INPUT_SHAPE, IMAGENET_INPUT_SHAPE
from models.convnext import convnext
from models.densenet import densenet
from models.efficientnet import efficientnet
from models.inception import inception
from models.mobilenetv2 import mobilenetv2
from models.mobilenetv3 import mobilenetv3
from models.resnet import resnet20, resnet50, resnet56
from models.resnext import regnet, resnext
from models.senet import se_resnet
from models.transformer import BERT_INPUT_SHAPE, VIT_INPUT_SHAPE, bert, vit
from models.unet import unet
from models.vgg import vgg16_bn
from models.yolo import YOLO_INPUT_SHAPE, yolo_c2f, yolo_e2e


@dataclass(frozen=True)
class Architecture:
    """One registered model: ``build(seed=0)`` returns it in eval mode; it takes one
    float32 input of ``input_shape`` (batch 1): NCHW for every image model, ``[1, T, D]``
    input embeddings for ``bert``."""

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
        Architecture("resnext", resnext, CIFAR_INPUT_SHAPE,
                     "CIFAR ResNeXt-14 (4x8d): bottlenecks with a grouped 3x3 conv of cardinality 4 "
                     "(Xie et al. 2017)"),
        Architecture("regnet", regnet, CIFAR_INPUT_SHAPE,
                     "RegNetY-style net: group width 8 (3/7/19 groups), SE gates "
                     "(Radosavovic et al. 2020)"),
        Architecture("inception", inception, CIFAR_INPUT_SHAPE,
                     "BN-GoogLeNet at width 1/4: 4-branch Concat modules, 5x5 as two 3x3 "
                     "(Szegedy et al. 2015, 2016)"),
        Architecture("mobilenetv3", mobilenetv3, CIFAR_INPUT_SHAPE,
                     "Shortened MobileNetV3-Small: hard-swish, hard-sigmoid SE, depthwise inverted "
                     "residuals (Howard et al. 2019)"),
        Architecture("efficientnet", efficientnet, CIFAR_INPUT_SHAPE,
                     "EfficientNet-B0 stages 1-5 at width 0.5: SiLU, MBConv with SE "
                     "(Tan & Le 2019)"),
        Architecture("convnext", convnext, CIFAR_INPUT_SHAPE,
                     "Small ConvNeXt: depthwise 7x7, channels-last LayerNorm + Linear MLP, layer "
                     "scale, LayerNorm2d downsampling (Liu et al. 2022)"),
        Architecture("unet", unet, CIFAR_INPUT_SHAPE,
                     "Two-level U-Net: Concat skips, ConvTranspose and bilinear Resize up paths, "
                     "2-class map output (Ronneberger et al. 2015)"),
        Architecture("vit", vit, VIT_INPUT_SHAPE,
                     "ViT, 4x4 patches (64 tokens), D=64, 4 heads, 3 pre-LN blocks, attention in "
                     "plain ops (Dosovitskiy et al. 2021)"),
        Architecture("bert", bert, BERT_INPUT_SHAPE,
                     "BERT-style encoder on [1, 16, 64] embeddings, 4 heads, 2 post-LN layers, "
                     "pooler + classifier (Devlin et al. 2019)"),
    )
}


VARIANTS: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("yolo_e2e", yolo_e2e, YOLO_INPUT_SHAPE,
                     "yolo_c2f with an NMS-free end-to-end head: DFL decoding, TopK of the best 32 "
                     "anchors, GatherElements of their boxes (YOLOv10/YOLO26-style)"),
    )
}
"""Registered models that share an architecture above and differ in one part a pruner must
handle (here the head): exported and checked where that part matters, not in every test."""

ALL: dict[str, Architecture] = {**ARCHITECTURES, **VARIANTS}


def build(name: str, seed: int = 0) -> nn.Module:
    """Build the registered architecture or variant ``name`` with weights seeded by ``seed``, in
    eval mode."""
    try:
        arch = ALL[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ALL)}") from None
    return arch.build(seed=seed)


__all__ = ["ALL", "ARCHITECTURES", "Architecture", "VARIANTS", "build"]
