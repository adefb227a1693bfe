"""Load, normalize, shape-infer, check and atomically save ONNX models.

Everything here works on ``onnx.ModelProto``; the analyzer views the normalized proto through
onnx-graphsurgeon, and the rewrite edits a copy of the same proto, so node ``i`` of the
graph-surgeon view is node ``i`` of the proto.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from .errors import OnnxPruneError

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


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file, with its external data, and reject what is not a usable model.

    Errors (``OnnxPruneError``): missing file, not a protobuf, truncated protobuf, an empty
    graph, external data that points outside the model's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise OnnxPruneError(f"{path}: no such file")
    try:
        data = path.read_bytes()
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise OnnxPruneError(f"{path}: not a valid ONNX file ({_first_line(exc)})") from None
    except Exception as exc:  # protobuf raises several types for garbage bytes
        raise OnnxPruneError(f"{path}: not a valid ONNX file ({_first_line(exc)})") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise OnnxPruneError(f"{path}: not a valid ONNX file (no graph or IR version)")
    if len(model.graph.node) == 0:
        raise OnnxPruneError(f"{path}: the graph has no nodes")
    external = _load_external_data(model, path.parent)
    try:
        onnx.checker.check_model(model if external else data)
    except Exception as exc:
        raise OnnxPruneError(f"{path}: the model fails onnx.checker: {_first_line(exc)}") from None
    return model


def _load_external_data(model: onnx.ModelProto, base: Path) -> bool:
    """Load tensors stored outside the file; refuse paths outside ``base``. True if any."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [t for t in onnx.external_data_helper._get_all_tensors(model) if uses_external_data(t)]
    if not tensors:
        return False
    root = base.resolve()
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        target = (base / info.get("location", "")).resolve()
        if root != target and root not in target.parents:
            raise OnnxPruneError(
                f"external data of tensor {tensor.name!r} points outside the model's folder: "
                f"{info.get('location')!r}"
            )
        if not target.is_file():
            raise OnnxPruneError(f"external data file missing for tensor {tensor.name!r}: {target}")
    load_external_data_for_model(model, str(base))
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy with constant weights as initializers and every node uniquely named.

    Folds ``Constant`` nodes and constant-only nodes of ``FOLDABLE_OPS`` (how Paddle and torch
    exporters hide weights and compute shape constants) into initializers, evaluated with
    ``onnx.reference``; an Identity of a constant becomes an alias of it (no copy). Nodes without a name get ``<op_type>_<index>``; duplicate names get a
    suffix. Graph inputs, outputs and everything else are kept.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
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
        _drop_unused_folded(graph, {t.name for t in new_inits})
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


def _drop_unused_folded(graph: onnx.GraphProto, folded: set[str]) -> None:
    """Remove folded intermediates (e.g. the un-reshaped bias) that nothing reads any more."""
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        keep = [t for t in graph.initializer if t.name not in folded or t.name in used]
        if len(keep) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(keep)
            changed = True


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset version of ``model``."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


Shape = tuple  # a tuple of ints, with None for an unknown dimension


def infer_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple] | None = None) -> dict[str, Shape]:
    """Shapes of every tensor when the graph inputs have fixed dims.

    ``input_shapes`` maps an input name to its full shape; other inputs get their dynamic dims
    set to 1 for axis 0 (the batch) and left unknown elsewhere. Runs
    ``onnx.shape_inference.infer_shapes`` with data propagation on a weight-free skeleton of
    the model (large initializers become typed graph inputs), so it is cheap on large models.

    Returns ``{tensor name: shape}`` for graph inputs, outputs, value_info and initializers.
    Errors: an ``input_shapes`` name that is not a graph input, a rank that does not match,
    or a fixed dim that differs from the model's.
    """
    input_shapes = dict(input_shapes or {})
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    unknown = set(input_shapes) - {i.name for i in real_inputs}
    if unknown:
        names = ", ".join(i.name for i in real_inputs)
        raise OnnxPruneError(f"--input-shape names unknown input(s) {sorted(unknown)}; the model's inputs are: {names}")
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
    import onnxruntime as ort

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
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
        values = session.run(wanted, feeds)
    except Exception:
        return {}
    return {name: tuple(v.shape) for name, v in zip(wanted, values) if hasattr(v, "shape")}


def _fixed_input(vi: onnx.ValueInfoProto, shape: tuple | None) -> onnx.ValueInfoProto:
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    if shape is not None:
        if len(shape) != len(dims):
            raise OnnxPruneError(f"--input-shape {vi.name}: rank {len(shape)} given, the model's input has rank {len(dims)}")
        for axis, (given, fixed) in enumerate(zip(shape, dims)):
            if fixed is not None and given != fixed:
                raise OnnxPruneError(f"--input-shape {vi.name}: axis {axis} is fixed to {fixed} in the model, {given} given")
        dims = list(shape)
    elif dims and dims[0] is None:
        dims[0] = 1
    return onnx.helper.make_tensor_value_info(vi.name, tt.elem_type, dims)


def check_model(model: onnx.ModelProto | bytes) -> None:
    """``onnx.checker.check_model(full_check=True)``; failures become ``OnnxPruneError``."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise OnnxPruneError(f"the rewritten model fails onnx.checker: {_first_line(exc)}") from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (existing or not)."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def save_model_atomic(model: onnx.ModelProto | bytes, out: str | os.PathLike, *,
                      never_overwrite: str | os.PathLike | None = None) -> Path:
    """Write ``model`` (a proto or its serialized bytes) to ``out`` through a temporary file in the same folder and ``os.replace``.

    An interrupted write leaves no partial file at ``out``. Refuses (``OnnxPruneError``) to write
    over ``never_overwrite`` (the input model), or into a folder that does not exist.
    """
    out = Path(out)
    if never_overwrite is not None and same_file(out, never_overwrite):
        raise OnnxPruneError(f"refusing to overwrite the input model {never_overwrite}; choose another output path")
    if not out.parent.is_dir():
        raise OnnxPruneError(f"output folder does not exist: {out.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a written model gets the usual mode
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model if isinstance(model, bytes) else model.SerializeToString())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
