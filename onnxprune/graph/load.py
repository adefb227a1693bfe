"""Read an ONNX file, with its external data, and reject what is not a usable model."""

from __future__ import annotations

import heapq
import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..errors import OnnxPruneError
from .proto import _first_line, _tensor_nbytes, copy_without_initializers


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
    if path.is_dir():
        raise OnnxPruneError(f"{path} is a directory, not an ONNX file")
    if not path.is_file():
        raise OnnxPruneError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OnnxPruneError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
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
    _check_dtypes(model, path)
    files = sorted({(path.parent / _location(t)).resolve() for t in external})
    if external:
        _load_external_data(model, external, path.parent)
    return model, files


# Tensor types whose values onnxprune reads, slices and writes back (numpy has them all).
HANDLED_DTYPES = frozenset({
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BOOL,
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
})


def _check_dtypes(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a model whose initializers or ``Constant`` values have a type onnxprune does not
    handle (string, bfloat16, float8, int4, complex), naming the first tensor and its type."""
    tensors = [(t.name, t.data_type) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [(node.output[0], a.t.data_type) for a in node.attribute if a.name == "value"]
    for name, data_type in tensors:
        if data_type not in HANDLED_DTYPES:
            type_name = onnx.TensorProto.DataType.Name(data_type) if data_type in onnx.TensorProto.DataType.values() \
                else str(data_type)
            raise OnnxPruneError(f"{path}: tensor {name!r} has type {type_name}, which onnxprune does not handle "
                                 "(it reads float16, float32, float64, integer and bool tensors)")


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The external data files a model file refers to, read without loading them (resolved
    paths; empty for a file that is not a model: loading it reports that)."""
    try:
        model = onnx.load_model(os.fspath(path), load_external_data=False)
    except Exception:
        return []
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    base = Path(path).parent
    return sorted({(base / _location(t)).resolve() for t in _get_all_tensors(model)
                   if uses_external_data(t) and _location(t) and "\0" not in _location(t)})


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
        if "\0" in location:
            raise OnnxPruneError(f"external data of tensor {tensor.name!r} has a location with a NUL byte: {location!r}")
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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file (hex), read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
