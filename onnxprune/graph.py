"""Load, normalize, shape-infer, check and atomically save ONNX models.

Everything here works on ``onnx.ModelProto``; the analyzer views the normalized proto through
onnx-graphsurgeon, and the rewrite edits a copy of the same proto, so node ``i`` of the
graph-surgeon view is node ``i`` of the proto.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import shutil
import signal
import tempfile
import threading
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
# Protobuf cannot serialize a message of 2 GiB or more: models above this (less a margin for the
# graph itself) are checked by path and saved with external data.
PROTOBUF_LIMIT = (1 << 31) - (1 << 26)
_SMALL = 4096  # a folded output may be larger than its inputs only up to this many elements


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file, with its external data, and reject what is not a usable model.

    Errors (``OnnxPruneError``): missing file, not a protobuf, truncated protobuf, an empty
    graph, external data that points outside the model's folder or is missing.
    """
    return read_model(path)[0]


def read_model(path: str | os.PathLike) -> tuple[onnx.ModelProto, list[Path]]:
    """:func:`load_model`, and the external data files it read (empty: none; resolved paths).

    Memory: one copy of the weights. With external data the model file itself is small: it is
    checked by path (``onnx.checker`` verifies the data references without reading them, and
    works above the 2 GB protobuf limit), then each tensor's bytes are read into the proto.
    Without external data the file's bytes are checked before parsing and dropped after.
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
    external = _external_tensors(model, path.parent)
    try:
        onnx.checker.check_model(str(path) if external else data)
    except Exception as exc:
        # Some tools (onnxruntime's float16 converter) append nodes out of order; onnxruntime
        # accepts such graphs. The checker validated the initializers before it reached the
        # nodes, so sort them and check the nodes again on a weight-free skeleton.
        if "topologically sorted" not in str(exc) or not toposort(model.graph):
            raise OnnxPruneError(f"{path}: the model fails onnx.checker: {_first_line(exc)}") from None
        try:
            onnx.checker.check_model(_weightless(model))
        except Exception as exc2:
            raise OnnxPruneError(f"{path}: the model fails onnx.checker: {_first_line(exc2)}") from None
    del data
    files = sorted({(path.parent / _location(t)).resolve() for t in external})
    if external:
        _load_external_data(model, external, path.parent)
    return model, files


def toposort(graph: onnx.GraphProto) -> bool:
    """Reorder ``graph``'s nodes topologically, keeping the given order wherever it is valid.

    A node depends on the producers of its inputs and of the outer tensors its subgraphs read.
    Returns False, leaving the graph as it was, when the nodes cannot be sorted (a cycle)."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
    waiting = [0] * len(graph.node)
    users: list[list[int]] = [[] for _ in graph.node]
    for i, node in enumerate(graph.node):
        deps = {producer[n] for n in list(node.input) + sorted(_outer_reads(node)) if n in producer}
        deps.discard(i)
        waiting[i] = len(deps)
        for d in deps:
            users[d].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(graph.node):
        return False
    if order != sorted(order):
        nodes = [graph.node[i] for i in order]
        copies = [onnx.NodeProto() for _ in nodes]
        for copy, node in zip(copies, nodes):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)
    return True


def _outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names that the subgraphs of ``node`` (If/Loop/Scan bodies) read, recursively."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
            for inner in sub.node:
                names.update(n for n in inner.input if n)
                names |= _outer_reads(inner)
    return names


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without its initializers (declared as graph inputs instead), for checking the
    nodes without copying the weights."""
    skeleton = copy_without_initializers(model)
    declared = {vi.name for vi in skeleton.graph.input}
    for t in model.graph.initializer:
        if t.name not in declared:
            skeleton.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skeleton


def _external_tensors(model: onnx.ModelProto, base: Path) -> list[onnx.TensorProto]:
    """The tensors stored outside the file; refuse locations outside ``base`` or missing files."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    tensors = [t for t in _get_all_tensors(model) if uses_external_data(t)]
    root = base.resolve()
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        location = _location(tensor)
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or (root != target and root not in target.parents):
            raise OnnxPruneError(
                f"external data of tensor {tensor.name!r} points outside the model's folder: {location!r}"
            )
        if not target.is_file():
            raise OnnxPruneError(f"external data file missing for tensor {tensor.name!r}: {target}")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else _tensor_nbytes(tensor)
        except ValueError:
            raise OnnxPruneError(f"external data of tensor {tensor.name!r} has a malformed offset or length") from None
        expected = _tensor_nbytes(tensor)
        if offset < 0 or (length is not None and (length < 0 or offset + length > target.stat().st_size)):
            raise OnnxPruneError(f"external data of tensor {tensor.name!r} lies past the end of {location!r} "
                                 "(a truncated data file?)")
        if expected is not None and length is not None and length != expected:
            raise OnnxPruneError(f"external data of tensor {tensor.name!r} has {length} bytes, "
                                 f"its dims and type need {expected}")
    return tensors


def _location(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def _load_external_data(model: onnx.ModelProto, tensors: list[onnx.TensorProto], base: Path) -> None:
    """Read each external tensor's bytes into the proto (validated by :func:`_external_tensors`)."""
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in tensors:
        try:
            load_external_data_for_tensor(tensor, str(base))
        except Exception as exc:
            raise OnnxPruneError(f"cannot read the external data of tensor {tensor.name!r}: {_first_line(exc)}") from None
        tensor.ClearField("data_location")  # DEFAULT: the tensor now reads like one stored inline


def _tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of a tensor's values as ``raw_data`` (None for strings and unknown types)."""
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None
    n = int(np.prod(tensor.dims, dtype=np.int64))
    if tensor.data_type in _SUBBYTE_TYPES:
        return (n * _SUBBYTE_TYPES[tensor.data_type] + 7) // 8
    return n * itemsize


_SUBBYTE_TYPES = {getattr(onnx.TensorProto, name): bits for name, bits in
                  (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
                  if hasattr(onnx.TensorProto, name)}


def model_nbytes(model: onnx.ModelProto) -> int:
    """The bytes the initializers' values take (what decides the 2 GB protobuf limit), computed
    from dims and types without serializing anything."""
    total = 0
    for t in model.graph.initializer:
        n = _tensor_nbytes(t)
        total += n if n is not None else t.ByteSize()
    return total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


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
    """Remove folded intermediates (e.g. the un-reshaped bias) that nothing reads any more.

    Deletes by index, so the other initializers are not copied."""
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    for k in reversed(range(len(graph.initializer))):
        if graph.initializer[k].name in folded and graph.initializer[k].name not in used:
            del graph.initializer[k]


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


def check_model(model: onnx.ModelProto | bytes | str | os.PathLike) -> None:
    """``onnx.checker.check_model(full_check=True)``; failures become ``OnnxPruneError``.

    A path is checked on disk: the way to check a model with external data, or above 2 GB."""
    target = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    try:
        onnx.checker.check_model(target, full_check=True)
    except Exception as exc:
        raise OnnxPruneError(f"the rewritten model fails onnx.checker: {_first_line(exc)}") from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (existing or not)."""
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


class Interrupted(KeyboardInterrupt):
    """SIGINT arrived while the output was being committed: the commit was completed first, so
    the output is whole and in place (``written`` names it)."""

    def __init__(self, written: str) -> None:
        super().__init__(f"interrupted after {written} was written")
        self.written = written


@contextlib.contextmanager
def sigint_deferred(written: str | None = None):
    """Hold SIGINT back while the block runs (file creation, renames, clean-up), then raise
    ``KeyboardInterrupt`` if one came (:class:`Interrupted` when ``written`` says the block
    committed an output). Outside the main thread signals cannot arrive here: a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise Interrupted(written) if written else KeyboardInterrupt()


def _refuse_overwrite(out: Path, protected) -> None:
    """``protected`` is the input model, then the data files it reads."""
    for k, path in enumerate(protected):
        if path is not None and same_file(out, path):
            what = f"the input model {path}" if k == 0 else f"{path}, which the input model reads"
            raise OnnxPruneError(f"refusing to overwrite {what}; choose another output path")


def check_output(out: str | os.PathLike, never_overwrite) -> None:
    """Refuse (``OnnxPruneError``) an output whose model file, or its external data file
    ``<out name>.data``, would replace one of ``never_overwrite`` (the input model, then the
    data files it reads)."""
    out = Path(out)
    protected = _protected(never_overwrite)
    _refuse_overwrite(out, protected)
    data_out = out.parent / external_data_name(out)
    for path in protected:
        if path is not None and same_file(data_out, path):
            raise OnnxPruneError(f"refusing to overwrite {path}, which the input model reads, with the output's "
                                 f"external data {data_out.name}; choose another output name")


def _protected(never_overwrite) -> list:
    if never_overwrite is None:
        return []
    if isinstance(never_overwrite, (str, os.PathLike)):
        return [never_overwrite]
    return list(never_overwrite)


def save_model_atomic(model: onnx.ModelProto | bytes, out: str | os.PathLike, *,
                      never_overwrite=None, external_data: bool = False, verify=None) -> Path:
    """Write ``model`` (a proto or its serialized bytes) to ``out`` through a temporary file in the same folder and ``os.replace``.

    An interrupted write leaves no partial file at ``out`` and no temporary file. Refuses
    (``OnnxPruneError``) to write over ``never_overwrite`` (a path or a list of paths: the input
    model and its external data files), or into a folder that does not exist.

    ``external_data=True`` writes the tensors to ``<out name>.data`` next to ``out`` (see
    :class:`StagedModel`); ``verify(path)`` then runs on the staged model before it is moved in
    place. It returns ``out``.
    """
    out = Path(out)
    protected = _protected(never_overwrite)
    if external_data:
        if isinstance(model, bytes):
            model = onnx.load_model_from_string(model)
        with StagedModel(model, out, never_overwrite=protected) as staged:
            if verify is not None:
                verify(staged.path)
            staged.commit()
        return out
    _refuse_overwrite(out, protected)
    if not out.parent.is_dir():
        raise OnnxPruneError(f"output folder does not exist: {out.parent}")
    write_atomic(out, model if isinstance(model, bytes) else model.SerializeToString())
    return out


def write_atomic(out: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``out`` through a temporary file in the same folder and ``os.replace``.

    The file gets the usual mode under the umask (``mkstemp`` would leave 0600). SIGINT is held
    back while the temporary file is created and renamed, so an interrupt leaves either the old
    state or the complete file, and never a temporary file."""
    out = Path(out)
    tmp = None
    try:
        with sigint_deferred():  # the temporary file exists only once the clean-up knows it
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        with sigint_deferred(written=str(out)):
            os.replace(tmp, out)
            tmp = None
    except BaseException:
        if tmp is not None:
            with sigint_deferred():
                if os.path.exists(tmp):
                    os.unlink(tmp)
        raise


EXTERNAL_SIZE_THRESHOLD = 1024  # tensors of at least this many bytes go to the data file
_ALIGN = 4096  # tensors of at least _ALIGN_MIN bytes start at a page boundary (mmap-friendly)
_ALIGN_MIN = 1 << 16


def external_data_name(out: str | os.PathLike) -> str:
    """The data file written next to ``out`` for its external tensors: ``<out name>.data``."""
    return f"{Path(out).name}.data"


class StagedModel:
    """A model written with external data into a temporary folder inside the output folder.

    ``StagedModel(model, out)`` writes ``<tmp>/<out name>`` and ``<tmp>/<out name>.data``: every
    initializer holding at least 1 KiB of ``raw_data`` goes to the data file (large ones at 4 KiB
    boundaries), referenced by the name it will have next to ``out``; the model file is the
    small remaining proto (:attr:`model`, which is also what :meth:`commit` leaves on disk).
    The tensors' bytes are read one at a time: no serialized copy of the whole model is made,
    so this works above the 2 GB protobuf limit. ``path`` is the staged model file, ready for
    ``onnx.checker`` and onnxruntime. :meth:`commit` moves the data file, then the model file,
    in place with ``os.replace`` (SIGINT waits until both are done). Leaving the ``with`` block
    without a commit, by an error or ``KeyboardInterrupt``, removes the temporary folder.

    Refuses (``OnnxPruneError``) an output whose model or data file would replace one of
    ``never_overwrite`` (the input model and its data files).
    """

    def __init__(self, model: onnx.ModelProto, out: str | os.PathLike, *, never_overwrite=None) -> None:
        self.out = Path(out)
        self.data_out = self.out.parent / external_data_name(self.out)
        check_output(self.out, never_overwrite)
        if not self.out.parent.is_dir():
            raise OnnxPruneError(f"output folder does not exist: {self.out.parent}")
        self.folder: Path | None = None
        try:
            with sigint_deferred():
                self.folder = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
            self.path = self.folder / self.out.name
            self.model = _write_external(model, self.path, self.data_out.name)
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def commit(self) -> Path:
        staged_data = self.folder / self.data_out.name
        with sigint_deferred(written=str(self.out)):
            if staged_data.exists():
                os.replace(staged_data, self.data_out)
            os.replace(self.path, self.out)
            self.folder.rmdir()
            self.folder = None
        return self.out

    def discard(self) -> None:
        """Remove the temporary folder, if it is still there."""
        if self.folder is not None:
            with sigint_deferred():
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None


def _write_external(model: onnx.ModelProto, path: Path, location: str) -> onnx.ModelProto:
    """Write ``model`` to ``path`` with its large initializers in ``path.parent / location``;
    return the proto written to ``path`` (tensor data replaced by references)."""
    skeleton = copy_without_initializers(model)
    offset = 0
    with open(path.parent / location, "wb") as data:
        for tensor in model.graph.initializer:
            nbytes = _tensor_nbytes(tensor)
            ext = skeleton.graph.initializer.add()
            if nbytes is None or nbytes < EXTERNAL_SIZE_THRESHOLD or not tensor.HasField("raw_data"):
                ext.CopyFrom(tensor)
                continue
            _copy_fields(tensor, ext, skip={"raw_data", "external_data", "data_location"})
            if nbytes >= _ALIGN_MIN and offset % _ALIGN:
                pad = _ALIGN - offset % _ALIGN
                data.write(b"\0" * pad)
                offset += pad
            raw = tensor.raw_data  # one tensor's bytes at a time
            data.write(raw)
            ext.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = ext.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            del raw
    with open(path, "wb") as fh:
        fh.write(skeleton.SerializeToString())
    return skeleton


def copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph has no initializers (nothing else is left out)."""
    copy = onnx.ModelProto()
    _copy_fields(model, copy, skip={"graph"})
    _copy_fields(model.graph, copy.graph, skip={"initializer"})
    return copy


def _copy_fields(src, dst, skip: set[str]) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except those in ``skip``."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            getattr(dst, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)
