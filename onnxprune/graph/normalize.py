"""Normalize a loaded model: constant weights become initializers, every node gets a unique name."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

# Ops whose output is folded into an initializer when all their inputs are constants. Exporters
# put weights behind some (Paddle: Constant nodes and Reshape'd biases; torch: Identity) and
# compute shape constants with others (Resize scales as Concat of constants).
FOLDABLE_OPS = {
    "Constant", "Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Concat", "Gather",
    "Slice", "Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Floor", "Ceil", "Shape", "Range", "Expand",
    "ConstantOfShape", "Equal", "Where",
}
_MAX_FOLD_ELEMENTS = 1 << 26
_SMALL = 4096  # a folded output may be larger than its inputs only up to this many elements


def normalize(model: onnx.ModelProto, *, inplace: bool = False) -> onnx.ModelProto:
    """Return a copy with constant weights as initializers and every node uniquely named.

    Folds ``Constant`` nodes and constant-only nodes of ``FOLDABLE_OPS`` (how Paddle and torch
    exporters hide weights and compute shape constants) into initializers, evaluated with
    ``onnx.reference``; an Identity of a constant becomes an alias of it (no copy). Nodes without a name get ``<op_type>_<index>``; duplicate names get a
    suffix. Graph inputs, outputs and everything else are kept.

    ``inplace=True`` edits and returns ``model`` itself instead of a copy: no second copy of the
    weights (what :func:`onnxprune.prune.load_and_analyze` does with a freshly loaded model).
    """
    if inplace:
        out = model
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    graph = out.graph
    consts = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    read_before = _reads(graph) & consts
    kept_nodes = []
    new_inits = []
    alias: dict[str, str] = {}  # Identity of an initializer reads the initializer itself
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
        if _foldable(node, consts, outputs):
            if node.op_type == "Identity":
                alias[node.output[0]] = node.input[0]
                continue
            values = _evaluate(node, graph, new_inits, list(out.opset_import))
            if values is not None:
                new_inits.append(numpy_helper.from_array(values, node.output[0]))
                consts.add(node.output[0])
                continue
        kept_nodes.append(node)
    if new_inits or alias:
        graph.initializer.extend(new_inits)
        del graph.node[:]
        graph.node.extend(kept_nodes)
        _drop_unread(graph, {t.name for t in new_inits} | read_before)
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return out


def _foldable(node: onnx.NodeProto, consts: set[str], outputs: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type not in FOLDABLE_OPS:
        return False
    if len(node.output) != 1 or node.output[0] in outputs:
        return False
    if node.op_type == "Constant":
        return True
    return all((not name) or name in consts for name in node.input)


def _evaluate(node, graph, new_inits, opsets) -> np.ndarray | None:
    if node.op_type == "Constant":
        try:
            return ReferenceEvaluator(_single_node_model(node, {}, opsets)).run(None, {})[0]
        except Exception:
            return None
    lookup = {t.name: t for t in new_inits}
    lookup.update({t.name: t for t in graph.initializer if t.name in node.input})
    feeds = {}
    for name in node.input:
        if not name:
            continue
        tensor = lookup[name]
        if np.prod(tensor.dims, dtype=np.int64) > _MAX_FOLD_ELEMENTS:
            return None
        feeds[name] = numpy_helper.to_array(tensor)
    try:
        value = ReferenceEvaluator(_single_node_model(node, feeds, opsets)).run(None, feeds)[0]
    except Exception:
        return None
    value = np.asarray(value)
    if value.size > max(_SMALL, sum(v.size for v in feeds.values())):
        return None  # folding must not grow the model (Expand, ConstantOfShape, Range)
    return value


def _single_node_model(node, feeds, opsets) -> onnx.ModelProto:
    inputs = [
        onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in feeds.items()
    ]
    outputs = [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)]
    g = onnx.helper.make_graph([node], "fold", inputs, outputs)
    return onnx.helper.make_model(g, opset_imports=opsets)


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name the graph's nodes (their subgraphs included) or outputs read."""
    from .load import _outer_reads

    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(n for n in node.input if n)
        names |= _outer_reads(node)
    return names


def _drop_unread(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the initializers among ``candidates`` that nothing reads any more: folded
    intermediates (the un-reshaped bias), and weights that only fed a folded node (a
    ``Transpose`` of a weight, as the TorchScript exporter writes it without constant folding).
    An initializer the input model did not read is not a candidate: it stays.

    Deletes by index, so the other initializers are not copied; a removed initializer listed as
    a graph input (``keep_initializers_as_inputs``) is unlisted too."""
    used = _reads(graph)
    gone = set()
    for k in reversed(range(len(graph.initializer))):
        name = graph.initializer[k].name
        if name in candidates and name not in used:
            gone.add(name)
            del graph.initializer[k]
    if gone and any(vi.name in gone for vi in graph.input):
        kept = [vi for vi in graph.input if vi.name not in gone]
        del graph.input[:]
        graph.input.extend(kept)


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset version of ``model``."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1
