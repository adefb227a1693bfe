"""A small YOLOv8-style detector (Ultralytics YOLOv8, Jocher, Chaurasia & Qiu 2023,
https://github.com/ultralytics/ultralytics), written in plain torch.

Layout of YOLOv8n (width 0.25, depth 0.33): a Conv-BN-SiLU backbone with C2f blocks and
SPPF, a PAN neck (nearest 2x upsample + ``Concat``, then strided convs + ``Concat``), and
a decoupled head per scale (box branch and class branch, concatenated). What the export
exercises: ``Split`` (C2f halves its channels), multi-input ``Concat`` (C2f, SPPF, neck),
``MaxPool``, ``Resize``, residual ``Add`` inside C2f bottlenecks, and SiLU written as
``Sigmoid`` + ``Mul``. Box outputs are raw distribution logits (no DFL decoding or NMS).

Export quirks worth knowing (torch 2.13, TorchScript exporter): the C2f Split sizes are
``Constant`` nodes shared by every Split with equal sizes (rewrite a copy, not in place);
the head's ``flatten(2)`` becomes ``Shape → Slice → Concat(axis 0) → Reshape``; and
without constant folding each ``Resize`` gets its scales from a ``Concat`` (axis 0) of
two ``Constant`` nodes, so not every Concat here joins channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.common import ConvBNAct, seeded

YOLO_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 64, 64)
"""NCHW input of the registry's tiny detector; the three outputs have strides 8, 16, 32."""


def conv(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> ConvBNAct:
    """Ultralytics ``Conv``: Conv-BN-SiLU. ``(N, in, H, W)`` → ``(N, out, H / stride, W / stride)``."""
    return ConvBNAct(in_channels, out_channels, kernel_size, stride, act=nn.SiLU)


class Bottleneck(nn.Module):
    """Two 3x3 Conv-BN-SiLU, with a residual ``Add`` if ``shortcut``. ``(N, c, H, W)`` → same."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = conv(channels, channels, 3)
        self.cv2 = conv(channels, channels, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions, YOLOv8's main block.

    1x1 conv to ``2c`` channels (``c = out_channels // 2``) → ``Split`` into two halves →
    ``n`` bottlenecks chained on the second half → ``Concat`` of both halves and every
    bottleneck output (``(2 + n) · c`` channels) → 1x1 conv.
    Input ``(N, in_channels, H, W)``, output ``(N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.hidden = out_channels // 2
        self.cv1 = conv(in_channels, 2 * self.hidden)
        self.m = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.cv2 = conv((2 + n) * self.hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.hidden, self.hidden), 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 conv to ``in/2`` → three chained 5x5/1 max-pools →
    ``Concat`` of the four tensors → 1x1 conv. ``(N, in, H, W)`` → ``(N, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = conv(in_channels, hidden)
        self.pool = nn.MaxPool2d(kernel_size, 1, kernel_size // 2)
        self.cv2 = conv(4 * hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


def branch(in_channels: int, width: int, outputs: int) -> nn.Sequential:
    """One head branch: two 3x3 Conv-BN-SiLU, then a 1x1 Conv with bias to the predictions.

    ``(N, in_channels, H, W)`` → ``(N, outputs, H, W)``.
    """
    return nn.Sequential(conv(in_channels, width, 3), conv(width, width, 3), nn.Conv2d(width, outputs, 1))


class Detect(nn.Module):
    """Decoupled head: per scale, a box branch (two 3x3 convs → 1x1 to ``4 · reg_max``) and
    a class branch (two 3x3 convs → 1x1 to ``num_classes``), concatenated on channels
    and flattened over space; the scales are concatenated along the anchor axis.

    Input: feature maps ``(N, channels[i], H_i, W_i)``. Output
    ``(N, 4 · reg_max + num_classes, Σ H_i·W_i)``.
    """

    def __init__(self, channels: Sequence[int], num_classes: int = 80, reg_max: int = 16) -> None:
        super().__init__()
        box_width = max(16, channels[0] // 4, 4 * reg_max)
        cls_width = max(channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(branch(c, box_width, 4 * reg_max) for c in channels)
        self.cls = nn.ModuleList(branch(c, cls_width, num_classes) for c in channels)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        outputs = [
            torch.cat((box(x), cls(x)), 1).flatten(2)
            for x, box, cls in zip(features, self.box, self.cls, strict=True)
        ]
        return torch.cat(outputs, 2)


class YoloC2f(nn.Module):
    """YOLOv8-style detector: backbone to strides 8/16/32, PAN neck, :class:`Detect` head.

    ``widths`` are the channels at strides 2, 4, 8, 16, 32 and ``depths`` the C2f repeats
    at strides 4, 8, 16, 32 (defaults: YOLOv8n). Input ``(N, 3, H, W)`` with H, W
    multiples of 32; output ``(N, 64 + num_classes, (H·W / 64) · 21 / 16)``.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        depths: Sequence[int] = (1, 2, 2, 1),
        num_classes: int = 80,
    ) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        d2, d3, d4, d5 = depths
        self.stem = nn.Sequential(conv(3, w1, 3, 2), conv(w1, w2, 3, 2), C2f(w2, w2, d2, True))
        self.down3 = nn.Sequential(conv(w2, w3, 3, 2), C2f(w3, w3, d3, True))
        self.down4 = nn.Sequential(conv(w3, w4, 3, 2), C2f(w4, w4, d4, True))
        self.down5 = nn.Sequential(conv(w4, w5, 3, 2), C2f(w5, w5, d5, True), SPPF(w5, w5))
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.top_down4 = C2f(w5 + w4, w4)
        self.top_down3 = C2f(w4 + w3, w3)
        self.bottom_up4_conv = conv(w3, w3, 3, 2)
        self.bottom_up4 = C2f(w3 + w4, w4)
        self.bottom_up5_conv = conv(w4, w4, 3, 2)
        self.bottom_up5 = C2f(w4 + w5, w5)
        self.head = Detect((w3, w4, w5), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.down3(self.stem(x))
        p4 = self.down4(p3)
        p5 = self.down5(p4)
        t4 = self.top_down4(torch.cat((self.up(p5), p4), 1))
        n3 = self.top_down3(torch.cat((self.up(t4), p3), 1))
        n4 = self.bottom_up4(torch.cat((self.bottom_up4_conv(n3), t4), 1))
        n5 = self.bottom_up5(torch.cat((self.bottom_up5_conv(n4), p5), 1))
        return self.head((n3, n4, n5))


def yolo_c2f(seed: int = 0) -> YoloC2f:
    """YOLOv8n-style detector, seeded and in eval mode: ``(1, 3, 64, 64)`` → ``(1, 144, 84)``.

    BN statistics are calibrated on 256 samples, not the default 32: at stride 32 a 64x64
    input leaves 2x2 maps with 256 channels, and with only 128 values per channel the
    statistics overfit the batch, so that activations in the neck drift to 3x unit scale
    and outputs reach ±15 on fresh inputs (near the fp32 noise floor of a 1e-4 comparison).
    """
    return seeded(YoloC2f, YOLO_INPUT_SHAPE, seed, calibration_batch=256)


class EndToEnd(nn.Module):
    """An NMS-free, end-to-end head on :class:`YoloC2f`, as YOLOv10/YOLO26 exports write it:
    DFL box decoding against the anchor grid, sigmoid class scores, the best class per anchor
    (``ReduceMax`` + ``ArgMax``), ``TopK`` over the anchors, and ``GatherElements`` of the
    chosen boxes and labels.

    Input ``(N, 3, H, W)`` at the size given (anchors are built for it); output
    ``(N, detections, 6)``: ``x1, y1, x2, y2`` in pixels, score, class index (as a float).
    """

    def __init__(self, model: YoloC2f, input_hw: tuple[int, int], detections: int = 32,
                 strides: Sequence[int] = (8, 16, 32), reg_max: int = 16) -> None:
        super().__init__()
        self.model, self.detections, self.reg_max = model, detections, reg_max
        points, scale = [], []
        for s in strides:
            h, w = input_hw[0] // s, input_hw[1] // s
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            points.append(torch.stack((xs, ys)).reshape(2, -1))
            scale.append(torch.full((1, h * w), float(s)))
        self.register_buffer("anchors", torch.cat(points, 1))  # (2, A), in grid units
        self.register_buffer("strides", torch.cat(scale, 1))  # (1, A)
        self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32).view(1, 1, reg_max, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        box, cls = y.split((4 * self.reg_max, y.shape[1] - 4 * self.reg_max), 1)
        dist = (box.view(box.shape[0], 4, self.reg_max, -1).softmax(2) * self.bins).sum(2)  # (N, 4, A)
        lt, rb = dist.chunk(2, 1)
        boxes = (torch.cat((self.anchors - lt, self.anchors + rb), 1) * self.strides).transpose(1, 2)  # (N, A, 4)
        scores, labels = cls.sigmoid().transpose(1, 2).max(-1)  # (N, A)
        top, index = scores.topk(self.detections, dim=1)
        boxes = boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4))
        labels = labels.gather(1, index).to(torch.float32)
        return torch.cat((boxes, top.unsqueeze(-1), labels.unsqueeze(-1)), -1)


def yolo_e2e(seed: int = 0) -> EndToEnd:
    """:func:`yolo_c2f` with the end-to-end head of :class:`EndToEnd`: ``(1, 3, 64, 64)`` →
    ``(1, 32, 6)``, the 32 best of 84 anchors."""
    return EndToEnd(yolo_c2f(seed), YOLO_INPUT_SHAPE[2:]).eval()
