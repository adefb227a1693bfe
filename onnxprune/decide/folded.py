"""The factor a BatchNormalization that alone reads a layer's output would fold into that
layer's weight (``gamma / sqrt(var + eps)`` along the layer's output axis), for criteria that
score weights as the exporter would fold them (ONNX BatchNormalization-15 spec)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.groups import Analysis, decoded


def bn_scale(analysis: Analysis, node_index: int, values: np.ndarray) -> tuple[np.ndarray | None, int | None]:
    """The factor (and its axis of ``values``, the weight of node ``node_index``) that folding
    the BatchNormalization that alone reads the node's output would multiply it by; ``(None,
    None)`` when there is none."""
    axis = analysis.output_axis.get(node_index)
    node = analysis.graph.nodes[node_index]
    if axis is None or len(node.outputs) != 1:
        return None, None
    readers = node.outputs[0].outputs
    if len(readers) != 1 or readers[0].op != "BatchNormalization" or len(readers[0].inputs) < 5:
        return None, None
    bn = readers[0]
    if bn.inputs[0] is not node.outputs[0] or not all(isinstance(t, gs.Constant) for t in (bn.inputs[1], bn.inputs[4])):
        return None, None
    gamma = np.asarray(decoded(bn.inputs[1]), dtype=np.float64)
    var = np.asarray(decoded(bn.inputs[4]), dtype=np.float64)
    if gamma.shape != (values.shape[axis],) or var.shape != gamma.shape:
        return None, None  # e.g. a grouped ConvTranspose, whose weight holds C_out / group per row
    return gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5))), axis


def bn_folded(analysis: Analysis, node_index: int, values: np.ndarray) -> np.ndarray:
    """``values`` (the weight of node ``node_index``) scaled as if the BatchNormalization that
    alone reads the node's output were folded into it; unchanged when there is none."""
    scale, axis = bn_scale(analysis, node_index, values)
    if scale is None:
        return values
    shape = [1] * values.ndim
    shape[axis] = -1
    return values * scale.reshape(shape)
