"""Apply a set of removed channel units to the model: slice weights, fix attributes and shapes.

The rewrite edits a copy of the normalized ``ModelProto`` (node ``i`` there is node ``i`` of the
analysis' graph-surgeon view). Every parameter slot is sliced generically; rules fix what slots
cannot (``group`` attributes, Reshape targets, Split sizes, Slice bounds). Initializers that lose
no channel are left untouched, byte for byte. Afterwards stale ``value_info`` is dropped and
shapes are inferred again; graph inputs and outputs, opset, IR version, dynamic dims and metadata
are those of the input.

Memory: the copy is made without the initializers, and each one is copied in once at the end,
sliced or as it was; weights are decoded one tensor at a time while they are sliced. So the
rewrite holds the input's weights plus the pruned ones, never a second full copy.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from .errors import OnnxPruneError
from .graph import copy_without_initializers, infer_value_info
from .analysis.groups import Analysis, decoded


class Rewriter:
    """The view rules get during the rewrite: kept channel counts and edit operations."""

    def __init__(self, analysis: Analysis, alive_ids: np.ndarray) -> None:
        self.analysis = analysis
        self.alive_ids = alive_ids
        self.opset = _opset(analysis.model)
        self.model = copy_without_initializers(analysis.model)
        self.node_index = {id(n): i for i, n in enumerate(analysis.graph.nodes)}
        # The initializers of the result, in order: the source's (None = unchanged, copied by
        # finish()) and then the added ones; replacements are standalone TensorProtos.
        self._source = list(analysis.model.graph.initializer)
        self._replaced: list[onnx.TensorProto | None] = [None] * len(self._source)
        self._inits = {t.name: k for k, t in enumerate(self._source)}
        self._users: dict[str, int] = {}
        for node in self.model.graph.node:
            for name in node.input:
                self._users[name] = self._users.get(name, 0) + 1
        for out in self.model.graph.output:
            self._users[out.name] = self._users.get(out.name, 0) + 1
        self._names = set(self._inits) | {o for n in self.model.graph.node for o in n.output}

    # ---- the Tracer-like read interface rules share with tracing ----
    input = staticmethod(lambda node, i: node.inputs[i] if i < len(node.inputs) and node.inputs[i].name else None)

    @staticmethod
    def const(tensor):
        return decoded(tensor) if isinstance(tensor, gs.Constant) else None

    def axis_of(self, tensor):
        return None if tensor is None else self.analysis.axes.get(tensor.name)

    def shape(self, tensor):
        return self.analysis.shapes.get(tensor.name)

    def alive(self, ids: np.ndarray) -> np.ndarray:
        return self.alive_ids[ids]

    def channels(self, tensor) -> int:
        return len(self.analysis.axes[tensor.name].ids)

    def kept(self, tensor) -> int:
        return int(self.alive_ids[self.analysis.axes[tensor.name].ids].sum())

    # ---- edits ----
    def _proto(self, node: gs.Node) -> onnx.NodeProto:
        return self.model.graph.node[self.node_index[id(node)]]

    def set_attr(self, node: gs.Node, name: str, value) -> None:
        proto = self._proto(node)
        self.drop_attr(node, name)
        proto.attribute.append(onnx.helper.make_attribute(name, value))

    def drop_attr(self, node: gs.Node, name: str) -> None:
        proto = self._proto(node)
        keep = [a for a in proto.attribute if a.name != name]
        del proto.attribute[:]
        proto.attribute.extend(keep)

    def users(self, name: str) -> int:
        """How many node inputs and graph outputs read tensor ``name``."""
        return self._users.get(name, 0)

    def replace_initializer(self, name: str, values: np.ndarray) -> None:
        self._replaced[self._inits[name]] = numpy_helper.from_array(values, name)

    def finish(self) -> onnx.ModelProto:
        """Put the initializers into :attr:`model` (each copied once) and return it."""
        inits = self.model.graph.initializer
        for k, source in enumerate(self._source):
            inits.add().CopyFrom(self._replaced[k] if self._replaced[k] is not None else source)
            self._replaced[k] = None  # frees the standalone copy as soon as it is in the model
        self._source = []
        return self.model

    def set_const_input(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Make input ``index`` of ``node`` the constant ``values``.

        Replaces the initializer in place when this node is its only reader; otherwise adds a
        new, uniquely named initializer for this node alone.
        """
        proto = self._proto(node)
        while len(proto.input) <= index:
            proto.input.append("")
        name = proto.input[index]
        if name and name in self._inits and self._users.get(name, 0) == 1:
            self.replace_initializer(name, values)
            return
        base = name or f"{proto.name}_input{index}"
        new = f"{base}__pruned"
        k = 1
        while new in self._names:
            new, k = f"{base}__pruned{k}", k + 1
        self._names.add(new)
        self._inits[new] = len(self._source)
        self._source.append(None)
        self._replaced.append(numpy_helper.from_array(values, new))
        self._users[new] = 1
        if name:
            self._users[name] -= 1
        proto.input[index] = new


def _opset(model: onnx.ModelProto) -> int:
    from .graph import opset_of

    return opset_of(model)


def apply_removal(analysis: Analysis, removed_units: np.ndarray) -> onnx.ModelProto:
    """Return a pruned copy of ``analysis.model`` with the channel units ``removed_units`` gone.

    ``removed_units`` are union-find roots (see :class:`~onnxprune.analysis.groups.ChannelGroup`), all in
    prunable groups. The result has shapes re-inferred but is not yet checked; see
    :func:`onnxprune.prune.prune_model` for the checked end-to-end path.
    """
    from .analysis.rules import rule_for

    frozen = [int(u) for u in removed_units if int(u) in analysis.frozen_units]
    if frozen:
        raise OnnxPruneError(f"internal error: asked to remove frozen channels ({len(frozen)} units)")
    alive = analysis.alive_ids(np.asarray(removed_units, dtype=np.int64))
    rw = Rewriter(analysis, alive)
    _slice_slots(analysis, rw)
    for node in analysis.graph.nodes:
        rule = rule_for(node)
        if rule is not None:
            rule.rewrite(node, rw)
    model = rw.finish()
    _drop_orphaned(analysis.model.graph, model.graph)
    _sync_initializer_inputs(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(infer_value_info(model))
    return model


def _drop_orphaned(before: onnx.GraphProto, after: onnx.GraphProto) -> None:
    """Remove nodes (and folded constants) that the rewrite left unread, e.g. the Shape/Concat
    subgraph that computed a Reshape target now replaced by a constant. Nodes and initializers
    already unread in the input model are kept as they were."""
    def readers(graph):
        names = {o.name for o in graph.output}
        for node in graph.node:
            names.update(node.input)
        return names

    was_read = readers(before)
    while True:
        read = readers(after)
        keep = [n for n in after.node if any(o in read or o not in was_read for o in n.output)]
        if len(keep) == len(after.node):
            break
        del after.node[:]
        after.node.extend(keep)
    read = readers(after)
    for k in reversed(range(len(after.initializer))):  # by index: the others are not copied
        name = after.initializer[k].name
        if name not in read and name in was_read:
            del after.initializer[k]


def _sync_initializer_inputs(model: onnx.ModelProto) -> None:
    """Initializers also listed as graph inputs (``keep_initializers_as_inputs``, IR < 4) must
    declare their new shapes; before IR 4 every initializer must be listed."""
    inits = {t.name: t for t in model.graph.initializer}
    listed = set()
    for vi in model.graph.input:
        if vi.name in inits:
            listed.add(vi.name)
            t = inits[vi.name]
            vi.CopyFrom(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    if model.ir_version < 4:
        for name, t in inits.items():
            if name not in listed:
                model.graph.input.append(onnx.helper.make_tensor_value_info(name, t.data_type, list(t.dims)))


def _slice_slots(analysis: Analysis, rw: Rewriter) -> None:
    """Slice every constant input that a slot indexes. A constant read by several nodes stays one
    tensor when every reader slices it with the same masks (as :class:`~onnxprune.analysis.cost.CostModel`
    counts it); otherwise each slicing reader gets its own copy."""
    by_input: dict[tuple[int, int], list] = {}
    for slot in analysis.slots:
        by_input.setdefault((slot.node_index, slot.input_index), []).append(slot)
    # Masks first, values later: a weight is decoded and sliced only when it is stored, one
    # tensor at a time (memory: no decoded copy of every weight, no list of all sliced arrays).
    sliced: dict[str, list[tuple[gs.Node, int, bytes, dict[int, np.ndarray]]]] = {}
    for (node_index, input_index), slots in by_input.items():
        node = analysis.graph.nodes[node_index]
        masks: dict[int, np.ndarray] = {}
        for slot in slots:
            mask = rw.alive(slot.ids)
            masks[slot.axis] = mask if slot.axis not in masks else masks[slot.axis] & mask
        if all(m.all() for m in masks.values()):
            continue
        signature = b"|".join(bytes([a]) + np.packbits(m).tobytes() for a, m in sorted(masks.items()))
        sliced.setdefault(node.inputs[input_index].name, []).append((node, input_index, signature, masks))
    for name, uses in sliced.items():
        if rw.users(name) == len(uses) and len({sig for _, _, sig, _ in uses}) == 1:
            node, input_index, _, masks = uses[0]  # a shared weight sliced alike by all its readers
            rw.replace_initializer(name, _sliced(node.inputs[input_index], masks))
        else:
            for node, input_index, _, masks in uses:
                rw.set_const_input(node, input_index, _sliced(node.inputs[input_index], masks))


def _sliced(tensor: gs.Constant, masks: dict[int, np.ndarray]) -> np.ndarray:
    """``tensor``'s values with only the ``True`` entries of ``masks[axis]`` kept along each axis.

    The values are decoded for this use only (:func:`~onnxprune.analysis.groups.decoded`)."""
    values = decoded(tensor)
    for axis, mask in sorted(masks.items()):
        values = np.compress(mask, values, axis=axis)
    return np.ascontiguousarray(values)
