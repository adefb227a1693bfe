"""Drop residual blocks from a model: ``y = x + F(x)`` becomes ``y := x`` (depth pruning).

The blocks come from :func:`onnxprune.analysis.blocks.find_blocks` on the analyzed model; the
model given here may already have lost channels (the channel rewrite keeps node and activation
names), so the removal is resolved again on it. The Add and the branch nodes nothing else reads
go, with the initializers only they read; readers of ``y`` read ``x`` (and a ReLU after the Add
goes too where ``x`` is known non-negative). Shapes are re-inferred; graph inputs, outputs,
opset and metadata are kept.
"""

from __future__ import annotations

import onnx

from ..analysis.blocks import ResidualBlock, graph_index, removal
from ..graph import infer_value_info


def drop_blocks(model: onnx.ModelProto, blocks: list[ResidualBlock]) -> onnx.ModelProto:
    """``model`` with ``blocks`` (all removable) removed, edited in place and returned.

    Errors: ``KeyError`` (an internal error) when a block's Add is not in ``model``.
    """
    if not blocks:
        return model
    g = graph_index(model)
    gone = removal(g, blocks)
    graph = model.graph
    kept = [node for k, node in enumerate(graph.node) if k not in gone.nodes]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in gone.renames:
                node.input[i] = gone.resolve(name)
    del graph.node[:]
    graph.node.extend(kept)
    for k in reversed(range(len(graph.initializer))):  # by index: the others are not copied
        if graph.initializer[k].name in gone.initializers:
            del graph.initializer[k]
    listed = [vi for vi in graph.input if vi.name not in gone.initializers]
    if len(listed) != len(graph.input):
        del graph.input[:]
        graph.input.extend(listed)
    del graph.value_info[:]
    graph.value_info.extend(infer_value_info(model))
    return model
