"""Broadcasting elementwise ops: Add, Sub, Mul, Div, Pow, PRelu, Sum, Max, Min, Mean.

Inputs are aligned right to left (numpy broadcasting, ONNX spec "Broadcasting in ONNX").

* Traced inputs whose channel axis has the output's full size are coupled: a residual ``Add``
  merges its branches' groups, an SE gate's ``Mul`` ties the gate's channels to the trunk's.
  A traced input of size 1 on that axis broadcasts and is not coupled.
* A constant whose aligned dim equals the channel count (``[C,1,1]``, ``[1,C,1,1]``, ``[C]`` on
  a last channel axis) is a parameter slot; a constant of size 1 there is left alone.
* An untraced, non-constant input that may vary along the channel axis freezes the channels.
"""

from __future__ import annotations

from ..groups import CONST
from .base import Rule, register


@register("Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Sum", "Max", "Min", "Mean")
class ElementwiseRule(Rule):
    def trace(self, node, t) -> None:
        inputs = [(i, x) for i, x in enumerate(node.inputs) if x.name]
        traced = [(i, x, t.axis_of(x)) for i, x in inputs if t.axis_of(x) is not None]
        if not traced:
            return
        ranks = {i: len(t.shape(x)) for i, x in inputs if t.shape(x) is not None}
        if len(ranks) != len(inputs):
            t.block(node, f"{node.op} with an input of unknown rank")
            return
        rank = max(ranks.values())
        aligned = {ax.axis + rank - ranks[i] for i, _, ax in traced}
        if len(aligned) != 1:
            t.block(node, f"{node.op} inputs have channels on different axes")
            return
        axis = aligned.pop()
        size = max(len(ax.ids) for _, _, ax in traced)
        full = [ax.ids for _, _, ax in traced if len(ax.ids) == size]
        out_shape = t.shape(node.outputs[0])
        if out_shape is not None and out_shape[axis] is not None and out_shape[axis] != size:
            t.block(node, f"{node.op} broadcasts new channels")
            return
        for ids in full[1:]:
            t.union(full[0], ids)
        for i, x in inputs:
            if t.axis_of(x) is not None:
                continue
            a = axis - (rank - ranks[i])
            dim = t.shape(x)[a] if a >= 0 else 1
            if dim == 1 or size == 1:
                continue
            if t.const(x) is not None and dim == size:
                t.slot(node, i, a, full[0], CONST)
            else:
                t.freeze(full[0], f"{node.op} couples channels with an untraced tensor {x.name!r} (node {node.name})")
        t.set_axis(node, node.outputs[0], axis, full[0])
