"""Exactness self-check: prove on *your* model that the rewrite keeps what it keeps.

The oracle (``../shared/GUIDE.md``, "Testing oracles that cannot lie"): pick channels in every
prunable group and make them dead by zeroing every weight entry they index (producer filters
and biases, BN scale and shift, the consumer columns that read them). The kept channels then
compute the same values with or without the dead ones, so removing them must leave every output
unchanged up to fp32 round-off, and the MACs must drop by exactly what the cost model planned.
A wrong index map (a Concat offset, a Flatten expansion, a grouped conv) breaks one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .analysis.cost import CostModel
from .analysis.groups import BIAS, IN, NORM, OUT, Analysis, analyze
from .decide.plan import GroupPlan, PruningPlan, fill_empty_tensors
from .rewrite import apply_removal

ZEROED_ROLES = (OUT, IN, NORM, BIAS)


def dead_channel_plan(analysis: Analysis, fraction: float = 0.5, seed: int = 0) -> PruningPlan:
    """A plan removing a random ``fraction`` (at least one channel, never all) of every prunable group."""
    rng = np.random.default_rng(seed)
    plan = PruningPlan(criterion="dead")
    for g in analysis.prunable_groups:
        n_remove = min(g.channels - 1, max(1, int(g.channels * fraction)))
        if n_remove <= 0:
            continue
        removed = set(rng.choice(g.channels, n_remove, replace=False).tolist())
        keep = [i for i in range(g.channels) if i not in removed]
        plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, None, keep)
    return plan


def kill_channels(analysis: Analysis, removed_units: np.ndarray) -> onnx.ModelProto:
    """A copy of the analyzed model in which ``removed_units`` contribute nothing (see module doc)."""
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    inits = {t.name: t for t in model.graph.initializer}
    dead = np.zeros(len(analysis.root_of), dtype=bool)
    dead[removed_units] = True
    values: dict[str, np.ndarray] = {}
    for slot in analysis.slots:
        if slot.role not in ZEROED_ROLES:
            continue
        mask = dead[analysis.root_of[slot.ids]]
        if not mask.any():
            continue
        arr = values.setdefault(slot.tensor, numpy_helper.to_array(inits[slot.tensor]).copy())
        index = [slice(None)] * arr.ndim
        index[slot.axis] = np.flatnonzero(mask)
        arr[tuple(index)] = 0
    for name, arr in values.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return model


# Ops with f(0) = 0 elementwise (or that only move values): a zero branch stays zero through them.
_ZERO_KEEPING = {"Relu", "LeakyRelu", "PRelu", "Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                 "Dropout", "Tanh", "Neg", "HardSwish", "Gelu", "Erf", "Elu", "Selu", "Celu", "Mish", "Softsign",
                 "Resize", "MaxPool", "AveragePool", "Pad", "Slice", "Gather", "Concat", "Cast"}


def kill_block(model: onnx.ModelProto, block) -> onnx.ModelProto | None:
    """A copy of ``model`` in which residual ``block``'s branch is exactly zero, or None when the
    branch does not end in a layer that can be zeroed.

    Walks back from the branch output through ops that keep zeros (ReLU, reshapes, a constant
    bias ``Add``, whose constant is zeroed too) to the last layer: a Conv, ConvTranspose or Gemm
    (weight and bias zeroed), a MatMul with a constant weight, a BatchNormalization (scale and
    shift zeroed), or a ``Mul`` by a constant (a layer scale) or by another branch (an SE gate:
    the walk continues into the first operand). A weight other nodes also read is copied first.
    """
    from .analysis.blocks import graph_index

    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    g = graph_index(model_copy)
    name = block.branch
    while name in g.producer:
        node = g.nodes[g.producer[name]]
        op = node.op_type
        consts = [k for k, t in enumerate(node.input) if t and g.is_const(t)]
        if op in ("Conv", "ConvTranspose", "Gemm") and 1 in consts:
            _zero_inputs(model_copy, g, node, [k for k in (1, 2) if k in consts])
            return model_copy
        if op == "MatMul" and consts:
            _zero_inputs(model_copy, g, node, consts[:1])
            return model_copy
        if op == "BatchNormalization":
            _zero_inputs(model_copy, g, node, [1, 2])
            return model_copy
        if op == "Mul" and consts:
            _zero_inputs(model_copy, g, node, consts[:1])
            return model_copy
        if op == "Add" and len(consts) == 1:
            _zero_inputs(model_copy, g, node, consts)
            name = node.input[1 - consts[0]]
        elif op == "Mul" or op in _ZERO_KEEPING:
            name = node.input[0]
        else:
            return None
    return None


def _zero_inputs(model: onnx.ModelProto, g, node: onnx.NodeProto, indices: list[int]) -> None:
    """Zero constant inputs ``indices`` of ``node`` (a private copy where others read them too)."""
    inits = {t.name: t for t in model.graph.initializer}
    for k in indices:
        name = node.input[k]
        zeros = np.zeros_like(numpy_helper.to_array(inits[name]))
        if len(g.readers.get(name, [])) == 1 and name not in g.outputs:
            inits[name].CopyFrom(numpy_helper.from_array(zeros, name))
        else:
            new = f"{name}__dead_{node.name}"
            model.graph.initializer.append(numpy_helper.from_array(zeros, new))
            node.input[k] = new


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Outputs of ``model`` in onnxruntime (CPU) for ``feeds``."""
    from .runtime.session import make_session

    return make_session(model.SerializeToString()).run(None, feeds)


def random_feeds(analysis: Analysis, seed: int = 0) -> dict:
    """Seeded standard-normal inputs at the analysis shapes (batch 1 unless fixed otherwise)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in analysis.model.graph.initializer}
    feeds = {}
    for vi in analysis.model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(analysis.shapes[vi.name]).astype(dtype)
    return feeds


TOLERANCE = 1e-4


@dataclass(frozen=True)
class SelfCheck:
    """Result of :func:`self_check`: MACs per sample; ``output_scale`` is the largest absolute
    value at the comparison points. It passes when onnxruntime ran every rewritten model
    (``error`` is None), the max abs error is within ``1e-4 * max(1, output_scale)`` (fp32
    round-off grows with the magnitude of the outputs) and planned MACs equal measured.

    The comparison (:mod:`onnxprune.runtime.exactness`) is at the graph outputs, or, for
    outputs chosen by a selection (``TopK``, ``NonMaxSuppression``, ``ArgMax``, ...), at the
    tensors the selection reads: ``selections`` lists those ops' types."""

    groups_checked: int
    channels_removed: int
    max_abs_error: float
    output_scale: float
    macs_planned: int
    macs_measured: int
    macs_before: int
    blocks_checked: int = 0
    error: str | None = None
    selections: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        tolerance = TOLERANCE * max(1.0, self.output_scale)
        return self.error is None and self.max_abs_error <= tolerance and self.macs_planned == self.macs_measured

    def to_dict(self) -> dict:
        return {**self.__dict__, "selections": list(self.selections), "passed": self.passed}


def self_check(analysis: Analysis, fraction: float = 0.5, seed: int = 0) -> SelfCheck:
    """Run the dead-channel oracle on ``analysis.model`` (see the module doc), and the depth
    oracle on every other removable residual block (its branch zeroed, then dropped).

    Removes ``fraction`` of every prunable group's channels after killing them, compares the
    outputs on seeded random inputs in onnxruntime (:func:`onnxprune.runtime.exactness.compare`),
    and recounts the MACs on the rewritten graph. The channel rewrite is compared alone and
    with the dead blocks dropped, so that dropping a block cannot hide a wrong rewrite inside it.
    A rewritten model that onnxruntime cannot run fails the check, with onnxruntime's message
    in ``error``.
    Errors: ``OnnxPruneError`` if the model has dynamic dims the analysis could not fix.
    """
    from .decide.depth import dropped_nodes
    from .runtime.exactness import compare
    from .runtime.session import ort_message
    from .transform.depth import drop_blocks

    plan = dead_channel_plan(analysis, fraction, seed)
    fill_empty_tensors(plan, analysis, {})  # e.g. a whole Split output: give one channel back
    removed = plan.removed_units(analysis)
    killed = kill_channels(analysis, removed)
    dead_blocks = []
    for block in analysis.removable_blocks[::2]:  # every other block: dead and live ones side by side
        candidate = kill_block(killed, block)
        if candidate is not None:
            killed, dead_blocks = candidate, dead_blocks + [block.add]
    killed_analysis = analyze(killed, analysis.input_shapes)
    blocks = [b for b in killed_analysis.removable_blocks if b.add in dead_blocks]
    pruned = apply_removal(killed_analysis, removed)
    feeds = random_feeds(analysis, seed)
    error, scale, failure, selections = 0.0, 0.0, None, ()
    for step in ("channels", "blocks") if blocks else ("channels",):
        if step == "blocks":
            pruned = drop_blocks(pruned, blocks)  # in place, after the channel rewrite was compared alone
        try:
            result = compare(killed, pruned, feeds)
        except Exception as exc:
            failure = f"onnxruntime cannot run the rewritten model: {ort_message(exc)}"
            break
        error, scale = max(error, result.max_abs_error), max(scale, result.output_scale)
        selections = tuple(result.points.selections)
    cost = CostModel(killed_analysis)
    planned = cost.dropping(dropped_nodes(killed_analysis, blocks)).cost_without(removed)
    try:
        measured = CostModel(analyze(pruned, analysis.input_shapes)).cost().macs
    except Exception as exc:  # a model the analysis cannot read back is a failed check, not a crash
        failure, measured = failure or f"the rewritten model cannot be analyzed: {exc}", -1
    return SelfCheck(
        groups_checked=len(plan.groups), channels_removed=int(len(removed)), max_abs_error=error, output_scale=scale,
        macs_planned=planned.macs, macs_measured=measured, macs_before=cost.cost().macs, blocks_checked=len(blocks),
        error=failure, selections=selections,
    )
