"""Shapes of every tensor at fixed input dims: onnx shape inference, then an onnxruntime probe."""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import OnnxPruneError
from .inputs import resolve_input_shape
from .proto import PROTOBUF_LIMIT, _first_line, model_nbytes

Shape = tuple  # a tuple of ints, with None for an unknown dimension


def infer_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple] | None = None) -> dict[str, Shape]:
    """Shapes of every tensor when the graph inputs have fixed dims.

    ``input_shapes`` maps an input name to its full shape; other inputs get a dynamic batch
    axis of 1, and must have no other dynamic dim (:mod:`onnxprune.graph.inputs`). Runs
    ``onnx.shape_inference.infer_shapes`` with data propagation on a weight-free skeleton of
    the model (large initializers become typed graph inputs), so it is cheap on large models.

    Returns ``{tensor name: shape}`` for graph inputs, outputs, value_info and initializers.
    Errors: an ``input_shapes`` name that is not a graph input, and every error of
    :func:`~onnxprune.graph.inputs.resolve_input_shape`.
    """
    input_shapes = dict(input_shapes or {})
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    unknown = set(input_shapes) - {i.name for i in real_inputs}
    if unknown:
        names = ", ".join(i.name for i in real_inputs)
        raise OnnxPruneError(f"{{input_shapes}} names unknown input(s) {sorted(unknown)}; the model's inputs are: {names}")
    fixed = [_fixed_input(vi, input_shapes.get(vi.name)) for vi in real_inputs]
    inferred = _infer_skeleton(model, fixed, data_prop=True)
    shapes: dict[str, Shape] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim
            )
    for t in graph.initializer:
        shapes[t.name] = tuple(t.dims)
    missing = [o for n in graph.node for o in n.output if o and (shapes.get(o) is None or None in shapes[o])]
    if missing and all(None not in shapes.get(i.name, (None,)) for i in real_inputs):
        shapes.update(_probe_shapes(model, fixed, missing))
    return shapes


def _infer_skeleton(model: onnx.ModelProto, inputs, data_prop: bool) -> onnx.ModelProto:
    """Shape inference on the model without its weights: large initializers become typed
    graph inputs, so nothing big is serialized. Errors become ``OnnxPruneError``."""
    graph = model.graph
    skeleton = onnx.GraphProto(name=graph.name)
    skeleton.node.extend(graph.node)
    skeleton.output.extend(graph.output)
    skeleton.input.extend(inputs)
    for t in graph.initializer:
        if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) or np.prod(t.dims) <= 16:
            skeleton.initializer.append(t)
        else:
            skeleton.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    sk_model = onnx.helper.make_model(skeleton, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sk_model.functions.extend(model.functions)
    try:
        return onnx.shape_inference.infer_shapes(sk_model, data_prop=data_prop)
    except Exception as exc:
        raise OnnxPruneError(f"shape inference failed: {_first_line(exc)}") from None


def infer_value_info(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Inferred ``value_info`` for the intermediate tensors of ``model`` (inputs as declared)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    return list(_infer_skeleton(model, inputs, data_prop=False).graph.value_info)


def _probe_shapes(model: onnx.ModelProto, inputs, names: list[str]) -> dict[str, Shape]:
    """Shapes that static inference could not resolve, read off one onnxruntime run.

    Used where shapes are computed at run time (e.g. ``Reshape(x, Concat(Shape(x)[0:1], ...))``).
    The inputs are seeded random values at the fixed shapes. Failures leave the shapes unknown.
    """
    from ..runtime.session import make_session

    if model_nbytes(model) > PROTOBUF_LIMIT // 2:
        return {}  # a probe serializes a second copy of the weights; too much for a model this big
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in inputs:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(dims).astype(dtype) if dtype.kind == "f" else np.zeros(dims, dtype)
    try:
        session = make_session(probe.SerializeToString(), optimize=False)
        wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
        values = session.run(wanted, feeds)
    except Exception:  # the probe is best effort: the shapes stay unknown, and the caller says so
        return {}
    return {name: tuple(v.shape) for name, v in zip(wanted, values) if hasattr(v, "shape")}


def _fixed_input(vi: onnx.ValueInfoProto, shape: tuple | None) -> onnx.ValueInfoProto:
    """``vi`` with the dims :func:`~onnxprune.graph.inputs.resolve_input_shape` gives it."""
    tt = vi.type.tensor_type
    declared = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in tt.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type in _NUMPY_TYPES else None
    return onnx.helper.make_tensor_value_info(vi.name, tt.elem_type, list(resolve_input_shape(vi.name, declared, shape, dtype)))


_NUMPY_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
                onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
                onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}
