"""Intermediate tensors of a model on a dataset, batch by batch, from the smallest prefix of the
model that computes them (onnxruntime runs every node of a graph, whatever outputs are asked)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from ..graph.subgraph import submodel
from .evaluate import Dataset
from .session import make_session


def prefix_model(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The first nodes of ``model``, up to the last one that produces one of ``names``, with
    ``names`` as its outputs (graph inputs among ``names`` are passed through by the caller)."""
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    last = max(producer[name] for name in names)
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    return submodel(model, model.graph.node[: last + 1], inputs, names)


def stream(model: onnx.ModelProto, data: Dataset, names: list[str], batch_size: int = 64,
           threads: int | None = None) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Yield ``(samples, {name: values})`` for consecutive batches of ``data``: the values of
    ``names`` (graph inputs or tensors the model computes) for those samples."""
    graph_inputs = [name for name in names if name in data.inputs]
    computed = [name for name in names if name not in data.inputs]
    session = make_session(prefix_model(model, computed).SerializeToString(), threads=threads) if computed else None
    feeds_of = [i.name for i in session.get_inputs()] if session else []
    for start in range(0, len(data), batch_size):
        samples = slice(start, min(start + batch_size, len(data)))
        values = {name: data.inputs[name][samples] for name in graph_inputs}
        if session is not None:
            results = session.run(computed, {name: data.inputs[name][samples] for name in feeds_of})
            values.update(zip(computed, results))
        yield samples, values


class Walker:
    """Walks a model forward over a dataset, segment by segment, keeping for every sample the
    tensors that cross the current cut, so that a node changed after the cut (refit weights)
    is run again from there and nothing before it is recomputed.

    ``run_to(stop)`` runs nodes ``[cut, stop)`` of ``model`` as it is now and returns the values
    of :func:`~onnxprune.graph.subgraph.crossing` at ``stop`` (the inputs of node ``stop`` among
    them); the cut moves to ``stop``. Memory: those tensors for every sample.
    """

    def __init__(self, model: onnx.ModelProto, data: Dataset, batch_size: int = 64, threads: int | None = None,
                 start: tuple[int, dict] | None = None) -> None:
        from ..graph.subgraph import crossing

        self.model, self.data, self.batch_size, self.threads = model, data, batch_size, threads
        self._crossing = crossing
        self.cut, self.acts = start if start is not None else (0, dict(data.inputs))
        self.acts = dict(self.acts)

    def run_to(self, stop: int) -> dict[str, np.ndarray]:
        from ..graph.subgraph import value_info

        names = self._crossing(self.model, stop)
        if stop > self.cut:
            have = list(self.acts)
            inputs = [value_info(n, onnx.helper.np_dtype_to_tensor_dtype(self.acts[n].dtype), self.acts[n].shape)
                      for n in have]
            produced = {o for node in self.model.graph.node[self.cut:stop] for o in node.output}
            wanted = [n for n in names if n in produced]
            if wanted:
                segment = submodel(self.model, self.model.graph.node[self.cut:stop], inputs, wanted)
                session = make_session(segment.SerializeToString(), threads=self.threads, allow_spinning=False)
                feeds = [i.name for i in session.get_inputs()]
                parts: dict[str, list] = {n: [] for n in wanted}
                for first in range(0, len(self.data), self.batch_size):
                    batch = slice(first, first + self.batch_size)
                    for name, value in zip(wanted, session.run(wanted, {f: self.acts[f][batch] for f in feeds})):
                        parts[name].append(value)
                self.acts.update({n: np.concatenate(p) for n, p in parts.items()})
        self.acts = {n: self.acts[n] for n in names if n in self.acts}
        self.cut = stop
        return self.acts

