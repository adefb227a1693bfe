"""Are two models' outputs the same? The one comparison behind ``--self-check``, ``verify``'s
error columns and the tests' exactness oracles.

Row by row, a comparison of outputs fails on models that *select* rows by value: an end-to-end
detection head (YOLOv10/YOLO26, RT-DETR) keeps the 300 best of 8,400 candidates with ``TopK``
and gathers their boxes with ``GatherElements``. Scores that differ by fp32 round-off (1e-6)
after an exact rewrite swap the order of near-ties, TopK then picks other rows, and the
selected outputs differ by whole box coordinates. So the comparison points are:

* every graph output that no **selection** depends on, compared element by element;
* for an output that depends on one, the tensors that feed the selection instead (the
  **selection frontier**): the scores TopK ranks, the boxes GatherElements picks from. Equal
  inputs give equal selections up to the order of ties, and a genuine rewrite error (a wrong
  box, a wrong score) shows there just as it would in the output.

A selection is a discontinuous function of float values: ``TopK``, ``NonMaxSuppression``,
``ArgMax``/``ArgMin``, ``NonZero``, ``Unique``, the comparisons (``Greater``, ``Less``,
``Equal``, ``GreaterOrEqual``, ``LessOrEqual``) and a ``Cast`` from a float to an integer type,
applied to a float tensor computed from the inputs' values. Integer values carry no round-off
(magika compares its input bytes with ``Equal`` to one-hot them: exact, no selection), and
shapes (``Shape``, ``Size``) are not values: shape arithmetic selects nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

SELECTION_OPS = frozenset({"TopK", "NonMaxSuppression", "ArgMax", "ArgMin", "NonZero", "Unique", "Greater", "Less",
                           "Equal", "GreaterOrEqual", "LessOrEqual"})
"""Ops whose outputs jump when their inputs move by round-off (with ``Cast`` float → integer)."""

_SHAPE_OPS = frozenset({"Shape", "Size"})
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ComparisonPoints:
    """Where two models are compared: ``tensors`` in graph order (outputs and selection
    frontiers); ``selected`` maps each output that depends on a selection to the frontier
    tensors compared in its place, and ``selections`` names the selecting ops' types."""

    tensors: list[str]
    selected: dict[str, list[str]] = field(default_factory=dict)
    selections: list[str] = field(default_factory=list)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the model's tensors: declared, else inferred (on a weight-free copy)."""
    from ..errors import OnnxPruneError
    from ..graph import infer_value_info

    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    infos = list(graph.input) + list(graph.value_info) + list(graph.output)
    if any(o and o not in {vi.name for vi in infos} for n in graph.node for o in n.output):
        try:
            infos += infer_value_info(model)
        except OnnxPruneError:  # a graph shape inference cannot read: the declared types must do
            pass
    for vi in infos:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def _selects(node: onnx.NodeProto, types: dict[str, int], valued: set[str]) -> bool:
    """Whether ``node`` selects by the value of a float it computes (integer values, such as
    token ids compared with an ``Equal`` for a one-hot, carry no round-off: not a selection)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    floats = [name for name in node.input if name in valued and types.get(name) in _FLOATS]
    if node.op_type in SELECTION_OPS:
        return bool(floats)
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        return bool(floats) and node.input[0] in floats and to is not None and to not in _FLOATS
    return False


def comparison_points(model: onnx.ModelProto) -> ComparisonPoints:
    """The :class:`ComparisonPoints` of ``model`` (see the module doc). Element types come from
    its ``value_info``, or from shape inference where it has none."""
    graph = model.graph
    types = _elem_types(model)
    valued = {i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}}
    selected: set[str] = set()
    frontier_of: dict[str, set[str]] = {}  # selection-dependent tensor -> the frontier tensors it rests on
    ops: list[str] = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in _SHAPE_OPS and node.domain in ("", "ai.onnx") and node.input[0] not in selected:
            continue  # a shape, not a value (unless the shape itself was selected: NonZero, NMS)
        if not any(name in valued for name in inputs) and not _reads_outer_values(node, valued):
            continue
        depends = [name for name in inputs if name in selected]
        selects = _selects(node, types, valued)
        if not depends and not selects:
            valued.update(o for o in node.output if o)
            continue
        rests_on: set[str] = set()
        for name in inputs:
            if name in selected:
                rests_on |= frontier_of[name]
            elif name in valued:
                rests_on.add(name)
        if selects:
            ops.append(node.op_type)
        for out in node.output:
            if out:
                valued.add(out)
                selected.add(out)
                frontier_of[out] = rests_on
    order = {}
    for name in [i.name for i in graph.input] + [o for n in graph.node for o in n.output]:
        order.setdefault(name, len(order))
    tensors, replaced = [], {}
    for out in graph.output:
        if out.name in selected:
            replaced[out.name] = sorted(frontier_of[out.name], key=lambda n: order.get(n, len(order)))
        else:
            tensors.append(out.name)
    extra = sorted({t for names in replaced.values() for t in names} - set(tensors), key=lambda n: order.get(n, 0))
    return ComparisonPoints(tensors + extra, replaced, sorted(set(ops)))


def _present(points: ComparisonPoints, candidate: onnx.ModelProto, outputs: list[str]) -> ComparisonPoints:
    """``points`` where ``candidate`` has every frontier tensor; an output whose frontier it
    lacks (a dropped block) is compared itself, row by row."""
    known = {o for n in candidate.graph.node for o in n.output} | {i.name for i in candidate.graph.input}
    selected = {out: names for out, names in points.selected.items() if all(name in known for name in names)}
    if len(selected) == len(points.selected):
        return points
    frontier = {name for names in selected.values() for name in names}
    tensors = [o for o in outputs if o not in selected] + [t for t in points.tensors if t in frontier and t not in outputs]
    return ComparisonPoints(tensors, selected, points.selections)


def _reads_outer_values(node: onnx.NodeProto, valued: set[str]) -> bool:
    """Whether a subgraph of ``node`` (If, Loop, Scan) reads a value-carrying outer tensor."""
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                if any(name in valued for name in inner.input) or _reads_outer_values(inner, valued):
                    return True
    return False


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``names`` (intermediate tensors allowed),
    typed from its ``value_info``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    infos = {vi.name: vi for vi in list(copy.graph.output) + list(copy.graph.value_info) + list(copy.graph.input)}
    del copy.graph.output[:]
    for name in names:
        if name in infos:
            copy.graph.output.append(infos[name])
        else:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy


@dataclass(frozen=True)
class Exactness:
    """The largest absolute difference over the comparison points (``max_abs_error``) and the
    largest absolute reference value there (``output_scale``), with the points compared."""

    max_abs_error: float
    output_scale: float
    points: ComparisonPoints
    errors: dict[str, float] = field(default_factory=dict)

    def within(self, tolerance: float) -> bool:
        """Whether the error is within ``tolerance * max(1, output_scale)``: fp32 round-off grows
        with the magnitude of the values."""
        return self.max_abs_error <= tolerance * max(1.0, self.output_scale)


def compare(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: dict) -> Exactness:
    """Run both models (onnxruntime, CPU) on ``feeds`` and compare them at the reference's
    :func:`comparison_points`. A frontier tensor the candidate no longer has (a dropped block)
    makes its outputs compared row by row instead.

    Errors: whatever onnxruntime raises for a model it cannot load or run (the caller reports it).
    """
    from .session import make_session

    points = _present(comparison_points(reference), candidate, [o.name for o in reference.graph.output])
    names = points.tensors
    plain = names == [o.name for o in reference.graph.output] and names == [o.name for o in candidate.graph.output]

    def outputs(model):
        target = model if plain else with_outputs(model, names)
        return make_session(target.SerializeToString()).run(names, feeds)

    errors, scale = {}, 0.0
    for name, a, b in zip(names, outputs(reference), outputs(candidate)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            errors[name] = float("inf")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.where((a64 == b64) | (np.isnan(a64) & np.isnan(b64)), 0.0, np.abs(a64 - b64))
        errors[name] = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
        finite = np.abs(a64[np.isfinite(a64)])
        scale = max(scale, float(finite.max()) if finite.size else 0.0)
    return Exactness(max(errors.values(), default=0.0), scale, points, errors)
