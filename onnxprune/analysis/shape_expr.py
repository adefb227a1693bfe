"""Read a computed shape tensor as a list of entries: each one a constant or a dim of a tensor.

Exporters compute shapes at run time: ``Concat(Shape(x)[0:2], [H', W'])`` for a Resize's sizes,
``Concat(Shape(x)[0:1], [C])`` for a Reshape target. :func:`shape_entries` follows such a 1-D
int64 tensor back through ``Shape`` (with ``start``/``end``), ``Gather`` and ``Slice`` with
constant indices, ``Concat``, ``Cast``, ``Identity``, ``Squeeze``/``Unsqueeze``/``Reshape`` of
scalars and 1-D vectors, and constants, and returns one entry per element: an ``int``, or
``("dim", tensor name, axis)`` for "dim ``axis`` of that tensor at run time". Anything else
(arithmetic, data-dependent values) gives None: the caller then refuses, never guesses.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

_PASS = ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten")


def shape_entries(tensor, const, rank_of, depth: int = 0) -> list | None:
    """The entries of the 1-D (or scalar) shape tensor ``tensor`` (see the module doc).

    ``const(tensor)`` gives a constant's values (or None); ``rank_of(tensor)`` a tensor's rank
    (or None). Depth is bounded (16 producers) so that a long chain gives up, not recurses.
    """
    values = const(tensor)
    if values is not None:
        values = np.asarray(values)
        return [int(v) for v in values.reshape(-1)] if values.dtype.kind in "iu" else None
    if depth > 16 or not isinstance(tensor, gs.Variable) or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    if node.domain not in (None, "", "ai.onnx"):
        return None
    sub = (lambda k: shape_entries(node.inputs[k], const, rank_of, depth + 1)) if node.inputs else None
    if node.op == "Shape":
        rank = rank_of(node.inputs[0])
        if rank is None:
            return None
        axes = list(range(rank))[slice(node.attrs.get("start", 0), node.attrs.get("end", rank))]
        return [("dim", node.inputs[0].name, a) for a in axes]
    if node.op in _PASS:
        return sub(0)
    if node.op == "Concat" and int(node.attrs.get("axis", 0)) in (0, -1):
        parts = [shape_entries(x, const, rank_of, depth + 1) for x in node.inputs]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) == 0 and len(node.inputs) == 2:
        data, indices = sub(0), const(node.inputs[1])
        if data is None or indices is None:
            return None
        try:
            return [data[int(i)] for i in np.asarray(indices).reshape(-1)]
        except IndexError:
            return None
    if node.op == "Slice" and len(node.inputs) >= 3:
        data = sub(0)
        bounds = [const(x) if x.name else None for x in node.inputs[1:5]]
        if data is None or any(b is None for b in bounds[:2]):
            return None
        axes, steps = (bounds + [None, None])[2:4]
        if axes is not None and [int(a) for a in np.asarray(axes).reshape(-1)] not in ([0], [-1]):
            return None
        step = 1 if steps is None else int(np.asarray(steps).reshape(-1)[0])
        start, end = (int(np.asarray(b).reshape(-1)[0]) for b in bounds[:2])
        return data[slice(start, end, step)] if step else None
    return None


def constant_source(tensor, index: int, const, rank_of):
    """Where entry ``index`` of the computed shape ``tensor`` comes from when it is an element
    of a constant: ``(concat node, input position, element position)`` for a ``Concat`` (seen
    through ``Cast``/``Identity``) whose operand at that place is a constant; None otherwise.
    Rewriting that element changes exactly that entry, for every reader of ``tensor``: the
    caller checks that they all want the change (see :func:`readers`)."""
    node = tensor.inputs[0] if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 else None
    for _ in range(4):
        if node is None or node.op not in ("Cast", "Identity"):
            break
        source = node.inputs[0]
        node = source.inputs[0] if isinstance(source, gs.Variable) and len(source.inputs) == 1 else None
    if node is None or node.op != "Concat" or int(node.attrs.get("axis", 0)) not in (0, -1):
        return None
    start = 0
    for k, part in enumerate(node.inputs):
        entries = shape_entries(part, const, rank_of)
        if entries is None:
            return None
        if start <= index < start + len(entries):
            return (node, k, index - start) if const(part) is not None else None
        start += len(entries)
    return None


def readers(tensor) -> list:
    """The nodes that read ``tensor``."""
    return list(tensor.outputs) if isinstance(tensor, gs.Variable) else []
