"""onnxruntime sessions: the one place where the tool creates them.

Every session is quiet: onnxruntime's own log lines (coloured, several lines, C++ locations)
never reach the terminal; an error is reported once, as one line, by the caller. Messages are
shortened by :func:`ort_message`.

onnxruntime is an optional dependency, in one of two flavours that share the ``onnxruntime``
import package: the ``[cpu]`` extra (the ``onnxruntime`` wheel) or ``[gpu]``
(``onnxruntime-gpu``, which has the CPU provider too), installed from a checkout with
``pip install ".[cpu]"``. Installing both
leaves whichever was installed last, so the extras never pull both. Without either, this module
still imports (``analyze`` on a model whose shapes infer statically needs no onnxruntime), and
:func:`require_onnxruntime` (called by :func:`make_session`) raises one clear error.

Providers (:data:`PROVIDERS`): ``cpu``; ``cuda`` (CPU as the fallback for ops without a CUDA
kernel); ``tensorrt`` (CUDA, then CPU, for nodes TensorRT cannot take). A GPU session whose
first provider is not the one asked for is an error, never a silent CPU run. Sources:
onnxruntime's "Execution Providers" docs (CUDA, TensorRT) and its Python API summary.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import re
from typing import NamedTuple

import numpy as np
import onnx

from ..errors import OnnxPruneError

ModelSource = str | os.PathLike | bytes | onnx.ModelProto
"""A model given as a file path, serialized bytes, or an in-memory ``onnx.ModelProto``."""

_QUIET = 4  # onnxruntime's FATAL: nothing below it is printed

INSTALL_HINT = ('pip install onnxruntime (onnxruntime-gpu on a machine with an NVIDIA GPU); in a checkout of '
                'onnxprune, pip install ".[cpu]" or ".[gpu]" does the same')
"""How to get onnxruntime: the two extras, which install exactly one flavour each."""

try:
    import onnxruntime
except ImportError as _exc:  # neither extra installed, or a broken install
    onnxruntime = None
    _IMPORT_ERROR: str | None = (
        "onnxruntime is not installed" if getattr(_exc, "name", None) == "onnxruntime"
        else f"onnxruntime cannot be imported ({(str(_exc).splitlines() or ['?'])[0][:200]})"
    )
else:
    _IMPORT_ERROR = None
    onnxruntime.set_default_logger_severity(_QUIET)

PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
"""Provider names accepted by :func:`make_session`, mapped to onnxruntime's names."""

_CPU = PROVIDERS["cpu"]
_CUDA = PROVIDERS["cuda"]
_TRT = PROVIDERS["tensorrt"]
_GPU_NAMES = {_CUDA: "CUDA", _TRT: "TensorRT"}

DEVICES: dict[str, str] = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
"""Where each provider keeps its tensors: the ``device_type`` of ``OrtValue`` and IO binding."""


def require_onnxruntime():
    """The imported ``onnxruntime`` module.

    Raises :class:`OnnxPruneError` (``error: onnxruntime is not installed; pip install
    onnxruntime ...``) when neither ``onnxruntime`` nor ``onnxruntime-gpu`` is importable.
    """
    if onnxruntime is None:
        raise OnnxPruneError(f"{_IMPORT_ERROR}; {INSTALL_HINT}")
    return onnxruntime


def provider_key(provider: str) -> str:
    """``provider`` (any case) as a key of :data:`PROVIDERS`; raises :class:`OnnxPruneError`
    for an unknown one."""
    key = provider.lower() if isinstance(provider, str) else provider
    if key not in PROVIDERS:
        raise OnnxPruneError(
            f"unknown provider {provider!r}; choose one of: {', '.join(PROVIDERS)}"
        )
    return key


def _installed_flavours() -> list[str]:
    """The onnxruntime distributions pip has installed (``onnxruntime``, ``onnxruntime-gpu``)."""
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(dist)
    return found


def check_provider_available(provider: str) -> str:
    """onnxruntime's name for ``provider`` (``"cuda"`` → ``"CUDAExecutionProvider"``), after
    checking that the installed onnxruntime offers it (and, for TensorRT, CUDA too).

    Raises :class:`OnnxPruneError` for an unknown provider, no onnxruntime, or a GPU provider
    that ``onnxruntime.get_available_providers()`` lacks; the message lists what it has, and
    says so when both the CPU and the GPU wheel are installed (the CPU one then shadows the GPU
    one).
    """
    execution_provider = PROVIDERS[provider_key(provider)]
    ort = require_onnxruntime()
    if execution_provider == _CPU:
        return execution_provider
    available = ort.get_available_providers()
    needed = [execution_provider] + ([_CUDA] if execution_provider == _TRT else [])
    missing = [p for p in needed if p not in available]
    if missing:
        name = _GPU_NAMES[execution_provider]
        flavours = _installed_flavours()
        if len(flavours) > 1:
            fix = ("both onnxruntime and onnxruntime-gpu are installed and the CPU wheel shadows the GPU "
                   'one: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu')
        elif execution_provider == _TRT:
            fix = 'install onnxruntime-gpu and TensorRT on a machine with an NVIDIA GPU'
        else:
            fix = 'install onnxruntime-gpu on a machine with a GPU'
        what = (f"{name} execution provider is not available" if execution_provider in missing else
                f"{name} execution provider needs the CUDA execution provider, which is not available")
        raise OnnxPruneError(f"{what} (installed onnxruntime has: {', '.join(available)}); {fix}")
    return execution_provider


def provider_chain(
    provider: str, options: dict[str, str] | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """The ``providers`` list that :func:`make_session` gives onnxruntime for ``provider``.

    ``cpu`` → ``[CPU]``; ``cuda`` → ``[CUDA, CPU]``; ``tensorrt`` → ``[TensorRT, CUDA, CPU]``:
    onnxruntime assigns each node to the first provider in the list that can run it, so nodes
    that TensorRT rejects run in CUDA, and ops without a CUDA kernel on the CPU. ``options``
    (onnxruntime provider options, e.g. ``{"trt_fp16_enable": "True"}``) go to the first
    provider. Raises :class:`OnnxPruneError` for an unknown provider.
    """
    first = PROVIDERS[provider_key(provider)]
    chain: list[str | tuple[str, dict[str, str]]] = [(first, dict(options)) if options else first]
    if first == _TRT:
        chain.append(_CUDA)
    if first != _CPU:
        chain.append(_CPU)
    return chain

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


THREADS_ENV = "ONNXPRUNE_THREADS"
"""Environment variable: intra-op threads of every session whose caller gives none (a machine
shared with other work runs faster with 1; the test suite sets it)."""


def default_threads() -> int | None:
    """``$ONNXPRUNE_THREADS`` as an int, or None when unset. Errors: ``OnnxPruneError`` for a
    value that is not a positive integer."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise OnnxPruneError(f"{THREADS_ENV} must be a positive integer, got {text!r}")
    return int(text)


def make_session(
    model: ModelSource,
    provider: str = "cpu",
    threads: int | None = None,
    *,
    allow_spinning: bool = True,
    optimize: bool = True,
    label: str | None = None,
    provider_options: dict[str, str] | None = None,
) -> onnxruntime.InferenceSession:
    """Create an onnxruntime session for ``model``.

    ``provider`` is ``"cpu"``, ``"cuda"`` (CUDA keeps CPU as the fallback for ops that CUDA
    lacks) or ``"tensorrt"`` (TensorRT, then CUDA, then CPU; see :func:`provider_chain`).
    ``provider_options`` go to that first provider (e.g. ``{"trt_fp16_enable": "True"}``;
    names in onnxruntime's execution-provider docs). ``threads`` sets ``intra_op_num_threads``;
    ``None`` takes :func:`default_threads` (``$ONNXPRUNE_THREADS``), else onnxruntime's default
    (one thread per physical core). The graph optimization
    level stays at onnxruntime's default (``ORT_ENABLE_ALL``), because that is what users
    deploy. ``allow_spinning=False`` stops idle intra-op threads from busy-waiting after a run;
    :mod:`onnxprune.bench` needs that when it alternates between sessions, or one session's
    spinning threads steal the cores of the next. ``optimize=False`` turns graph optimizations off (a probe of
    intermediate shapes needs the graph as it is). ``label`` names the model in errors
    (default: its path).

    Paths are handed to onnxruntime as paths, so external weight files next to the model are
    found. A ``ModelProto`` is serialized first, which protobuf limits to 2 GB.

    On a GPU provider, onnxruntime's Python fallback (which prints an ``EP Error`` banner on
    stdout and retries on other providers) is turned off, at creation and at run time: a
    provider that fails is an error here, never a silent CPU run.

    Raises :class:`OnnxPruneError` for no onnxruntime installed, an unknown provider, a bad
    ``threads`` value, a missing model file, a model onnxruntime cannot load (with its first
    message line), CUDA or TensorRT not available in the installed onnxruntime, or available
    but not used (onnxruntime falls back to the next provider when one cannot initialise).
    """
    execution_provider = check_provider_available(provider)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = _QUIET
    threads = default_threads() if threads is None else threads
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise OnnxPruneError(f"threads must be a positive integer, got {threads!r}")
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    label = label or source_label(model)
    if execution_provider == _CPU:
        try:
            session = onnxruntime.InferenceSession(
                _ort_model_arg(model), sess_options=options,
                providers=provider_chain(provider, provider_options),
            )
        except OnnxPruneError:
            raise
        except Exception as exc:  # onnxruntime's exceptions derive from Exception directly
            raise OnnxPruneError(f"onnxruntime cannot load {label}: {ort_message(exc)}") from None
        return session
    return _gpu_session(model, provider, options, provider_options, label)


def _gpu_session(model, provider, options, provider_options, label):
    execution_provider = PROVIDERS[provider_key(provider)]
    name = _GPU_NAMES[execution_provider]
    banner = io.StringIO()  # an onnxruntime without the enable_fallback argument prints its retry here
    try:
        with contextlib.redirect_stdout(banner):
            session = onnxruntime.InferenceSession(
                _ort_model_arg(model), sess_options=options,
                providers=provider_chain(provider, provider_options), enable_fallback=0,
            )
    except OnnxPruneError:
        raise
    except Exception as exc:  # noqa: BLE001  (onnxruntime's exceptions derive from Exception directly)
        raise OnnxPruneError(f"onnxruntime cannot load {label} with {name}: {ort_message(exc)}") from None
    session.disable_fallback()  # a run that fails in the provider raises instead of rerunning on CPU
    used = session.get_providers()
    if used[0] != execution_provider:
        check = ("the TensorRT installation (libnvinfer on the library path, a version that matches "
                 "onnxruntime-gpu)" if execution_provider == _TRT else "the CUDA and cuDNN installation")
        reason = re.search(r"EP Error:? (.*?) (?:when )?using", banner.getvalue())
        why = f" ({ort_message(RuntimeError(reason.group(1)))})" if reason else ""
        raise OnnxPruneError(
            f"onnxruntime could not initialise {name} for {label} and fell back to "
            f"{', '.join(used)}{why}; check {check}"
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
