"""Per-channel normalization: BatchNormalization, InstanceNormalization, LayerNormalization.

BatchNormalization and InstanceNormalization act on axis 1 with 1-D per-channel parameters
(scale, bias, and for BN mean and variance), which are parameter slots. LayerNormalization
normalizes over axes ``axis..rank-1``: if the channel axis is among them, removing channels
changes every mean and variance, so the channels are frozen; otherwise it is a pass-through.
"""

from __future__ import annotations

from ..groups import BIAS, NORM
from .base import Rule, norm_axis, register


@register("BatchNormalization", "InstanceNormalization")
class ChannelNormRule(Rule):
    def trace(self, node, t) -> None:
        xa = t.nchw_input(node)
        if xa is None:
            return
        params = [i for i in range(1, len(node.inputs)) if t.input(node, i) is not None]
        for i in params:
            values = t.const(node.inputs[i])
            if values is None or values.shape != (len(xa.ids),):
                t.block(node, f"{node.op} parameter {node.inputs[i].name!r} is not a per-channel constant")
                return
        for i in params:
            t.slot(node, i, 0, xa.ids, NORM if i == 1 else BIAS)
        t.passthrough(node)


@register("LayerNormalization")
class LayerNormRule(Rule):
    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        if xa.axis >= norm_axis(int(node.attrs.get("axis", -1)), len(shape)):
            t.block(node, "LayerNormalization normalizes over the channel axis")
            return
        t.passthrough(node)
