"""Unstructured magnitude sparsity (``--granularity weight``): the smallest-magnitude weights of
each layer are set to zero; the graph and every shape stay as they are.

This is the setting of the differential-evolution layer-wise pruning work: per-layer
sparsities, searched by evolution (:func:`sparsity_plan_for_budget`) or uniform. Dense runtimes
run a sparse model exactly as fast as the original; what shrinks is the compressed file (the
zeros compress), and what a sparse kernel could skip. The summary reports both the sparsity and
the gzip-compressed size, and claims no speedup.

Layers: every Conv, ConvTranspose, Gemm and MatMul whose weight (input 1) is a constant of its
own (not shared with another node). Their weights are the budget: ``target_params`` is the
fraction of those weights left nonzero.
"""

from __future__ import annotations

import gzip
import math

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxPruneError

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def sparse_layers(model: onnx.ModelProto) -> list[tuple[str, str, int]]:
    """``(node name, weight name, number of weights)`` of every layer sparsity can touch."""
    inits = {t.name: t for t in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    layers = []
    for node in model.graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in inits and readers[node.input[1]] == 1:
            tensor = inits[node.input[1]]
            if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                layers.append((node.name, tensor.name, int(np.prod(tensor.dims))))
    return layers


def sparsify(model: onnx.ModelProto, sparsities: dict[str, float]) -> onnx.ModelProto:
    """A copy of ``model`` where, in each layer named in ``sparsities`` (node name → fraction),
    that fraction of the weights with the smallest magnitude is zero (ties: lower index first)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weight_of = {node: weight for node, weight, _ in sparse_layers(out)}
    inits = {t.name: t for t in out.graph.initializer}
    for node, fraction in sparsities.items():
        if node not in weight_of:
            raise OnnxPruneError(f"no sparsifiable layer {node!r} in this model")
        tensor = inits[weight_of[node]]
        values = numpy_helper.to_array(tensor).copy()
        k = int(math.floor(float(fraction) * values.size + 1e-9))
        if k > 0:
            flat = values.reshape(-1)
            order = np.argsort(np.abs(flat), kind="stable")
            flat[order[:k]] = 0
            tensor.CopyFrom(numpy_helper.from_array(flat.reshape(values.shape), tensor.name))
    return out


def sparsity_of(model: onnx.ModelProto) -> float:
    """The fraction of zeros among the sparsifiable layers' weights."""
    inits = {t.name: t for t in model.graph.initializer}
    total = zeros = 0
    for _, weight, n in sparse_layers(model):
        total += n
        zeros += int((numpy_helper.to_array(inits[weight]) == 0).sum())
    return zeros / total if total else 0.0


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` compressed with gzip (level 9): what a sparse model saves on disk."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))
