"""Samples: how a model is fed batches, which tensors carry the sample axis, and the values of
any tensors, batch by batch. Verify, recovery, sensitivity, block similarity and fine-tuning
all read activations through this one layer.

* **Batches.** A model whose graph inputs declare a fixed first dim (``[1, 3, 48, 320]``, as
  onnxsim/onnxslim and many OCR exports write it) takes exactly that many samples per run; a
  dynamic first dim takes ``batch_size``. :func:`batches` plans the runs; with a fixed batch,
  the last run is padded with copies of its last sample, and the copies are dropped again.
* **Per-run values.** :class:`Captured` keeps every tensor as one array per run, so a tensor
  without a sample axis (YOLO's anchor grid, Paddle's ``Shape`` slices, a Reshape target) is
  fed back to the run it came from and never concatenated with anything.
* **The sample axis** of a tensor is found by tracing: the tensor's shape at a run of one
  sample against a run of ``k`` samples; the axis whose size grows ``k`` times holds the
  samples (``[T, B, C]`` in a CRNN: axis 1). A tensor whose shape does not grow has none
  (``None``): an anchor grid, a shape (which holds its run's sample count, so it is kept per
  run, never shared between runs). With a fixed batch of ``B`` there is no second batch size
  to trace with: the first axis of size ``B`` holds the samples, or there is none.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import OnnxPruneError


@dataclass(frozen=True)
class Batches:
    """``n`` samples fed ``size`` at a time; ``fixed`` when the model's inputs fix the batch
    (then every run has exactly ``size`` samples, the last one padded)."""

    n: int
    size: int
    fixed: bool = False

    @property
    def runs(self) -> int:
        return math.ceil(self.n / self.size)

    def real(self, k: int) -> slice:
        """The samples run ``k`` holds (without padding)."""
        return slice(k * self.size, min((k + 1) * self.size, self.n))

    def feed(self, array: np.ndarray, k: int) -> np.ndarray:
        """Run ``k``'s slice of ``array`` (samples on axis 0), padded to ``size`` samples with
        copies of its last one when the batch is fixed."""
        part = array[self.real(k)]
        if self.fixed and len(part) < self.size:
            part = np.concatenate([part, np.repeat(part[-1:], self.size - len(part), axis=0)])
        return part

    def note(self, name: str) -> str | None:
        """One line for the user when the batch is fixed, else None."""
        if not self.fixed:
            return None
        how = "one sample at a time" if self.size == 1 else f"in runs of {self.size} (the last one padded)"
        return f"model input {name!r} has a fixed batch of {self.size}: the data runs {how}"


def fixed_batch(specs: Sequence) -> tuple[str, int] | None:
    """``(input name, B)`` when a graph input declares a fixed first dim ``B``, else None.
    ``specs`` are :class:`~onnxprune.runtime.session.InputSpec` (name, shape, dtype).
    Errors: inputs that fix different batch sizes."""
    fixed = [(spec.name, spec.shape[0]) for spec in specs if spec.shape and spec.shape[0] is not None]
    if len({b for _, b in fixed}) > 1:
        raise OnnxPruneError("the model's inputs fix different batch sizes: "
                             + ", ".join(f"'{name}' {b}" for name, b in fixed))
    return fixed[0] if fixed else None


def batches(specs: Sequence, n: int, batch_size: int = 64) -> Batches:
    """How ``n`` samples go through a model with inputs ``specs``: ``batch_size`` per run, or
    the model's fixed batch (see :func:`fixed_batch`)."""
    if n < 1:
        raise OnnxPruneError("the data has no samples")
    fixed = fixed_batch(specs)
    if fixed is not None:
        return Batches(n, int(fixed[1]), True)
    return Batches(n, max(1, min(int(batch_size), n)))


class Captured:
    """Values of tensors on a dataset: ``runs[name][k]`` for run ``k`` of :attr:`plan`, and
    each tensor's sample axis (``axes[name]``; None: no sample axis, the value of its run)."""

    def __init__(self, plan: Batches, runs: dict[str, list[np.ndarray]], axes: dict[str, int | None]) -> None:
        self.plan, self.runs, self.axes = plan, runs, axes

    def __contains__(self, name: str) -> bool:
        return name in self.runs

    def names(self) -> list[str]:
        return list(self.runs)

    def at(self, k: int, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The values of run ``k`` (the feeds of a segment of the model)."""
        return {name: self.runs[name][k] for name in (self.runs if names is None else names)}

    def joined(self, name: str, samples_first: bool = False) -> np.ndarray:
        """Every sample's value of ``name``, padding dropped, concatenated on its sample axis
        (moved to axis 0 with ``samples_first``). A tensor without one: the first run's value.

        Errors: ``OnnxPruneError`` when a run's value does not hold its samples on that axis."""
        axis = self.axes.get(name)
        parts = self.runs[name]
        if axis is None:
            return parts[0]
        pieces = []
        for k, part in enumerate(parts):
            real = self.plan.real(k)
            count, rows = real.stop - real.start, part.shape[axis] // self.plan_size(k)
            pieces.append(np.take(part, np.arange(count * rows), axis=axis) if count * rows < part.shape[axis] else part)
        out = np.concatenate(pieces, axis=axis)
        return np.moveaxis(out, axis, 0) if samples_first else out

    def samples_of(self, name: str, k: int) -> np.ndarray:
        """Run ``k``'s value of ``name`` with its padding dropped and its samples on axis 0.
        Errors: ``OnnxPruneError`` for a tensor without a sample axis."""
        axis = self.axes.get(name)
        if axis is None:
            raise OnnxPruneError(f"tensor {name!r} has no sample axis: it is the same for every sample")
        part = self.runs[name][k]
        real = self.plan.real(k)
        rows = part.shape[axis] // self.plan_size(k)
        part = np.take(part, np.arange((real.stop - real.start) * rows), axis=axis)
        return np.moveaxis(part, axis, 0)

    def plan_size(self, k: int) -> int:
        """Samples fed in run ``k`` (padding included)."""
        real = self.plan.real(k)
        return self.plan.size if self.plan.fixed else real.stop - real.start

    def set(self, name: str, values: list[np.ndarray], axis: int | None) -> None:
        self.runs[name], self.axes[name] = values, axis

    def keep(self, names: Sequence[str]) -> None:
        """Forget every tensor but ``names``."""
        self.runs = {n: v for n, v in self.runs.items() if n in names}
        self.axes = {n: self.axes.get(n) for n in self.runs}


def from_inputs(data, specs: Sequence, batch_size: int = 64) -> Captured:
    """The graph inputs of ``data`` (a :class:`~onnxprune.runtime.evaluate.Dataset`) as a
    :class:`Captured`: samples on axis 0, runs planned by :func:`batches`."""
    plan = batches(specs, len(data), batch_size)
    runs = {name: [plan.feed(array, k) for k in range(plan.runs)] for name, array in data.inputs.items()}
    return Captured(plan, runs, {name: 0 for name in data.inputs})


def sample_axis(one: tuple, many: tuple, k: int) -> int | None:
    """The axis of a tensor that holds samples, from its shape at a run of 1 sample (``one``)
    and at a run of ``k > 1`` samples (``many``): the first axis whose size is ``k`` times
    larger while the others are unchanged; None when the shapes are equal (a per-model
    constant) or differ otherwise."""
    if len(one) != len(many) or tuple(one) == tuple(many):
        return None
    grown = [a for a, (x, y) in enumerate(zip(one, many)) if x != y]
    if len(grown) == 1 and one[grown[0]] * k == many[grown[0]]:
        return grown[0]
    return None


def fixed_axis(shape: tuple, size: int) -> int | None:
    """With a fixed batch of ``size``: the first axis of that size, or None."""
    return next((a for a, d in enumerate(shape) if d == size), None)


def trace_axes(model, data, names: Sequence[str] | None = None, batch_size: int = 2) -> dict[str, int | None]:
    """The sample axis of every tensor ``names`` of ``model`` (an ``onnx.ModelProto``; default:
    its graph inputs and every node output), by tracing (see the module doc): one run of a
    single sample against one of ``batch_size`` samples of ``data`` (a
    :class:`~onnxprune.runtime.evaluate.Dataset`), or, with a fixed batch, the first axis of
    that size. Errors: ``OnnxPruneError`` when onnxruntime cannot run the model."""
    from .exactness import with_outputs
    from .session import input_specs, make_session, ort_message

    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    if names is None:
        names = inputs + [o for n in model.graph.node for o in n.output if o]
    computed = [n for n in names if n not in inputs]
    axes: dict[str, int | None] = {n: 0 for n in names if n in inputs}
    if not computed:
        return axes
    session = make_session(with_outputs(model, computed).SerializeToString(), optimize=False)
    plan = batches(input_specs(session), len(data), batch_size)
    k = plan.size if plan.fixed else max(2, batch_size)  # a single sample is repeated: a run of 1 tells nothing
    try:
        many = session.run(computed, {i: _padded(data.inputs[i][:k], k) for i in inputs})
        if plan.fixed:
            return {**axes, **{n: fixed_axis(np.shape(v), k) for n, v in zip(computed, many)}}
        one = session.run(computed, {i: data.inputs[i][:1] for i in inputs})
    except Exception as exc:
        raise OnnxPruneError(f"onnxruntime fails to run the model while tracing its sample axes: {ort_message(exc)}") \
            from None
    return {**axes, **{n: sample_axis(np.shape(a), np.shape(b), k) for n, a, b in zip(computed, one, many)}}


def _padded(array: np.ndarray, k: int) -> np.ndarray:
    return array if len(array) >= k else np.concatenate([array, np.repeat(array[-1:], k - len(array), axis=0)])


def run_all(session, captured: Captured, names: Sequence[str], axes: dict[str, int | None]) -> Captured:
    """Run ``session`` on every run of ``captured`` (feeding what its inputs name) and return
    the values of ``names`` as a :class:`Captured` with the same runs, with the sample axes
    ``axes`` (from :func:`trace_axes`; tensor names are kept by every rewrite, so the
    original's axes hold for a pruned model too)."""
    from .session import ort_message

    feeds = [i.name for i in session.get_inputs()]
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for k in range(captured.plan.runs):
        try:
            results = session.run(list(names), {f: captured.runs[f][k] for f in feeds})
        except Exception as exc:
            raise OnnxPruneError(f"onnxruntime failed to run the model: {ort_message(exc)}") from None
        for name, value in zip(names, results):
            values[name].append(np.asarray(value))
    return Captured(captured.plan, values, {name: axes.get(name) for name in names})


def run_session(session, data, batch_size: int = 64, names: Sequence[str] | None = None,
                progress: bool = False) -> Captured:
    """Run ``data`` (a :class:`~onnxprune.runtime.evaluate.Dataset`) through ``session`` in the
    runs :func:`batches` plans, and return its outputs ``names`` (default: all) as a
    :class:`Captured`, their sample axes traced against one run of a single sample.
    Errors: ``OnnxPruneError`` for data that lacks an input, or when onnxruntime fails."""
    from .evaluate import progress_bar
    from .session import input_specs, ort_message

    specs = input_specs(session)
    missing = [spec.name for spec in specs if spec.name not in data.inputs]
    if missing:
        raise OnnxPruneError(f"data has no array for model input(s) {', '.join(map(repr, missing))} "
                             f"(data has: {', '.join(map(repr, data.inputs))})")
    names = [o.name for o in session.get_outputs()] if names is None else list(names)
    captured = from_inputs(type(data)({s.name: data.inputs[s.name] for s in specs}), specs, batch_size)
    plan = captured.plan
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    try:
        for k in progress_bar(range(plan.runs), plan.runs, "running", progress):
            for name, value in zip(names, session.run(names, captured.at(k, [s.name for s in specs]))):
                values[name].append(np.asarray(value))
        if plan.fixed:
            axes = {n: fixed_axis(values[n][0].shape, plan.size) for n in names}
        elif plan.real(0).stop > 1:
            one = session.run(names, {s.name: data.inputs[s.name][:1] for s in specs})
            axes = {n: sample_axis(np.shape(v), values[n][0].shape, plan.real(0).stop) for n, v in zip(names, one)}
        else:  # runs of one sample: a run of two (the first sample repeated where there is one) tells the axis
            two = session.run(names, {s.name: _padded(data.inputs[s.name][:2], 2) for s in specs})
            axes = {n: sample_axis(values[n][0].shape, np.shape(v), 2) for n, v in zip(names, two)}
    except OnnxPruneError:
        raise
    except Exception as exc:
        raise OnnxPruneError(f"onnxruntime failed to run the model: {ort_message(exc)}") from None
    return Captured(plan, values, axes)
