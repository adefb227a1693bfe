"""Small hand-built ONNX graphs for unit tests (onnx.helper only, no torch).

:class:`Builder` is a tiny fluent builder: every op method adds one node (plus its weights as
seeded random initializers) and returns the name of its output tensor, so a graph reads like
the network it describes::

    g = Builder(opset=17)
    x = g.input([1, 3, 8, 8])
    y = g.conv(g.relu(g.bn(g.conv(x, 8))), 4)
    model = g.output(y).model()

Names are predictable: node ``conv0`` has weight ``conv0_w``, bias ``conv0_b`` and output
``conv0_y``; BN ``bn0`` has ``bn0_scale``, ``bn0_bias``, ``bn0_mean``, ``bn0_var``.

Opset differences are handled in one place per op: Split sizes (attribute before 13, input
from 13, ``num_outputs`` from 18 for equal splits), Squeeze/Unsqueeze axes (attribute before
13), Reduce* axes (attribute before 18).

``weights`` chooses how float weights are stored: ``"init"`` (initializers), ``"constant"``
(``Constant`` nodes, like Paddle exports) or ``"identity"`` (an ``Identity`` of an
initializer named ``<weight>_raw``, like torch exports of shared weights). Weight names are
the same in every mode (``normalize`` makes an Identity-hidden weight read ``<weight>_raw``
directly), so analyses of the three variants can be compared directly.

Shapes come from ONNX shape inference on the graph so far; where it cannot see (custom ops,
computed Reshape targets at old opsets) the op records its output shape explicitly.

The bottom of the file is a catalogue of the small architectures the tests share
(:data:`CASES`), each a function ``(opset, weights) -> ModelProto``.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSETS = (11, 13, 17, 21)


class Builder:
    """A fluent ONNX graph builder; see the module docstring."""

    def __init__(self, opset: int = 17, *, seed: int = 0, weights: str = "init") -> None:
        if weights not in ("init", "constant", "identity"):
            raise ValueError(f"weights must be init, constant or identity, not {weights!r}")
        self.opset = opset
        self.weights = weights
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[str] = []
        self.domains: dict[str, int] = {}
        self._count: collections.Counter = collections.Counter()
        self._known: dict[str, tuple] = {}  # shapes given explicitly (outputs of custom ops)
        self._inferred: dict[str, tuple] | None = None

    # ------------------------------------------------------------------ plumbing

    def _unique(self, prefix: str) -> str:
        name = f"{prefix}{self._count[prefix]}"
        self._count[prefix] += 1
        return name

    def input(self, shape, name: str = "x") -> str:
        """A float graph input; a string dim (``"N"``) is dynamic."""
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self._inferred = None
        return name

    def weight(self, name: str, values) -> str:
        """A float weight called ``name``, stored as this builder's ``weights`` mode asks."""
        array = np.asarray(values, dtype=np.float32)
        if self.weights == "init":
            self.inits.append(numpy_helper.from_array(array, name))
        elif self.weights == "constant":
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}_const",
                                               value=numpy_helper.from_array(array, name)))
        else:
            self.inits.append(numpy_helper.from_array(array, f"{name}_raw"))
            self.nodes.append(helper.make_node("Identity", [f"{name}_raw"], [name], name=f"{name}_identity"))
        self._inferred = None
        return name

    def ints(self, name: str, values) -> str:
        """An int64 initializer (shape-like constants: split sizes, axes, reshape targets)."""
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        self._inferred = None
        return name

    def random(self, shape, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def op(self, op_type: str, inputs, n_out: int = 1, *, name: str | None = None, domain: str | None = None,
           shape=None, **attrs):
        """Add a node; returns its output name (a list when ``n_out > 1``).

        ``shape`` records the (first) output's shape where ONNX shape inference cannot see it.
        """
        name = name or self._unique(op_type.lower())
        outs = [f"{name}_y"] if n_out == 1 else [f"{name}_y{k}" for k in range(n_out)]
        if domain:
            self.domains.setdefault(domain, 1)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain, **attrs))
        if shape is not None:
            self._known[outs[0]] = tuple(shape)
        self._inferred = None
        return outs[0] if n_out == 1 else outs

    def shape(self, tensor: str) -> tuple:
        """The static shape of ``tensor`` (ONNX shape inference on the graph so far)."""
        if tensor in self._known:
            return self._known[tensor]
        if self._inferred is None:
            model = self._make(outputs=[])
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
            self._inferred = {
                vi.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)
                for vi in [*inferred.graph.value_info, *inferred.graph.input]
                if vi.type.tensor_type.HasField("shape")
            }
            self._inferred.update({t.name: tuple(t.dims) for t in self.inits})
        return self._inferred[tensor]

    def output(self, *tensors: str) -> "Builder":
        self.outputs.extend(tensors)
        return self

    def _make(self, outputs) -> onnx.ModelProto:
        values = []
        for name in outputs:
            try:
                dims = list(self.shape(name))
            except KeyError:
                dims = None
            values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        graph = helper.make_graph(self.nodes, "g", self.inputs, values, self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        ir = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir)

    def model(self) -> onnx.ModelProto:
        """The model with the marked outputs (checked by ``onnx.checker`` unless a custom domain is used)."""
        model = self._make(self.outputs)
        if not self.domains:
            onnx.checker.check_model(model, full_check=True)
        return model

    # ------------------------------------------------------------------ layers with weights

    def conv(self, x: str, cout: int, k: int = 3, *, group: int = 1, stride: int = 1, pad: int | None = None,
             bias: bool = True, w=None, b=None, name: str | None = None) -> str:
        """Conv ``k``x``k`` with ``pad = k // 2`` by default; ``w``/``b`` override the random weights."""
        cin = self.shape(x)[1]
        name = name or self._unique("conv")
        w = self.random((cout, cin // group, k, k), (cin // group * k * k) ** -0.5) if w is None else w
        inputs = [x, self.weight(f"{name}_w", w)]
        if bias:
            inputs.append(self.weight(f"{name}_b", self.random(cout, 0.1) if b is None else b))
        pad = k // 2 if pad is None else pad
        known = None
        if x in self._known:  # after a custom op, where ONNX shape inference stops
            n, _, h, w_ = self._known[x]
            known = (n, cout, (h + 2 * pad - k) // stride + 1, (w_ + 2 * pad - k) // stride + 1)
        return self.op("Conv", inputs, name=name, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4, group=group, shape=known)

    def conv_transpose(self, x: str, cout: int, k: int = 2, *, stride: int = 2, group: int = 1,
                       bias: bool = True, name: str | None = None) -> str:
        """ConvTranspose without padding: ``W[C_in, C_out/group, k, k]``."""
        cin = self.shape(x)[1]
        name = name or self._unique("convt")
        inputs = [x, self.weight(f"{name}_w", self.random((cin, cout // group, k, k), (cin * k * k) ** -0.5))]
        if bias:
            inputs.append(self.weight(f"{name}_b", self.random(cout, 0.1)))
        return self.op("ConvTranspose", inputs, name=name, kernel_shape=[k, k], strides=[stride, stride], group=group)

    def bn(self, x: str, *, gamma=None, name: str | None = None) -> str:
        c = self.shape(x)[1]
        name = name or self._unique("bn")
        gamma = self.rng.uniform(0.5, 1.5, c) if gamma is None else gamma
        params = [
            self.weight(f"{name}_scale", gamma),
            self.weight(f"{name}_bias", self.random(c, 0.1)),
            self.weight(f"{name}_mean", self.random(c, 0.1)),
            self.weight(f"{name}_var", self.rng.uniform(0.5, 1.5, c)),
        ]
        return self.op("BatchNormalization", [x, *params], name=name, epsilon=1e-5)

    def gemm(self, x: str, n: int, *, trans_b: bool = True, bias: bool = True, w=None,
             name: str | None = None) -> str:
        """``Gemm(x, W, b)``; ``W`` is ``[N, K]`` with ``trans_b`` (torch's Linear), else ``[K, N]``."""
        k = self.shape(x)[1]
        name = name or self._unique("gemm")
        if w is None:
            w = self.random((n, k) if trans_b else (k, n), k ** -0.5)
        inputs = [x, self.weight(f"{name}_w", w)]
        if bias:
            inputs.append(self.weight(f"{name}_b", self.random(n, 0.1)))
        return self.op("Gemm", inputs, name=name, transB=int(trans_b), shape=(self.shape(x)[0], n))

    def matmul(self, x: str, n: int, *, w=None, name: str | None = None) -> str:
        """``MatMul(x, W[K, N])`` over the last axis of ``x``."""
        k = self.shape(x)[-1]
        name = name or self._unique("matmul")
        w = self.random((k, n), k ** -0.5) if w is None else w
        return self.op("MatMul", [x, self.weight(f"{name}_w", w)], name=name)

    # ------------------------------------------------------------------ weight-free ops

    def unary(self, op_type: str, x: str, **attrs) -> str:
        """A shape-preserving op (the shape is carried over explicitly after custom ops)."""
        return self.op(op_type, [x], shape=self._known.get(x), **attrs)

    def relu(self, x: str) -> str:
        return self.unary("Relu", x)

    def sigmoid(self, x: str) -> str:
        return self.unary("Sigmoid", x)

    def gap(self, x: str) -> str:
        return self.unary("GlobalAveragePool", x)

    def binary(self, op_type: str, a: str, b) -> str:
        """``op_type(a, b)``; a numpy ``b`` becomes a float constant ``<node>_c``."""
        name = self._unique(op_type.lower())
        if not isinstance(b, str):
            b = self.weight(f"{name}_c", b)
        return self.op(op_type, [a, b], name=name)

    def add(self, a: str, b) -> str:
        return self.binary("Add", a, b)

    def mul(self, a: str, b) -> str:
        return self.binary("Mul", a, b)

    def div(self, a: str, b) -> str:
        return self.binary("Div", a, b)

    def concat(self, xs, axis: int = 1) -> str:
        return self.op("Concat", list(xs), axis=axis)

    def split(self, x: str, sizes, axis: int = 1) -> list[str]:
        """Split into ``sizes`` along ``axis``, written the way opset ``self.opset`` asks."""
        sizes = [int(s) for s in sizes]
        name = self._unique("split")
        equal = len(set(sizes)) == 1
        if self.opset >= 18 and equal:
            return self.op("Split", [x], len(sizes), name=name, axis=axis, num_outputs=len(sizes))
        if self.opset >= 13:
            return self.op("Split", [x, self.ints(f"{name}_sizes", sizes)], len(sizes), name=name, axis=axis)
        return self.op("Split", [x], len(sizes), name=name, axis=axis, split=sizes)

    def slice(self, x: str, start: int, end: int, axis: int = 1) -> str:
        """``x[start:end]`` along ``axis`` (Slice with constant inputs, opset 10+)."""
        name = self._unique("slice")
        bounds = [self.ints(f"{name}_{key}", [v]) for key, v in (("starts", start), ("ends", end), ("axes", axis))]
        return self.op("Slice", [x, *bounds], name=name)

    def flatten(self, x: str, axis: int = 1) -> str:
        return self.op("Flatten", [x], axis=axis)

    def reshape(self, x: str, target) -> str:
        """Reshape to a constant ``target``."""
        name = self._unique("reshape")
        return self.op("Reshape", [x, self.ints(f"{name}_shape", target)], name=name)

    def reshape_computed(self, x: str, tail) -> str:
        """Paddle-style ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), tail))``."""
        name = self._unique("reshape")
        batch = self.op("Gather", [self.op("Shape", [x]), self.ints(f"{name}_index", 0)], axis=0)
        batch = self.unsqueeze(batch, [0])
        target = self.op("Concat", [batch, self.ints(f"{name}_tail", tail)], axis=0)
        # Older opsets' shape inference cannot see through the computed target; record it.
        dims, fixed = self.shape(x), int(np.prod([d for d in tail if d != -1]))
        known = [dims[0], *(int(np.prod(dims[1:])) // fixed if d == -1 else d for d in tail)]
        return self.op("Reshape", [x, target], name=name, shape=known)

    def unsqueeze(self, x: str, axes) -> str:
        name = self._unique("unsqueeze")
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(f"{name}_axes", axes)], name=name)
        return self.op("Unsqueeze", [x], name=name, axes=list(axes))

    def reduce_mean(self, x: str, axes, keepdims: int = 1) -> str:
        name = self._unique("reducemean")
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(f"{name}_axes", axes)], name=name, keepdims=keepdims)
        return self.op("ReduceMean", [x], name=name, axes=list(axes), keepdims=keepdims)


# ---------------------------------------------------------------------- the shared catalogue
# Each returns the model; the docstring says which groups it has (see tests/test_groups.py).


def conv_bn_relu_conv(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """x[1,3,8,8] → conv0(8) → bn0 → relu → conv1(4) → out. Groups: g0 conv0 (8), g1 conv1 (4, output)."""
    g = Builder(opset, weights=weights)
    y = g.conv(g.relu(g.bn(g.conv(g.input([1, 3, 8, 8]), 8))), 4)
    return g.output(y).model()


def residual(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(6) → relu → conv1(6); add0(conv0_y, conv1_y) → conv2(4) → out. Groups: {conv0, conv1} (6), conv2."""
    g = Builder(opset, weights=weights)
    a = g.conv(g.input([1, 3, 8, 8]), 6)
    b = g.conv(g.relu(a), 6)
    return g.output(g.conv(g.add(a, b), 4)).model()


def concat_channels(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(4) and conv1(6) of x → concat0 → conv2(5) → out. Groups: conv0 (4), conv1 (6), conv2 (5)."""
    g = Builder(opset, weights=weights)
    x = g.input([1, 3, 8, 8])
    return g.output(g.conv(g.concat([g.conv(x, 4), g.conv(x, 6)]), 5)).model()


def split_concat(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """C2f-style: conv0(8) → split0 [4, 4]; y1 → conv1(4); concat0(y0, y1, conv1_y) → conv2(6) → out.

    Groups: conv0 (8), conv1 (4), conv2 (6).
    """
    g = Builder(opset, weights=weights)
    y0, y1 = g.split(g.conv(g.input([1, 3, 8, 8]), 8), [4, 4])
    z = g.conv(g.relu(y1), 4)
    return g.output(g.conv(g.concat([y0, y1, z]), 6)).model()


def slice_chunk(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """YOLOv5-style chunk by Slice: conv0(8) → slice0 [0:3], slice1 [3:8]; slice0 → conv1(3);
    concat0(conv1_y, slice1_y) → conv2(2) → out. Groups: conv0 (8), conv1 (3), conv2."""
    g = Builder(opset, weights=weights)
    y = g.conv(g.input([1, 3, 8, 8]), 8)
    a, b = g.slice(y, 0, 3), g.slice(y, 3, 8)
    return g.output(g.conv(g.concat([g.conv(g.relu(a), 3), b]), 2)).model()


def depthwise(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(8) → bn → relu → conv1 depthwise (group 8) → bn → relu → conv2(6) → out.

    Groups: {conv0, conv1} (8 units), conv2.
    """
    g = Builder(opset, weights=weights)
    y = g.relu(g.bn(g.conv(g.input([1, 3, 8, 8]), 8)))
    y = g.relu(g.bn(g.conv(y, 8, group=8)))
    return g.output(g.conv(y, 6, k=1)).model()


def depthwise_multiplier(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(4) → conv1 (group 4, 8 outputs: 2 per input channel) → relu → conv2(3) → out.

    Groups: {conv0, conv1} (4 units of 1 input + 2 output channels), conv2.
    """
    g = Builder(opset, weights=weights)
    y = g.conv(g.relu(g.conv(g.input([1, 3, 8, 8]), 4)), 8, group=4)
    return g.output(g.conv(g.relu(y), 3, k=1)).model()


def grouped(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(8) → relu → conv1 (group 2: 4 in / 4 out per conv-group) → relu → conv2(3) → out.

    Groups: {conv0, conv1} with 2 units (the conv-groups), conv2.
    """
    g = Builder(opset, weights=weights)
    y = g.conv(g.relu(g.conv(g.input([1, 3, 8, 8]), 8)), 8, group=2)
    return g.output(g.conv(g.relu(y), 3, k=1)).model()


def se_gate(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(8) trunk → relu → gap → conv1(2) squeeze → relu → conv2(8) excite → sigmoid →
    mul(trunk, gate) → conv3(4) → out. Groups: {conv0, conv2} (8), conv1 (2), conv3."""
    g = Builder(opset, weights=weights)
    trunk = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    gate = g.sigmoid(g.conv(g.relu(g.conv(g.gap(trunk), 2, k=1)), 8, k=1))
    return g.output(g.conv(g.mul(trunk, gate), 4)).model()


def flatten_gemm(opset: int = 17, weights: str = "init", how: str = "flatten") -> onnx.ModelProto:
    """conv0(4) on 3x3 → relu → (flatten | reshape [1,-1] | reshape [1, 36] | computed reshape
    [N, -1] | computed reshape [N, 36]) → gemm0(5) → out. Groups: conv0 (4), gemm0 (5)."""
    g = Builder(opset, weights=weights)
    y = g.relu(g.conv(g.input([1, 2, 3, 3]), 4))
    if how == "flatten":
        y = g.flatten(y)
    elif how == "reshape":
        y = g.reshape(y, [1, -1])
    elif how == "reshape36":
        y = g.reshape(y, [1, 36])
    elif how == "computed":
        y = g.reshape_computed(y, [-1])
    elif how == "computed36":
        y = g.reshape_computed(y, [36])
    else:
        raise ValueError(how)
    return g.output(g.gemm(y, 5)).model()


def mlp(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """x[1,16] → gemm0(32) → relu → gemm1(10) → out. Groups: gemm0 (32), gemm1 (10)."""
    g = Builder(opset, weights=weights)
    return g.output(g.gemm(g.relu(g.gemm(g.input([1, 16]), 32)), 10)).model()


def matmul_tokens(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """x[1,5,16] → matmul0(32) → add0(bias [32]) → relu → matmul1(8) → out. Groups: matmul0 (32), matmul1."""
    g = Builder(opset, weights=weights)
    h = g.relu(g.add(g.matmul(g.input([1, 5, 16]), 32), g.random(32, 0.1)))
    return g.output(g.matmul(h, 8)).model()


def conv_transpose(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(6) → relu → convt0(4, k2 s2) → relu → conv1(3) → out. Groups: conv0 (6), convt0 (4), conv1."""
    g = Builder(opset, weights=weights)
    y = g.conv_transpose(g.relu(g.conv(g.input([1, 3, 4, 4]), 6)), 4)
    return g.output(g.conv(g.relu(y), 3)).model()


def per_channel_consts(opset: int = 17, weights: str = "init") -> onnx.ModelProto:
    """conv0(4) → add0 [1,4,1,1] → mul0 [4,1,1] → div0 scalar → conv1(3) → out."""
    g = Builder(opset, weights=weights)
    y = g.conv(g.input([1, 3, 8, 8]), 4)
    y = g.add(y, g.random((1, 4, 1, 1)))
    y = g.mul(y, g.random((4, 1, 1)))
    y = g.div(y, np.float32(2.0))
    return g.output(g.conv(y, 3)).model()


CASES = {
    "conv_bn_relu_conv": conv_bn_relu_conv,
    "residual": residual,
    "concat_channels": concat_channels,
    "split_concat": split_concat,
    "slice_chunk": slice_chunk,
    "depthwise": depthwise,
    "depthwise_multiplier": depthwise_multiplier,
    "grouped": grouped,
    "se_gate": se_gate,
    "flatten_gemm": flatten_gemm,
    "reshape_gemm": lambda opset=17, weights="init": flatten_gemm(opset, weights, "reshape"),
    "reshape36_gemm": lambda opset=17, weights="init": flatten_gemm(opset, weights, "reshape36"),
    "computed_reshape_gemm": lambda opset=17, weights="init": flatten_gemm(opset, weights, "computed"),
    "computed36_reshape_gemm": lambda opset=17, weights="init": flatten_gemm(opset, weights, "computed36"),
    "mlp": mlp,
    "matmul_tokens": matmul_tokens,
    "conv_transpose": conv_transpose,
    "per_channel_consts": per_channel_consts,
}
