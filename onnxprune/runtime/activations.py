"""Intermediate tensors of a model on a dataset, run by run (:mod:`onnxprune.runtime.samples`),
from the smallest part of the model that computes them (onnxruntime runs every node of a graph,
whatever outputs are asked)."""

from __future__ import annotations

import numpy as np
import onnx

from ..graph.subgraph import crossing, submodel
from .evaluate import Dataset
from .samples import Captured, from_inputs, run_all, trace_axes
from .session import graph_input_specs, make_session


def prefix_model(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The first nodes of ``model``, up to the last one that produces one of ``names``, with
    ``names`` as its outputs (graph inputs among ``names`` are passed through by the caller)."""
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    last = max(producer[name] for name in names)
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    return submodel(model, model.graph.node[: last + 1], inputs, names)


def fed(captured: Captured, names: list[str]) -> list[onnx.ValueInfoProto]:
    """Graph inputs of a segment fed with ``names`` from ``captured``: the type and shape of the
    first run's value, the sample axis left free (the last run may hold fewer samples)."""
    infos = []
    for name in names:
        value = captured.runs[name][0]
        dims: list = list(value.shape)
        axis = captured.axes.get(name)
        if axis is not None and not captured.plan.fixed:
            dims[axis] = "N"
        infos.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), dims))
    return infos


def capture(model: onnx.ModelProto, data: Dataset, names: list[str], batch_size: int = 64, threads: int | None = None,
            axes: dict | None = None) -> Captured:
    """The values of ``names`` (graph inputs or tensors ``model`` computes) on ``data``, run by
    run, with their sample axes (``axes``, traced on ``model`` when not given)."""
    captured = from_inputs(data, graph_input_specs(model), batch_size)
    computed = [name for name in names if name not in data.inputs]
    if computed:
        axes = axes if axes is not None else trace_axes(model, data, computed)
        session = make_session(prefix_model(model, computed).SerializeToString(), threads=threads, allow_spinning=False)
        for name, values in run_all(session, captured, computed, axes).runs.items():
            captured.set(name, values, axes.get(name))
    captured.keep(names)
    return captured


class Walker:
    """Walks a model forward over a dataset, segment by segment, keeping for every run the
    tensors that cross the current cut, so that a node changed after the cut (refit weights)
    is run again from there and nothing before it is recomputed.

    ``run_to(stop)`` runs nodes ``[cut, stop)`` of ``model`` as it is now and returns the
    :class:`~onnxprune.runtime.samples.Captured` values of
    :func:`~onnxprune.graph.subgraph.crossing` at ``stop`` (the inputs of node ``stop`` among
    them); the cut moves to ``stop``. Tensors keep their runs: one without a sample axis (an
    anchor grid, a computed Reshape target) goes back to the run that computed it. ``axes``:
    the sample axis of every tensor (:func:`~onnxprune.runtime.samples.trace_axes` of the
    original model; a pruned model keeps its tensor names). Memory: those tensors for every
    sample.
    """

    def __init__(self, model: onnx.ModelProto, data: Dataset, batch_size: int = 64, threads: int | None = None,
                 start: tuple[int, Captured] | None = None, axes: dict | None = None) -> None:
        self.model, self.threads = model, threads
        self.axes = axes if axes is not None else trace_axes(model, data)
        if start is None:
            self.cut, self.acts = 0, from_inputs(data, graph_input_specs(model), batch_size)
        else:
            cut, acts = start
            self.cut, self.acts = cut, Captured(acts.plan, dict(acts.runs), dict(acts.axes))

    def run_to(self, stop: int) -> Captured:
        names = crossing(self.model, stop)
        if stop > self.cut:
            produced = {o for node in self.model.graph.node[self.cut:stop] for o in node.output}
            wanted = [n for n in names if n in produced]
            if wanted:
                nodes = self.model.graph.node[self.cut:stop]
                reads = {name for node in nodes for name in node.input}
                have = [n for n in self.acts.names() if n in reads]
                segment = submodel(self.model, nodes, fed(self.acts, have), wanted)
                session = make_session(segment.SerializeToString(), threads=self.threads, allow_spinning=False)
                for name, values in run_all(session, self.acts, wanted, self.axes).runs.items():
                    self.acts.set(name, values, self.axes.get(name))
        self.acts.keep(names)
        self.cut = stop
        return self.acts
