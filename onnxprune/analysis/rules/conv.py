"""Conv and ConvTranspose: plain, grouped and depthwise.

Weight layouts (ONNX spec): Conv ``W[C_out, C_in/g, k...]``; ConvTranspose ``W[C_in, C_out/g, k...]``.

* ``group == 1``: output channels are a fresh channel space (sliced on W's output axis and on
  the bias); input channels index W's input axis.
* ``group > 1`` (grouped and depthwise): conv-group ``k`` ties input channels
  ``[k*C_in/g, (k+1)*C_in/g)`` and output channels ``[k*C_out/g, (k+1)*C_out/g)`` into one unit,
  so whole conv-groups are removed: W's full axis (axis 0) is sliced, its per-group axis is
  unchanged, and ``group`` becomes the number of kept conv-groups. A depthwise conv
  (``C_in/g == 1``) therefore shares its channels with its producer.
"""

from __future__ import annotations

import numpy as np

from ..groups import BIAS, IN, OUT
from .base import Rule, numel, register


@register("Conv", "ConvTranspose")
class ConvRule(Rule):
    def trace(self, node, t) -> None:
        x, w = t.input(node, 0), t.input(node, 1)
        weight = t.const(w)
        if weight is None:
            t.block(node, f"{node.op} weight is not a constant")
            return
        g = int(node.attrs.get("group", 1))
        transposed = node.op == "ConvTranspose"
        c_in = weight.shape[0] if transposed else weight.shape[1] * g
        c_out = weight.shape[1] * g if transposed else weight.shape[0]
        xa = t.axis_of(x)
        if xa is not None and (xa.axis != 1 or len(xa.ids) != c_in):
            t.block(node, f"{node.op} input channels are not on axis 1")
            xa = None
        out = t.new_space(node, node.outputs[0], 1, c_out)
        in_axis, out_axis = (0, 1) if transposed else (1, 0)
        if g == 1:
            t.slot(node, 1, out_axis, out, OUT)
            if xa is not None:
                t.slot(node, 1, in_axis, xa.ids, IN)
        elif xa is None:
            t.freeze(out, f"grouped {node.op} whose input channels are not traced (node {node.name})")
        else:
            a, b = c_in // g, c_out // g
            for k in range(g):
                t.union_all(np.concatenate([xa.ids[k * a:(k + 1) * a], out[k * b:(k + 1) * b]]))
            # Whole conv-groups go, so only W's full axis 0 is sliced.
            t.slot(node, 1, 0, xa.ids if transposed else out, IN if transposed else OUT)
        if t.input(node, 2) is not None:
            if t.const(node.inputs[2]) is None:
                t.freeze(out, f"{node.op} bias is not a constant (node {node.name})")
            else:
                t.slot(node, 2, 0, out, BIAS)

    def rewrite(self, node, rw) -> None:
        g = int(node.attrs.get("group", 1))
        if g == 1:
            return
        out = node.outputs[0]
        before, after = rw.channels(out), rw.kept(out)
        if after != before:
            rw.set_attr(node, "group", g * after // before)

    def macs(self, node, shape) -> int:
        w = shape(node.inputs[1])
        # Each output (Conv) or input (ConvTranspose) element costs prod(W.shape[1:]) MACs.
        data = shape(node.inputs[0] if node.op == "ConvTranspose" else node.outputs[0])
        n = numel(data)
        return 0 if n is None or w is None else n * int(np.prod(w[1:], dtype=np.int64))
