"""Residual blocks ``y = x + F(x)`` that can be removed whole (depth pruning).

A **residual block** is an ``Add`` of two activations of one shape (no broadcasting) where one
operand, the *shortcut*, is ``x`` itself (possibly behind ``Identity`` nodes) and the other, the
*branch*, is computed from ``x``. Removing the block means ``y := x``: the ``Add`` goes, the
readers of ``y`` read ``x``, and the branch's nodes that nothing else reads go with it. Every
shape is kept, so the rest of the graph is untouched. This covers ResNet basic and bottleneck
blocks, inverted residuals (MobileNetV2/V3, EfficientNet), YOLO bottlenecks with a shortcut,
ConvNeXt blocks with layer scale and each pre-LN transformer sublayer, in either ``Add``
operand order, and as torch, Paddle and TF exporters write them.

What is listed but never removable, with the reason:

* an ``Add`` whose operands are computed from a common tensor by different paths: the shortcut
  is not the identity (a projection or downsample shortcut, ResNet's ``downsample``);
* a block whose output is a graph output (dropping it would rename or change that output).

**ReLU after the Add** (ResNet v1: ``y = relu(x + F(x))``): dropping ``F`` leaves ``relu(x)``.
The ReLU is removed too only where ``x`` is provably non-negative (it comes from a ReLU, a
sigmoid, a clip at 0 or more, through pooling, reshapes and concatenations of such tensors),
because ``relu(x) = x`` there; otherwise it stays, reading ``x``. It is never assumed.

The branch ``F`` is computed as the nodes that become unread once the ``Add`` is gone: a node
whose output something outside the block still reads stays, and its MACs are not counted as
saved. Several blocks dropped together are resolved jointly (:func:`removal`), so nested blocks
and shared nodes are counted once.

Sources: He et al., "Deep Residual Learning" (CVPR 2016) for the block; Veit et al.,
"Residual Networks Behave Like Ensembles of Relatively Shallow Networks" (NeurIPS 2016) for why
dropping single blocks works; the seeds of this project (AMSC; dynamic pruning with layer
fusion) for depth pruning of residual structures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph.subgraph import node_reads

# Ops through which a tensor stays non-negative when its inputs are (values are moved, selected,
# averaged, multiplied or added, never negated).
_NONNEG_KEEPING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Identity", "Reshape", "Flatten",
                   "Transpose", "Squeeze", "Unsqueeze", "Concat", "Mul", "Add", "Max", "Dropout", "Split", "Slice",
                   "Gather", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "ReduceMax", "ReduceMean",
                   "ReduceSum"}
_NONNEG_MAKING = {"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "HardSigmoid", "Softplus"}


@dataclass
class ResidualBlock:
    """One residual ``Add``: ``output = shortcut + branch``.

    ``id``: ``b0``, ``b1``, ... in graph order; ``add``: the Add node's name (what plans store);
    ``nodes``: the branch's nodes that go when the block is dropped, in graph order; ``relu``:
    a ReLU that alone reads ``output`` (ResNet v1), and ``relu_goes`` whether it goes as well
    (``shortcut`` provably non-negative); ``macs`` and ``params``: what dropping it alone saves
    (at the analysis input shape); ``reason``: why it is not removable (None when it is).
    """

    id: str
    add: str
    shortcut: str
    branch: str
    output: str
    nodes: list[str] = field(default_factory=list)
    relu: str | None = None
    relu_goes: bool = False
    reason: str | None = None
    macs: int = 0
    params: int = 0

    @property
    def removable(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict:
        return {**asdict(self), "removable": self.removable}


class GraphIndex:
    """Index of one graph: producers, readers, ancestor bitsets (Python ints over node indices,
    graph inputs and initializers as extra bits)."""

    def __init__(self, graph: onnx.GraphProto, types: dict[str, int] | None = None) -> None:
        self.types = types or {}  # element types, where known (to see no-op Casts)
        self.nodes = list(graph.node)
        self.consts = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.producer: dict[str, int] = {}
        self.readers: dict[str, list[int]] = {}
        self.reads: list[set[str]] = [node_reads(node) for node in self.nodes]
        self.implicit: set[str] = set()  # read inside a subgraph (If/Loop/Scan bodies)
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in self.reads[i]:
                self.readers.setdefault(name, []).append(i)
            self.implicit |= self.reads[i] - set(node.input)
        sources = [i.name for i in graph.input if i.name not in self.consts]
        self.source_bit = {name: len(self.nodes) + k for k, name in enumerate(sources)}
        self.ancestors: list[int] = []  # bit j set: node j (or source j - N) is an ancestor
        for i in range(len(self.nodes)):
            bits = 0
            for name in self.reads[i]:
                bits |= self.tensor_bits(name)
            self.ancestors.append(bits)

    def tensor_bits(self, name: str) -> int:
        """The ancestor bits of a tensor, itself included (its producer or source bit)."""
        p = self.producer.get(name)
        if p is not None:
            return self.ancestors[p] | (1 << p)
        bit = self.source_bit.get(name)
        return 0 if bit is None else 1 << bit

    def depends(self, name: str, on: str) -> bool:
        """Whether tensor ``name`` is computed from tensor ``on`` (some ancestor reads it)."""
        bits = self.tensor_bits(name)
        return any(bits >> r & 1 for r in self.readers.get(on, ()))

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def through_identity(self, name: str) -> str:
        """``name`` with any chain of ``Identity`` nodes (and ``Cast`` nodes to the type their
        input already has, as some exporters write them) before it skipped."""
        while name in self.producer:
            node = self.nodes[self.producer[name]]
            if node.domain not in ("", "ai.onnx") or not (node.op_type == "Identity" or self._noop_cast(node)):
                break
            name = node.input[0]
        return name

    def _noop_cast(self, node) -> bool:
        if node.op_type != "Cast":
            return False
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        return to is not None and self.types.get(node.input[0]) == to


def find_blocks(model: onnx.ModelProto, shapes: dict, node_macs: dict[str, int] | None = None) -> list[ResidualBlock]:
    """Every residual ``Add`` of ``model`` (a normalized model: named, weights as initializers)
    with its branch, in graph order; ``shapes`` are the analysis shapes (``{tensor: dims}``),
    ``node_macs`` the MACs per node name (for :attr:`ResidualBlock.macs`).

    Listed: identity-shortcut blocks (removable unless their output is a graph output) and
    ``Add``s of two branches of a common tensor (not removable: the shortcut is not the
    identity). Other ``Add``s (biases, broadcasts, unrelated tensors) are not blocks.
    """
    g = GraphIndex(model.graph, _types(model) if any(n.op_type == "Cast" for n in model.graph.node) else None)
    node_macs = node_macs or {}
    blocks: list[ResidualBlock] = []
    for i, node in enumerate(g.nodes):
        found = _block_at(g, i, node, shapes)
        if found is None:
            continue
        found.id = f"b{len(blocks)}"
        if found.removable:
            gone = removal(g, [found])
            found.nodes = [g.nodes[j].name for j in sorted(gone.branch_nodes)]
            found.macs = sum(node_macs.get(name, 0) for name in found.nodes)
            found.params = sum(int(np.prod(g.consts[name].dims, dtype=np.int64)) for name in gone.initializers
                               if g.consts[name].data_type in _FLOAT_TYPES)
        blocks.append(found)
    return blocks


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor onnx shape inference can type."""
    from ..graph.shapes import infer_value_info

    types = {t.name: t.data_type for t in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.output) + infer_value_info(model):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def _block_at(g: GraphIndex, i: int, node: onnx.NodeProto, shapes: dict) -> ResidualBlock | None:
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    a, b = node.input
    y = node.output[0]
    if g.is_const(a) or g.is_const(b) or a == b:
        return None
    sa, sb, sy = shapes.get(a), shapes.get(b), shapes.get(y)
    if sa is None or sa != sb or sa != sy or None in sa:
        return None
    for shortcut, branch in ((a, b), (b, a)):
        x = g.through_identity(shortcut)
        if x != g.through_identity(branch) and g.depends(branch, x):
            return _identity_block(g, node, shortcut, branch, y)
    common = g.tensor_bits(a) & g.tensor_bits(b)
    if not common:
        return None  # two unrelated tensors: not a residual
    via = _projection(g, a, b, common)
    if via is None:
        return None  # two branches of one tensor, not shaped like a residual block (gates, merges)
    return ResidualBlock("", node.name, a, b, y, reason=f"the shortcut is not the identity: it goes through node "
                                                        f"{via} (a projection or downsample)")


def _identity_block(g: GraphIndex, node, shortcut: str, branch: str, y: str) -> ResidualBlock:
    block = ResidualBlock("", node.name, shortcut, branch, y)
    if y in g.outputs:
        block.reason = f"its output {y!r} is a graph output"
        return block
    if y in g.implicit:
        block.reason = f"its output {y!r} is read inside a subgraph (If/Loop/Scan)"
        return block
    readers = g.readers.get(y, [])
    if len(readers) == 1:
        reader = g.nodes[readers[0]]
        if reader.op_type == "Relu" and reader.domain in ("", "ai.onnx"):
            block.relu = reader.name
            block.relu_goes = reader.output[0] not in g.outputs and nonnegative(g, shortcut)
    return block


_LAYERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def _projection(g: GraphIndex, a: str, b: str, common: int) -> str | None:
    """For an ``Add`` of two paths from their latest common ancestor: the first node of the
    shorter path when it looks like a projection shortcut (at most 3 nodes, one of them a Conv,
    Gemm or MatMul, or a pooling) beside a longer branch with a layer of its own, both computed
    from that ancestor alone, which the branch reads once; else None."""
    nodes_mask = (1 << len(g.nodes)) - 1
    latest = (common & nodes_mask).bit_length() - 1  # nodes only, not graph inputs

    def path(name: str) -> list[int]:
        bits = (g.tensor_bits(name) & nodes_mask) >> (latest + 1)
        return [latest + 1 + k for k in range(bits.bit_length()) if bits >> k & 1]

    short, long = sorted((path(a), path(b)), key=len)
    ops = lambda idx: {g.nodes[k].op_type for k in idx}  # noqa: E731
    if not short or len(short) > 3 or len(long) <= len(short) or not ops(long) & _LAYERS:
        return None
    if latest < 0 or not all(g.ancestors[k] >> latest & 1 for k in short + long):
        return None  # not two branches of one tensor
    source = set(g.nodes[latest].output)
    if sum(1 for k in long if source & g.reads[k]) != 1:
        return None  # the block input is read once by a branch; an LSTM's state path reads it at every step
    if not ops(short) & (_LAYERS | {"AveragePool", "MaxPool"}):
        return None
    return g.nodes[short[0]].name


def nonnegative(g: GraphIndex, name: str, _seen: dict | None = None) -> bool:
    """Whether tensor ``name`` is non-negative for every input, by its producers (see module doc)."""
    seen = {} if _seen is None else _seen
    if name in seen:
        return seen[name]
    seen[name] = False  # guards cycles (none in a valid graph)
    if g.is_const(name):
        values = numpy_helper.to_array(g.consts[name])
        result = values.dtype.kind in "fiu" and bool(np.all(values >= 0))
    elif name not in g.producer:
        result = False
    else:
        node = g.nodes[g.producer[name]]
        op = node.op_type if node.domain in ("", "ai.onnx") else None
        if op in _NONNEG_MAKING:
            result = True
        elif op == "Clip":
            low = _clip_min(g, node)
            result = low is not None and low >= 0
        elif op in _NONNEG_KEEPING:
            data = [n for n in node.input[:1 if op in ("Reshape", "Expand", "Tile", "Pad", "Slice", "Gather", "Split",
                                                         "Squeeze", "Unsqueeze") else None] if n]
            result = bool(data) and all(nonnegative(g, n, seen) for n in data)
        elif op == "Resize":
            mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
            result = mode != "cubic" and nonnegative(g, node.input[0], seen)
        else:
            result = False
    seen[name] = result
    return result


def _clip_min(g: GraphIndex, node) -> float | None:
    for attr in node.attribute:
        if attr.name == "min":
            return attr.f
    if len(node.input) > 1 and node.input[1] and g.is_const(node.input[1]):
        return float(numpy_helper.to_array(g.consts[node.input[1]]))
    return None


@dataclass
class Removal:
    """What dropping a set of blocks removes: ``nodes`` (indices: the Adds, the ReLUs that go,
    the branches), ``branch_nodes`` (the branches alone), ``initializers`` only those nodes read,
    and ``renames``: readers of each key read the value instead (``y → x``)."""

    nodes: set[int]
    branch_nodes: set[int]
    initializers: set[str]
    renames: dict[str, str]

    def resolve(self, name: str) -> str:
        """What a reader of tensor ``name`` reads once the blocks are gone (renames followed)."""
        return _resolve(self.renames, name)


def removal(g: GraphIndex, blocks: list[ResidualBlock]) -> Removal:
    """The nodes that go when ``blocks`` (all removable) are dropped together: the Adds (and the
    ReLUs that go), then every node whose outputs are no longer read once the readers of each
    dropped ``y`` read ``x``, found in one reverse pass (readers come after producers). Nodes
    whose outputs were not read in the input either are left as they were."""
    index = {n.name: k for k, n in enumerate(g.nodes)}
    gone: set[int] = set()
    renames: dict[str, str] = {}
    for block in blocks:
        gone.add(index[block.add])
        renames[block.output] = block.shortcut
        if block.relu is not None and block.relu_goes:
            relu = index[block.relu]
            gone.add(relu)
            renames[g.nodes[relu].output[0]] = block.shortcut
    adds = set(gone)
    read = set(g.outputs)
    for k in range(len(g.nodes) - 1, -1, -1):
        if k not in gone:
            outputs = [o for o in g.nodes[k].output if o]
            was_read = any(o in g.outputs or o in g.readers for o in outputs)
            if was_read and not any(o in read for o in outputs):
                gone.add(k)
                continue
            read.update(_resolve(renames, name) for name in g.reads[k])
    inits = {name for k in gone for name in g.reads[k] if name in g.consts and name not in read}
    return Removal(gone, gone - adds, inits, renames)


def _resolve(renames: dict[str, str], name: str) -> str:
    for _ in range(len(renames) + 1):
        if name not in renames:
            return name
        name = renames[name]
    return name


def graph_index(model: onnx.ModelProto) -> GraphIndex:
    """The index :func:`removal` works on."""
    return GraphIndex(model.graph)


def select_blocks(blocks: list[ResidualBlock], names) -> list[ResidualBlock]:
    """The blocks named by id (``b3``) or Add node name. Errors: an unknown name, or a block that
    is not removable (with its reason)."""
    from ..errors import OnnxPruneError

    by_name = {b.id: b for b in blocks} | {b.add: b for b in blocks}
    chosen: list[ResidualBlock] = []
    for name in names:
        block = by_name.get(name)
        if block is None:
            known = ", ".join(b.id for b in blocks if b.removable) or "none"
            raise OnnxPruneError(f"no residual block {name!r} in this model (removable blocks: {known})")
        if not block.removable:
            raise OnnxPruneError(f"block {block.id} ({block.add}) cannot be removed: {block.reason}")
        if block not in chosen:
            chosen.append(block)
    return chosen
