"""Cut a model in two at a node: the part before it, and a model of the part from it on.

Evaluating many variants of a model that differ only from some node on (one channel group
pruned at several ratios) needs the shared prefix computed once: :func:`crossing` names the
tensors that flow from the prefix into the rest, :func:`submodel` builds a runnable model of a
set of nodes with chosen graph inputs and outputs. onnxruntime runs every node of a graph,
whatever outputs are asked for, so the cut has to be a model of its own.

``onnx.utils.Extractor`` does the same, but runs shape inference on the whole model each time;
here the caller supplies the input types (from the arrays it feeds), so a cut costs a copy of
the nodes it keeps.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from .load import _outer_reads


def node_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name ``node`` reads, its subgraphs' outer reads included."""
    return {name for name in node.input if name} | _outer_reads(node)


def crossing(model: onnx.ModelProto, cut: int) -> list[str]:
    """Tensors produced before node ``cut`` (or graph inputs) that node ``cut`` or a later node
    reads, or that are graph outputs, in a stable order."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    before = {i.name for i in graph.input if i.name not in inits}
    for node in graph.node[:cut]:
        before.update(o for o in node.output if o)
    needed: list[str] = []
    seen: set[str] = set()
    for name in [n for node in graph.node[cut:] for n in sorted(node_reads(node))] + [o.name for o in graph.output]:
        if name in before and name not in seen:
            seen.add(name)
            needed.append(name)
    return needed


def submodel(model: onnx.ModelProto, nodes: Iterable[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[str]) -> onnx.ModelProto:
    """A model of ``nodes`` (in the given, topological, order) fed by ``inputs`` and giving
    ``outputs``; it keeps the initializers those nodes read, the opsets, functions and IR
    version of ``model``. Output types are left for onnxruntime to infer."""
    nodes = list(nodes)
    reads = set().union(*(node_reads(n) for n in nodes)) if nodes else set()
    sub = onnx.ModelProto()
    sub.ir_version = model.ir_version
    sub.opset_import.extend(model.opset_import)
    sub.functions.extend(model.functions)
    graph = sub.graph
    graph.name = model.graph.name
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    fed = {vi.name for vi in inputs}
    graph.initializer.extend(t for t in model.graph.initializer if t.name in reads and t.name not in fed)
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs)
    return sub


def value_info(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    """A tensor value info whose axis 0 is a free batch dim ``N``, the rest as ``shape``."""
    return onnx.helper.make_tensor_value_info(name, elem_type, ["N", *list(shape)[1:]] if len(shape) else [])
