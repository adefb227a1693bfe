"""Ops that keep each channel separate: activations, pooling, casts, resize, pad, reductions.

Each output channel depends only on the same input channel, so the output carries the input's
channel ids. The exceptions are spelled out per rule: a softmax or reduction *over* the
channel axis, and padding or resizing *along* it, mix channels and freeze them.
"""

from __future__ import annotations

import numpy as np

from .base import Rule, int_list, norm_axis, register

ACTIVATIONS = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Gelu", "Erf", "Mish", "ThresholdedRelu", "Exp", "Log",
    "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
    "Identity", "Cast", "IsNaN", "IsInf", "Not",
)


@register(*ACTIVATIONS)
class ActivationRule(Rule):
    def trace(self, node, t) -> None:
        t.passthrough(node)


@register("Clip")
class ClipRule(Rule):
    """``Clip(x, min, max)``: a pass-through when the bounds are scalar constants (ReLU6, hard-swish)."""

    def trace(self, node, t) -> None:
        for i in (1, 2):
            bound = t.input(node, i)
            if bound is not None and (t.const(bound) is None or t.const(bound).size != 1):
                t.block(node, "Clip with non-scalar or computed bounds")
                return
        t.passthrough(node)


@register("Dropout")
class DropoutRule(Rule):
    """Output 0 passes channels through; the optional mask output is not an activation we trace."""

    def trace(self, node, t) -> None:
        t.passthrough(node)


@register("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
class PoolRule(Rule):
    """Pooling is over the spatial axes 2.. of ``[N, C, ...]``; channels must be on axis 1."""

    def trace(self, node, t) -> None:
        xa = t.nchw_input(node)
        if xa is None:
            return
        t.passthrough(node)


@register("Softmax", "LogSoftmax", "Hardmax")
class SoftmaxRule(Rule):
    """Normalizing over the channel axis mixes channels; before opset 13 the op flattens from ``axis``."""

    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        default = -1 if t.opset >= 13 else 1
        axis = norm_axis(int(node.attrs.get("axis", default)), len(shape))
        mixes = xa.axis == axis if t.opset >= 13 else xa.axis >= axis
        if mixes:
            t.block(node, f"{node.op} normalizes over the channel axis")
            return
        t.passthrough(node)


REDUCES = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@register(*REDUCES)
class ReduceRule(Rule):
    """A reduction over spatial axes is a pass-through; over the channel axis it freezes them."""

    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        axes_input = t.input(node, 1)
        if axes_input is not None:
            if t.const(axes_input) is None:
                t.block(node, f"{node.op} with computed axes")
                return
            axes = int_list(t.const(axes_input))
        else:
            axes = node.attrs.get("axes")
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                t.passthrough(node)
                return
            axes = list(range(len(shape)))
        axes = [norm_axis(int(a), len(shape)) for a in axes]
        if xa.axis in axes:
            t.block(node, f"{node.op} reduces over the channel axis")
            return
        keep = int(node.attrs.get("keepdims", 1))
        axis = xa.axis if keep else xa.axis - sum(a < xa.axis for a in axes)
        t.set_axis(node, node.outputs[0], axis, xa.ids)


@register("Pad")
class PadRule(Rule):
    """A pass-through when the pads of the channel axis are constant zeros, or computed pads
    leave the channel dim unchanged (exporters compute spatial "SAME" pads from ``Shape``)."""

    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        if t.input(node, 1) is not None:
            pads = t.const(node.inputs[1])
            axes_in = t.input(node, 3)
            if pads is None or (axes_in is not None and t.const(axes_in) is None):
                # Computed pads (TF "SAME" padding from Shape): fine while the channel dim is unchanged.
                out_shape = t.shape(node.outputs[0])
                if out_shape is None or out_shape[xa.axis] != shape[xa.axis]:
                    t.block(node, "Pad with computed pads that may pad the channel axis")
                    return
                t.passthrough(node)
                return
            pads = int_list(pads)
            axes = int_list(t.const(axes_in)) if axes_in is not None else list(range(len(shape)))
            axes = [norm_axis(a, len(shape)) for a in axes]
        else:
            pads = list(node.attrs.get("pads", []))
            axes = list(range(len(pads) // 2))
        n = len(axes)
        for k, a in enumerate(axes):
            if a == xa.axis and (pads[k] != 0 or pads[k + n] != 0):
                t.block(node, "Pad pads the channel axis")
                return
        t.passthrough(node)


@register("Resize", "Upsample")
class ResizeRule(Rule):
    """Spatial resizing is a pass-through; the channel entry of ``scales`` must be 1.

    A constant ``sizes`` input is rewritten with the kept channel count. A computed ``sizes``
    passes channels through when its channel entry is read from the input itself at run time,
    as exporters write it (``Concat(Shape(x)[0:2], [H', W'])``): it then follows the pruned
    count. Other computed scales or sizes freeze the channels.
    """

    def trace(self, node, t) -> None:
        xa = t.axis_of(t.input(node, 0))
        if xa is None:
            return
        scales_index = 1 if node.op == "Upsample" or t.opset < 11 else 2
        scales, sizes = t.input(node, scales_index), t.input(node, 3)
        if scales is not None and t.const(scales) is None:
            t.block(node, f"{node.op} with computed scales")
            return
        if sizes is not None and t.const(sizes) is None and not self._reads_own_channels(node, t, sizes, xa):
            t.block(node, f"{node.op} with computed sizes whose channel entry is not the input's own channel count")
            return
        if node.attrs.get("axes") is not None:
            t.block(node, f"{node.op} with an axes attribute")
            return
        if scales is not None and t.const(scales).size and float(np.asarray(t.const(scales)).reshape(-1)[xa.axis]) != 1.0:
            t.block(node, f"{node.op} scales the channel axis")
            return
        t.passthrough(node)

    @staticmethod
    def _reads_own_channels(node, t, sizes, xa) -> bool:
        entries = t.shape_entries(sizes)
        if entries is None or len(entries) <= xa.axis:
            return False
        entry = entries[xa.axis]
        if not (isinstance(entry, tuple) and entry[2] == xa.axis):
            return False
        source = t.axes.get(entry[1])  # the input itself, or a tensor with the same channels there
        return source is not None and source.axis == xa.axis and np.array_equal(source.ids, xa.ids)

    def rewrite(self, node, rw) -> None:
        sizes = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        x = node.inputs[0]
        if sizes is None or not hasattr(sizes, "values") or rw.axis_of(x) is None or rw.kept(x) == rw.channels(x):
            return
        values = np.array(sizes.values, copy=True)
        values[rw.axis_of(x).axis] = rw.kept(x)
        rw.set_const_input(node, 3, values)


@register("Shape", "Size")
class ShapeRule(Rule):
    """Reading a shape does not couple channels: computed shapes follow the pruned sizes."""

    def trace(self, node, t) -> None:
        return
