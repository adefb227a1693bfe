"""Coupled-channel analysis: trace channel ids through the graph and form channel groups.

The method (after DepGraph, Fang et al., CVPR 2023, re-expressed for explicit ONNX ops):

* Every op that creates channels (Conv, Gemm, MatMul with constant weights, ...) allocates a
  *channel space*: one fresh integer id per output channel.
* Every activation tensor carries a :class:`ChannelAxis`: which axis holds channels and, for
  each index along it, the id of the channel there. Pass-through ops copy it; Concat
  concatenates ids (an offset map); Split/Slice take ranges; Flatten repeats each id over the
  H*W columns it expands to.
* Ops that force channels to stay together (a residual ``Add``, an SE gate's ``Mul``, a
  depthwise conv) *union* ids in a union-find. A **unit** is one union-find class: the set of
  channel ids that must be removed together. A **channel group** is a connected set of channel
  spaces; its channels are the units inside it.
* Rules register **parameter slots**: "axis ``a`` of constant input ``k`` of node ``n`` is
  indexed by these ids". Importance reads weights through slots, and the rewrite slices them.
* Anything that cannot be traced safely is **frozen** with a reason: unknown ops, graph outputs,
  reductions over channels, reshapes that split channels. A group with a frozen unit is blocked.

Op-specific knowledge lives only in :mod:`onnxprune.analysis.rules`; this module is op-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

from ..errors import OnnxPruneError
from ..graph import infer_shapes, opset_of

G_LOGGER.severity = G_LOGGER.ERROR  # graph-surgeon's own warnings would break the CLI's one-line errors

# Slot roles. Importance uses "out" (filters), "in" (consumer columns) and "norm" (BN scale).
OUT, IN, NORM, BIAS, CONST = "out", "in", "norm", "bias", "const"


def decoded(tensor: gs.Constant) -> np.ndarray:
    """A constant's values, decoded for this use only.

    onnx-graphsurgeon caches ``Constant.values`` once read; a cached copy of every weight would
    double peak memory on large models, so everything here reads weights through this."""
    lazy = getattr(tensor, "_values", None)
    return numpy_helper.to_array(lazy.tensor) if isinstance(lazy, LazyValues) else tensor.values


class UnionFind:
    """Union-find over integer ids with path halving; ids are allocated by :meth:`make`."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


@dataclass(frozen=True)
class ChannelAxis:
    """The channel axis of one activation tensor: ``axis`` (non-negative) and one id per index."""

    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class Space:
    """A run of fresh channel ids created by one node's output."""

    node: str
    tensor: str
    ids: np.ndarray
    frozen_reason: str | None = None


@dataclass(frozen=True)
class Slot:
    """Axis ``axis`` of constant input ``input_index`` of node ``node_index`` is indexed by ``ids``."""

    node_index: int
    input_index: int
    tensor: str
    axis: int
    ids: np.ndarray
    role: str


@dataclass
class ChannelGroup:
    """Coupled channels that must keep the same indices.

    ``units[i]`` is the union-find root of the group's channel ``i``; plans refer to channels by
    this index. ``blocked`` lists the reasons it may not be pruned (empty when prunable).
    """

    id: str
    units: np.ndarray
    spaces: list[Space]
    slots: list[Slot] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> bool:
        return not self.blocked

    @property
    def anchor(self) -> str:
        """The node that creates the group's first channel space (stable across runs)."""
        return self.spaces[0].node


class Tracer:
    """What rules see while channels are traced: tensors, constants, shapes, and the ids."""

    def __init__(self, graph: gs.Graph, shapes: dict, opset: int) -> None:
        self.graph = graph
        self.shapes = shapes
        self.opset = opset
        self.uf = UnionFind()
        self.axes: dict[str, ChannelAxis] = {}
        self.spaces: list[Space] = []
        self.slots: list[Slot] = []
        self.frozen: list[tuple[np.ndarray, str]] = []
        self.node_index: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        self.touched: dict[int, list[np.ndarray]] = {}
        self.deferred: list = []

    # ---- reading the graph ----
    def const(self, tensor) -> np.ndarray | None:
        """The values of a constant input, or None for activations and missing inputs."""
        if isinstance(tensor, gs.Constant):
            return decoded(tensor)
        return None

    def shape(self, tensor) -> tuple | None:
        if tensor is None or not tensor.name:
            return None
        if isinstance(tensor, gs.Constant):
            return tuple(tensor.shape)
        return self.shapes.get(tensor.name)

    def axis_of(self, tensor) -> ChannelAxis | None:
        if tensor is None or isinstance(tensor, gs.Constant):
            return None
        return self.axes.get(tensor.name)

    def shape_entries(self, tensor) -> list | None:
        """A computed shape tensor read as its entries: ints, or ``("dim", tensor, axis)`` for a
        dim read at run time (:func:`onnxprune.analysis.shape_expr.shape_entries`); None when
        it is computed otherwise."""
        from .shape_expr import shape_entries

        return shape_entries(tensor, self.const, lambda x: None if self.shape(x) is None else len(self.shape(x)))

    @staticmethod
    def input(node: gs.Node, i: int):
        """Input ``i`` of ``node``, or None where absent or empty."""
        if i < len(node.inputs) and node.inputs[i].name:
            return node.inputs[i]
        return None

    def channel_input(self, node: gs.Node):
        """``(x, axis, shape)`` of input 0 when it carries channels and its rank is known.

        Returns None when it carries no channels (nothing to do) or, after blocking the node,
        when its shape is unknown."""
        x = self.input(node, 0)
        xa = self.axis_of(x)
        if xa is None:
            return None
        shape = self.shape(x)
        if shape is None:
            self.block(node, f"{node.op} with unknown input rank")
            return None
        return x, xa, shape

    def nchw_input(self, node: gs.Node) -> ChannelAxis | None:
        """Channel ids of input 0 for ops defined on ``[N, C, ...]`` (norms, pooling).

        None when it carries no channels, or (after blocking the node) when they are not on axis 1."""
        xa = self.axis_of(self.input(node, 0))
        if xa is not None and xa.axis != 1:
            self.block(node, f"{node.op} over a tensor whose channels are not on axis 1")
            return None
        return xa

    # ---- recording ----
    def set_axis(self, node: gs.Node, tensor, axis: int, ids: np.ndarray) -> None:
        self.axes[tensor.name] = ChannelAxis(axis, ids)
        self.touch(node, ids)

    def touch(self, node: gs.Node, ids: np.ndarray) -> None:
        self.touched.setdefault(self.node_index[id(node)], []).append(ids)

    def new_space(self, node: gs.Node, tensor, axis: int, size: int, frozen: str | None = None) -> np.ndarray:
        """Allocate ``size`` fresh ids for ``tensor``'s channel axis; freeze them if ``frozen``."""
        ids = self.uf.make(size)
        self.spaces.append(Space(node.name, tensor.name, ids, frozen))
        self.set_axis(node, tensor, axis, ids)
        if frozen:
            self.frozen.append((ids, frozen))
        return ids

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie ``a[i]`` to ``b[i]`` for every ``i`` (equal lengths)."""
        if len(a) != len(b):
            raise ValueError("union of channel runs of different lengths")
        for x, y in zip(a.tolist(), b.tolist()):
            self.uf.union(x, y)

    def union_all(self, ids: np.ndarray) -> None:
        """Tie all ``ids`` into one unit."""
        first = int(ids[0])
        for x in ids[1:].tolist():
            self.uf.union(first, x)

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        self.frozen.append((ids, reason))

    def slot(self, node: gs.Node, input_index: int, axis: int, ids: np.ndarray, role: str) -> None:
        """Register that ``axis`` of constant input ``input_index`` is indexed by ``ids``."""
        tensor = node.inputs[input_index]
        self.slots.append(Slot(self.node_index[id(node)], input_index, tensor.name, axis, ids, role))
        self.touch(node, ids)

    def defer(self, check) -> None:
        """Run ``check()`` once every node is traced (before groups are formed): for a rule whose
        verdict depends on nodes later in the graph. It may :meth:`freeze` ids."""
        self.deferred.append(check)

    def block(self, node: gs.Node, reason: str) -> None:
        """Freeze every traced input of ``node``; its outputs carry no channel ids."""
        for tensor in node.inputs:
            ax = self.axis_of(tensor)
            if ax is not None:
                self.freeze(ax.ids, f"{reason} (node {node.name})")

    def passthrough(self, node: gs.Node, src: int = 0, dst: int = 0) -> None:
        """Output ``dst`` has the same channels, on the same axis, as input ``src``."""
        ax = self.axis_of(self.input(node, src))
        if ax is not None and dst < len(node.outputs):
            self.set_axis(node, node.outputs[dst], ax.axis, ax.ids)


@dataclass
class Analysis:
    """The result of :func:`analyze`: the normalized model, its shapes, and its channel groups.

    ``root_of[i]`` is the unit (union-find root) of channel id ``i``; ``group_of_unit`` maps a
    unit to its group's index in ``groups``.
    """

    model: onnx.ModelProto
    graph: gs.Graph
    shapes: dict
    input_shapes: dict
    axes: dict[str, ChannelAxis]
    slots: list[Slot]
    groups: list[ChannelGroup]
    root_of: np.ndarray
    frozen_units: dict[int, list[str]]

    def group(self, group_id: str) -> ChannelGroup:
        try:
            return self.groups[self.group_index[group_id]]
        except KeyError:
            raise OnnxPruneError(f"no channel group {group_id!r} in this model") from None

    @cached_property
    def group_index(self) -> dict[str, int]:
        """Group id → position in :attr:`groups`."""
        return {g.id: k for k, g in enumerate(self.groups)}

    @cached_property
    def unit_group(self) -> np.ndarray:
        """Per channel id that is a unit (union-find root): its group's position; -1 otherwise."""
        out = np.full(len(self.root_of), -1, dtype=np.int64)
        for k, g in enumerate(self.groups):
            out[g.units] = k
        return out

    @cached_property
    def unit_position(self) -> np.ndarray:
        """Per unit: its channel index within its group (position in ``units``); -1 otherwise."""
        out = np.full(len(self.root_of), -1, dtype=np.int64)
        for g in self.groups:
            out[g.units] = np.arange(g.channels)
        return out

    @cached_property
    def node_index(self) -> dict[int, int]:
        """``id(node)`` → position of the graph-surgeon node."""
        return {id(n): i for i, n in enumerate(self.graph.nodes)}

    @cached_property
    def output_axis(self) -> dict[int, int]:
        """Node index → the axis of its weight (input 1) that holds the node's output channels,
        read off the node's ``out`` slot (only for nodes that create channels)."""
        return {s.node_index: s.axis for s in self.slots if s.role == OUT and s.input_index == 1}

    @cached_property
    def blocks(self) -> list:
        """The residual blocks, removable or not, with the MACs and params each saves
        (:func:`onnxprune.analysis.blocks.find_blocks`)."""
        from .blocks import find_blocks
        from .cost import CostModel

        return find_blocks(self.model, self.shapes, CostModel(self).node_macs())

    @property
    def removable_blocks(self) -> list:
        return [b for b in self.blocks if b.removable]

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def alive_ids(self, removed_units: np.ndarray | None) -> np.ndarray:
        """Boolean per channel id: True where its unit is kept."""
        alive_unit = np.ones(len(self.root_of), dtype=bool)
        if removed_units is not None and len(removed_units):
            alive_unit[removed_units] = False
        return alive_unit[self.root_of]


def analyze(model: onnx.ModelProto, input_shapes: dict | None = None) -> Analysis:
    """Trace coupled channels through a normalized model (see :func:`onnxprune.graph.normalize`).

    ``input_shapes`` fixes dynamic input dims for shape inference (batch defaults to 1).
    Returns an :class:`Analysis`; ops without a rule are frozen and reported, never guessed.
    """
    from .rules import rule_for
    from .rules.base import is_default_domain

    shapes = infer_shapes(model, input_shapes)
    graph = gs.import_onnx(model)
    if len(graph.nodes) != len(model.graph.node):
        raise OnnxPruneError("internal error: graph-surgeon view does not match the model's nodes")
    tracer = Tracer(graph, shapes, opset_of(model))
    for node in graph.nodes:
        for name in _subgraph_reads(node):
            ax = tracer.axes.get(name)
            if ax is not None:
                tracer.freeze(ax.ids, f"read inside a subgraph of node {node.name}")
        rule = rule_for(node)
        if rule is None:
            if any(tracer.axis_of(t) is not None for t in node.inputs):
                domain = "" if is_default_domain(node) else f"{node.domain}::"
                tracer.block(node, f"op {domain}{node.op} has no pruning rule")
            continue
        rule.trace(node, tracer)
    for check in tracer.deferred:
        check()
    for out in graph.outputs:
        ax = tracer.axis_of(out)
        if ax is not None:
            tracer.freeze(ax.ids, f"reaches graph output {out.name!r}")
    groups, root_of, frozen_units = _build_groups(tracer)
    return Analysis(
        model=model,
        graph=graph,
        shapes=shapes,
        input_shapes=dict(input_shapes or {}),
        axes=tracer.axes,
        slots=tracer.slots,
        groups=groups,
        root_of=root_of,
        frozen_units=frozen_units,
    )


def _subgraph_reads(node: gs.Node) -> set[str]:
    """Names of tensors that the subgraphs of an If/Loop/Scan node read (recursively)."""
    names: set[str] = set()
    for value in node.attrs.values():
        for sub in value if isinstance(value, list) else [value]:
            if isinstance(sub, gs.Graph):
                for inner in sub.nodes:
                    names.update(t.name for t in inner.inputs if t.name)
                    names |= _subgraph_reads(inner)
    return names


def _build_groups(tracer: Tracer) -> tuple[list[ChannelGroup], np.ndarray, dict[int, list[str]]]:
    root_of = tracer.uf.roots()
    frozen_units: dict[int, list[str]] = {}
    for ids, reason in tracer.frozen:
        for r in np.unique(root_of[ids]).tolist():
            reasons = frozen_units.setdefault(r, [])
            if reason not in reasons:
                reasons.append(reason)

    # Connect spaces that share a unit; a group is a connected set of spaces.
    space_uf = UnionFind()
    space_uf.make(len(tracer.spaces))
    owner: dict[int, int] = {}
    for s, space in enumerate(tracer.spaces):
        for r in np.unique(root_of[space.ids]).tolist():
            if r in owner:
                space_uf.union(owner[r], s)
            else:
                owner[r] = s
    members: dict[int, list[int]] = {}
    for s in range(len(tracer.spaces)):
        members.setdefault(space_uf.find(s), []).append(s)

    groups: list[ChannelGroup] = []
    unit_group: dict[int, int] = {}
    for k, space_ids in enumerate(sorted(members.values(), key=lambda m: m[0])):
        spaces = [tracer.spaces[s] for s in space_ids]
        ordered = np.concatenate([root_of[sp.ids] for sp in spaces])
        _, first = np.unique(ordered, return_index=True)
        units = ordered[np.sort(first)]
        blocked: list[str] = []
        for r in units.tolist():
            unit_group[r] = k
            for reason in frozen_units.get(r, []):
                if reason not in blocked:
                    blocked.append(reason)
        groups.append(ChannelGroup(id=f"g{k}", units=units, spaces=spaces, blocked=blocked))

    node_groups: dict[int, set[int]] = {}
    for node_index, runs in tracer.touched.items():
        for ids in runs:
            for r in np.unique(root_of[ids]).tolist():
                if r in unit_group:
                    node_groups.setdefault(node_index, set()).add(unit_group[r])
    for node_index in sorted(node_groups):
        for k in sorted(node_groups[node_index]):
            groups[k].nodes.append(tracer.graph.nodes[node_index].name)
    for slot in tracer.slots:
        ks = {unit_group[r] for r in np.unique(root_of[slot.ids]).tolist() if r in unit_group}
        for k in ks:
            groups[k].slots.append(slot)
    return groups, root_of, frozen_units
