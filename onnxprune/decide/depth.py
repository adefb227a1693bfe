"""Which residual blocks to drop: block importance criteria and the choice of blocks.

Criteria (``--block-criterion``; a higher score means a more important block, kept longer):

* ``norm``: the weight norm of the branch's last layer, as it reaches the ``Add``:
  ``rms(W) * prod(rms(s))`` over the per-channel scales ``s`` between that layer and the Add
  (a BatchNormalization's ``gamma / sqrt(var + eps)``, a layer scale ``Mul``). A branch whose
  last layer is zero contributes nothing. Data-free; a block whose last layer cannot be found
  (see :func:`~onnxprune.selfcheck.kill_block`) scores the RMS of all its weights.
* ``similarity``: ``1 - cos(x, y)`` between the block's input and output on the calibration
  data, averaged over samples (the "block influence" of Men et al., ShortGPT, 2024; Gromov et
  al., "The Unreasonable Ineffectiveness of the Deeper Layers", 2024). A block that barely
  turns its input changes little when dropped.
* ``drop``: the measured loss of the metric when the block alone is dropped (the sensitivity of
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, applied to whole blocks).

The blocks with the lowest scores are dropped first.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper

from ..analysis.blocks import ResidualBlock, graph_index, removal, select_blocks
from ..errors import OnnxPruneError

BLOCK_CRITERIA = ("norm", "similarity", "drop")


def choose_blocks(analysis, scores: dict[str, float], *, names=(), count: int | None = None,
                  ratio: float | None = None) -> list[ResidualBlock]:
    """The blocks to drop: those named (ids or Add names), or the ``count`` (or ``ratio`` of the
    removable ones, rounded) with the lowest ``scores`` (block id → importance), in graph order.

    Errors (``OnnxPruneError``): an unknown or non-removable name; a count beyond the removable
    blocks; a ratio outside [0, 1)."""
    removable = analysis.removable_blocks
    if names:
        return select_blocks(analysis.blocks, names)
    if ratio is not None:
        if not (0.0 <= ratio < 1.0 and math.isfinite(ratio)):
            raise OnnxPruneError(f"{{depth_ratio}} must be in [0, 1), got {ratio}")
        count = int(math.floor(ratio * len(removable) + 0.5))
    if count is None or count == 0:
        return []
    if count > len(removable):
        raise OnnxPruneError(f"cannot drop {count} residual blocks: the model has {len(removable)} removable "
                             f"({len(analysis.blocks) - len(removable)} more are not removable; `onnxprune analyze` "
                             "lists why)")
    order = sorted(removable, key=lambda b: (scores.get(b.id, 0.0), int(b.id[1:])))
    chosen = {b.id for b in order[:count]}
    return [b for b in removable if b.id in chosen]


def dropped_nodes(analysis, blocks: list[ResidualBlock]) -> set[int]:
    """Indices (in the analysis graph) of the nodes that dropping ``blocks`` together removes."""
    if not blocks:
        return set()
    return removal(graph_index(analysis.model), blocks).nodes


class PlanCost:
    """The cost of plans that may drop blocks: ``cost_model`` with each plan's ``drop_blocks``
    gone (the removal of each set of blocks is resolved once)."""

    def __init__(self, analysis, cost_model) -> None:
        self.analysis, self.cost_model = analysis, cost_model
        self._views: dict[tuple, object] = {}

    def _view(self, plan):
        key = tuple(plan.drop_blocks)
        view = self._views.get(key)
        if view is None:
            view = self.cost_model.dropping(dropped_nodes(self.analysis, plan.blocks(self.analysis))) if key \
                else self.cost_model
            self._views[key] = view
        return view

    def __call__(self, plan, removed_units=None):
        """:class:`~onnxprune.analysis.cost.Cost` of ``plan`` (``removed_units``: its removed channels,
        when already known)."""
        removed = plan.removed_units(self.analysis) if removed_units is None else removed_units
        return self._view(plan).cost_without(removed)

    def total(self, plan, budget: str) -> float:
        """One total (``"macs"``, ``"params"`` or ``"latency"``) of ``plan``."""
        return self._view(plan).total_without(budget, plan.removed_units(self.analysis))


def norm_scores(analysis) -> dict[str, float]:
    """The ``norm`` criterion for every removable block (see the module doc)."""
    inits = {t.name: t for t in analysis.model.graph.initializer}
    g = graph_index(analysis.model)
    return {b.id: _branch_norm(g, inits, b) for b in analysis.removable_blocks}


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values.astype(np.float64))))) if values.size else 0.0


def _branch_norm(g, inits, block: ResidualBlock) -> float:
    scale = 1.0
    name = block.branch
    while name in g.producer:
        node = g.nodes[g.producer[name]]
        op = node.op_type
        consts = [k for k, t in enumerate(node.input) if t and t in inits]
        if op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and consts:
            return scale * _rms(numpy_helper.to_array(inits[node.input[consts[0]]]))
        if op == "BatchNormalization":
            gamma, var = (numpy_helper.to_array(inits[node.input[k]]) for k in (1, 4))
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            scale *= _rms(gamma / np.sqrt(var + eps))
            name = node.input[0]
        elif op == "Mul" and consts:
            scale *= _rms(numpy_helper.to_array(inits[node.input[consts[0]]]))
            name = node.input[1 - consts[0]]
        elif op == "Add" and len(consts) == 1:
            name = node.input[1 - consts[0]]
        elif op in ("Mul", "Relu", "Identity", "Cast", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                    "Dropout"):
            name = node.input[0]
        else:
            break
    inside = set(block.nodes)
    weights = [numpy_helper.to_array(inits[t]) for n in g.nodes if n.name in inside for t in n.input if t in inits]
    flat = np.concatenate([w.ravel() for w in weights if w.dtype.kind == "f"]) if weights else np.zeros(0)
    return _rms(flat)


def similarity_scores(analysis, data, batch_size: int = 64) -> dict[str, float]:
    """The ``similarity`` criterion (``1 - cos(x, y)``, mean over samples) for every removable
    block, from one pass of the model over ``data`` (a :class:`~onnxprune.runtime.evaluate.Dataset`),
    each sample's block input and output compared on its own (their sample axis traced,
    :mod:`onnxprune.runtime.samples`). Memory: every block's input and output, run by run."""
    from ..runtime.activations import capture

    blocks = analysis.removable_blocks
    if not blocks:
        return {}
    names = sorted({b.shortcut for b in blocks} | {b.output for b in blocks})
    captured = capture(analysis.model, data, names, batch_size)
    totals = {b.id: 0.0 for b in blocks}
    for k in range(captured.plan.runs):
        for b in blocks:
            x = captured.samples_of(b.shortcut, k)
            y = captured.samples_of(b.output, k)
            x, y = x.reshape(len(x), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)
            denom = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
            cos = np.where(denom > 0, np.sum(x * y, axis=1) / np.where(denom > 0, denom, 1.0), 1.0)
            totals[b.id] += float(np.sum(1.0 - cos))
    return {k: v / len(data) for k, v in totals.items()}


def drop_plan(block: ResidualBlock, criterion: str | None = None):
    """A plan that drops ``block`` alone and keeps every channel (for the ``drop`` criterion)."""
    from .plan import PruningPlan

    return PruningPlan(criterion=criterion, drop_blocks=[block.add])


def without_dropped_groups(analysis, nodes: set[int]):
    """A view of ``analysis`` in which the channel groups that live only inside the dropped
    ``nodes`` are blocked (reason: inside a dropped residual block), so that no schedule spends
    its budget on them. The original is unchanged."""
    import dataclasses

    if not nodes:
        return analysis
    groups = []
    for group in analysis.groups:
        inside = group.slots and all(s.node_index in nodes for s in group.slots)
        groups.append(dataclasses.replace(group, blocked=group.blocked + ["inside a dropped residual block"])
                      if inside and group.prunable else group)
    view = dataclasses.replace(analysis, groups=groups)
    view.__dict__["blocks"] = analysis.blocks  # computed once
    return view
