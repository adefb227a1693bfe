"""Gemm and MatMul with a constant weight: fully connected layers and MLP hidden dims.

* ``Gemm(A, B, C)`` (``transA == 0``): input features are axis 1 of A and index B's K axis
  (axis 1 if ``transB`` else 0); the N outputs are a fresh channel space on axis 1, indexing
  B's N axis and the bias C's last axis.
* ``MatMul(A, B)`` with a constant 2-D ``B[K, N]``: features are A's last axis; the N outputs
  are a fresh channel space on the last axis.

After a Flatten, A's feature ids repeat each channel over its H*W columns, so the K-axis slot
removes exactly those columns of B.
"""

from __future__ import annotations

from ..groups import BIAS, IN, OUT
from .base import Rule, numel, register


@register("Gemm")
class GemmRule(Rule):
    def trace(self, node, t) -> None:
        a, b, c = t.input(node, 0), t.input(node, 1), t.input(node, 2)
        weight = t.const(b)
        aa = t.axis_of(a)
        if weight is None or weight.ndim != 2 or node.attrs.get("transA", 0):
            t.block(node, "Gemm without a constant 2-D weight, or with transA")
            return
        k_axis, n_axis = (1, 0) if node.attrs.get("transB", 0) else (0, 1)
        if aa is not None and (aa.axis != 1 or len(aa.ids) != weight.shape[k_axis]):
            t.block(node, "Gemm input features are not on axis 1")
            aa = None
        out = t.new_space(node, node.outputs[0], 1, weight.shape[n_axis])
        t.slot(node, 1, n_axis, out, OUT)
        if aa is not None:
            t.slot(node, 1, k_axis, aa.ids, IN)
        if c is not None:
            bias = t.const(c)
            if bias is None:
                t.freeze(out, f"Gemm bias is not a constant (node {node.name})")
            elif bias.ndim >= 1 and bias.shape[-1] == len(out) and len(out) > 1:
                t.slot(node, 2, bias.ndim - 1, out, BIAS)

    def macs(self, node, shape) -> int:
        a, y = shape(node.inputs[0]), shape(node.outputs[0])
        n = numel(y)
        k = None if a is None else a[0] if node.attrs.get("transA", 0) else a[1]
        return 0 if n is None or k is None else n * int(k)


@register("MatMul")
class MatMulRule(Rule):
    """``A @ B`` with a constant 2-D ``B`` is a linear layer (above). With two activations
    (attention), channel ids on a batch axis of both are coupled (the head axis of
    ``Q @ K^T`` and ``P @ V``), ids on the contracted axes of both are coupled (the sum over
    them loses nothing when both go), and ids on A's row or B's column axis carry to the output.
    """

    def trace(self, node, t) -> None:
        a, b = node.inputs[0], node.inputs[1]
        weight, aa, a_shape = t.const(b), t.axis_of(a), t.shape(a)
        if weight is None and t.const(a) is None:
            self._activations(node, t)
            return
        if weight is None or weight.ndim != 2 or a_shape is None:
            t.block(node, "MatMul with a constant first operand or a weight that is not 2-D")
            return
        last = len(a_shape) - 1
        if aa is not None and (aa.axis != last or len(aa.ids) != weight.shape[0]):
            t.block(node, "MatMul input features are not on the last axis")
            aa = None
        out = t.new_space(node, node.outputs[0], last, weight.shape[1])
        t.slot(node, 1, 1, out, OUT)
        if aa is not None:
            t.slot(node, 1, 0, aa.ids, IN)

    @staticmethod
    def _activations(node, t) -> None:
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        aa, ba = t.axis_of(a), t.axis_of(b)
        ra, rb, ry = (len(s) if s is not None else None for s in (t.shape(a), t.shape(b), t.shape(y)))
        if aa is None and ba is None:
            return
        if None in (ra, rb, ry) or min(ra, rb) < 2:
            t.block(node, "MatMul of activations with unknown or 1-D shapes")
            return
        # Position of each traced axis in the output's frame (batch axes align from the right).
        pos_a = None if aa is None else ("batch", aa.axis + ry - ra) if aa.axis < ra - 2 else ("row", ry - 2) if aa.axis == ra - 2 else ("sum", None)
        pos_b = None if ba is None else ("batch", ba.axis + ry - rb) if ba.axis < rb - 2 else ("sum", None) if ba.axis == rb - 2 else ("col", ry - 1)
        if pos_a is not None and pos_b is not None:
            if pos_a != pos_b or len(aa.ids) != len(ba.ids):
                t.block(node, "MatMul of activations with channels on different axes")
                return
            t.union(aa.ids, ba.ids)
            if pos_a[0] == "batch":
                t.set_axis(node, y, pos_a[1], aa.ids)
            return
        traced, pos = (aa, pos_a) if aa is not None else (ba, pos_b)
        if pos[0] in ("batch", "sum"):
            t.block(node, "MatMul couples channels with an untraced operand")
            return
        t.set_axis(node, y, pos[1], traced.ids)

    def macs(self, node, shape) -> int:
        a, y = shape(node.inputs[0]), shape(node.outputs[0])
        n = numel(y)
        return 0 if n is None or a is None or a[-1] is None else n * int(a[-1])
