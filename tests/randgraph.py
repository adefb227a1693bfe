"""Random valid CNN graphs for property tests: a hypothesis strategy plus the properties.

:func:`cnn_models` is an ``@st.composite`` strategy that draws a small NCHW network (channels
2–16, spatial 4–8, batch 1, 2 or dynamic) and returns a :class:`RandModel`. It composes:

* convs: group 1, depthwise (multiplier 1 or 2), grouped; kernel 1 or 3, stride 1 or 2;
  with or without bias;
* BatchNormalization;
* activations: Relu, Sigmoid, HardSigmoid, HardSwish (opset ≥ 14) or its ``Add/Clip/Div/Mul``
  spellings, LeakyRelu, Relu6 as ``Clip``, swish ``x * Sigmoid(x)``;
* residual ``Add`` (either operand order); Concat of 2–3 branches on channels (one may be the
  trunk itself, rarely twice); Split into 2–3 parts (or ``Slice`` runs, positive or negative
  axis) that are concatenated back (in a drawn order, after optional per-part layers, some parts
  possibly unused) or added back;
* MaxPool, AveragePool, GlobalAveragePool; SE gates (GAP or ReduceMean → conv → Relu → conv →
  Sigmoid/HardSigmoid → Mul, either operand order);
* weight tying: one conv's weights applied to two tensors (shared detection heads), then
  added or concatenated;
* heads: a 1×1 conv, none (the trunk is the output), GAP/Flatten/Reshape → Gemm (transB or not,
  optionally an MLP of two Gemms with a BatchNormalization between);
* optionally a second graph output tapping an intermediate tensor;
* random dead channels: zeroed conv filters (and bias), zeroed BN scale and shift, sometimes a
  whole conv zeroed (edge cases for the importance criteria).

Variation the exporters show: opsets 11, 13, 17, 21 (Split sizes are an attribute before 13,
an input from 13, and ``num_outputs`` may be used from 18); weights as initializers, as
``Constant`` nodes (Paddle; shape constants too) or as ``Identity`` of an initializer (torch).

Every tensor's shape is tracked while building, so every drawn graph is valid by construction
(and checked with ``onnx.checker`` at full check). Structure is drawn from hypothesis (so
failures shrink to small graphs); float weights come from a numpy generator seeded by a drawn
integer.

The ``check_*`` functions at the bottom are the properties; ``tests/test_property.py`` and
``tools/property_long.py`` run them with different hypothesis profiles.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from hypothesis import event as _event
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSETS = (11, 13, 17, 21)
WEIGHTS = ("init", "constant", "identity")
TOLERANCE = 1e-4

ACTS = ("relu", "sigmoid", "hardsigmoid", "hardswish", "hswish_clip", "hswish_div_first", "leakyrelu",
        "relu6", "swish")
BLOCKS = ("conv", "conv", "residual", "concat", "split", "pool", "se", "bn_act", "shared")
HEADS = ("conv", "none", "gap_gemm", "flatten_gemm", "reshape_gemm", "mlp")


# ---------------------------------------------------------------------------- the builder


class Net:
    """A tiny shape-tracking ONNX builder (NCHW, or [N, F] after a flatten)."""

    def __init__(self, opset: int, weights: str, seed: int, batch) -> None:
        self.opset, self.weights, self.batch = opset, weights, batch
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self.shapes: dict[str, tuple] = {}
        self.log: list[str] = []
        self._count: collections.Counter = collections.Counter()

    def fresh(self, prefix: str) -> str:
        name = f"{prefix}{self._count[prefix]}"
        self._count[prefix] += 1
        return name

    def c(self, x: str) -> int:
        return self.shapes[x][1]

    def hw(self, x: str) -> tuple[int, int]:
        return self.shapes[x][2], self.shapes[x][3]

    # ---- constants ----
    def _store(self, name: str, array: np.ndarray) -> str:
        """A constant stored as the ``weights`` mode asks (int constants never behind Identity)."""
        if self.weights == "constant":
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}_const",
                                               value=numpy_helper.from_array(array, name)))
        elif self.weights == "identity" and array.dtype == np.float32:
            self.inits.append(numpy_helper.from_array(array, f"{name}_raw"))
            self.nodes.append(helper.make_node("Identity", [f"{name}_raw"], [name], name=f"{name}_identity"))
        else:
            self.inits.append(numpy_helper.from_array(array, name))
        return name

    def floats(self, name: str, values) -> str:
        return self._store(name, np.asarray(values, dtype=np.float32))

    def ints(self, name: str, values) -> str:
        return self._store(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        return self.floats(name, np.float32(value))

    def node(self, op: str, inputs, shape, name: str | None = None, n_out: int = 1, shapes=None, **attrs):
        name = name or self.fresh(op.lower())
        outs = [f"{name}_y"] if n_out == 1 else [f"{name}_y{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        for out, s in zip(outs, shapes or [shape]):
            self.shapes[out] = tuple(s)
        return outs[0] if n_out == 1 else outs

    def input(self, shape) -> str:
        dims = ["N" if d is None else d for d in shape]
        self.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, dims))
        self.shapes["x"] = tuple(shape)
        return "x"

    def model(self) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N" if d is None else d for d in self.shapes[o]])
                for o in self.outputs]
        graph = helper.make_graph(self.nodes, "rand", self.inputs, outs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
        onnx.checker.check_model(model, full_check=True)
        return model

    # ---- layers ----
    def conv(self, x: str, cout: int, k: int = 3, group: int = 1, stride: int = 1, bias: bool = True,
             dead=(), note: str = "", share: str | None = None) -> str:
        """``share``: reuse the weight (and bias) tensors of that earlier conv (weight tying)."""
        n, cin, h, w = self.shapes[x]
        name = self.fresh("conv")
        pad = k // 2
        if share is not None:
            proto = next(nd for nd in self.nodes if nd.name == share)
            self.log.append(f"{name}: Conv sharing the weights of {share} on {x}")
            attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
            return self.node("Conv", [x, *proto.input[1:]], (n, cout, h, w), name=name, **attrs)
        wt = (self.rng.standard_normal((cout, cin // group, k, k)) * (cin // group * k * k) ** -0.5).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        if len(dead):
            wt[list(dead)] = 0
            b[list(dead)] = 0
        inputs = [x, self.floats(f"{name}_w", wt)] + ([self.floats(f"{name}_b", b)] if bias else [])
        ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        kind = "" if group == 1 else " depthwise" if group == cin else " grouped"
        self.log.append(f"{name}: Conv{kind} {cin}->{cout} k{k} s{stride} g{group}{'' if bias else ' nobias'}"
                        f"{f' dead={sorted(dead)}' if len(dead) else ''}{note} on {x}")
        return self.node("Conv", inputs, (n, cout, ho, wo), name=name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, group=group)

    def bn(self, x: str, dead=()) -> str:
        c = self.c(x)
        name = self.fresh("bn")
        gamma = self.rng.uniform(0.5, 1.5, c)
        beta = self.rng.standard_normal(c) * 0.1
        if len(dead):
            gamma[list(dead)] = 0
            beta[list(dead)] = 0
        params = [self.floats(f"{name}_scale", gamma), self.floats(f"{name}_bias", beta),
                  self.floats(f"{name}_mean", self.rng.standard_normal(c) * 0.1),
                  self.floats(f"{name}_var", self.rng.uniform(0.5, 1.5, c))]
        self.log.append(f"{name}: BatchNormalization {c}{f' dead={sorted(dead)}' if len(dead) else ''} on {x}")
        return self.node("BatchNormalization", [x, *params], self.shapes[x], name=name, epsilon=1e-5)

    def act(self, x: str, kind: str) -> str:
        s = self.shapes[x]
        self.log.append(f"act {kind} on {x}")
        if kind == "relu":
            return self.node("Relu", [x], s)
        if kind == "sigmoid":
            return self.node("Sigmoid", [x], s)
        if kind == "hardsigmoid":
            return self.node("HardSigmoid", [x], s, alpha=0.2, beta=0.5)
        if kind == "leakyrelu":
            return self.node("LeakyRelu", [x], s, alpha=0.1)
        if kind == "hardswish" and self.opset >= 14:
            return self.node("HardSwish", [x], s)
        if kind == "relu6":
            name = self.fresh("clip")
            bounds = [self.scalar(f"{name}_min", 0.0), self.scalar(f"{name}_max", 6.0)]
            return self.node("Clip", [x, *bounds], s, name=name)
        if kind == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x], s)], s)
        # hard-swish spelled out: x * Clip(x + 3, 0, 6) / 6, in PP-OCR's or torch's order
        name = self.fresh("hswish")
        shifted = self.node("Add", [x, self.scalar(f"{name}_three", 3.0)], s)
        clipped = self.node("Clip", [shifted, self.scalar(f"{name}_lo", 0.0), self.scalar(f"{name}_hi", 6.0)], s)
        six = self.scalar(f"{name}_six", 6.0)
        if kind == "hswish_div_first":
            return self.node("Mul", [x, self.node("Div", [clipped, six], s)], s)
        return self.node("Div", [self.node("Mul", [x, clipped], s), six], s)

    def binary(self, op: str, a: str, b: str) -> str:
        self.log.append(f"{op}({a}, {b})")
        shape = tuple(None if p is None or q is None else max(p, q) for p, q in zip(self.shapes[a], self.shapes[b]))
        return self.node(op, [a, b], shape)

    def concat(self, xs: list[str]) -> str:
        n, _, h, w = self.shapes[xs[0]]
        self.log.append(f"Concat({', '.join(xs)})")
        return self.node("Concat", xs, (n, sum(self.c(x) for x in xs), h, w), axis=1)

    def split(self, x: str, sizes: list[int], style: str) -> list[str]:
        """``style``: attr (opset < 13), input (13+), num_outputs (18+, equal or ceil-chunked)."""
        n, _, h, w = self.shapes[x]
        name = self.fresh("split")
        shapes = [(n, s, h, w) for s in sizes]
        self.log.append(f"{name}: Split {sizes} ({style}) on {x}")
        if style == "num_outputs":
            return self.node("Split", [x], None, name=name, n_out=len(sizes), shapes=shapes, axis=1,
                             num_outputs=len(sizes))
        if style == "input":
            return self.node("Split", [x, self.ints(f"{name}_sizes", sizes)], None, name=name, n_out=len(sizes),
                             shapes=shapes, axis=1)
        return self.node("Split", [x], None, name=name, n_out=len(sizes), shapes=shapes, axis=1, split=sizes)

    def slice(self, x: str, start: int, end: int, axis_style: str) -> str:
        n, c, h, w = self.shapes[x]
        name = self.fresh("slice")
        axis = 1 if axis_style == "pos" else -3
        end_value = end if end < c or axis_style == "pos" else 2**62  # INT_MAX-style end like torch
        inputs = [x, self.ints(f"{name}_starts", [start]), self.ints(f"{name}_ends", [end_value]),
                  self.ints(f"{name}_axes", [axis])]
        self.log.append(f"{name}: Slice [{start}:{end}] axis {axis} on {x}")
        return self.node("Slice", inputs, (n, end - start, h, w), name=name)

    def pool(self, x: str, kind: str) -> str:
        n, c, h, w = self.shapes[x]
        self.log.append(f"{kind} on {x}")
        if kind == "MaxPool":
            return self.node("MaxPool", [x], (n, c, h // 2, w // 2), kernel_shape=[2, 2], strides=[2, 2])
        if kind == "AveragePool":
            return self.node("AveragePool", [x], (n, c, h, w), kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
                             count_include_pad=0)
        if kind == "ReduceMean":  # torch's x.mean((2, 3), keepdim=True); axes an input from opset 18
            if self.opset >= 18:
                return self.node("ReduceMean", [x, self.ints(self.fresh("axes"), [2, 3])], (n, c, 1, 1), keepdims=1)
            return self.node("ReduceMean", [x], (n, c, 1, 1), axes=[2, 3], keepdims=1)
        return self.node("GlobalAveragePool", [x], (n, c, 1, 1))

    def flatten(self, x: str) -> str:
        n, c, h, w = self.shapes[x]
        self.log.append(f"Flatten on {x}")
        return self.node("Flatten", [x], (n, c * h * w), axis=1)

    def reshape(self, x: str, target: list[int]) -> str:
        n, c, h, w = self.shapes[x]
        name = self.fresh("reshape")
        self.log.append(f"{name}: Reshape {target} on {x}")
        return self.node("Reshape", [x, self.ints(f"{name}_shape", target)], (n, c * h * w), name=name)

    def gemm(self, x: str, n_out: int, trans_b: bool, bias: bool, dead=()) -> str:
        n, k = self.shapes[x]
        name = self.fresh("gemm")
        wt = (self.rng.standard_normal((n_out, k) if trans_b else (k, n_out)) * k ** -0.5).astype(np.float32)
        b = (self.rng.standard_normal(n_out) * 0.1).astype(np.float32)
        if len(dead):
            if trans_b:
                wt[list(dead)] = 0
            else:
                wt[:, list(dead)] = 0
            b[list(dead)] = 0
        inputs = [x, self.floats(f"{name}_w", wt)] + ([self.floats(f"{name}_b", b)] if bias else [])
        self.log.append(f"{name}: Gemm {k}->{n_out} transB={int(trans_b)}{'' if bias else ' nobias'}"
                        f"{f' dead={sorted(dead)}' if len(dead) else ''} on {x}")
        return self.node("Gemm", inputs, (n, n_out), name=name, transB=int(trans_b))


@dataclass
class RandModel:
    """A drawn model and the log of what was drawn (shown by hypothesis on failure)."""

    model: onnx.ModelProto
    opset: int
    weights: str
    batch: object
    log: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = "\n    ".join(self.log)
        return f"RandModel(opset={self.opset}, weights={self.weights}, batch={self.batch},\n    {lines})"


# ---------------------------------------------------------------------------- the strategy

channels = st.integers(2, 16)


@st.composite
def dead_set(draw, n: int, allow_all: bool = True):
    """Indices of dead channels among ``n``: usually none, sometimes a few, rarely all."""
    kind = draw(st.sampled_from(["none", "none", "some", "all"] if allow_all else ["none", "none", "some"]))
    if kind == "none":
        return []
    if kind == "all":
        return list(range(n))
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    dead = [i for i, m in enumerate(mask) if m]
    return dead[:-1] if len(dead) == n and n > 1 else dead


def conv_layer(draw, net: Net, x: str, cout: int | None = None, kinds=("plain", "plain", "depthwise", "grouped"),
               strided: bool = True) -> str:
    """A conv with drawn kind, kernel, stride (only if ``strided``), bias and dead filters;
    ``cout`` fixes the width (a depthwise or grouped draw that cannot give it stays plain)."""
    cin = net.c(x)
    h, w = net.hw(x)
    kind = draw(st.sampled_from(kinds))
    group = 1
    if kind == "depthwise":
        mult = draw(st.sampled_from([1, 2])) if cout is None else (cout // cin if cout % cin == 0 else 0)
        if mult in (1, 2) and cin * mult <= 16:
            group, cout = cin, cin * mult
    elif kind == "grouped":
        divisors = [g for g in range(2, cin) if cin % g == 0 and (cout is None or cout % g == 0)]
        if divisors:
            group = draw(st.sampled_from(divisors))
            if cout is None:
                cout = group * draw(st.integers(1, max(1, 16 // group)))
    if cout is None:
        cout = draw(channels)
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 1, 1, 2])) if strided and min(h, w) >= 4 else 1
    bias = draw(st.booleans())
    return net.conv(x, cout, k=k, group=group, stride=stride, bias=bias, dead=draw(dead_set(cout)))


def maybe_bn_act(draw, net: Net, x: str) -> str:
    if draw(st.booleans()):
        x = net.bn(x, dead=draw(dead_set(net.c(x), allow_all=False)))
    if draw(st.booleans()):
        x = net.act(x, draw(st.sampled_from(ACTS)))
    return x


def branch(draw, net: Net, x: str, cout: int | None = None) -> str:
    """1–2 size-preserving convs (each with optional BN/activation) ending with ``cout`` channels."""
    depth = draw(st.integers(1, 2))
    for d in range(depth):
        x = maybe_bn_act(draw, net, conv_layer(draw, net, x, cout if d == depth - 1 else None, strided=False))
    return x


def block(draw, net: Net, x: str, kinds=BLOCKS) -> str:
    kind = draw(st.sampled_from(kinds))
    c = net.c(x)
    h, w = net.hw(x)
    if kind == "conv":
        return maybe_bn_act(draw, net, conv_layer(draw, net, x))
    if kind == "bn_act":
        return maybe_bn_act(draw, net, x)
    if kind == "residual":
        y = branch(draw, net, x, c)
        a, b = (x, y) if draw(st.booleans()) else (y, x)
        out = net.binary("Add", a, b)
        return net.act(out, "relu") if draw(st.booleans()) else out
    if kind == "concat":
        n = draw(st.integers(2, 3))
        identity = draw(st.booleans())
        parts = [x] if identity else []
        if identity and draw(st.integers(0, 4)) == 0:
            parts.append(x)  # the same tensor twice: Concat(x, x, ...)
        while len(parts) < n:
            parts.append(branch(draw, net, x, draw(st.integers(1, 8))))
        order = draw(st.permutations(range(n)))
        return net.concat([parts[i] for i in order])
    if kind == "split":
        return split_block(draw, net, x)
    if kind == "pool":
        choices = ["AveragePool"] + (["MaxPool"] if min(h, w) >= 2 else [])
        choices += ["GlobalAveragePool"] if h * w > 1 else []
        return net.pool(x, draw(st.sampled_from(choices)))
    if kind == "shared":  # one conv's weights applied to two tensors (shared heads, weight tying)
        cout = draw(channels)
        first = net.conv(x, cout, k=draw(st.sampled_from([1, 3])), bias=draw(st.booleans()),
                         dead=draw(dead_set(cout)))
        other = net.pool(x, "AveragePool") if draw(st.booleans()) else net.act(x, draw(st.sampled_from(ACTS)))
        second = net.conv(other, cout, share=first[:-len("_y")])
        first, second = maybe_bn_act(draw, net, first), maybe_bn_act(draw, net, second)
        if draw(st.booleans()):
            return net.binary("Add", first, second)
        return net.concat([first, second])
    if kind == "se":
        squeeze = draw(st.integers(1, max(1, c // 2)))
        g = net.pool(x, draw(st.sampled_from(["GlobalAveragePool", "ReduceMean"])))
        g = net.act(net.conv(g, squeeze, k=1, dead=draw(dead_set(squeeze, allow_all=False)), note=" (SE squeeze)"),
                    "relu")
        g = net.conv(g, c, k=1, dead=draw(dead_set(c, allow_all=False)), note=" (SE excite)")
        g = net.act(g, draw(st.sampled_from(["sigmoid", "hardsigmoid"])))
        a, b = (x, g) if draw(st.booleans()) else (g, x)
        return net.binary("Mul", a, b)
    raise AssertionError(kind)


def split_block(draw, net: Net, x: str) -> str:
    c = net.c(x)
    if c < 2:
        return maybe_bn_act(draw, net, conv_layer(draw, net, x))
    n = draw(st.integers(2, min(3, c)))
    merge = draw(st.sampled_from(["concat", "concat", "add"]))
    if merge == "add" and c % n:
        merge = "concat"
    equal = merge == "add" or draw(st.booleans())
    chunk = -(-c // n)
    chunked = [min(chunk, c - k * chunk) for k in range(n)]
    if net.opset >= 18 and merge == "concat" and min(chunked) > 0 and draw(st.booleans()):
        sizes = chunked  # what Split(num_outputs=n) gives: the last chunk may be smaller
    elif equal and c % n == 0:
        sizes = [c // n] * n
    else:
        cuts = sorted(draw(st.permutations(range(1, c)))[:n - 1])
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [c])]
    spelling = draw(st.sampled_from(["split", "split", "slice"]))
    if spelling == "slice":
        offsets = np.cumsum([0] + sizes).tolist()
        parts = [net.slice(x, offsets[i], offsets[i + 1], draw(st.sampled_from(["pos", "neg"]))) for i in range(n)]
    else:
        styles = ["attr"] if net.opset < 13 else ["input"]
        if net.opset >= 18 and sizes == chunked:
            styles.append("num_outputs")
        parts = net.split(x, sizes, draw(st.sampled_from(styles)))
    if merge == "add":
        parts = [maybe_bn_act(draw, net, p) for p in parts]
        out = parts[0]
        for p in parts[1:]:
            out = net.binary("Add", out, p)
        return out
    processed = []
    for k, p in enumerate(parts):
        what = draw(st.sampled_from(["keep", "act", "conv", "drop"]))
        if what == "drop" and (processed or k < n - 1):
            net.log.append(f"(part {p} unused)")
            continue
        if what == "act":
            p = net.act(p, draw(st.sampled_from(ACTS)))
        elif what == "conv":
            p = branch(draw, net, p, None)
        processed.append(p)
    if len(processed) == 1:
        return processed[0]
    order = draw(st.permutations(range(len(processed))))
    return net.concat([processed[i] for i in order])


def head(draw, net: Net, x: str) -> str:
    kind = draw(st.sampled_from(HEADS))
    if kind == "none":
        return x
    if kind == "conv":
        return net.conv(x, draw(st.integers(1, 8)), k=1, note=" (head)")
    n_out = draw(st.integers(1, 10))
    if kind == "gap_gemm" or (kind == "mlp" and draw(st.booleans())):
        x = net.pool(x, "GlobalAveragePool")
    if kind == "reshape_gemm":
        n, c, h, w = net.shapes[x]
        targets = [[0, -1], [-1, c * h * w]] + ([[n, c * h * w], [n, -1]] if n is not None else [])
        x = net.reshape(x, draw(st.sampled_from(targets)))
    else:
        x = net.flatten(x)
    if kind == "mlp":
        hidden = draw(st.integers(2, 16))
        x = net.gemm(x, hidden, draw(st.booleans()), draw(st.booleans()), dead=draw(dead_set(hidden, allow_all=False)))
        if draw(st.booleans()):
            x = net.bn(x)
        x = net.act(x, draw(st.sampled_from(["relu", "sigmoid", "leakyrelu"])))
    return net.gemm(x, n_out, draw(st.booleans()), draw(st.booleans()))


@st.composite
def cnn_models(draw, opsets=OPSETS, weights=WEIGHTS, max_blocks: int = 5, kinds=BLOCKS) -> RandModel:
    """A random valid CNN (see the module docstring); ``kinds``: the block kinds drawn from
    (repeat one to draw it more often)."""
    opset = draw(st.sampled_from(opsets))
    storage = draw(st.sampled_from(weights))
    batch = draw(st.sampled_from([1, 1, 2, None]))
    net = Net(opset, storage, draw(st.integers(0, 2**16)), batch)
    x = net.input((batch, draw(st.integers(1, 4)), draw(st.integers(4, 8)), draw(st.integers(4, 8))))
    x = maybe_bn_act(draw, net, conv_layer(draw, net, x, kinds=("plain",)))  # the stem
    taps = []
    for _ in range(draw(st.integers(0, max_blocks))):
        x = block(draw, net, x, kinds)
        taps.append(x)
    y = head(draw, net, x)
    net.outputs.append(y)
    if taps and draw(st.integers(0, 5)) == 0:  # a second output tapping an intermediate tensor
        tap = draw(st.sampled_from(taps))
        if tap != y and tap not in net.outputs:
            net.outputs.append(tap)
            net.log.append(f"extra graph output {tap}")
    net.log.append(f"output {y}")
    return RandModel(net.model(), opset, storage, batch, net.log)


# ---------------------------------------------------------------------------- the properties

def event(text: str) -> None:
    """``hypothesis.event`` inside a hypothesis test; nothing elsewhere (regression tests)."""
    try:
        _event(text)
    except InvalidArgument:  # "Cannot make event outside of a test"
        pass

# Each takes a RandModel (and drawn parameters) and raises AssertionError on a violation. Any
# other exception than OnnxPruneError where it is allowed is a failure too.


def analyze_model(m: RandModel):
    from onnxprune.graph import normalize
    from onnxprune.analysis.groups import analyze

    return analyze(normalize(m.model))


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    from onnxprune.selfcheck import run

    return run(model, feeds)


def _max_error(a: list, b: list) -> float:
    assert [x.shape for x in a] == [y.shape for y in b], ([x.shape for x in a], [y.shape for y in b])
    return max((float(np.abs(x - y).max()) for x, y in zip(a, b)), default=0.0)


def _float_params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer
               if t.data_type == TensorProto.FLOAT)


def check_groups(m: RandModel) -> None:
    """At least one prunable group, or every group blocked with a reason. The generator only
    uses constructs onnxprune supports, so the only legitimate reason is a graph output."""
    a = analyze_model(m)
    assert a.groups, "no channel group at all"
    for g in a.groups:
        assert g.channels > 0
        if not g.prunable:
            assert all(isinstance(r, str) and r for r in g.blocked), g.blocked
            spurious = [r for r in g.blocked if not r.startswith("reaches graph output")]
            assert not spurious, f"group {g.id} ({g.anchor}) blocked for an unexpected reason: {spurious}"
    assert a.prunable_groups or all(g.blocked for g in a.groups)
    event(f"prunable groups: {min(len(a.prunable_groups), 5)}{'+' if len(a.prunable_groups) >= 5 else ''}")


def check_self_check(m: RandModel) -> None:
    """``onnxprune.selfcheck.self_check`` (half of every prunable group) passes."""
    from onnxprune.selfcheck import self_check

    a = analyze_model(m)
    if not a.prunable_groups:
        event("no prunable group")
        return
    result = self_check(a)
    assert result.max_abs_error <= TOLERANCE, result
    assert result.macs_planned == result.macs_measured, result
    return None


def check_dead_oracle(m: RandModel, fraction: float, seed: int) -> None:
    """The dead-channel oracle with a drawn fraction and seed, as ``self_check`` does it, plus
    the repair of emptied tensors that the prune path applies: the pruned model passes the full
    checker, runs, matches the killed model, and its planned cost and params are measured ones.
"""
    from onnxprune.analysis.cost import CostModel
    from onnxprune.analysis.groups import analyze
    from onnxprune.decide.plan import fill_empty_tensors
    from onnxprune.rewrite import apply_removal
    from onnxprune.selfcheck import dead_channel_plan, kill_channels, random_feeds

    a = analyze_model(m)
    if not a.prunable_groups:
        event("no prunable group")
        return
    plan = dead_channel_plan(a, fraction, seed)
    if fill_empty_tensors(plan, a, {}):
        event("a tensor would have been emptied (repaired)")
    removed = plan.removed_units(a)
    killed = analyze(kill_channels(a, removed), a.input_shapes)
    plan.validate(killed)
    removed_k = plan.removed_units(killed)
    assert np.array_equal(removed_k, removed)
    pruned = apply_removal(killed, removed_k)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(a, seed)
    error = _max_error(_run(killed.model, feeds), _run(pruned, feeds))
    assert error <= TOLERANCE, f"max abs error {error}"
    planned = CostModel(killed).cost_without(removed_k)
    after = analyze(pruned, a.input_shapes)
    measured = CostModel(after).cost()
    assert measured.macs == planned.macs
    assert measured.params == _float_params(pruned)
    # Every traced tensor has the planned channel count in the pruned model.
    alive = killed.alive_ids(removed_k)
    for name, ax in killed.axes.items():
        if name in after.shapes and after.shapes[name] is not None:
            assert after.shapes[name][ax.axis] == int(alive[ax.ids].sum()), name
    assert measured.params == planned.params, (measured, planned)
    return None


def check_depth_oracle(m: RandModel, fraction: float, seed: int) -> None:
    """Width and depth together: dead channels (as :func:`check_dead_oracle`) and a drawn subset
    of the removable residual blocks made dead (``F(x) = 0``), pruned and dropped in one rewrite.
    The result passes the full checker, matches the killed model, and costs what was planned."""
    from onnxprune.analysis.cost import CostModel
    from onnxprune.decide.depth import dropped_nodes
    from onnxprune.decide.plan import PruningPlan, fill_empty_tensors
    from onnxprune.analysis.groups import analyze
    from onnxprune.rewrite import apply_removal
    from onnxprune.selfcheck import dead_channel_plan, kill_block, kill_channels, random_feeds
    from onnxprune.transform.depth import drop_blocks

    a = analyze_model(m)
    if not a.removable_blocks:
        event("no removable block")
        return
    rng = np.random.default_rng(seed)
    plan = dead_channel_plan(a, fraction, seed) if a.prunable_groups else PruningPlan()
    fill_empty_tensors(plan, a, {})
    removed = plan.removed_units(a)
    model = kill_channels(a, removed)
    chosen = []
    pick = rng.random(len(a.removable_blocks)) < 0.6
    pick[rng.integers(len(pick))] = True  # at least one
    for block, picked in zip(a.removable_blocks, pick):
        if picked:
            killed = kill_block(model, block)
            if killed is None:
                event("a branch that cannot be zeroed")
                continue
            model, chosen = killed, chosen + [block.add]
    if not chosen:
        return
    event(f"dropped {min(len(chosen), 3)}+ blocks")
    k = analyze(model, a.input_shapes)
    blocks = [b for b in k.removable_blocks if b.add in chosen]
    assert len(blocks) == len(chosen)
    removed_k = plan.removed_units(k)
    pruned = drop_blocks(apply_removal(k, removed_k), blocks)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(a, seed)
    error = _max_error(_run(model, feeds), _run(pruned, feeds))
    assert error <= TOLERANCE, f"max abs error {error}"
    planned = CostModel(k).dropping(dropped_nodes(k, blocks)).cost_without(removed_k)
    measured = CostModel(analyze(pruned, a.input_shapes)).cost()
    assert measured == planned, (measured, planned)


def check_keep_all(m: RandModel) -> None:
    """Removing nothing changes nothing: same nodes, byte-identical initializers."""
    from onnxprune.rewrite import apply_removal

    a = analyze_model(m)
    same = apply_removal(a, np.zeros(0, dtype=np.int64))
    assert [n.SerializeToString() for n in same.graph.node] == [n.SerializeToString() for n in a.model.graph.node]
    assert ({t.name: t.SerializeToString() for t in same.graph.initializer}
            == {t.name: t.SerializeToString() for t in a.model.graph.initializer})


def check_prune(m: RandModel, ratio: float, criterion: str, global_rank: bool, round_to: int,
                target_macs: float | None = None) -> None:
    """``prune_model`` + ``finalize`` at a drawn ratio (or MACs target) and criterion: the result
    passes the full checker and onnxruntime, keeps the outputs' shapes, and its cost is the one
    reported."""
    from onnxprune.analysis.cost import CostModel
    from onnxprune.errors import OnnxPruneError
    from onnxprune.analysis.groups import analyze
    from onnxprune.decide.plan import PruningPlan
    from onnxprune.pipeline import PruneOptions, finalize, prune_model
    from onnxprune.selfcheck import random_feeds

    a = analyze_model(m)
    if target_macs is None:
        options = PruneOptions(criterion=criterion, ratio=ratio, global_rank=global_rank, round_to=round_to)
    else:
        options = PruneOptions(criterion=criterion, target_macs=target_macs, global_rank=global_rank, round_to=round_to)
    try:
        result = prune_model(a, options)
    except OnnxPruneError as exc:  # allowed: a clean refusal
        event(f"prune_model refused: {str(exc)[:60]}")
        return
    finalize(result.model, a)  # OnnxPruneError here means a rejected graph: a failure
    onnx.checker.check_model(result.model, full_check=True)
    feeds = random_feeds(a, 1)
    before, after = _run(a.model, feeds), _run(result.model, feeds)
    assert [x.shape for x in before] == [y.shape for y in after]
    assert all(np.isfinite(y).all() for y in after)
    assert result.after.macs <= result.before.macs
    if target_macs is not None and result.before.macs:  # met within 0.02, or refused above
        assert abs(result.after.macs / result.before.macs - target_macs) <= 0.02 + 1e-9
    if not shared_weights(a):  # a shared weight sliced two ways becomes two copies (documented)
        assert result.after.params <= result.before.params
    measured = CostModel(analyze(result.model, a.input_shapes)).cost()
    assert measured.macs == result.after.macs and measured.params == _float_params(result.model)
    assert measured == result.after, (measured, result.after)
    assert [i.name for i in result.model.graph.input] == [i.name for i in a.model.graph.input]
    assert [o.name for o in result.model.graph.output] == [o.name for o in a.model.graph.output]
    assert list(result.model.opset_import) == list(a.model.opset_import)
    assert result.model.ir_version == a.model.ir_version
    if result.groups_pruned:
        event("pruned some group")

    # Deterministic, and the saved plan (through JSON) reproduces the same graph.
    again = prune_model(analyze_model(m), options)
    assert again.model.SerializeToString() == result.model.SerializeToString()
    plan = PruningPlan.from_dict(json.loads(json.dumps(result.plan.to_dict())))
    replay = prune_model(a, PruneOptions(criterion=criterion, plan=plan))
    assert _graph_bytes(replay.model) == _graph_bytes(result.model)


def shared_weights(a) -> bool:
    """Whether some float initializer of the analyzed model is read by several nodes."""
    floats = {t.name for t in a.model.graph.initializer if t.data_type == TensorProto.FLOAT}
    readers = collections.Counter(name for node in a.model.graph.node for name in set(node.input) if name in floats)
    return any(n > 1 for n in readers.values())


def _graph_bytes(model: onnx.ModelProto) -> bytes:
    return model.graph.SerializeToString()


# ---------------------------------------------------------------------------- drawn parameters

fractions = st.floats(0.05, 0.95)
seeds = st.integers(0, 2**16)
ratios = st.one_of(st.floats(0.0, 0.9, exclude_max=True), st.sampled_from([0.25, 0.5, 0.75]))
criteria = st.sampled_from(("l1", "l2", "bn-scale", "fpgm", "random"))
round_tos = st.sampled_from([1, 1, 2, 4])
targets = st.one_of(st.none(), st.none(), st.none(), st.floats(0.05, 1.0))

def residual_models(max_blocks: int = 5):
    """:func:`cnn_models` that draw residual blocks four times as often (for depth properties)."""
    return cnn_models(max_blocks=max_blocks, kinds=BLOCKS + ("residual",) * 6)


def properties(max_blocks: int = 5) -> dict:
    """name -> (strategies of the check's arguments, check): what tools/property_long.py runs."""
    models = cnn_models(max_blocks=max_blocks)
    return {
        "groups": ((models,), check_groups),
        "self_check": ((models,), check_self_check),
        "dead": ((models, fractions, seeds), check_dead_oracle),
        "keep_all": ((models,), check_keep_all),
        "depth": ((residual_models(max_blocks), fractions, seeds), check_depth_oracle),
        "prune": ((models, ratios, criteria, st.booleans(), round_tos, targets), check_prune),
    }
