"""A Triton Inference Server model repository for an ONNX model: ``config.pbtxt``, the model and a
model card, published at once.

Layout (what ``tritonserver --model-repository DIR`` serves)::

    DIR/
      NAME/
        config.pbtxt        platform "onnxruntime_onnx", inputs, outputs, batching, instances
        model_card.json     see :mod:`onnxprune.deploy.card`
        1/
          model.onnx        a byte copy of the model (external data files copied beside it,
                            at the same relative paths)

The configuration follows Triton's model configuration guide (``docs/user_guide/
model_configuration.md`` in triton-inference-server/server) and the ``ModelConfig`` message of
``model_config.proto`` (triton-inference-server/common):

* ``name`` must match the model's folder; ``platform: "onnxruntime_onnx"`` selects the ONNX
  Runtime backend, which loads ``<version>/model.onnx`` by default.
* Data types, from the guide's table for ONNX Runtime: ONNX ``FLOAT`` is ``TYPE_FP32``
  (``FP32`` in the HTTP/gRPC protocol), ``FLOAT16`` ``TYPE_FP16``, ``DOUBLE`` ``TYPE_FP64``,
  ``BOOL``, ``(U)INT8…64`` ``TYPE_(U)INT8…64``, ``STRING`` ``TYPE_STRING`` (``BYTES``). Other
  element types (bfloat16, complex, float8, int4) have no ONNX Runtime entry; sequences, maps
  and optionals are not tensors. Both are refused.
* Shapes: with ``max_batch_size > 0`` Triton batches along the first axis of every input and
  output, whose full shape is ``[-1] + dims``: ``dims`` leave the batch axis out. With
  ``max_batch_size: 0`` ``dims`` are the full shape. A dynamic (symbolic or unknown) dim is
  ``-1``. A shape must have rank 1 or more, so a tensor that is all batch (``[N]``), or a
  scalar, gets ``dims: [ 1 ]`` and ``reshape: { shape: [ ] }``.
* ``instance_group [ { count: K, kind: KIND_CPU | KIND_GPU } ]``; ``dynamic_batching { }``
  only with ``max_batch_size > 0``.

Before anything is published the text is parsed into Triton's ``ModelConfig`` (shipped in
``tritonclient``: ``tritonclient.grpc.model_config_pb2``) and compared field by field with what
was meant; without tritonclient that check is skipped and says so (``validated: false``).

Atomicity: ``DIR/NAME`` is built in a temporary folder (``.onnxprune-*.tmp``) inside ``DIR``
(inside ``DIR``'s parent when ``DIR`` does not exist yet, which then becomes the whole
repository) and renamed into place, so ``DIR/NAME`` never holds half a model; a server that
polls the repository may see the temporary folder while the export runs. ``DIR/NAME`` may
exist beforehand only if it holds no file: nothing is ever overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .. import __version__
from ..errors import OnnxPruneError, render_options
from ..graph.outputs import TEMP_PREFIX, TEMP_SUFFIX, OutputSet, write_error
from ..graph.save import mark_published, signals_deferred

PathLike = str | os.PathLike

PLATFORM = "onnxruntime_onnx"
VERSION = "1"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
CARD_FILE = "model_card.json"
DEFAULT_MAX_BATCH_SIZE = 4
"""``max_batch_size`` chosen when every input and output has a dynamic first dim and none is
given: the value of Triton's own ``--backend-config=default-max-batch-size`` default."""

KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}

_T = onnx.TensorProto
DATA_TYPES: dict[int, tuple[str, str]] = {
    _T.BOOL: ("TYPE_BOOL", "BOOL"),
    _T.UINT8: ("TYPE_UINT8", "UINT8"), _T.UINT16: ("TYPE_UINT16", "UINT16"),
    _T.UINT32: ("TYPE_UINT32", "UINT32"), _T.UINT64: ("TYPE_UINT64", "UINT64"),
    _T.INT8: ("TYPE_INT8", "INT8"), _T.INT16: ("TYPE_INT16", "INT16"),
    _T.INT32: ("TYPE_INT32", "INT32"), _T.INT64: ("TYPE_INT64", "INT64"),
    _T.FLOAT16: ("TYPE_FP16", "FP16"), _T.FLOAT: ("TYPE_FP32", "FP32"), _T.DOUBLE: ("TYPE_FP64", "FP64"),
    _T.STRING: ("TYPE_STRING", "BYTES"),
}
"""ONNX element type → (model configuration data type, HTTP/gRPC protocol datatype)."""

_NOT_TENSOR = {"sequence_type": "a sequence", "map_type": "a map", "optional_type": "an optional",
               "sparse_tensor_type": "a sparse tensor"}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

Dim = int | str | None  # a graph dim: its size, its symbol, or None when unknown


# ---------------------------------------------------------------- configuration
@dataclass
class TensorConfig:
    """One input or output as the configuration declares it.

    ``dims`` are Triton's (without the batch axis when ``max_batch_size > 0``; ``-1`` for a
    dynamic dim); ``reshape`` is ``[]`` when the model's tensor has no dims left (a scalar, or
    only the batch axis), else None; ``model_shape`` is the graph's shape (ints, symbols, None
    for unknown dims)."""

    name: str
    kind: str  # "input" or "output"
    data_type: str  # TYPE_FP32
    datatype: str  # FP32, as requests and responses spell it
    dims: list[int]
    reshape: list[int] | None
    model_shape: list[Dim]

    def to_dict(self) -> dict:
        return {"name": self.name, "data_type": self.data_type, "datatype": self.datatype, "dims": list(self.dims),
                "reshape": self.reshape, "model_shape": list(self.model_shape)}


@dataclass
class TritonConfig:
    """A model's Triton configuration; :meth:`text` is the ``config.pbtxt``."""

    name: str
    max_batch_size: int
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]
    instances: int = 1
    kind: str = "KIND_CPU"
    dynamic_batching: bool = False
    platform: str = PLATFORM
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The configuration in protobuf text format, as Triton reads ``config.pbtxt``."""
        lines = [f"# Triton model configuration written by onnxprune {__version__} (export-triton)",
                 f"name: {_quote(self.name)}", f"platform: {_quote(self.platform)}",
                 f"max_batch_size: {self.max_batch_size}"]
        for key, tensors in (("input", self.inputs), ("output", self.outputs)):
            lines.append(f"{key} [")
            for k, t in enumerate(tensors):
                lines += ["  {", f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}",
                          f"    dims: [ {', '.join(map(str, t.dims))} ]"]
                if t.reshape is not None:
                    lines.append(f"    reshape: {{ shape: [ {', '.join(map(str, t.reshape))} ] }}")
                lines.append("  }," if k < len(tensors) - 1 else "  }")
            lines.append("]")
        lines += ["instance_group [", "  {", f"    count: {self.instances}", f"    kind: {self.kind}", "  }", "]"]
        if self.dynamic_batching:
            lines.append("dynamic_batching { }")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"name": self.name, "platform": self.platform, "max_batch_size": self.max_batch_size,
                "instance_group": {"count": self.instances, "kind": self.kind},
                "dynamic_batching": self.dynamic_batching, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


def _quote(text: str) -> str:
    from google.protobuf import text_encoding

    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def default_name(model: PathLike) -> str:
    """The model name for a file: its stem, every run of characters outside ``A-Z a-z 0-9 _ . -``
    replaced by ``_`` and of dots by one dot, leading dots and dashes dropped, at most 100
    characters (``model`` if nothing is left): always a name :func:`check_name` takes."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(os.fspath(model)).stem)
    stem = re.sub(r"\.{2,}", ".", stem).lstrip(".-")[:100]
    return stem or "model"


def check_name(name: str) -> str:
    """Refuse a model name that is not one plain folder name: it names ``DIR/NAME`` and appears
    in request URLs (``/v2/models/NAME/infer``). Allowed: ``A-Z a-z 0-9 _ . -``, not starting
    with ``.`` or ``-``."""
    if not name:
        raise OnnxPruneError("{name} is empty; give a folder name such as resnet50_pruned")
    if "/" in name or "\\" in name or os.sep in name:
        raise OnnxPruneError(f"{{name}} {name!r} contains a path separator; give one folder name (the model is "
                             "written to --repo/NAME)")
    if name in (".", "..") or ".." in name:
        raise OnnxPruneError(f"{{name}} {name!r} contains '..'; give one folder name inside the repository")
    if not _NAME.fullmatch(name):
        raise OnnxPruneError(f"{{name}} {name!r} is not a plain folder name: use letters, digits, '_', '.' and '-', "
                             "starting with a letter, digit or '_' (it also appears in request URLs)")
    if len(name.encode()) > 200:
        raise OnnxPruneError(f"{{name}} is {len(name.encode())} bytes long; keep it under 200")
    return name


def _graph_shape(vi: onnx.ValueInfoProto) -> list[Dim] | None:
    if not vi.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def _check_tensor_name(kind: str, name: str) -> None:
    if not name:
        raise OnnxPruneError(f"the model has an {kind} without a name; Triton addresses tensors by name")
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise OnnxPruneError(f"{kind} {name!r} has a control character ({bad!r}) in its name, which a Triton "
                             "configuration and HTTP clients cannot carry; rename it in the model")


def graph_tensors(model: onnx.ModelProto) -> list[tuple[str, str, int, list[Dim]]]:
    """``(kind, name, ONNX element type, shape)`` of every graph input (initializers excluded) and
    output, inputs first, as the graph declares them.

    Errors (``OnnxPruneError``) for what a configuration cannot express: a sequence, map or
    optional; an element type without a Triton data type for ONNX Runtime; a tensor without a
    shape (unknown rank); a name that is empty, has control characters or is given twice."""
    inits = {t.name for t in model.graph.initializer}
    declared = [("input", vi) for vi in model.graph.input if vi.name not in inits]
    declared += [("output", vi) for vi in model.graph.output]
    tensors = []
    seen: dict[str, set[str]] = {"input": set(), "output": set()}
    for kind, vi in declared:
        _check_tensor_name(kind, vi.name)
        if vi.name in seen[kind]:
            raise OnnxPruneError(f"the model has two {kind}s named {vi.name!r}")
        seen[kind].add(vi.name)
        which = vi.type.WhichOneof("value")
        if which != "tensor_type":
            what = _NOT_TENSOR.get(which, "of no declared type")
            raise OnnxPruneError(f"{kind} {vi.name!r} is {what}, not a tensor; Triton's ONNX Runtime backend "
                                 "takes tensors only")
        elem = vi.type.tensor_type.elem_type
        if elem not in DATA_TYPES:
            type_name = _T.DataType.Name(elem) if elem in _T.DataType.values() else str(elem)
            raise OnnxPruneError(f"{kind} {vi.name!r} has element type {type_name}, which Triton's ONNX Runtime "
                                 "backend does not take (it takes bool, int8-64, uint8-64, float16, float, double "
                                 "and string tensors)")
        shape = _graph_shape(vi)
        if shape is None:
            raise OnnxPruneError(f"{kind} {vi.name!r} has no known shape (not even its rank), and Triton needs "
                                 "its dims; declare its shape in the model (e.g. with onnx shape inference)")
        tensors.append((kind, vi.name, elem, shape))
    return tensors


def _shape_text(shape: list[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def batch_problem(tensors: list[tuple[str, str, int, list[Dim]]]) -> str | None:
    """Why the tensors do not share a batch axis first (None when they do).

    Every input and output needs a first dim that is dynamic. The inputs' first dims must be
    one symbol (or unnamed); an output's first dim must not be a symbol that the inputs use for
    another axis."""
    for kind, name, _, shape in tensors:
        if not shape:
            return f"{kind} {name!r} is a scalar (it has no first axis to batch)"
        if isinstance(shape[0], int):
            return f"{kind} {name!r} has a fixed first dim of {shape[0]} (shape {_shape_text(shape)})"
    inputs = [(name, shape) for kind, name, _, shape in tensors if kind == "input"]
    symbols = {shape[0] for _, shape in inputs if isinstance(shape[0], str)}
    if len(symbols) > 1:
        listed = ", ".join(f"{name!r} {shape[0]!r}" for name, shape in inputs if isinstance(shape[0], str))
        return f"the inputs' first dims are different symbols ({listed}), so they are not one batch axis"
    others = {d for _, shape in inputs for d in shape[1:] if isinstance(d, str)} - symbols
    for kind, name, _, shape in tensors:
        if kind == "output" and shape[0] in others:
            return (f"output {name!r} has the first dim {shape[0]!r}, which the inputs use for another axis, "
                    "not for the batch")
    return None


def build_config(model: onnx.ModelProto, name: str, *, max_batch_size: int | None = None, instances: int = 1,
                 kind: str = "cpu", dynamic_batching: bool = False) -> TritonConfig:
    """The Triton configuration of ``model`` served as ``name`` (see the module doc).

    ``max_batch_size`` None picks :data:`DEFAULT_MAX_BATCH_SIZE` when every input and output has
    a dynamic first dim (see :func:`batch_problem`), else 0 (a note says why). ``instances``
    execution instances of ``kind`` (``cpu`` or ``gpu``); ``dynamic_batching`` adds Triton's
    dynamic batcher.

    Errors (``OnnxPruneError``): a bad name, count or kind; I/O that a configuration cannot
    express (:func:`graph_tensors`); ``max_batch_size > 0`` for a model without a batch axis
    first on every input and output; ``dynamic_batching`` with ``max_batch_size`` 0.
    """
    check_name(name)
    if max_batch_size is not None and (isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int)
                                       or max_batch_size < 0):
        raise OnnxPruneError(f"{{max_batch_size}} must be an integer >= 0, got {max_batch_size!r}")
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise OnnxPruneError(f"{{instances}} must be an integer >= 1, got {instances!r}")
    if kind not in KINDS:
        raise OnnxPruneError(f"{{kind}} must be one of {', '.join(KINDS)}, got {kind!r}")
    tensors = graph_tensors(model)
    problem = batch_problem(tensors)
    notes = []
    if max_batch_size is None:
        if problem is None:
            max_batch_size = DEFAULT_MAX_BATCH_SIZE
            notes.append(f"max_batch_size {DEFAULT_MAX_BATCH_SIZE}: every input and output has a dynamic first dim, "
                         "taken as the batch axis; {max_batch_size} sets another (0: no batching by Triton)")
        else:
            max_batch_size = 0
            notes.append(f"max_batch_size 0 (Triton passes whole tensors, no batching): {problem}")
    elif max_batch_size > 0 and problem is not None:
        raise OnnxPruneError(f"{{max_batch_size}} {max_batch_size} needs a batch axis first on every input and output, "
                             f"but {problem}; use {{max_batch_size}} 0, or export the model with a dynamic batch")
    if dynamic_batching and max_batch_size == 0:
        why = f" ({problem})" if problem is not None else ""
        raise OnnxPruneError(f"{{dynamic_batching}} needs {{max_batch_size}} > 0, and this configuration has 0{why}")
    configs = {"input": [], "output": []}
    for tensor_kind, tensor_name, elem, shape in tensors:
        full = [-1 if not isinstance(d, int) else d for d in shape]
        dims = full[1:] if max_batch_size > 0 else full
        reshape = None
        if not dims:  # a scalar, or only the batch axis: Triton needs rank >= 1
            dims, reshape = [1], []
        data_type, datatype = DATA_TYPES[elem]
        configs[tensor_kind].append(TensorConfig(tensor_name, tensor_kind, data_type, datatype, dims, reshape,
                                                 list(shape)))
    return TritonConfig(name, max_batch_size, configs["input"], configs["output"], instances, KINDS[kind],
                        dynamic_batching, notes=notes)


def validate_config(text: str, config: TritonConfig) -> tuple[bool, str]:
    """Parse ``text`` into Triton's ``ModelConfig`` (``tritonclient.grpc.model_config_pb2``) and
    compare it with ``config``, field by field. Returns ``(True, how)``, or ``(False, why it was
    skipped)`` when tritonclient cannot be imported. Errors (``OnnxPruneError``): the text does
    not parse, or parses into something else than ``config``."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return False, "skipped: tritonclient is not installed (pip install 'tritonclient[grpc,http]')"
    except TypeError as exc:  # another package (mlserver) registered its own inference.* protos here first
        return False, f"skipped: tritonclient's protobuf modules cannot be loaded here ({type(exc).__name__}: {exc})"
    try:
        parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise OnnxPruneError(f"the generated {CONFIG_FILE} does not parse as Triton's ModelConfig: {exc}") from None
    data_type = model_config_pb2.DataType.Name
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name

    def tensors(entries) -> list:
        return [(t.name, data_type(t.data_type), list(t.dims), list(t.reshape.shape) if t.HasField("reshape") else None)
                for t in entries]

    got = {"name": parsed.name, "platform": parsed.platform, "max_batch_size": parsed.max_batch_size,
           "inputs": tensors(parsed.input), "outputs": tensors(parsed.output),
           "instances": [(g.count, kind(g.kind)) for g in parsed.instance_group],
           "dynamic_batching": parsed.HasField("dynamic_batching")}
    meant = {"name": config.name, "platform": config.platform, "max_batch_size": config.max_batch_size,
             "inputs": [(t.name, t.data_type, t.dims, t.reshape) for t in config.inputs],
             "outputs": [(t.name, t.data_type, t.dims, t.reshape) for t in config.outputs],
             "instances": [(config.instances, config.kind)], "dynamic_batching": config.dynamic_batching}
    for key, value in meant.items():
        if got[key] != value:
            raise OnnxPruneError(f"the generated {CONFIG_FILE} parses with {key} {got[key]!r}, not {value!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        where = f"tritonclient {version('tritonclient')}"
    except PackageNotFoundError:
        where = "tritonclient"
    return True, f"parsed as Triton's inference.ModelConfig ({where}) and checked field by field"


# ---------------------------------------------------------------- the model folder
class ModelFolder:
    """``repo/name``, built in a temporary folder and renamed into place by :meth:`publish`.

    Checked at once, before any work (``OnnxPruneError``): ``repo`` is a folder or can be
    created (its parent exists); ``repo/name`` holds no file (an existing non-empty version
    folder ``1`` is named as such); the temporary folder can be created (permissions,
    read-only file systems). :attr:`root` is where the model folder's files go. Leaving the
    ``with`` block without :meth:`publish` removes the temporary folder."""

    def __init__(self, repo: PathLike, name: str) -> None:
        text = os.fspath(repo)
        if not text:
            raise OnnxPruneError("{repo} is an empty path; give the model repository's folder")
        if "\0" in text:
            raise OnnxPruneError("{repo} contains a NUL byte")
        check_name(name)
        self.repo = Path(text)
        self.dest = self.repo / name
        self._temp: Path | None = None
        try:
            if self.repo.exists() and not self.repo.is_dir():
                raise OnnxPruneError(f"{{repo}} {text} is a file, not a folder")
            if self.repo.is_dir():
                self._check_free()
                base, self._target = self.repo, self.dest
            else:
                if not self.repo.parent.is_dir():
                    raise OnnxPruneError(f"cannot create {{repo}} {text}: folder {self.repo.parent} does not exist")
                base, self._target = self.repo.parent, self.repo
        except OSError as exc:
            raise write_error(exc, text) from None
        try:
            with signals_deferred():
                try:
                    self._temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=base))
                except OSError as exc:
                    raise write_error(exc, self.dest) from None
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._temp, 0o777 & ~umask)  # mkdtemp leaves 0700; the server may run as another user
            self.root = self._temp if self._target == self.dest else self._temp / name
            self.root.mkdir(exist_ok=True)
        except BaseException:  # an interrupt here, before the caller's with-block: leave no folder behind
            self.discard()
            raise

    def _check_free(self) -> None:
        dest = self.dest
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            raise OnnxPruneError(f"{dest} exists and is not a folder; choose another {{name}} or remove it")
        if not dest.exists():
            return
        version = dest / VERSION
        if version.is_dir() and any(version.iterdir()):
            raise OnnxPruneError(f"the version folder {version} is not empty; choose another {{name}} or {{repo}}, "
                                 "or remove it (nothing is ever overwritten)")
        for path in sorted(dest.rglob("*")):
            if path.is_symlink() or not path.is_dir():
                raise OnnxPruneError(f"{dest} already holds {path.relative_to(dest)}; choose another {{name}} or "
                                     "{repo}, or remove it (nothing is ever overwritten)")

    def publish(self) -> None:
        """Rename the staged folder into place (the caller holds signals back, see :func:`publish`)."""
        if self._temp is None:
            raise RuntimeError("published or discarded already")
        try:
            if self._target == self.dest and self.dest.is_dir():
                self._check_free()  # again: only empty folders may be replaced
                for folder, _, _ in sorted(os.walk(self.dest), key=lambda entry: -len(entry[0])):
                    os.rmdir(folder)
            os.rename(self._temp, self._target)
        except OSError as exc:
            raise write_error(exc, self._target) from None
        self._temp = None

    def discard(self) -> None:
        with signals_deferred():
            if self._temp is not None:
                shutil.rmtree(self._temp, ignore_errors=True)
                self._temp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def publish(folder: ModelFolder, outputs: OutputSet | None = None) -> None:
    """Move the model folder into place, then commit ``outputs`` (a ``--json`` file), with
    SIGINT and SIGTERM held back until both are done."""
    with signals_deferred(written=str(folder.dest)):
        folder.publish()
        if outputs is not None:
            outputs.commit()
        mark_published()


# ---------------------------------------------------------------- the export
@dataclass
class TritonExport:
    """What :func:`export_triton` wrote: the repository, the model folder and its files, the
    configuration (``config``; ``config_text`` as written), whether it was validated against
    Triton's ``ModelConfig`` (``validation`` says how, or why not), and the model card."""

    repository: Path
    model_dir: Path
    config: TritonConfig
    config_text: str
    validated: bool
    validation: str
    card: dict
    external_data: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.model_dir / CONFIG_FILE

    @property
    def model_path(self) -> Path:
        return self.model_dir / VERSION / MODEL_FILE

    @property
    def card_path(self) -> Path:
        return self.model_dir / CARD_FILE

    def notes_text(self, spell=None) -> list[str]:
        """The notes of the configuration and the card, with options spelled by ``spell`` (see
        :func:`~onnxprune.errors.render_options`; default: the parameter names)."""
        return [render_options(note, spell) for note in self.config.notes + list(self.card.get("notes") or [])]

    def to_dict(self, spell=None) -> dict:
        data = {"repository": str(self.repository), "model_name": self.config.name, "model_dir": str(self.model_dir),
                "config_path": str(self.config_path), "model_path": str(self.model_path),
                "card_path": str(self.card_path), "external_data": list(self.external_data),
                "validated": self.validated, "validation": self.validation}
        data.update(self.config.to_dict())
        del data["name"]
        data["config"] = self.config_text
        data["notes"] = self.notes_text(spell)
        return data


def _copy(source: Path, dest: Path) -> str:
    """Copy ``source`` to ``dest`` (a new file) and return its SHA-256."""
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(dest, "xb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def export_into(folder: ModelFolder, model: PathLike, *, outputs: OutputSet | None = None,
                max_batch_size: int | None = None, instances: int = 1, kind: str = "cpu",
                dynamic_batching: bool = False, input_shapes: dict | None = None, plan: PathLike | None = None,
                accuracy_from: PathLike | None = None, latency_from: PathLike | None = None,
                spell=None) -> TritonExport:
    """Write the model folder's files into ``folder`` (not yet published): read ``model``,
    derive and validate the configuration, copy the model and its external data, count MACs
    and params, write the card (its notes name options as ``spell`` spells them: the CLI's
    flags, or by default the Python parameters). The external data files read are registered
    with ``outputs``. See :func:`export_triton` for the parameters."""
    from ..graph import read_model
    from .card import build_card, read_accuracy, read_latency, read_plan

    name = folder.dest.name
    source = Path(os.fspath(model))
    proto, data_files = read_model(source)
    if outputs is not None:
        outputs.add_reads({"the external data of the model": data_files})
    config = build_config(proto, name, max_batch_size=max_batch_size, instances=instances, kind=kind,
                          dynamic_batching=dynamic_batching)
    text = config.text()
    validated, how = validate_config(text, config)
    sections = {"plan": read_plan(plan) if plan is not None else None,
                "accuracy": read_accuracy(accuracy_from, source) if accuracy_from is not None else None,
                "latency": read_latency(latency_from, source) if latency_from is not None else None}
    version = folder.root / VERSION
    base = source.parent.resolve()
    relatives = [Path(data_file).relative_to(base) for data_file in data_files]
    if Path(MODEL_FILE) in relatives:
        raise OnnxPruneError(f"the model's external data file is named {MODEL_FILE}, the name Triton loads the model "
                             "from; save the model with another data file name")
    try:
        sha256 = _copy(source, version / MODEL_FILE)
        for data_file, relative in zip(data_files, relatives):
            _copy(Path(data_file), version / relative)
        external = [relative.as_posix() for relative in relatives]
        (folder.root / CONFIG_FILE).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise write_error(exc, folder.dest) from None
    card = build_card(proto, source, config, sha256=sha256, nbytes=source.stat().st_size, external_data=external,
                      input_shapes=input_shapes, validated=validated, spell=spell, **sections)
    try:
        (folder.root / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise write_error(exc, folder.dest) from None
    return TritonExport(folder.repo, folder.dest, config, text, validated, how, card, external)


def export_triton(model: PathLike, repo: PathLike, *, name: str | None = None, max_batch_size: int | None = None,
                  instances: int = 1, kind: str = "cpu", dynamic_batching: bool = False,
                  input_shapes: dict | None = None, plan: PathLike | None = None,
                  accuracy_from: PathLike | None = None, latency_from: PathLike | None = None) -> TritonExport:
    """Write a Triton model repository entry ``repo/name`` for the ONNX file ``model``.

    ``name`` defaults to :func:`default_name` of the file. ``max_batch_size`` (None: chosen
    from the graph, see :func:`build_config`), ``instances`` and ``kind`` (``cpu``/``gpu``)
    and ``dynamic_batching`` go into ``config.pbtxt``. The card (:mod:`.card`) counts MACs and
    params at ``input_shapes`` (``{input: shape}``; a dynamic batch is 1) and records the plan
    (``plan``, a plan JSON), accuracy (``accuracy_from``: the JSON of ``onnxprune verify``) and
    latency (``latency_from``: the JSON of ``onnxprune bench``) when given.

    Everything is checked before anything is published, and the folder appears whole or not at
    all (:class:`ModelFolder`). Errors: ``OnnxPruneError`` (one line, naming these parameters).
    """
    name = check_name(name) if name is not None else default_name(model)
    with ModelFolder(repo, name) as folder:
        result = export_into(folder, model, max_batch_size=max_batch_size, instances=instances,
                             kind=kind, dynamic_batching=dynamic_batching, input_shapes=input_shapes, plan=plan,
                             accuracy_from=accuracy_from, latency_from=latency_from)
        publish(folder)
    return result
