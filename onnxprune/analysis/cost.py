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

import copy
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .groups import Analysis

_FLOAT_KINDS = "f"
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""The ops whose MACs are counted (and whose latency a latency table predicts)."""


def float_params(model) -> int:
    """Elements of the floating-point initializers some node reads (``model`` an
    ``onnx.ModelProto``): the params :class:`CostModel` counts, without an analysis (no shapes
    needed)."""
    import onnx

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer
                   if t.data_type in floats and t.name in read))


@dataclass(frozen=True)
class Cost:
    """Totals: ``macs`` (multiply-accumulates, one sample at the analysis shape), ``params``,
    and ``latency``: predicted milliseconds of the MAC-counted layers at the analysis shape
    (0 unless the cost model has a latency table, :meth:`CostModel.with_latency`)."""

    macs: int
    params: int
    latency: float = 0.0

    def of(self, budget: str) -> float:
        """The total a budget counts: ``"macs"``, ``"params"`` or ``"latency"``."""
        return getattr(self, budget)


class CostModel:
    """Counts MACs and params of an :class:`Analysis` under any set of kept channel ids.

    A constant read by several nodes is sized per reader, as the rewrite slices it: one tensor
    when every reader slices it alike, otherwise one copy per slicing reader (plus the original
    while some reader keeps it whole).
    """

    def __init__(self, analysis: Analysis) -> None:
        from .rules import rule_for

        self.analysis = analysis
        self.dropped: frozenset[int] = frozenset()
        self.latency = None  # a per-layer latency table (onnxprune.runtime.latency), see with_latency
        nodes = analysis.graph.nodes
        self._macs_nodes = [(i, n, rule_for(n)) for i, n in enumerate(nodes) if rule_for(n) is not None]
        self._slots: dict[tuple[int, int], list] = {}
        for slot in analysis.slots:
            self._slots.setdefault((slot.node_index, slot.input_index), []).append(slot)
        self._readers: dict[str, list[tuple[int, int]]] = {}
        for i, node in enumerate(nodes):
            for j, t in enumerate(node.inputs):
                if isinstance(t, gs.Constant):
                    self._readers.setdefault(t.name, []).append((i, j))
        self._params = [
            t for t in analysis.graph.tensors().values()
            if isinstance(t, gs.Constant) and np.dtype(t.dtype).kind in _FLOAT_KINDS
        ]
        self.unknown_shape_nodes = [
            n.name for i, n, rule in self._macs_nodes
            if n.op in LAYER_OPS and rule.macs(n, self._shape_fn(None, i)) == 0
        ]

    def _masks(self, key, alive) -> dict[int, np.ndarray]:
        masks: dict[int, np.ndarray] = {}
        for slot in self._slots.get(key, ()):
            mask = alive[slot.ids]
            masks[slot.axis] = mask if slot.axis not in masks else masks[slot.axis] & mask
        return masks

    def _const_shape(self, tensor, key, alive) -> tuple:
        dims = list(tensor.shape)
        if alive is not None:
            for axis, mask in self._masks(key, alive).items():
                dims[axis] = int(mask.sum())
        return tuple(dims)

    def _shape_fn(self, alive: np.ndarray | None, node_index: int):
        axes, shapes = self.analysis.axes, self.analysis.shapes
        node = self.analysis.graph.nodes[node_index]

        def shape(tensor):
            if isinstance(tensor, gs.Constant):
                index = next(j for j, t in enumerate(node.inputs) if t is tensor)
                return self._const_shape(tensor, (node_index, index), alive)
            dims = shapes.get(tensor.name)
            if dims is None:
                return None
            ax = axes.get(tensor.name)
            if ax is not None and alive is not None:
                dims = list(dims)
                dims[ax.axis] = int(alive[ax.ids].sum())
            return tuple(dims)

        return shape

    def dropping(self, nodes) -> "CostModel":
        """A view of this model in which the nodes at indices ``nodes`` are gone (dropped residual
        blocks, :func:`onnxprune.analysis.blocks.removal`): :meth:`cost_without` then counts
        neither their MACs nor the constants only they read; :meth:`cost` is unchanged."""
        view = copy.copy(self)
        view.dropped = frozenset(int(k) for k in nodes)
        return view

    def with_latency(self, table) -> "CostModel":
        """A view of this model whose costs also predict ``latency``: the sum of ``table(node,
        shape)`` (milliseconds, :class:`onnxprune.runtime.latency.LatencyTable`) over the
        MAC-counted layers, at the shapes the kept channels leave them."""
        view = copy.copy(self)
        view.latency = table
        return view

    def _param_count(self, tensor, alive, dropped=frozenset()) -> int:
        readers = self._readers.get(tensor.name, [])
        full = int(np.prod(tensor.shape, dtype=np.int64))
        if dropped and readers:
            readers = [key for key in readers if key[0] not in dropped]
            if not readers:
                return 0
        if alive is None or not readers:
            return full
        if len(readers) == 1:
            return int(np.prod(self._const_shape(tensor, readers[0], alive), dtype=np.int64))
        slicings = []
        for key in readers:
            masks = self._masks(key, alive)
            if masks and not all(m.all() for m in masks.values()):
                slicings.append((key, tuple((a, m.tobytes()) for a, m in sorted(masks.items()))))
        if not slicings:
            return full
        sizes = [int(np.prod(self._const_shape(tensor, key, alive), dtype=np.int64)) for key, _ in slicings]
        if len(slicings) == len(readers) and len({sig for _, sig in slicings}) == 1:
            return sizes[0]
        return sum(sizes) + (full if len(slicings) < len(readers) else 0)

    def total(self, budget: str, alive: np.ndarray | None = None, dropped=frozenset()) -> float:
        """One total of :meth:`cost` (``"macs"``, ``"params"`` or ``"latency"``), counting only
        that one: the target search asks for it dozens of times."""
        if budget == "macs":
            return int(sum(rule.macs(n, self._shape_fn(alive, i)) for i, n, rule in self._macs_nodes
                           if i not in dropped))
        if budget == "params":
            return int(sum(self._param_count(t, alive, dropped) for t in self._params))
        if budget == "latency":
            return 0.0 if self.latency is None else float(sum(
                self.latency(n, self._shape_fn(alive, i)) for i, n, _ in self._macs_nodes
                if i not in dropped and n.op in LAYER_OPS))
        raise ValueError(f"unknown budget {budget!r}")

    def cost(self, alive: np.ndarray | None = None, dropped=frozenset()) -> Cost:
        """Totals with channel ids where ``alive`` is False removed (None: the whole model), and
        without the nodes at indices ``dropped``."""
        return Cost(*(self.total(kind, alive, dropped) for kind in ("macs", "params", "latency")))

    def cost_without(self, removed_units: np.ndarray) -> Cost:
        """What a plan leaves: ``removed_units`` gone, and the nodes of :meth:`dropping`."""
        return self.cost(self.analysis.alive_ids(removed_units), self.dropped)

    def total_without(self, budget: str, removed_units: np.ndarray) -> float:
        """:meth:`total` of what a plan leaves (see :meth:`cost_without`)."""
        return self.total(budget, self.analysis.alive_ids(removed_units), self.dropped)

    def macs_by_node(self, alive: np.ndarray | None = None) -> dict[int, int]:
        """MACs per counted node (by index in the analysis graph) with channel ids where
        ``alive`` is False removed (None: the whole model)."""
        return {i: int(rule.macs(n, self._shape_fn(alive, i))) for i, n, rule in self._macs_nodes}

    def node_macs(self) -> dict[str, int]:
        """MACs per node of the unpruned model."""
        return {n.name: rule.macs(n, self._shape_fn(None, i)) for i, n, rule in self._macs_nodes}


def model_cost(analysis: Analysis) -> Cost:
    """MACs and params of the analyzed model."""
    return CostModel(analysis).cost()
