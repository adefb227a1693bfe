"""An ONNX graph as a trainable torch module, and its weights written back by initializer name.

:class:`GraphModule` runs the graph's nodes in order, each op by the torch function its rule
names in :data:`OPS`; every floating-point initializer is an ``nn.Parameter`` keyed by its
initializer name (integer constants are buffers). Training it and calling :func:`write_back`
changes the values of the initializers and nothing else: the graph, node and tensor names, and
metadata stay as ``prune`` wrote them.

**Why not onnx2torch.** It is the well-kept converter, and we tried it first. Its only release
(1.5.15) hard-requires ``torchvision``, which installs a second torch build beside the CPU one
(pip resolves ``torch 2.14.1`` with CUDA), and its converted modules keep MatMul, Mul and Add
constants as frozen buffers under generated names and Gemm weights transposed, so writing
trained values back by initializer name needs a per-op inverse anyway. An interpreter keyed by
initializer name is the smaller, exact bridge.

**Ops** (ONNX spec semantics, default domain, opsets 11-21): those in :data:`OPS`. A graph with
any other op (or ConvTranspose's ``auto_pad``, or a ``wrap`` Pad) is refused with the op's
name; reflect and edge Pads work on any axis. ``LSTM``/``GRU``/``RNN`` run step by step
(:mod:`onnxprune.torch.recurrent`); ``auto_pad`` SAME_UPPER, SAME_LOWER and VALID are resolved
from the input's size. Weights held in ``Constant`` nodes (as some converters write
them) stay fixed: ``onnxprune prune`` writes every weight as an initializer, so a pruned file
trains whole. BatchNormalization always uses its running statistics (the pruned model's
own; its scale and shift train), which keeps fine-tuning stable at small batches. Control flow
(If, Loop, Scan) is not supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from ..errors import OnnxPruneError
from . import recurrent

Op = Callable[..., object]
OPS: dict[str, Op] = {}


def op(*names: str):
    def register(fn: Op) -> Op:
        for name in names:
            OPS[name] = fn
        return fn
    return register


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _pads(a: dict, rank: int, spatial=None, kernel=None):
    """``(begin, end)`` pads of the spatial axes; ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID are
    resolved from the input's spatial sizes and the kernel (ONNX Conv/pool spec)."""
    auto = a.get("auto_pad", "NOTSET")
    if auto == "NOTSET":
        pads = a.get("pads", [0] * (2 * rank))
        return list(pads[:rank]), list(pads[rank:])
    if auto == "VALID":
        return [0] * rank, [0] * rank
    if auto not in ("SAME_UPPER", "SAME_LOWER") or spatial is None:
        raise OnnxPruneError(f"auto_pad {auto} is not supported here by the torch bridge")
    strides, dilations = a.get("strides", [1] * rank), a.get("dilations", [1] * rank)
    total = [max(0, (math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n)
             for n, s, k, d in zip(spatial, strides, kernel, dilations)]
    small, large = [t // 2 for t in total], [t - t // 2 for t in total]
    return (small, large) if auto == "SAME_UPPER" else (large, small)


def _padded(x, a: dict, rank: int, kernel, value: float = 0.0):
    begin, end = _pads(a, rank, x.shape[2:], kernel)
    if begin == end:
        return x, tuple(begin)
    flat = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]
    return F.pad(x, flat, value=value), (0,) * rank


@op("Conv")
def _conv(a, x, w, b=None):
    rank = w.dim() - 2
    x, padding = _padded(x, a, rank, w.shape[2:])
    fn = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return fn(x, w, b, a.get("strides", [1] * rank), padding, a.get("dilations", [1] * rank), a.get("group", 1))


@op("ConvTranspose")
def _conv_transpose(a, x, w, b=None):
    rank = w.dim() - 2
    if a.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in a:
        raise OnnxPruneError("ConvTranspose with auto_pad or output_shape is not supported by the torch bridge")
    begin, end = _pads(a, rank)
    if begin != end:
        raise OnnxPruneError("ConvTranspose with asymmetric pads is not supported by the torch bridge")
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]
    return fn(x, w, b, a.get("strides", [1] * rank), tuple(begin), a.get("output_padding", [0] * rank),
              a.get("group", 1), a.get("dilations", [1] * rank))


@op("Gemm")
def _gemm(a, x, w, c=None):
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


OPS["MatMul"] = lambda a, x, y: torch.matmul(x, y)
OPS["Add"] = lambda a, x, y: x + y
OPS["Sub"] = lambda a, x, y: x - y
OPS["Mul"] = lambda a, x, y: x * y
OPS["Div"] = lambda a, x, y: torch.div(x, y, rounding_mode="trunc") if not x.is_floating_point() else x / y
OPS["Pow"] = lambda a, x, y: torch.pow(x, y.detach())  # an exponent is structure, not a weight to train
OPS["Max"] = lambda a, *xs: _fold(torch.maximum, xs)
OPS["Min"] = lambda a, *xs: _fold(torch.minimum, xs)
OPS["Sum"] = lambda a, *xs: _fold(torch.add, xs)
OPS["Mean"] = lambda a, *xs: _fold(torch.add, xs) / len(xs)
OPS["Equal"] = lambda a, x, y: x == y
OPS["Less"] = lambda a, x, y: x < y
OPS["Greater"] = lambda a, x, y: x > y
OPS["Not"] = lambda a, x: ~x
OPS["Where"] = lambda a, c, x, y: torch.where(c, x, y)
OPS["Relu"] = lambda a, x: F.relu(x)
OPS["LeakyRelu"] = lambda a, x: F.leaky_relu(x, a.get("alpha", 0.01))
OPS["Elu"] = lambda a, x: F.elu(x, a.get("alpha", 1.0))
OPS["PRelu"] = lambda a, x, s: torch.where(x >= 0, x, x * s)
OPS["Sigmoid"] = lambda a, x: torch.sigmoid(x)
OPS["HardSigmoid"] = lambda a, x: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1)
OPS["HardSwish"] = lambda a, x: F.hardswish(x)
OPS["Tanh"] = lambda a, x: torch.tanh(x)
OPS["Softplus"] = lambda a, x: F.softplus(x)
OPS["Mish"] = lambda a, x: F.mish(x)
OPS["Erf"] = lambda a, x: torch.erf(x)
OPS["Gelu"] = lambda a, x: F.gelu(x, approximate="tanh" if a.get("approximate", "none") == "tanh" else "none")
OPS["Exp"] = lambda a, x: torch.exp(x)
OPS["Log"] = lambda a, x: torch.log(x)
OPS["Sqrt"] = lambda a, x: torch.sqrt(x)
OPS["Neg"] = lambda a, x: -x
OPS["Abs"] = lambda a, x: torch.abs(x)
OPS["Reciprocal"] = lambda a, x: torch.reciprocal(x)
OPS["Floor"] = lambda a, x: torch.floor(x)
OPS["Ceil"] = lambda a, x: torch.ceil(x)
OPS["Identity"] = lambda a, x: x
OPS["Dropout"] = lambda a, x, *rest: x
OPS["Softmax"] = lambda a, x: torch.softmax(x, a.get("axis", -1))
OPS["LogSoftmax"] = lambda a, x: torch.log_softmax(x, a.get("axis", -1))
OPS["Transpose"] = lambda a, x: x.permute(*a.get("perm", list(range(x.dim() - 1, -1, -1))))
OPS["Concat"] = lambda a, *xs: torch.cat(xs, a["axis"])
OPS["Shape"] = lambda a, x: torch.tensor(x.shape[a.get("start", 0):a.get("end", x.dim())], dtype=torch.int64)
OPS["Flatten"] = lambda a, x: x.reshape(int(np.prod(x.shape[:a.get("axis", 1)])), -1)
OPS["GlobalAveragePool"] = lambda a, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
OPS["GlobalMaxPool"] = lambda a, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)
OPS["Expand"] = lambda a, x, s: x * torch.ones(_ints(s), dtype=x.dtype)
OPS["Tile"] = lambda a, x, r: x.repeat(*_ints(r))
OPS["Range"] = lambda a, s, e, d: torch.arange(s.item(), e.item(), d.item(), dtype=s.dtype)
OPS["LSTM"], OPS["GRU"], OPS["RNN"] = recurrent.lstm, recurrent.gru, recurrent.rnn


def _fold(fn, xs):
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


@op("Clip")
def _clip(a, x, lo=None, hi=None):
    """Clip's bounds are structure (ReLU6, hard-swish), not weights: they do not train. One
    ``clamp`` (its backward is one mask) where the bounds are scalars, as they always are in
    ONNX Clip-11+."""
    lo = a.get("min") if lo is None else lo
    hi = a.get("max") if hi is None else hi
    lo = float(torch.as_tensor(lo).detach()) if lo is not None else None
    hi = float(torch.as_tensor(hi).detach()) if hi is not None else None
    return x if lo is None and hi is None else torch.clamp(x, lo, hi)


@op("BatchNormalization")
def _batch_norm(a, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


@op("LayerNormalization")
def _layer_norm(a, x, scale, bias=None):
    axis = a.get("axis", -1) % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, a.get("epsilon", 1e-5))


@op("InstanceNormalization")
def _instance_norm(a, x, scale, bias):
    return F.instance_norm(x, weight=scale, bias=bias, eps=a.get("epsilon", 1e-5))


def _pool_op(kind: str):
    def run(a, x):
        rank = x.dim() - 2
        kernel, strides = a["kernel_shape"], a.get("strides", [1] * rank)
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "MaxPool":
            x, padding = _padded(x, a, rank, kernel, -math.inf)
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
            return fn(x, kernel, strides, padding, a.get("dilations", [1] * rank), ceil)
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
        include = bool(a.get("count_include_pad", 0))
        padded, padding = _padded(x, a, rank, kernel)
        out = fn(padded, kernel, strides, padding, ceil, include)
        if padded is x or include:
            return out
        # asymmetric pads were applied explicitly: divide by the count of real cells instead
        ones, _ = _padded(torch.ones_like(x[:1, :1]), a, rank, kernel)
        return out / fn(ones, kernel, strides, padding, ceil, True)
    return run


OPS["AveragePool"], OPS["MaxPool"] = _pool_op("AveragePool"), _pool_op("MaxPool")


@op("Reshape")
def _reshape(a, x, shape):
    dims = _ints(shape)
    if not a.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _axes(a, axes, rank):
    values = _ints(axes) if axes is not None else a.get("axes")
    return None if values is None else sorted(v % rank for v in values)


@op("Squeeze")
def _squeeze(a, x, axes=None):
    dims = _axes(a, axes, x.dim())
    return x.squeeze() if dims is None else x.squeeze(tuple(dims))


@op("Unsqueeze")
def _unsqueeze(a, x, axes=None):
    for d in _axes(a, axes, x.dim() + len(_ints(axes) if axes is not None else a["axes"])):
        x = x.unsqueeze(d)
    return x


def _reduce(fn):
    def run(a, x, axes=None):
        dims = _axes(a, axes, x.dim())
        if dims is None:
            if a.get("noop_with_empty_axes", 0):
                return x
            dims = list(range(x.dim()))
        return fn(x, dims, bool(a.get("keepdims", 1)))
    return run


OPS["ReduceMean"] = _reduce(lambda x, d, k: x.mean(d, keepdim=k))
OPS["ReduceSum"] = _reduce(lambda x, d, k: x.sum(d, keepdim=k))
OPS["ReduceMax"] = _reduce(lambda x, d, k: x.amax(d, keepdim=k))
OPS["ReduceMin"] = _reduce(lambda x, d, k: x.amin(d, keepdim=k))
OPS["ReduceL2"] = _reduce(lambda x, d, k: x.pow(2).sum(d, keepdim=k).sqrt())


@op("Gather")
def _gather(a, x, index):
    axis = a.get("axis", 0) % x.dim()
    index = index.long()
    index = torch.where(index < 0, index + x.shape[axis], index)
    picked = x.index_select(axis, index.reshape(-1))
    return picked.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1:]))


@op("Slice")
def _slice(a, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        n = x.shape[ax]
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        if st > 0:
            index = [slice(None)] * x.dim()
            index[ax] = slice(max(0, min(n, s)), max(0, min(n, e)), st)
            x = x[tuple(index)]
        else:  # ONNX: start clamped to [0, n-1], end to [-1, n-1]
            s, e = max(0, min(n - 1, s)), max(-1, min(n - 1, e))
            x = x.index_select(ax % x.dim(), torch.arange(s, e, st, dtype=torch.long))
    return x


@op("Split")
def _split(a, x, split=None, *, n_out=1):
    axis = a.get("axis", 0)
    sizes = _ints(split) if split is not None else a.get("split")
    if sizes is None:
        n = a.get("num_outputs", n_out)
        sizes = [math.ceil(x.shape[axis] / n)] * (n - 1)
        sizes.append(x.shape[axis] - sum(sizes))
    return tuple(torch.split(x, sizes, axis))


@op("Pad")
def _pad(a, x, pads=None, value=None, axes=None):
    mode = a.get("mode", "constant")
    if axes is not None or mode not in ("constant", "reflect", "edge"):
        raise OnnxPruneError(f"Pad with axes or mode {mode!r} is not supported by the torch bridge")
    p = _ints(pads) if pads is not None else a["pads"]
    rank = x.dim()
    if mode == "constant":
        flat = [v for i in reversed(range(rank)) for v in (p[i], p[i + rank])]
        return F.pad(x, flat, value=float(value) if value is not None else a.get("value", 0.0))
    for axis in range(rank):  # reflect/edge on any axis: gather the mirrored or clamped indices
        begin, end, n = p[axis], p[axis + rank], x.shape[axis]
        if begin or end:
            index = torch.arange(-begin, n + end)
            if mode == "edge":
                index = index.clamp(0, n - 1)
            else:
                index = (n - 1) - ((n - 1) - index.abs()).abs()
            x = x.index_select(axis, index)
    return x


@op("Resize")
def _resize(a, x, roi=None, scales=None, sizes=None):
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise OnnxPruneError(f"Resize mode {mode!r} is not supported by the torch bridge")
    kw = {"mode": "nearest" if mode == "nearest" else ("bilinear" if x.dim() == 4 else "linear")}
    if mode == "linear":
        kw["align_corners"] = a.get("coordinate_transformation_mode", "half_pixel") == "align_corners"
    if sizes is not None and sizes.numel():
        return F.interpolate(x, size=_ints(sizes)[2:], **kw)
    return F.interpolate(x, scale_factor=[float(s) for s in scales.tolist()[2:]], **kw)


@op("Cast")
def _cast(a, x):
    dtype = helper.tensor_dtype_to_np_dtype(a["to"])
    return x.to(torch.from_numpy(np.zeros(0, dtype=dtype)).dtype)


@op("ConstantOfShape")
def _constant_of_shape(a, shape):
    value = a.get("value")
    fill = torch.from_numpy(value.reshape(-1)) if value is not None else torch.zeros(1)
    return fill.expand(_ints(shape)).clone()


@op("Einsum")
def _einsum(a, *xs):
    return torch.einsum(a["equation"], *xs)


@op("DepthToSpace")
def _depth_to_space(a, x):
    """ONNX DepthToSpace-13: DCR (the default) reads depth as ``(b, b, C)``, CRD as ``(C, b, b)``."""
    b = int(a["blocksize"])
    n, c, h, w = x.shape
    if a.get("mode", "DCR") == "CRD":
        return F.pixel_shuffle(x, b)
    return x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def _space_to_depth(a, x):
    """ONNX SpaceToDepth-13: output channel ``(i·b + j)·C + c``."""
    b = int(a["blocksize"])
    n, c, h, w = x.shape
    return x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)


def _attributes(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value).copy()
        elif isinstance(value, (list, tuple)):
            value = list(value)
        out[attr.name] = value
    return out


class GraphModule(nn.Module):
    """``model``'s main graph as a torch module (see the module doc).

    ``forward(*inputs)`` takes the graph inputs in order, as tensors, and returns a tuple of the
    graph outputs. ``parameter_names`` maps each parameter's attribute name (dots replaced) to
    its initializer name. Errors: ``OnnxPruneError`` naming the first unsupported op.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in OPS and n.op_type != "Constant"}
                             | {n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")})
        if unsupported:
            raise OnnxPruneError(f"the torch bridge does not support op {unsupported[0]} (supported: see "
                                 "onnxprune.torch.graph_module.OPS)")
        self.parameter_names: dict[str, str] = {}
        self._tensors: dict[str, str] = {}
        statistics = {n.input[i] for n in graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
        for k, init in enumerate(graph.initializer):
            array = numpy_helper.to_array(init).copy()
            key = f"t{k}"
            if array.dtype.kind == "f" and init.name not in statistics:
                self.register_parameter(key, nn.Parameter(torch.from_numpy(array)))
                self.parameter_names[key] = init.name
            else:
                self.register_buffer(key, torch.from_numpy(array), persistent=False)
            self._tensors[init.name] = key
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attributes(n)) for n in graph.node]
        initializers = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in initializers]
        self.output_names = [o.name for o in graph.output]

    def forward(self, *inputs: torch.Tensor) -> tuple:
        env: dict[str, object] = dict(zip(self.input_names, inputs))
        for name, key in self._tensors.items():
            env[name] = getattr(self, key)
        for op_type, ins, outs, attrs in self._nodes:
            if op_type == "Constant":
                env[outs[0]] = torch.from_numpy(np.asarray(_constant_value(attrs)))
                continue
            args = [env[i] if i else None for i in ins]
            while args and args[-1] is None:
                args.pop()
            if op_type == "Split":
                result = _split(attrs, *args, n_out=len(outs))
            else:
                result = OPS[op_type](attrs, *args)
            if isinstance(result, tuple):
                env.update(zip(outs, result))
            else:
                env[outs[0]] = result
        return tuple(env[o] for o in self.output_names)


def _constant_value(attrs: dict):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = attrs[key]
            dtype = np.float32 if "float" in key else (np.int64 if "int" in key else None)
            return np.asarray(value, dtype=dtype)
    raise OnnxPruneError("Constant without a value attribute is not supported by the torch bridge")


@torch.no_grad()
def write_back(module: GraphModule, model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose float initializers hold ``module``'s current parameter values
    (same names, shapes and dtypes); nothing else changes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    values = {init_name: getattr(module, key).detach().cpu().numpy() for key, init_name in module.parameter_names.items()}
    for k, init in enumerate(out.graph.initializer):
        if init.name in values:
            array = values[init.name].astype(helper.tensor_dtype_to_np_dtype(init.data_type))
            if tuple(array.shape) != tuple(init.dims):
                raise OnnxPruneError(f"internal error: {init.name} changed shape in training")
            out.graph.initializer[k].CopyFrom(numpy_helper.from_array(array, init.name))
    return out
