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
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Sequence

import numpy as np
import onnxruntime

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
    always ``False`` (see the module doc); it is recorded because it shifts absolute times.
    """

    provider: str
    threads: int | None
    batch: int
    runs: int
    warmup: int
    models: list[ModelLatency]
    intra_op_spinning: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``models`` is a list of :meth:`ModelLatency.to_dict`."""
        return {
            "provider": self.provider,
            "threads": self.threads,
            "batch": self.batch,
            "runs": self.runs,
            "warmup": self.warmup,
            "intra_op_spinning": self.intra_op_spinning,
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
) -> BenchReport:
    """Time ``models`` side by side with interleaved, rotating rounds (see the module doc).

    ``models`` are paths, bytes or ``ModelProto``; ``names`` labels them in the report
    (default: their paths). Inputs are random (:func:`onnxprune.evaluate.random_data`) with
    ``batch`` samples on axis 0; ``shapes`` gives dynamic dims as ``{name: full shape}`` and
    applies to every model with that input. ``warmup`` untimed rounds precede ``runs`` timed
    rounds. ``progress`` shows a progress bar on stderr.

    Raises :class:`OnnxPruneError` for no models, ``names`` of the wrong length, ``batch`` or
    ``runs`` < 1, ``warmup`` < 0, a model input with a fixed batch size other than ``batch``,
    a ``shapes`` entry that no model has or whose batch axis is not ``batch``, and for every
    error of :func:`onnxprune.evaluate.make_session` and ``random_data``.
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

    sessions = [make_session(m, provider, threads, allow_spinning=False) for m in models]
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

    if warmup:
        interleaved_times(sessions, feeds, warmup, labels)
    times_ns = interleaved_times(sessions, feeds, runs, labels, progress=progress)

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
    return BenchReport(provider, threads, batch, runs, warmup, latencies)


def interleaved_times(
    sessions: Sequence[onnxruntime.InferenceSession],
    feeds: Sequence[dict[str, np.ndarray]],
    rounds: int,
    labels: Sequence[str] | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """Run ``rounds`` rotating rounds and return each session's run times in nanoseconds.

    Round ``r`` runs every session once, in the order ``r % k, r % k + 1, ...`` (wrapping).
    Result ``[i][r]`` is session ``i``'s time in round ``r``. ``labels`` name the sessions in
    errors. Raises :class:`OnnxPruneError` if onnxruntime fails a run.
    """
    k = len(sessions)
    labels = list(labels) if labels is not None else [f"model {i}" for i in range(k)]
    times: list[list[int]] = [[] for _ in range(k)]
    for r in progress_bar(range(rounds), rounds, "benchmarking", progress):
        for j in range(k):
            i = (r + j) % k
            session, feed = sessions[i], feeds[i]
            try:
                start = perf_counter_ns()
                session.run(None, feed)
                stop = perf_counter_ns()
            except Exception as exc:
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise OnnxPruneError(f"{labels[i]}: onnxruntime failed: {first_line}") from exc
            times[i].append(stop - start)
    return times


def _check_int(what: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OnnxPruneError(f"{what} must be an integer >= {minimum}, got {value!r}")
