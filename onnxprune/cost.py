"""MACs and parameter counts, for the model as it is or as a plan would leave it.

* **MACs** (multiply-accumulates) count Conv, ConvTranspose, Gemm and MatMul only, at the
  analysis input shapes (batch 1 unless ``--input-shape`` says otherwise): a Conv costs
  ``numel(Y) * C_in/g * prod(kernel)``; a Gemm or MatMul ``numel(Y) * K``. Elementwise ops,
  normalization and pooling are not counted, as in thop and Torch-Pruning's counters.
* **Params** are the elements of every floating-point initializer (weights, biases, BN
  statistics); integer shape constants are not counted.

Both are computed from shapes, so a plan's cost is known without rewriting: the channel axis of
every traced tensor and every slot axis shrinks to the kept count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .groups import Analysis

_FLOAT_KINDS = "f"


@dataclass(frozen=True)
class Cost:
    """Totals: ``macs`` (multiply-accumulates, one sample at the analysis shape) and ``params``."""

    macs: int
    params: int


class CostModel:
    """Counts MACs and params of an :class:`Analysis` under any set of kept channel ids."""

    def __init__(self, analysis: Analysis) -> None:
        from .rules import rule_for

        self.analysis = analysis
        self._macs_nodes = [(n, rule_for(n)) for n in analysis.graph.nodes if rule_for(n) is not None]
        self._slots: dict[str, list] = {}
        for slot in analysis.slots:
            self._slots.setdefault(slot.tensor, []).append(slot)
        self._params = [
            t for t in analysis.graph.tensors().values()
            if isinstance(t, gs.Constant) and np.dtype(t.dtype).kind in _FLOAT_KINDS
        ]
        self.unknown_shape_nodes = [
            n.name for n, rule in self._macs_nodes
            if rule.macs(n, self._shape_fn(None)) == 0 and n.op in ("Conv", "ConvTranspose", "Gemm", "MatMul")
        ]

    def _shape_fn(self, alive: np.ndarray | None):
        axes, shapes, slots = self.analysis.axes, self.analysis.shapes, self._slots

        def shape(tensor):
            if isinstance(tensor, gs.Constant):
                dims = list(tensor.shape)
                if alive is not None:
                    for slot in slots.get(tensor.name, ()):
                        dims[slot.axis] = min(dims[slot.axis], int(alive[slot.ids].sum()))
                return tuple(dims)
            dims = shapes.get(tensor.name)
            if dims is None:
                return None
            ax = axes.get(tensor.name)
            if ax is not None and alive is not None:
                dims = list(dims)
                dims[ax.axis] = int(alive[ax.ids].sum())
            return tuple(dims)

        return shape

    def cost(self, alive: np.ndarray | None = None) -> Cost:
        """Totals with channel ids where ``alive`` is False removed (None: the whole model)."""
        shape = self._shape_fn(alive)
        macs = sum(rule.macs(n, shape) for n, rule in self._macs_nodes)
        params = sum(int(np.prod(shape(t), dtype=np.int64)) for t in self._params)
        return Cost(int(macs), int(params))

    def cost_without(self, removed_units: np.ndarray) -> Cost:
        return self.cost(self.analysis.alive_ids(removed_units))


def model_cost(analysis: Analysis) -> Cost:
    """MACs and params of the analyzed model."""
    return CostModel(analysis).cost()
