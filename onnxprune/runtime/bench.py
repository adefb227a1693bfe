"""Measure the latency of several ONNX models side by side, with interleaved runs.

Method. Every model gets its own onnxruntime session and fixed random inputs (same seed, so
models with the same inputs see the same tensors). Each session is warmed up, then timed in
``runs`` rounds. In round ``r`` every model runs once, starting at model ``r % k`` and going
round (``k`` models): round 0 is A B C, round 1 is B C A, round 2 is C A B. Each
``session.run`` is timed on its own with ``time.perf_counter_ns``.

Why. Laptops and shared machines drift: turbo clocks, thermal throttling, other processes.
Timing model A for a minute and then model B for a minute lets that drift land on one model
only. Interleaving spreads it over all models evenly, and rotating the start removes any
bias from always running first or right after a particular model. The medians are robust to
outlier runs; the ratio between models (``speedup_vs_first``) is the number to trust, far
more than any absolute milliseconds.

Sessions are created with intra-op thread spinning off. onnxruntime's threads busy-wait for
a while after each run; with several sessions alternating, the idle session's spinning
threads compete for the cores of the one being timed. On a 2-core machine this made a
64-channel conv stack look 2.7x slower than its 48-channel version instead of the 1.77x that
sequential timing (and the MACs) give; without spinning, interleaved timing gives 1.74x.
Absolute latencies of tiny models are a little higher without spinning, equally for all.

GPU providers (``cuda``, ``tensorrt``). Each model's inputs are copied to the GPU once, before
warm-up, and bound with onnxruntime's IO binding (``session.io_binding()``,
``bind_ortvalue_input``, outputs bound to the device with ``bind_output(name, "cuda")``); a
timed run is ``run_with_iobinding`` followed by ``synchronize_outputs``, so the time covers
the GPU work and no host↔device copy (onnxruntime docs, "I/O Binding": without it, inputs are
copied to the device and outputs back to the host inside every ``Run()``). The rounds are
interleaved exactly as on the CPU. The CPU provider keeps ``session.run`` on numpy feeds unless
``io_binding=True`` (then the binding targets host memory: the same code path, testable
without a GPU). TensorRT builds its engine on the first run at a new input shape; warm-up
absorbs it, so keep ``warmup`` >= 1 there.

``fp16=True`` times float16 copies of the models (:func:`onnxprune.runtime.precision.to_fp16`:
float32 inputs and outputs, float16 inside); on TensorRT it also sets ``trt_fp16_enable``,
without which TensorRT may pick float32 kernels for float16 layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OnnxPruneError
from .evaluate import (
    ModelSource,
    check_shapes_batch,
    input_specs,
    make_session,
    progress_bar,
    random_data,
    source_label,
)
from .session import (
    DEVICES,
    check_provider_available,
    provider_key,
    require_onnxruntime,
)

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class ModelLatency:
    """Latency of one model over the timed runs (times in milliseconds).

    ``throughput`` is samples per second at the median latency (``batch / median seconds``);
    ``speedup_vs_first`` is the first model's median divided by this one's (so the first
    model has exactly 1.0, and 2.0 means twice as fast as the first).
    """

    name: str
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    throughput: float
    speedup_vs_first: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return {
            "name": self.name,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": self.mean_ms,
            "min_ms": self.min_ms,
            "throughput": self.throughput,
            "speedup_vs_first": self.speedup_vs_first,
        }


@dataclass
class BenchReport:
    """The settings of a :func:`bench` call and one :class:`ModelLatency` per model, in order.

    ``threads`` is ``None`` when onnxruntime chose the thread count. ``intra_op_spinning`` is
    always ``False`` (see the module doc); it is recorded because it shifts absolute times, as
    are ``precision`` (``"fp32"``, or ``"fp16"`` for float16 copies) and ``io_binding``
    (inputs bound on the provider's device before timing; ``True`` on GPU providers).
    """

    provider: str
    threads: int | None
    batch: int
    runs: int
    warmup: int
    models: list[ModelLatency]
    intra_op_spinning: bool = False
    precision: str = "fp32"
    io_binding: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``models`` is a list of :meth:`ModelLatency.to_dict`."""
        return {
            "provider": self.provider,
            "threads": self.threads,
            "batch": self.batch,
            "runs": self.runs,
            "warmup": self.warmup,
            "intra_op_spinning": self.intra_op_spinning,
            "precision": self.precision,
            "io_binding": self.io_binding,
            "models": [m.to_dict() for m in self.models],
        }


def bench(
    models: Sequence[ModelSource],
    *,
    names: Sequence[str] | None = None,
    provider: str = "cpu",
    threads: int | None = None,
    batch: int = 1,
    warmup: int = 5,
    runs: int = 50,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    progress: bool = False,
    fp16: bool = False,
    io_binding: bool | None = None,
    provider_options: dict[str, str] | None = None,
) -> BenchReport:
    """Time ``models`` side by side with interleaved, rotating rounds (see the module doc).

    ``models`` are paths, bytes or ``ModelProto``; ``names`` labels them in the report
    (default: their paths). Inputs are random (:func:`onnxprune.evaluate.random_data`) with
    ``batch`` samples on axis 0; ``shapes`` gives dynamic dims as ``{name: full shape}`` and
    applies to every model with that input. ``warmup`` untimed rounds precede ``runs`` timed
    rounds. ``progress`` shows a progress bar on stderr.

    ``provider`` is ``"cpu"``, ``"cuda"`` or ``"tensorrt"``. ``fp16`` times float16 copies of
    the models (see the module doc). ``io_binding`` binds the inputs on the provider's device
    before timing; ``None`` (default) means on for GPU providers, off for the CPU.
    ``provider_options`` go to onnxruntime's first provider (e.g. TensorRT's
    ``trt_engine_cache_enable``); ``fp16`` on TensorRT adds ``trt_fp16_enable``.

    Raises :class:`OnnxPruneError` for no models, ``names`` of the wrong length, ``batch`` or
    ``runs`` < 1, ``warmup`` < 0, a model input with a fixed batch size other than ``batch``,
    a ``shapes`` entry that no model has or whose batch axis is not ``batch``, an unknown
    provider or one the installed onnxruntime lacks (checked before any model is loaded), and
    for every error of :func:`onnxprune.evaluate.make_session`, ``random_data`` and
    :func:`onnxprune.runtime.precision.to_fp16`.
    """
    models = list(models)
    if not models:
        raise OnnxPruneError("no models to benchmark")
    labels = [source_label(m) for m in models] if names is None else [str(n) for n in names]
    if len(labels) != len(models):
        raise OnnxPruneError(f"got {len(labels)} names for {len(models)} models")
    _check_int("batch", batch, 1)
    _check_int("runs", runs, 1)
    _check_int("warmup", warmup, 0)
    shapes = dict(shapes or {})
    check_shapes_batch(shapes, batch)
    check_provider_available(provider)
    device = DEVICES[provider_key(provider)]
    bound = (device != "cpu") if io_binding is None else bool(io_binding)
    options = dict(provider_options or {})
    if fp16:
        from .precision import to_fp16

        models = [to_fp16(m, label) for m, label in zip(models, labels)]
        if provider_key(provider) == "tensorrt":
            options.setdefault("trt_fp16_enable", "True")
    extra: dict[str, Any] = {"provider_options": options} if options else {}
    if fp16:  # the float16 copy is a ModelProto: name it as the user did in errors
        sessions = [make_session(m, provider, threads, allow_spinning=False, label=label, **extra)
                    for m, label in zip(models, labels)]
    else:
        sessions = [make_session(m, provider, threads, allow_spinning=False, **extra) for m in models]
    specs = [input_specs(s) for s in sessions]
    all_inputs = {spec.name for model_specs in specs for spec in model_specs}
    unknown = [name for name in shapes if name not in all_inputs]
    if unknown:
        raise OnnxPruneError(
            f"{{input_shapes}} given for unknown input(s) {', '.join(map(repr, unknown))} "
            f"(model inputs: {', '.join(map(repr, sorted(all_inputs)))})"
        )
    feeds = []
    for label, model_specs in zip(labels, specs):
        for spec in model_specs:
            fixed = spec.shape[0] if spec.shape else None
            if fixed is not None and fixed != batch:
                raise OnnxPruneError(
                    f"{label}: input '{spec.name}' has a fixed batch size of {fixed}, "
                    f"not {batch}; benchmark it with batch {fixed}"
                )
        own = {s.name: shapes[s.name] for s in model_specs if s.name in shapes}
        feeds.append(dict(random_data(model_specs, batch, own, seed).inputs))

    bindings = None
    if bound:
        bindings = [bind_feed(s, feed, device, label=label) for s, feed, label in zip(sessions, feeds, labels)]
    if warmup:
        interleaved_times(sessions, feeds, warmup, labels, bindings=bindings)
    times_ns = interleaved_times(sessions, feeds, runs, labels, progress=progress, bindings=bindings)

    medians = [float(np.median(t)) / 1e6 for t in times_ns]
    latencies = []
    for label, t, median_ms in zip(labels, times_ns, medians):
        ms = np.asarray(t, dtype=np.float64) / 1e6
        latencies.append(
            ModelLatency(
                name=label,
                median_ms=median_ms,
                p90_ms=float(np.percentile(ms, 90)),
                mean_ms=float(ms.mean()),
                min_ms=float(ms.min()),
                throughput=batch / (median_ms / 1e3),
                speedup_vs_first=medians[0] / median_ms,
            )
        )
    return BenchReport(provider, threads, batch, runs, warmup, latencies,
                       precision="fp16" if fp16 else "fp32", io_binding=bound)


@dataclass
class BoundFeed:
    """One session's inputs placed on a device and bound, ready for ``run_with_iobinding``.

    ``binding`` is the session's ``onnxruntime.IOBinding``; ``values`` are the input
    ``OrtValue`` objects, kept here so that their memory lives as long as the binding.
    ``device`` is onnxruntime's device type (``"cuda"`` or ``"cpu"``).
    """

    binding: Any
    device: str
    values: list[Any] = field(default_factory=list)

    def outputs(self) -> list[np.ndarray]:
        """The outputs of the last run, copied to host memory, in the session's output order."""
        return list(self.binding.copy_outputs_to_cpu())


def bind_feed(
    session: onnxruntime.InferenceSession,
    feed: dict[str, np.ndarray],
    device: str = "cuda",
    device_id: int = 0,
    label: str = "model",
) -> BoundFeed:
    """Copy ``feed`` (``{input name: array}``) to ``device`` once and bind it to ``session``.

    Each array becomes an ``OrtValue`` on ``device`` (``OrtValue.ortvalue_from_numpy(array,
    device, device_id)``: a device copy for ``"cuda"``; for ``"cpu"`` it wraps the array's
    memory), bound with ``bind_ortvalue_input``. Every output is bound to the same device by
    name (``bind_output(name, device, device_id)``), so onnxruntime allocates it there on each
    run and never copies it back. The input copies are synchronized before returning. Source:
    onnxruntime's Python API ("Data on device", ``IOBinding``).

    Raises :class:`OnnxPruneError` (naming ``label``) if onnxruntime cannot place or bind a
    tensor on the device.
    """
    ort = require_onnxruntime()
    try:
        binding = session.io_binding()
        values = []
        for name, array in feed.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, device_id)
            binding.bind_ortvalue_input(name, value)
            values.append(value)
        for out in session.get_outputs():
            binding.bind_output(out.name, device, device_id)
        binding.synchronize_inputs()
    except Exception as exc:  # noqa: BLE001  (onnxruntime's exception classes derive from Exception)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OnnxPruneError(f"{label}: cannot bind the inputs on {device}: {first_line}") from None
    return BoundFeed(binding, device, values)


def interleaved_times(
    sessions: Sequence[onnxruntime.InferenceSession],
    feeds: Sequence[dict[str, np.ndarray]],
    rounds: int,
    labels: Sequence[str] | None = None,
    progress: bool = False,
    bindings: Sequence[BoundFeed] | None = None,
) -> list[list[int]]:
    """Run ``rounds`` rotating rounds and return each session's run times in nanoseconds.

    Round ``r`` runs every session once, in the order ``r % k, r % k + 1, ...`` (wrapping).
    Result ``[i][r]`` is session ``i``'s time in round ``r``. ``labels`` name the sessions in
    errors. Without ``bindings`` a run is ``session.run(None, feeds[i])``; with them (one
    :class:`BoundFeed` per session, from :func:`bind_feed`; ``feeds`` is then unused) it is
    ``session.run_with_iobinding`` then ``synchronize_outputs``, both inside the timed span.
    Raises :class:`OnnxPruneError` if onnxruntime fails a run.
    """
    k = len(sessions)
    labels = list(labels) if labels is not None else [f"model {i}" for i in range(k)]
    if bindings is not None and len(bindings) != k:
        raise OnnxPruneError(f"got {len(bindings)} bindings for {k} sessions")
    times: list[list[int]] = [[] for _ in range(k)]
    for r in progress_bar(range(rounds), rounds, "benchmarking", progress):
        for j in range(k):
            i = (r + j) % k
            session, feed = sessions[i], feeds[i]
            bound = None if bindings is None else bindings[i]
            try:
                start = perf_counter_ns()
                run_once(session, feed, bound)
                stop = perf_counter_ns()
            except Exception as exc:
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise OnnxPruneError(f"{labels[i]}: onnxruntime failed: {first_line}") from exc
            times[i].append(stop - start)
    return times


def run_once(session: onnxruntime.InferenceSession, feed: dict[str, np.ndarray], bound: BoundFeed | None) -> None:
    """One run, as it is timed: ``session.run`` on the host ``feed``, or, with ``bound`` inputs,
    ``run_with_iobinding`` and the wait for its outputs (``synchronize_outputs``)."""
    if bound is None:
        session.run(None, feed)
    else:
        session.run_with_iobinding(bound.binding)
        bound.binding.synchronize_outputs()


def _check_int(what: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OnnxPruneError(f"{what} must be an integer >= {minimum}, got {value!r}")
