"""Run ONNX models with onnxruntime and measure how far a pruned model drifts from its original.

The pieces, in the order ``onnxprune verify`` uses them:

* :func:`~onnxprune.runtime.session.make_session` builds an onnxruntime session (CPU, CUDA or
  TensorRT), and :func:`~onnxprune.runtime.session.input_specs` reads its inputs.
* :func:`load_data` reads an ``.npz`` file; :func:`random_data` makes seeded random inputs.
  :func:`parse_input_shapes` parses the ``--input-shape name:1x3x224x224`` option.
* :func:`run_model` runs a :class:`Dataset` through a session, batch by batch.
* :func:`compare_outputs` measures errors, cosine similarity, top-1 agreement and accuracy.
* :func:`verify` does all of the above for an original and a pruned model.

Convention: axis 0 of every graph input and output is the batch axis. A dataset stores its
samples on that axis, and the outputs of successive batches are concatenated on it.
Latency measurement lives in :mod:`onnxprune.runtime.bench`.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import onnx

from ..errors import OnnxPruneError
from ..graph.inputs import check_allocatable, fmt_dims, resolve_input_shape
from .session import (  # noqa: F401  (re-exported: the names evaluate has always offered)
    PROVIDERS,
    InputSpec,
    ModelSource,
    input_specs,
    make_session,
    ort_message,
    source_label,
)

if TYPE_CHECKING:
    import onnxruntime

LABELS_KEY = "labels"
"""Name of the optional labels array in an ``.npz`` data file."""


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """Model inputs with samples on axis 0, and optional integer class labels.

    ``inputs`` maps each graph input name to an array ``[N, ...]``; ``labels`` is ``[N]`` int
    or ``None``. Construction raises :class:`OnnxPruneError` if there are no inputs, an input
    is a scalar, the sample counts differ, there are no samples, or the labels are not a 1-D
    integer array of length ``N``.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise OnnxPruneError("dataset has no input arrays")
        counts = {}
        for name, array in self.inputs.items():
            if np.ndim(array) == 0:
                raise OnnxPruneError(f"array '{name}' is a scalar; samples must be on axis 0")
            counts[name] = np.shape(array)[0]
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"'{k}' has {v}" for k, v in counts.items())
            raise OnnxPruneError(f"inconsistent sample counts on axis 0: {detail}")
        n = next(iter(counts.values()))
        if n == 0:
            raise OnnxPruneError("dataset has no samples (axis 0 has length 0)")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.ndim == 0 or labels.dtype.kind not in "iuf" or (labels.ndim == 1 and labels.dtype.kind == "f"):
                raise OnnxPruneError(
                    f"labels must be int class indices [N] (or, for the CTC and detection metrics, "
                    f"[N, L] token ids or [N, M, 6] boxes), got {labels.dtype} with shape {list(labels.shape)}"
                )
            if len(labels) != n:
                raise OnnxPruneError(f"labels has {len(labels)} entries but the inputs have {n} samples")
            self.labels = labels

    def __len__(self) -> int:
        """Number of samples ``N``."""
        return int(np.shape(next(iter(self.inputs.values())))[0])

    def num_batches(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields for ``batch_size``."""
        return math.ceil(len(self) / _check_positive("batch_size", batch_size))

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{name: array[i:i+batch_size]}`` in order; the last batch may be smaller.

        Raises :class:`OnnxPruneError` if ``batch_size`` is not a positive integer.
        """
        _check_positive("batch_size", batch_size)
        for start in range(0, len(self), batch_size):
            yield {name: array[start : start + batch_size] for name, array in self.inputs.items()}


def _check_positive(what: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OnnxPruneError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load_data(path: str | os.PathLike, input_specs: Sequence[InputSpec]) -> Dataset:
    """Read an ``.npz`` with one array ``[N, ...]`` per graph input and optional ``labels`` [N].

    ``input_specs`` comes from :func:`input_specs`. Each array must have the input's rank and
    its static dims on axes 1 and up (axis 0 holds the samples). Float arrays are cast to the
    input's float dtype; integer arrays to its integer dtype if the values fit. Arrays that are
    not graph inputs are ignored. If a graph input is itself named ``labels``, the file's
    ``labels`` array is that input and the dataset has no labels.

    Raises :class:`OnnxPruneError` for a missing file, a file that is not an ``.npz``, a missing
    input array (listing what the file has), a rank, dim or dtype mismatch, inconsistent sample
    counts, or labels that are not a 1-D integer array of length ``N``.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise OnnxPruneError(f"data file not found: {where}")
    if os.path.isdir(where):
        raise OnnxPruneError(f"{where} is a directory, expected an .npz file")
    try:
        loaded = np.load(where, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise OnnxPruneError(f"{where} is not a NumPy .npz file ({ort_message(exc)})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise OnnxPruneError(
            f"{where} holds a single array, not an .npz archive; "
            "write it with numpy.savez(path, <input name>=array, ..., labels=labels)"
        )
    try:
        with loaded:
            _check_npz_sizes(where, loaded)
            arrays = {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise OnnxPruneError(f"cannot read {where}: {ort_message(exc)}") from exc

    inputs = {}
    for spec in input_specs:
        if spec.name not in arrays:
            has = ", ".join(f"'{k}'" for k in arrays) or "nothing"
            raise OnnxPruneError(f"{where} has no array for model input '{spec.name}' (file has: {has})")
        array = arrays[spec.name]
        if array.ndim != len(spec.shape):
            raise OnnxPruneError(
                f"{where}: array '{spec.name}' has rank {array.ndim} (shape {list(array.shape)}), "
                f"model input expects rank {len(spec.shape)} {fmt_dims(spec.shape)} "
                "with samples on axis 0"
            )
        for axis in range(1, array.ndim):
            expected = spec.shape[axis]
            if expected is not None and array.shape[axis] != expected:
                raise OnnxPruneError(
                    f"{where}: array '{spec.name}' has {array.shape[axis]} on axis {axis}, "
                    f"model input expects {expected} (shape {fmt_dims(spec.shape)})"
                )
        inputs[spec.name] = _coerce_dtype(array, spec, where)

    names = {spec.name for spec in input_specs}
    labels = arrays.get(LABELS_KEY) if LABELS_KEY not in names else None
    try:
        return Dataset(inputs, labels)
    except OnnxPruneError as exc:
        raise OnnxPruneError(f"{where}: {exc.template}") from exc


def sample_count(path: str | os.PathLike) -> int:
    """Samples in an ``.npz`` data file: axis 0 of its first array, read from the ``.npy``
    header alone."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(".npy"))
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(member)[0]
    return int(shape[0]) if shape else 1


def calibration_record(path: str | os.PathLike, calib_samples: int | None = None, used: int | None = None) -> dict:
    """What a model card says of the calibration data: the file's name (not its local path),
    SHA-256 and the samples used (``used``, else the file's, at most ``calib_samples``)."""
    from ..graph import file_sha256

    samples = used if used is not None else sample_count(path)
    if calib_samples is not None:
        samples = min(samples, calib_samples)
    return {"file": Path(os.fspath(path)).name, "sha256": file_sha256(path), "samples": samples}


def _check_npz_sizes(where: str, loaded: np.lib.npyio.NpzFile) -> None:
    """Read each array's ``.npy`` header (not its data) and refuse, before anything is allocated,
    an array whose header claims more bytes than the archive holds for it (a corrupt or forged
    file) or than this machine's memory."""
    for info in loaded.zip.infolist():
        if not info.filename.endswith(".npy"):
            continue
        with loaded.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            header = member.tell()
        name = info.filename[: -len(".npy")]
        nbytes = math.prod(shape) * dtype.itemsize
        if dtype.hasobject:
            continue  # np.load refuses object arrays (allow_pickle=False) with its own message
        if nbytes > info.file_size - header:
            raise OnnxPruneError(f"{where}: array '{name}' claims shape {list(shape)} ({nbytes} bytes) but the file holds "
                                 f"{max(info.file_size - header, 0)} bytes for it; the file is corrupt or truncated")
        check_allocatable(name, shape, dtype)


def _coerce_dtype(array: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    source, target = array.dtype, spec.dtype
    if source == target:
        return array
    if np.issubdtype(source, np.floating) and np.issubdtype(target, np.floating):
        return array.astype(target)
    if np.issubdtype(source, np.integer) and np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return array.astype(target)
        raise OnnxPruneError(
            f"{where}: array '{spec.name}' has values outside the range of {target}"
        )
    raise OnnxPruneError(
        f"{where}: array '{spec.name}' has dtype {source}, model input expects {target}"
    )


def parse_input_shapes(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``--input-shape`` values like ``"input:1x3x224x224"`` into ``{name: dims}``.

    The name is everything before the last ``:``, so TensorFlow-style names such as
    ``"input:0:1x3x224x224"`` work. Dims are positive integers joined by ``x``. A single string
    is accepted as a one-element list.

    Raises :class:`OnnxPruneError` for a malformed string, a dim that is not a positive
    integer, or a name given twice.
    """
    if isinstance(specs, str):
        specs = [specs]
    shapes: dict[str, tuple[int, ...]] = {}
    for text in specs:
        name, sep, dims_text = str(text).strip().rpartition(":")
        dims_parts = dims_text.split("x")
        if not sep or not name or not all(p.strip().isdigit() for p in dims_parts):
            raise OnnxPruneError(
                f"bad {{input_shapes}} {text!r}: expected NAME:DIMS such as input:1x3x224x224"
            )
        dims = tuple(int(p) for p in dims_parts)
        if any(d == 0 for d in dims):
            raise OnnxPruneError(f"bad {{input_shapes}} {text!r}: dims must be positive")
        if name in shapes:
            raise OnnxPruneError(f"{{input_shapes}} given twice for '{name}'")
        shapes[name] = dims
    return shapes


def random_data(
    input_specs: Sequence[InputSpec],
    n: int,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> Dataset:
    """Seeded random inputs: ``n`` samples per graph input, stacked on axis 0.

    Float inputs are standard-normal (drawn in float32, then cast); integer and bool inputs
    are zeros. Inputs are drawn in graph order from one ``numpy.random.default_rng(seed)``.

    Each input's per-run shape is ``shapes[name]`` if given (full shape including the batch
    axis, checked against the model's rank and static dims), else the model's shape with a
    dynamic batch axis taken as 1. Axis 0 of the result always has length ``n``.

    Raises :class:`OnnxPruneError` if ``n < 1``, ``shapes`` names an unknown input or
    disagrees with the model, an input is a scalar, or an input has dynamic dims beyond
    axis 0 that ``shapes`` does not give (the message shows the ``--input-shape`` to pass).
    """
    _check_positive("number of samples", n)
    shapes = dict(shapes or {})
    known = [spec.name for spec in input_specs]
    unknown = [name for name in shapes if name not in known]
    if unknown:
        raise OnnxPruneError(
            f"{{input_shapes}} given for unknown input(s) {', '.join(map(repr, unknown))} "
            f"(model inputs: {', '.join(map(repr, known))})"
        )
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in input_specs:
        if not spec.shape:
            raise OnnxPruneError(f"model input '{spec.name}' is a scalar; it has no batch axis")
        dims = resolve_input_shape(spec.name, spec.shape, shapes.get(spec.name), spec.dtype)
        full = (n, *dims[1:])
        check_allocatable(spec.name, full, spec.dtype, spec.name in shapes)
        if np.issubdtype(spec.dtype, np.floating):
            inputs[spec.name] = rng.standard_normal(full, dtype=np.float32).astype(spec.dtype)
        else:
            inputs[spec.name] = np.zeros(full, dtype=spec.dtype)
    return Dataset(inputs)


def check_shapes_batch(shapes: dict[str, tuple[int, ...]] | None, batch: int) -> None:
    """Check that axis 0 of every ``--input-shape`` equals the batch size ``batch``.

    Raises :class:`OnnxPruneError` on the first shape whose batch axis differs.
    """
    for name, dims in (shapes or {}).items():
        if dims and dims[0] != batch:
            raise OnnxPruneError(
                f"{{input_shapes}} {name}:{'x'.join(map(str, dims))} has batch {dims[0]} "
                f"on axis 0 but the batch size is {batch}"
            )


# --------------------------------------------------------------------------- running

_T = TypeVar("_T")


def progress_bar(items: Iterable[_T], total: int, description: str, enabled: bool) -> Iterable[_T]:
    """Wrap ``items`` in a transient rich progress bar on stderr when ``enabled``."""
    if not enabled:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(
        items, description=description, total=total, console=Console(stderr=True), transient=True
    )


def run_model(
    session: onnxruntime.InferenceSession,
    data: Dataset,
    batch_size: int = 1,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run every sample of ``data`` through ``session`` and return ``{output name: array}``,
    samples on axis 0.

    Batches of ``batch_size`` samples are fed in order; a model whose inputs fix the batch
    size runs in batches of that size instead (the last one padded, the padding dropped:
    :mod:`onnxprune.runtime.samples`). Each output's runs are joined on the axis that holds
    its samples (traced; moved to axis 0, so a time-major ``[T, N, K]`` output comes back
    ``[N, T, K]``); an output without one (a per-model constant) is returned as the first run
    computed it. Only the session's inputs are fed; other arrays in ``data`` are ignored.
    ``progress`` shows a progress bar on stderr.

    Raises :class:`OnnxPruneError` if ``data`` lacks a model input, or onnxruntime fails
    (with its first message line).
    """
    from .samples import run_session

    _check_positive("batch_size", batch_size)
    captured = run_session(session, data, batch_size, progress=progress)
    return {name: captured.joined(name, samples_first=True) for name in captured.names()}


# --------------------------------------------------------------------------- comparing


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class OutputComparison:
    """How one output of a candidate (pruned) model differs from the reference (original).

    * ``shape``: the output's full shape, samples on axis 0.
    * ``max_abs_error`` / ``mean_abs_error``: over all elements, computed in float64. Elements
      that are equal (including the same inf, or NaN in both) count as 0.
    * ``cosine_similarity`` / ``cosine_similarity_min``: cosine between the flattened
      reference and candidate of each sample, then the mean / the minimum over samples.
      Two all-zero samples count as 1, one all-zero sample as 0.
    * ``relative_mse``: ``sum((candidate - reference)^2) / sum(reference^2)`` over all
      elements (0 for identical outputs).
    * ``top1_agreement``: fraction of samples whose argmax on axis 1 agrees, in [0, 1].
      Only for classifier-shaped outputs (2-D ``[N, K]`` with ``K > 1``), else ``None``.
    * ``accuracy_original`` / ``accuracy_pruned``: fraction of argmax predictions equal to the
      labels. ``None`` unless labels were given, the output is classifier-shaped, and every
      label is a valid class index in ``[0, K)``.

    :meth:`to_dict` gives NaN and inf as ``None`` so the result is strict JSON.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    mean_abs_error: float
    cosine_similarity: float
    cosine_similarity_min: float
    relative_mse: float = 0.0
    top1_agreement: float | None = None
    accuracy_original: float | None = None
    accuracy_pruned: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "max_abs_error": _json_float(self.max_abs_error),
            "mean_abs_error": _json_float(self.mean_abs_error),
            "cosine_similarity": _json_float(self.cosine_similarity),
            "cosine_similarity_min": _json_float(self.cosine_similarity_min),
            "relative_mse": _json_float(self.relative_mse),
            "top1_agreement": _json_float(self.top1_agreement),
            "accuracy_original": _json_float(self.accuracy_original),
            "accuracy_pruned": _json_float(self.accuracy_pruned),
        }


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
) -> list[OutputComparison]:
    """Compare each output of ``candidate`` with ``reference``; see :class:`OutputComparison`.

    Both map output names to arrays with samples on axis 0; ``labels`` is ``[N]`` int or
    ``None``. Results follow ``reference``'s order.

    Raises :class:`OnnxPruneError` if the output names differ, an output's shapes differ, or
    the labels are not 1-D integers with one entry per sample of a classifier-shaped output.
    """
    only_ref = [name for name in reference if name not in candidate]
    only_cand = [name for name in candidate if name not in reference]
    if only_ref or only_cand:
        raise OnnxPruneError(
            "the models have different outputs: only in original: "
            f"{', '.join(map(repr, only_ref)) or '-'}; only in pruned: "
            f"{', '.join(map(repr, only_cand)) or '-'}"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            labels = None  # sequence or box labels: the task metrics read them (see verify)
    return [_compare_one(name, reference[name], candidate[name], labels) for name in reference]


def _compare_one(
    name: str, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None
) -> OutputComparison:
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape != cand.shape:
        raise OnnxPruneError(
            f"output '{name}' has shape {list(ref.shape)} in the original "
            f"but {list(cand.shape)} in the pruned model"
        )
    a = ref.astype(np.float64)
    b = cand.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
    max_err = float(diff.max()) if diff.size else 0.0
    mean_err = float(diff.mean()) if diff.size else 0.0
    energy = float(np.square(np.where(np.isfinite(a), a, 0.0)).sum())
    rel_mse = float(np.square(diff).sum() / energy) if energy > 0 else (0.0 if not diff.any() else math.inf)

    rows = 1 if a.ndim == 0 else a.shape[0]
    a2, b2 = a.reshape(rows, -1), b.reshape(rows, -1)
    if rows == 0:
        cos_mean = cos_min = 1.0
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            dot = np.einsum("ij,ij->i", a2, b2)
            norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
            both_zero = (np.linalg.norm(a2, axis=1) == 0) & (np.linalg.norm(b2, axis=1) == 0)
            cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
        cos = np.clip(cos, -1.0, 1.0)
        cos_mean, cos_min = float(cos.mean()), float(cos.min())

    top1 = acc_ref = acc_cand = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        pred_ref, pred_cand = ref.argmax(axis=1), cand.argmax(axis=1)
        top1 = float(np.mean(pred_ref == pred_cand)) if rows else None
        if labels is not None:
            if len(labels) != rows:
                raise OnnxPruneError(
                    f"labels has {len(labels)} entries but output '{name}' has {rows} samples"
                )
            if rows and labels.min() >= 0 and labels.max() < ref.shape[1]:
                acc_ref = float(np.mean(pred_ref == labels))
                acc_cand = float(np.mean(pred_cand == labels))
    return OutputComparison(
        name=name,
        shape=tuple(int(d) for d in ref.shape),
        max_abs_error=max_err,
        mean_abs_error=mean_err,
        cosine_similarity=cos_mean,
        cosine_similarity_min=cos_min,
        relative_mse=rel_mse,
        top1_agreement=top1,
        accuracy_original=acc_ref,
        accuracy_pruned=acc_cand,
    )


# --------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """The result of :func:`verify`: which models, which data, and one comparison per output.

    ``data_source`` is ``"npz:<path>"`` or ``"random(seed=<seed>)"``. ``selected`` maps each
    output chosen by a selection (an end-to-end detector's ``TopK``) to the tensors the
    selection reads; those are compared too, as extra rows of ``outputs``: row by row, a
    selected output differs wherever round-off swaps a near-tie (see
    :mod:`onnxprune.runtime.exactness`, the comparison ``--self-check`` makes).
    """

    original: str
    pruned: str
    n_samples: int
    data_source: str
    provider: str
    batch_size: int
    outputs: list[OutputComparison]
    selected: dict[str, list[str]] = field(default_factory=dict)
    metrics: list[TaskScore] = field(default_factory=list)
    max_drop: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[TaskScore]:
        """The task scores that dropped more than :attr:`max_drop` (empty without a gate)."""
        return [m for m in self.metrics if self.max_drop is not None and m.drop > self.max_drop]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``outputs`` is a list of :meth:`OutputComparison.to_dict`,
        ``metrics`` one :class:`TaskScore` per output, ``passed`` the ``max_drop`` gate."""
        return {
            "original": self.original,
            "pruned": self.pruned,
            "n_samples": self.n_samples,
            "data_source": self.data_source,
            "provider": self.provider,
            "batch_size": self.batch_size,
            "outputs": [out.to_dict() for out in self.outputs],
            "selected": dict(self.selected),
            "metrics": [m.to_dict() for m in self.metrics],
            "max_drop": self.max_drop,
            "passed": not self.failed,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class TaskScore:
    """One output's task metric (:mod:`onnxprune.runtime.metrics`): the original's own value
    (``original``: 1 against itself, or its score against labels), the pruned model's, and how
    much it dropped (``drop`` >= 0, in the metric's units); ``extra`` holds side figures
    (``cer``, ``detections``, ``reference_detections``)."""

    output: str
    metric: str
    original: float
    pruned: float
    drop: float
    higher_is_better: bool = True
    labels: bool = False
    extra: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "metric": self.metric, "original": _json_float(self.original),
                "pruned": _json_float(self.pruned), "drop": _json_float(self.drop),
                "higher_is_better": self.higher_is_better, "labels": self.labels, "extra": self.extra}


def task_scores(structure, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], labels,
                metric: str | dict[str, str] = "auto") -> list[TaskScore]:
    """One :class:`TaskScore` per output of ``reference`` (samples on axis 0). ``metric`` is a
    name for every output, or ``{output: name}`` (others ``auto``); ``auto`` reads the task off
    the output's shape and the op computing it in ``structure`` (the original's graph).
    ``labels`` apply to the first output. Errors: ``OnnxPruneError`` for an unknown metric or
    labels the metric cannot read."""
    from .metrics import choose, producer_op

    scores = []
    for k, name in enumerate(reference):
        wanted = metric.get(name, "auto") if isinstance(metric, dict) else metric
        use = labels if k == 0 and wanted != "agreement" else None
        chosen = choose(wanted, reference[name].shape, producer_op(structure, name))
        use = use if chosen.labels_shape else None
        if use is not None:
            chosen = choose(wanted, reference[name].shape, producer_op(structure, name), use)
        base, got = chosen.baseline(reference[name], use), chosen.score(reference[name], candidate[name], use)
        scores.append(TaskScore(name, _metric_name(chosen, use is not None), base.value, got.value, got.drop(base.value),
                                chosen.higher, use is not None, got.extra))
    return scores


def _metric_name(metric, labels: bool) -> str:
    """The name reports give a metric: top-1 is ``accuracy`` against labels, else ``agreement``;
    a detection metric names its layout (``map50:yolo``)."""
    if metric.name == "top1":
        return "accuracy" if labels else "agreement"
    layout = getattr(metric, "layout", None)
    return f"{metric.name}:{layout}" if layout else metric.name


def verify(
    original: ModelSource,
    pruned: ModelSource,
    data_path: str | os.PathLike | None = None,
    n_random: int = 8,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    batch_size: int = 1,
    provider: str = "cpu",
    progress: bool = False,
    metric: str | dict[str, str] = "auto",
    max_drop: float | None = None,
) -> VerifyReport:
    """Run ``original`` and ``pruned`` on the same data and compare their outputs.

    The data is the ``.npz`` at ``data_path`` (see :func:`load_data`; its ``labels`` give
    accuracies), or else ``n_random`` samples from :func:`random_data` with ``shapes`` and
    ``seed``. Both models see identical inputs, ``batch_size`` samples per run.
    ``provider`` is ``"cpu"``, ``"cuda"`` or ``"tensorrt"``, with the checks of
    :func:`~onnxprune.runtime.session.make_session` (a GPU provider that is missing or falls
    back is an error). Inputs go through ``session.run`` (copied to the device on each run),
    which costs time but not accuracy.

    Each output is also scored by its task metric (:func:`task_scores`; ``metric`` names it,
    ``auto`` picks it from the output): top-1, mAP@0.5, CTC string agreement, map IoU or cosine.
    With ``max_drop``, :attr:`VerifyReport.failed` lists the outputs whose metric dropped more.
    A model with a fixed batch runs in runs of that size, and a note says so.

    Raises :class:`OnnxPruneError` if the models' inputs differ (names, dtypes or shapes) or
    their output names differ, if ``shapes`` is given together with ``data_path``, if a shape's
    batch axis differs from ``batch_size``, and for every error of the functions used.
    """
    if max_drop is not None and not (0 <= max_drop < math.inf):
        raise OnnxPruneError(f"{{max_drop}} must be >= 0, got {max_drop}")
    _check_positive("batch_size", batch_size)
    structure = _structure(original)
    selected, read = _selection_points(structure, pruned)
    ref_session = make_session(_with_points(original, read), provider, label=source_label(original))
    cand_session = make_session(_with_points(pruned, read), provider, label=source_label(pruned))
    ref_specs = input_specs(ref_session)
    _check_same_interface(ref_specs, input_specs(cand_session), ref_session, cand_session)
    if data_path is not None:
        if shapes:
            raise OnnxPruneError("{input_shapes} only applies to random data, not together with {data_path}")
        data = load_data(data_path, ref_specs)
        source = f"npz:{os.fspath(data_path)}"
    else:
        check_shapes_batch(shapes, batch_size)
        data = random_data(ref_specs, n_random, shapes, seed)
        source = f"random(seed={seed})"
    ref_out = run_model(ref_session, data, batch_size, progress)
    cand_out = run_model(cand_session, data, batch_size, progress)
    from .samples import batches, fixed_batch

    fixed = fixed_batch(ref_specs)
    notes = [batches(ref_specs, len(data), batch_size).note(fixed[0])] if fixed else []
    outputs = [o.name for o in ref_session.get_outputs() if o.name not in read]
    scores = task_scores(structure, {n: ref_out[n] for n in outputs}, {n: cand_out[n] for n in outputs},
                         data.labels, metric)
    for score in scores:
        if score.metric.startswith("map50") and not (score.extra or {}).get("reference_detections"):
            notes.append(f"the original finds no detection above 0.25 in {score.output} on this data: its mAP says "
                         "nothing; verify on images with objects of the model's classes")
    return VerifyReport(
        original=source_label(original),
        pruned=source_label(pruned),
        n_samples=len(data),
        data_source=source,
        provider=provider,
        batch_size=batch_size,
        outputs=[replace(c, top1_agreement=None, accuracy_original=None, accuracy_pruned=None) if c.name in read else c
                 for c in compare_outputs(ref_out, cand_out, data.labels)],  # a selection input is no classifier
        selected=selected,
        metrics=scores,
        max_drop=max_drop,
        notes=notes,
    )


def _structure(model: ModelSource) -> onnx.ModelProto:
    """``model``'s graph without its weights' data, with inferred types (for the selection scan)."""
    if isinstance(model, (str, os.PathLike)):
        proto = onnx.load(os.fspath(model), load_external_data=False)
    elif isinstance(model, bytes):
        proto = onnx.load_model_from_string(model)
    else:
        proto = model
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:  # a graph shape inference cannot read: the types already there must do
        return proto


def _selection_points(structure: onnx.ModelProto, pruned: ModelSource) -> tuple[dict[str, list[str]], list[str]]:
    """Outputs of the original (``structure``: its graph, :func:`_structure`) chosen by a
    selection (TopK, NMS, ArgMax, ...), each with the tensors that selection reads
    (:mod:`onnxprune.runtime.exactness`), kept where ``pruned`` has them too; and the list of
    those tensors, to compare as extra outputs."""
    from .exactness import comparison_points

    points = comparison_points(structure)
    if not points.selected:
        return {}, []
    candidate = _structure(pruned)
    known = {o for n in candidate.graph.node for o in n.output}
    selected = {out: names for out, names in points.selected.items() if all(name in known for name in names)}
    read = list(dict.fromkeys(name for names in selected.values() for name in names))
    return selected, read


def _with_points(model: ModelSource, names: list[str]) -> ModelSource:
    """``model`` with ``names`` as extra graph outputs (loaded whole, external data included)."""
    if not names:
        return model
    from .exactness import with_outputs

    proto = onnx.load(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else \
        onnx.load_model_from_string(model) if isinstance(model, bytes) else model
    proto = onnx.shape_inference.infer_shapes(proto)
    return with_outputs(proto, [o.name for o in proto.graph.output] + names).SerializeToString()


def _check_same_interface(
    ref: list[InputSpec],
    cand: list[InputSpec],
    ref_session: onnxruntime.InferenceSession,
    cand_session: onnxruntime.InferenceSession,
) -> None:
    ref_names, cand_names = [s.name for s in ref], [s.name for s in cand]
    if set(ref_names) != set(cand_names):
        raise OnnxPruneError(
            f"the models have different inputs: original has {', '.join(map(repr, ref_names))}; "
            f"pruned has {', '.join(map(repr, cand_names))}"
        )
    by_name = {s.name: s for s in cand}
    for r in ref:
        c = by_name[r.name]
        if r.dtype != c.dtype:
            raise OnnxPruneError(
                f"input '{r.name}' is {r.dtype} in the original but {c.dtype} in the pruned model"
            )
        static_conflict = any(x is not None and y is not None and x != y for x, y in zip(r.shape, c.shape))
        if len(r.shape) != len(c.shape) or static_conflict:
            raise OnnxPruneError(
                f"input '{r.name}' has shape {fmt_dims(r.shape)} in the original "
                f"but {fmt_dims(c.shape)} in the pruned model"
            )
    ref_outs = [o.name for o in ref_session.get_outputs()]
    cand_outs = [o.name for o in cand_session.get_outputs()]
    if set(ref_outs) != set(cand_outs):
        raise OnnxPruneError(
            f"the models have different outputs: original has {', '.join(map(repr, ref_outs))}; "
            f"pruned has {', '.join(map(repr, cand_outs))}"
        )
