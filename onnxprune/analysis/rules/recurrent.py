"""Recurrent layers: LSTM, GRU, RNN (ONNX spec layouts; ``layout = 0``: X is ``[T, B, I]``).

The input features index axis 2 of ``W[dirs, gates*H, I]``: a consumer slot, so a producer
feeding an LSTM can be pruned. The hidden size H is frozen: it indexes R and B as well as the
state inputs and outputs, which are usually graph inputs and outputs (streaming models).
MACs per step and direction: ``gates * H * (I + H)`` (4 gates for LSTM, 3 for GRU, 1 for RNN).
"""

from __future__ import annotations

from ..groups import IN
from .base import Rule, numel, register

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@register("LSTM", "GRU", "RNN")
class RecurrentRule(Rule):
    def trace(self, node, t) -> None:
        xa = t.axis_of(t.input(node, 0))
        weight = t.const(node.inputs[1])
        layout = int(node.attrs.get("layout", 0))
        if weight is None or layout != 0:
            t.block(node, f"{node.op} with computed weights or batch-first layout")
            return
        if xa is not None:
            if xa.axis != 2 or len(xa.ids) != weight.shape[2]:
                t.block(node, f"{node.op} input features are not on axis 2")
            else:
                t.slot(node, 1, 2, xa.ids, IN)
        ids = None  # Y [T, dirs, B, H], Y_h and Y_c [dirs, B, H] carry the same hidden units
        for k, out in enumerate(node.outputs):
            if not out.name:
                continue
            axis = 3 if k == 0 else 2
            if ids is None:
                ids = t.new_space(node, out, axis, int(node.attrs["hidden_size"]), frozen=f"{node.op} hidden size (node {node.name})")
            else:
                t.set_axis(node, out, axis, ids)

    def macs(self, node, shape) -> int:
        x, w = shape(node.inputs[0]), shape(node.inputs[1])
        steps = None if x is None else numel(x[:2])
        if steps is None or w is None:
            return 0
        hidden = int(node.attrs["hidden_size"])
        dirs, rows, inputs = w
        return int(steps * dirs * rows * (inputs + hidden))
