"""onnxruntime sessions: the one place where the tool creates them.

Every session is quiet: onnxruntime's own log lines (coloured, several lines, C++ locations)
never reach the terminal; an error is reported once, as one line, by the caller. Messages are
shortened by :func:`ort_message`.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime

from ..errors import OnnxPruneError

ModelSource = str | os.PathLike | bytes | onnx.ModelProto
"""A model given as a file path, serialized bytes, or an in-memory ``onnx.ModelProto``."""

_QUIET = 4  # onnxruntime's FATAL: nothing below it is printed
onnxruntime.set_default_logger_severity(_QUIET)

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}
"""Provider names accepted by :func:`make_session`, mapped to onnxruntime's names."""

_CPU = PROVIDERS["cpu"]
_CUDA = PROVIDERS["cuda"]

_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}

# --------------------------------------------------------------------------- sessions


def source_label(model: ModelSource) -> str:
    """A short human name for a model source: its path, or ``<bytes>`` / ``<ModelProto name>``."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, onnx.ModelProto):
        return f"<ModelProto {model.graph.name}>" if model.graph.name else "<ModelProto>"
    return "<bytes>"


def make_session(
    model: ModelSource,
    provider: str = "cpu",
    threads: int | None = None,
    *,
    allow_spinning: bool = True,
    optimize: bool = True,
    label: str | None = None,
) -> onnxruntime.InferenceSession:
    """Create an onnxruntime session for ``model``.

    ``provider`` is ``"cpu"`` or ``"cuda"`` (CUDA keeps CPU as the fallback for ops that CUDA
    lacks). ``threads`` sets ``intra_op_num_threads``; ``None`` keeps onnxruntime's default
    (one thread per physical core). The graph optimization level stays at onnxruntime's
    default (``ORT_ENABLE_ALL``), because that is what users deploy. ``allow_spinning=False``
    stops idle intra-op threads from busy-waiting after a run; :mod:`onnxprune.bench` needs
    that when it alternates between sessions, or one session's spinning threads steal the
    cores of the next. ``optimize=False`` turns graph optimizations off (a probe of
    intermediate shapes needs the graph as it is). ``label`` names the model in errors
    (default: its path).

    Paths are handed to onnxruntime as paths, so external weight files next to the model are
    found. A ``ModelProto`` is serialized first, which protobuf limits to 2 GB.

    Raises :class:`OnnxPruneError` for an unknown provider, a bad ``threads`` value, a missing
    model file, a model onnxruntime cannot load (with its first message line), CUDA not
    installed, or CUDA installed but not used (onnxruntime silently falls back to CPU).
    """
    key = provider.lower() if isinstance(provider, str) else provider
    if key not in PROVIDERS:
        raise OnnxPruneError(
            f"unknown provider {provider!r}; choose one of: {', '.join(PROVIDERS)}"
        )
    execution_provider = PROVIDERS[key]
    if execution_provider == _CUDA:
        available = onnxruntime.get_available_providers()
        if _CUDA not in available:
            raise OnnxPruneError(
                "CUDA execution provider is not available (installed onnxruntime has: "
                f"{', '.join(available)}); install onnxprune[gpu] on a machine with a GPU"
            )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = _QUIET
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise OnnxPruneError(f"threads must be a positive integer, got {threads!r}")
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [execution_provider] if execution_provider == _CPU else [execution_provider, _CPU]
    label = label or source_label(model)
    try:
        session = onnxruntime.InferenceSession(
            _ort_model_arg(model), sess_options=options, providers=providers
        )
    except OnnxPruneError:
        raise
    except Exception as exc:  # onnxruntime's exceptions derive from Exception directly
        raise OnnxPruneError(f"onnxruntime cannot load {label}: {ort_message(exc)}") from None
    if execution_provider == _CUDA and session.get_providers()[0] != _CUDA:
        raise OnnxPruneError(
            f"onnxruntime could not initialise CUDA for {label} and fell back to "
            f"{', '.join(session.get_providers())}; check the CUDA and cuDNN installation"
        )
    return session


def _ort_model_arg(model: ModelSource) -> str | bytes:
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise OnnxPruneError(f"{path}: no such file" if not os.path.isdir(path) else f"{path} is a directory, not an ONNX file")
        return path
    if isinstance(model, onnx.ModelProto):
        try:
            return model.SerializeToString()
        except ValueError as exc:
            raise OnnxPruneError(
                f"cannot serialize the in-memory model ({ort_message(exc)}); "
                "save it with external data and pass its path"
            ) from exc
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    raise OnnxPruneError(
        f"a model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}"
    )


def ort_message(exc: BaseException) -> str:
    """onnxruntime's message as one short line: without its ``[ONNXRuntimeError] : 1 : FAIL :``
    prefix, the ``Load model from ... failed:`` preamble and the C++ source location."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from .*? failed:", "", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ .*?\)\s+(?=[A-Z])", "", text)
    return text.strip()[:300] or type(exc).__name__



class InputSpec(NamedTuple):
    """One graph input: ``name``, numpy ``dtype``, and ``shape`` with ``None`` for dynamic dims."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


def input_specs(session: onnxruntime.InferenceSession) -> list[InputSpec]:
    """The session's graph inputs, in graph order. Symbolic dims (``"batch"``) become ``None``.

    Raises :class:`OnnxPruneError` for inputs that are not numeric or bool tensors
    (strings, sequences, maps, bfloat16).
    """
    specs = []
    for arg in session.get_inputs():
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is None:
            raise OnnxPruneError(f"model input '{arg.name}' has unsupported type {arg.type}")
        shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
        specs.append(InputSpec(arg.name, dtype, shape))
    return specs


def graph_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs of ``model`` (not its initializers) as :class:`InputSpec`, read off the
    graph without a session. Errors: an input that is not a numeric or bool tensor."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:
            raise OnnxPruneError(f"model input '{vi.name}' is not a numeric tensor") from None
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, shape))
    return specs
