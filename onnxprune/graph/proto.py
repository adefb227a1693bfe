"""Small helpers on ONNX protos: tensor sizes, copies without weights, the full checker."""

from __future__ import annotations

import os

import numpy as np
import onnx

from ..errors import OnnxPruneError

# Protobuf cannot serialize a message of 2 GiB or more: models above this (less a margin for the
# graph itself) are checked by path and saved with external data.
PROTOBUF_LIMIT = (1 << 31) - (1 << 26)


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


def check_model(model: onnx.ModelProto | bytes | str | os.PathLike, what: str = "the rewritten model") -> None:
    """``onnx.checker.check_model(full_check=True)``; failures become ``OnnxPruneError`` naming
    ``what``. A path is checked on disk: the way to check a model with external data, or above
    2 GB."""
    target = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
    try:
        onnx.checker.check_model(target, full_check=True)
    except Exception as exc:
        raise OnnxPruneError(f"{what} fails onnx.checker: {_first_line(exc)}") from None


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
