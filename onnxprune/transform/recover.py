"""Recovery without training: repair, on calibration data, the layers that pruning disturbed.

Both methods walk the pruned model's layers in topological order and fix one layer at a time,
measuring the already-repaired pruned model's own activations, so that errors do not pile up;
the targets are the original model's activations at the same point (same tensor names).

* ``reconstruct`` (He, Zhang & Sun, "Channel Pruning for Accelerating Very Deep Neural
  Networks", ICCV 2017; Luo et al., ThiNet, ICCV 2017; AIMET's channel pruning): every layer
  whose *input* channels were cut (Conv with ``group=1``, Gemm, MatMul with a constant weight)
  is refit by ridge least squares, ``min |A W - Y|^2 + lam |W|^2``: ``A`` holds the pruned
  model's inputs of the layer (im2col patches at sampled output positions for a Conv), ``Y``
  the original model's outputs there, ``lam = ridge * mean(diag(A'A))``. The bias is refit too
  (an intercept column), except for MatMul.
* ``bn`` (adaptive BatchNorm, Li et al., EagleEye, ECCV 2020, generalized to folded BN): every
  Conv, Gemm and BatchNormalization from the first pruned node on gets a per-channel affine
  correction ``y' = a y + b`` folded into its weights and bias (a BatchNorm: into its mean and
  variance), chosen so that each kept output channel has the original's mean and variance on
  the calibration data. On a BN-kept export this re-estimates what BN normalizes; on a folded
  export it does the same through the conv that absorbed BN.

A fix is applied only where it lowers the layer's error on the calibration rows (relative
squared error against the original), so recovery never makes a layer's output worse there, and
a layer whose output already matches (dead channels removed) is left exactly as it was.

Cost: about one run of each model over the calibration data, segment by segment between the
fixed layers, plus one extra run of each fixed layer. Memory: for every calibration sample, the
activations that cross the current layer (as many as a residual network carries there), one
layer output, and ``samples * positions`` rows of ``C_in * kh * kw`` floats (float64) for a
``reconstruct`` least-squares fit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import OnnxPruneError
from ..analysis.groups import IN, Analysis
from ..runtime.activations import Walker
from ..runtime.evaluate import Dataset
from ..runtime.samples import trace_axes

METHODS = ("none", "bn", "reconstruct")


@dataclass
class LayerFix:
    """One layer: its node, the method, its relative squared error before and after, and
    whether the fix was applied (False where it would not have helped)."""

    node: str
    op: str
    error_before: float
    error_after: float
    applied: bool
    rows: int | None = None  # reconstruct: least-squares rows (samples x positions) ...
    unknowns: int | None = None  # ... for this many unknowns per output channel


ROWS_PER_UNKNOWN = 2
"""``reconstruct`` samples enough output positions per calibration sample for this many rows
per unknown of a layer's fit (where the layer's output has that many positions); a layer left
with fewer rows than unknowns is not refit (an under-determined fit only memorizes the
calibration data), and the report says how many samples it would need."""


@dataclass
class RecoveryReport:
    method: str
    samples: int
    layers: list[LayerFix] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    added_params: int = 0  # elements of the biases recovery had to add (Conv/Gemm without one)
    metric: str | None = None  # the model-level check on the calibration data (set by the pipeline)
    loss_without: float | None = None
    loss_with: float | None = None
    kept: bool = True  # False: recovery made the calibration metric worse, and was undone
    checked_on: int | None = None  # samples of the held-out check (None: checked on the fit data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def underdetermined(self) -> list[LayerFix]:
        """Layers not refit because they had fewer least-squares rows than unknowns."""
        return [f for f in self.layers if f.rows is not None and f.unknowns is not None and f.rows < f.unknowns]

    def samples_needed(self) -> int | None:
        """Calibration samples every layer's fit would need to have as many rows as unknowns
        (None when none is short)."""
        short = self.underdetermined
        if not short:
            return None
        return max(-(-f.unknowns * self.samples // max(f.rows, 1)) for f in short)


@dataclass
class _Layer:
    index: int  # position in the pruned model's nodes
    node: onnx.NodeProto
    kept: np.ndarray | None  # original output channels kept (None: all)
    unknowns: int = 0  # reconstruct: unknowns per output channel (weight inputs, + 1 for a bias)


def kept_outputs(analysis: Analysis, removed: np.ndarray) -> dict[str, np.ndarray]:
    """For every tensor of ``analysis.model`` that loses channels with ``removed``: the indices
    of the channels it keeps (into its channel axis), in order."""
    alive = analysis.alive_ids(np.asarray(removed, dtype=np.int64))
    out = {}
    for name, ax in analysis.axes.items():
        if ax is not None and not alive[ax.ids].all():
            out[name] = np.flatnonzero(alive[ax.ids])
    return out


def compose(earlier: dict[str, np.ndarray], now: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Channel indices into the first model after two prunes: ``earlier`` (first model → second)
    then ``now`` (second → third), both as :func:`kept_outputs` gives them."""
    out = dict(earlier)
    for name, kept in now.items():
        out[name] = earlier[name][kept] if name in earlier else kept
    return out


def recover(analysis: Analysis, pruned: onnx.ModelProto, removed: np.ndarray, data: Dataset, method: str, *,
            ridge: float = 1e-3, positions: int = 16, batch_size: int = 64, seed: int = 0, progress=None,
            start: tuple[int, object] | None = None, dropped_from: int | None = None,
            axes: dict | None = None,
            teacher: tuple[onnx.ModelProto, dict[str, np.ndarray]] | None = None) -> tuple[onnx.ModelProto, RecoveryReport]:
    """Repair ``pruned`` (what :func:`~onnxprune.rewrite.apply_removal` made of ``analysis``
    with ``removed``) on the calibration ``data``; returns the repaired model (``pruned`` is
    changed in place) and what was done. ``positions``: output positions sampled per sample for
    a Conv's least squares. ``progress(done, total)`` is told after each layer. ``start``:
    ``(cut, activations)`` when both models are known identical before the original's node
    ``cut``, with the activations crossing it (a :class:`~onnxprune.runtime.samples.Captured`):
    the walk starts there. ``axes``: the sample axes of the original's tensors
    (:func:`~onnxprune.runtime.samples.trace_axes`, traced here when not given). ``dropped_from``: the
    original index of the first node of a dropped residual block (depth pruning), after which
    every layer's input has changed: ``reconstruct`` refits every layer after it, and ``bn``
    corrects every layer from there on.

    The original and the pruned model are walked in lockstep (:class:`Walker`): each layer's
    target is the original's output of the same node on the original's own activations.
    ``teacher``: ``(model, index)`` when ``analysis.model`` was itself pruned from ``model``
    (gradual pruning): the targets are then ``model``'s outputs, ``index[tensor]`` giving the
    teacher's channel of each channel of ``analysis.model``'s tensor (:func:`compose`; absent:
    the same channels), so that errors of earlier rounds are repaired too. Its nodes must have
    the names of ``analysis.model``'s.

    Errors (``OnnxPruneError``): an unknown method; fewer than 2 samples.
    """
    if method not in METHODS:
        raise OnnxPruneError(f"unknown recovery {method!r}; choose one of {', '.join(METHODS)}")
    report = RecoveryReport(method, len(data))
    if method == "none" or (not len(removed) and dropped_from is None):
        return pruned, report
    if len(data) < 2:
        raise OnnxPruneError(f"recovery needs at least 2 calibration samples, got {len(data)}")
    began = time.perf_counter()
    alive = analysis.alive_ids(np.asarray(removed, dtype=np.int64))
    layers, report.skipped = _layers(analysis, pruned, alive, method, dropped_from)
    if layers:
        original, index = teacher if teacher is not None else (analysis.model, {})
        position = {n.name: i for i, n in enumerate(original.graph.node)}
        if any(layer.node.name not in position for layer in layers):
            raise OnnxPruneError("internal error: the teacher model lacks a node of the model being recovered")
        layers = [_Layer(layer.index, layer.node, _teacher_channels(layer, index), layer.unknowns) for layer in layers]
        axes = axes if axes is not None else trace_axes(original, data)
        if start is None or teacher is not None:
            walkers = (Walker(original, data, batch_size, axes=axes), Walker(pruned, data, batch_size, axes=axes))
        else:
            cut, acts = start
            before = {n.name for n in original.graph.node[:cut]}
            pruned_cut = next((i for i, n in enumerate(pruned.graph.node) if n.name not in before), len(pruned.graph.node))
            walkers = (Walker(original, data, batch_size, start=(cut, acts), axes=axes),
                       Walker(pruned, data, batch_size, start=(pruned_cut, acts), axes=axes))
        fix = _Reconstruct(ridge, positions, seed) if method == "reconstruct" else _Moments()
        count = len(pruned.graph.initializer)
        for k, layer in enumerate(layers, 1):
            y_original = walkers[0].run_to(position[layer.node.name] + 1).joined(layer.node.output[0], samples_first=True)
            report.layers.append(fix.apply(pruned, walkers[1], layer, fix.target(layer, y_original), batch_size))
            if progress:
                progress(k, len(layers))
        report.added_params = int(sum(np.prod(t.dims) for t in pruned.graph.initializer[count:]))
    report.seconds = round(time.perf_counter() - began, 3)
    return pruned, report


def _teacher_channels(layer: _Layer, index: dict[str, np.ndarray]) -> np.ndarray | None:
    """The teacher's channels of the layer's kept output channels (see :func:`recover`)."""
    earlier = index.get(layer.node.output[0])
    if earlier is None:
        return layer.kept
    return earlier if layer.kept is None else earlier[layer.kept]


# ---------------------------------------------------------------- which layers
def _layers(analysis: Analysis, pruned: onnx.ModelProto, alive: np.ndarray, method: str, dropped_from: int | None):
    """The layers to fix, in topological order, and the ones skipped with why."""
    original = {n.name: i for i, n in enumerate(analysis.model.graph.node)}
    inits = {t.name: list(t.dims) for t in pruned.graph.initializer}
    readers: dict[str, int] = {}
    for node in pruned.graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    changed = [s for s in analysis.slots if not alive[s.ids].all()]
    cut_inputs = {s.node_index for s in changed if s.role == IN}
    first = min((s.node_index for s in changed), default=len(original))
    if dropped_from is not None:
        first = min(first, dropped_from)
    layers, skipped = [], []
    for index, node in enumerate(pruned.graph.node):
        if node.name not in original:
            continue
        i = original[node.name]
        if method == "reconstruct":
            after_drop = dropped_from is not None and i > dropped_from
            if (i not in cut_inputs and not after_drop) or node.op_type not in ("Conv", "Gemm", "MatMul"):
                continue
            why = _cannot_refit(node, inits, readers)
        else:
            if i < first or node.op_type not in ("Conv", "Gemm", "BatchNormalization"):
                continue
            why = _cannot_rescale(node, inits, readers)
        if why:
            skipped.append(f"{node.name}: {why}")
            continue
        ax = analysis.axes.get(node.output[0])
        rank = len(analysis.shapes.get(node.output[0]) or ())
        if ax is not None and ax.axis != (rank - 1 if node.op_type == "MatMul" else 1):
            skipped.append(f"{node.name}: its output channels are not on the axis its weight writes")
            continue
        kept = np.flatnonzero(alive[ax.ids]) if ax is not None else None
        layers.append(_Layer(index, node, kept, _unknowns(node, inits)))
    return layers, skipped


def _unknowns(node: onnx.NodeProto, inits: dict) -> int:
    """Unknowns per output channel of a least-squares refit: the weight's inputs per output
    (``C_in · kh · kw`` for a Conv, ``K`` for Gemm and MatMul), plus the bias (not MatMul)."""
    dims = _dims(node.input[1], inits)
    if node.op_type == "Conv":
        return int(np.prod(dims[1:])) + 1
    if node.op_type == "Gemm":
        return int(dims[1] if _attr(node, "transB", 0) else dims[0]) + 1
    return int(dims[0]) if dims else 0


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _weight_ok(node, index: int, inits, readers) -> str | None:
    if len(node.input) <= index or node.input[index] not in inits:
        return "its weight is not a constant"
    if readers.get(node.input[index], 0) > 1:
        return "its weight is shared with another node"
    return None


def _cannot_refit(node, inits, readers) -> str | None:
    why = _weight_ok(node, 1, inits, readers)
    if why:
        return why
    if node.op_type == "Conv" and (_attr(node, "group", 1) != 1 or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                                   or len(_dims(node.input[1], inits)) != 4):
        return "not a plain 2-D Conv (grouped, auto-padded, 1-D or 3-D)"
    if node.op_type in ("Gemm", "MatMul") and len(_dims(node.input[1], inits)) != 2:
        return "its weight is not a matrix"
    if node.op_type == "Gemm" and _attr(node, "transA", 0):
        return "a Gemm with transA"
    return _bias_problem(node, inits, readers)


def _cannot_rescale(node, inits, readers) -> str | None:
    for k in ((1, 2, 3, 4) if node.op_type == "BatchNormalization" else (1,)):
        why = _weight_ok(node, k, inits, readers)
        if why:
            return why
    return _bias_problem(node, inits, readers)


def _bias_problem(node, inits, readers) -> str | None:
    """Why the bias of a Conv/Gemm (input 2) cannot be rewritten, or None (absent is fine)."""
    if node.op_type == "BatchNormalization" or len(node.input) <= 2 or not node.input[2]:
        return None
    if node.input[2] not in inits or readers.get(node.input[2], 0) > 1:
        return "its bias is not a constant of its own"
    if node.op_type == "Gemm" and len([d for d in _dims(node.input[2], inits) if d != 1]) > 1:
        return "its bias is a full matrix"
    return None


# ---------------------------------------------------------------- shared helpers
def _dims(name: str, inits: dict) -> list[int]:
    return inits.get(name, [])


def _values(model: onnx.ModelProto, name: str) -> tuple[onnx.TensorProto, np.ndarray]:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    return tensor, numpy_helper.to_array(tensor).astype(np.float64)


def _store(tensor: onnx.TensorProto, values: np.ndarray, dtype) -> None:
    tensor.CopyFrom(numpy_helper.from_array(values.astype(dtype), tensor.name))


def _bias(model: onnx.ModelProto, node: onnx.NodeProto, channels: int, dtype) -> onnx.TensorProto:
    """The node's bias initializer (input 2 of Conv/Gemm), created as zeros when absent."""
    if len(node.input) > 2 and node.input[2]:
        return next(t for t in model.graph.initializer if t.name == node.input[2])
    name = f"{node.name}/recovered_bias"
    tensor = numpy_helper.from_array(np.zeros(channels, dtype=dtype), name)
    model.graph.initializer.append(tensor)
    while len(node.input) < 2:
        node.input.append("")
    node.input.append(name)
    return model.graph.initializer[-1]


def _relative(residual: np.ndarray, target: np.ndarray) -> float:
    energy = float(np.square(target).sum())
    return float(np.square(residual).sum() / energy) if energy > 0 else float(np.square(residual).sum())


# ---------------------------------------------------------------- bn: match moments
class _Moments:
    """Per-channel affine correction to the original's mean and variance (see the module doc)."""

    def target(self, layer: _Layer, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sums = _Sums()
        sums.add(y)
        return sums.moments(layer.kept)

    def apply(self, pruned: onnx.ModelProto, walker: Walker, layer: _Layer, target, batch_size: int) -> LayerFix:
        """Correct the layer; the walker then holds its corrected output (``a y + b`` exactly)."""
        mean_o, var_o = target
        acts = walker.run_to(layer.index + 1)
        name = layer.node.output[0]
        sums = _Sums()
        sums.add(acts.joined(name, samples_first=True))
        mean_p, var_p = sums.moments(None)
        std_o, std_p = np.sqrt(var_o), np.sqrt(var_p)
        a = np.where(std_p > 1e-12, std_o / np.where(std_p > 1e-12, std_p, 1.0), 1.0)
        b = mean_o - a * mean_p
        before = _relative(np.concatenate([mean_p - mean_o, std_p - std_o]), np.concatenate([mean_o, std_o]))
        scale = max(float(np.abs(mean_o).max(initial=0.0)), float(std_o.max(initial=0.0)), 1e-12)
        if np.allclose(a, 1.0, rtol=0, atol=1e-7) and np.allclose(b, 0.0, rtol=0, atol=1e-7 * scale):
            return LayerFix(layer.node.name, layer.node.op_type, before, before, False)
        _affine(pruned, layer.node, a, b)
        runs = acts.runs[name]
        shape = [1] * runs[0].ndim
        shape[1] = -1
        acts.set(name, [(y * a.reshape(shape) + b.reshape(shape)).astype(y.dtype) for y in runs], acts.axes.get(name))
        return LayerFix(layer.node.name, layer.node.op_type, before, 0.0, True)


class _Sums:
    """Running per-channel sums over every axis but 1."""

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, 0.0, 0.0

    def add(self, y: np.ndarray) -> None:
        y = np.moveaxis(np.asarray(y, dtype=np.float64), 1, 0).reshape(y.shape[1], -1)
        self.n += y.shape[1]
        self.s = self.s + y.sum(axis=1)
        self.ss = self.ss + np.square(y).sum(axis=1)

    def moments(self, kept: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        mean = self.s / self.n
        var = np.maximum(self.ss / self.n - np.square(mean), 0.0)
        return (mean, var) if kept is None else (mean[kept], var[kept])


def _affine(model: onnx.ModelProto, node: onnx.NodeProto, a: np.ndarray, b: np.ndarray) -> None:
    """Fold ``y' = a y + b`` (per output channel) into the node's parameters."""
    if node.op_type == "BatchNormalization":
        # y = s x + t with s = gamma / sqrt(var + eps), t = beta - s mean; keep gamma and beta
        eps = float(_attr(node, "epsilon", 1e-5))
        (g_t, gamma), (b_t, beta), (m_t, mean), (v_t, var) = (_values(model, node.input[k]) for k in (1, 2, 3, 4))
        s = gamma / np.sqrt(var + eps)
        t = beta - s * mean
        s2, t2 = a * s, a * t + b
        safe = np.abs(s2) > 1e-12
        new_var = np.where(safe, np.square(gamma / np.where(safe, s2, 1.0)) - eps, var)
        ok = safe & (new_var > 0)
        new_mean = np.where(ok, (beta - t2) / np.where(ok, s2, 1.0), mean)
        dtype = numpy_helper.to_array(m_t).dtype
        _store(m_t, new_mean, dtype)
        _store(v_t, np.where(ok, new_var, var), dtype)
        return
    w_t, w = _values(model, node.input[1])
    dtype = numpy_helper.to_array(w_t).dtype
    axis = 0 if node.op_type == "Conv" or _attr(node, "transB", 0) else 1
    shape = [1] * w.ndim
    shape[axis] = -1
    _store(w_t, w * a.reshape(shape), dtype)
    beta = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
    bias_t = _bias(model, node, len(a), dtype)
    bias = numpy_helper.to_array(bias_t).astype(np.float64)
    flat = bias.reshape(-1)
    _store(bias_t, ((a * flat * beta + b) / beta).reshape(bias.shape), dtype)


# ---------------------------------------------------------------- reconstruct: least squares
class _Reconstruct:
    """Ridge least squares refit of the layers whose inputs were cut (see the module doc)."""

    def __init__(self, ridge: float, positions: int, seed: int) -> None:
        self.ridge, self.positions, self.seed = ridge, positions, seed
        self.rows: dict[str, np.ndarray] = {}

    def _rows(self, layer: _Layer, n: int, spatial: int) -> np.ndarray:
        """Sampled output positions, [samples, positions] (fixed per layer for both models):
        ``positions`` per sample, more where :data:`ROWS_PER_UNKNOWN` rows per unknown need
        them, at most every position."""
        name = layer.node.name
        if name not in self.rows:
            rng = np.random.default_rng([self.seed, sum(name.encode())])
            wanted = max(self.positions, -(-ROWS_PER_UNKNOWN * layer.unknowns // max(n, 1)))
            self.rows[name] = rng.integers(0, spatial, size=(n, min(wanted, spatial)))
        return self.rows[name]

    def _pick(self, layer: _Layer, y: np.ndarray, samples: slice, total: int) -> np.ndarray:
        """Target rows of a layer output batch: [rows, channels]."""
        if layer.node.op_type == "Conv":
            flat = y.reshape(y.shape[0], y.shape[1], -1)
            pos = self._rows(layer, total, flat.shape[2])[samples]
            return flat[np.arange(len(flat))[:, None], :, pos].reshape(-1, y.shape[1])
        if y.ndim > 2:  # MatMul on [..., T, K]: sample the positions of the middle axes
            flat = y.reshape(y.shape[0], -1, y.shape[-1])
            pos = self._rows(layer, total, flat.shape[1])[samples]
            return flat[np.arange(len(flat))[:, None], pos].reshape(-1, y.shape[-1])
        return y

    def target(self, layer: _Layer, y: np.ndarray) -> np.ndarray:
        """The original's output rows at the sampled positions, for the kept channels."""
        kept = layer.kept if layer.kept is not None else slice(None)
        y = y[:, kept] if layer.node.op_type in ("Conv", "Gemm") else y[..., kept]
        return self._pick(layer, np.asarray(y, np.float64), slice(0, len(y)), len(y))

    def _inputs(self, layer: _Layer, x: np.ndarray, w_shape, samples: slice, total: int) -> np.ndarray:
        """The rows of A for a batch of the layer's input ``x`` (without the intercept)."""
        node = layer.node
        if node.op_type == "Conv":
            kh, kw = w_shape[2], w_shape[3]
            sh, sw = _attr(node, "strides", [1, 1])
            dh, dw = _attr(node, "dilations", [1, 1])
            pt, pl, pb, pr = _attr(node, "pads", [0, 0, 0, 0])
            xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
            oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
            ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
            pos = self._rows(layer, total, oh * ow)[samples]
            n_idx = np.repeat(np.arange(len(x)), pos.shape[1])
            r, c = (pos // ow).reshape(-1), (pos % ow).reshape(-1)
            hi = r[:, None] * sh + np.arange(kh)[None, :] * dh
            wi = c[:, None] * sw + np.arange(kw)[None, :] * dw
            patches = xp[n_idx[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                         hi[:, None, :, None], wi[:, None, None, :]]
            return patches.reshape(len(n_idx), -1)
        if x.ndim > 2:
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            pos = self._rows(layer, total, flat.shape[1])[samples]
            return flat[np.arange(len(flat))[:, None], pos].reshape(-1, x.shape[-1])
        return x

    def apply(self, pruned: onnx.ModelProto, walker: Walker, layer: _Layer, target: np.ndarray, batch_size: int) -> LayerFix:
        """Refit the layer on the walker's activations up to it (it runs again from there)."""
        node = layer.node
        acts = walker.run_to(layer.index)
        w_t, w = _values(pruned, node.input[1])
        dtype = numpy_helper.to_array(w_t).dtype
        plan = acts.plan
        rows = [self._inputs(layer, np.asarray(acts.samples_of(node.input[0], k), np.float64), w.shape, plan.real(k),
                             plan.n) for k in range(plan.runs)]
        a = np.concatenate(rows)
        y_now = self._current(pruned, node, a, w)
        before = _relative(y_now - target, target)
        size = dict(rows=len(a), unknowns=a.shape[1] + (node.op_type != "MatMul"))
        if before <= 1e-12 or size["rows"] < size["unknowns"]:
            return LayerFix(node.name, node.op_type, before, before, False, **size)
        matrix, bias_scale = self._solve(node, a, target)
        fitted = a @ matrix[:-1] + matrix[-1] if bias_scale is not None else a @ matrix
        after = _relative(fitted - target, target)
        if after >= before:
            return LayerFix(node.name, node.op_type, before, after, False, **size)
        self._write(pruned, node, w_t, w, matrix, bias_scale, dtype)
        return LayerFix(node.name, node.op_type, before, after, True, **size)

    def _current(self, model, node, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The layer's present output on the rows ``a`` (without running it)."""
        if node.op_type == "Conv":
            matrix = w.reshape(w.shape[0], -1).T
        elif node.op_type == "Gemm":
            matrix = float(_attr(node, "alpha", 1.0)) * (w.T if _attr(node, "transB", 0) else w)
        else:
            matrix = w.reshape(w.shape[0], -1)
        y = a @ matrix
        if node.op_type != "MatMul" and len(node.input) > 2 and node.input[2]:
            beta = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
            y = y + beta * _values(model, node.input[2])[1].reshape(-1)
        return y

    def _solve(self, node, a: np.ndarray, y: np.ndarray):
        """Ridge least squares for ``a @ M (+ c) = y``; returns the stacked ``[M; c]`` (or ``M``
        for MatMul, without intercept) and the scale of the bias (None: no bias)."""
        with_bias = node.op_type != "MatMul"
        if with_bias:
            a = np.hstack([a, np.ones((len(a), 1))])
        gram = a.T @ a
        diag = np.diag(gram)
        lam = self.ridge * float(diag[:-1].mean() if with_bias and len(diag) > 1 else diag.mean())
        penalty = np.full(len(diag), lam)
        if with_bias:
            penalty[-1] = 0.0
        matrix = np.linalg.solve(gram + np.diag(penalty) + 1e-12 * np.eye(len(diag)), a.T @ y)
        return matrix, (1.0 if with_bias else None)

    def _write(self, model, node, w_t, w, matrix, bias_scale, dtype) -> None:
        weights, bias = (matrix[:-1], matrix[-1]) if bias_scale is not None else (matrix, None)
        if node.op_type == "Conv":
            _store(w_t, weights.T.reshape(w.shape), dtype)
        elif node.op_type == "Gemm":
            alpha = float(_attr(node, "alpha", 1.0))
            new = weights / alpha  # [K, N]
            _store(w_t, new.T if _attr(node, "transB", 0) else new, dtype)
        else:
            _store(w_t, weights.reshape(w.shape), dtype)
        if bias is not None:
            beta = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
            bias_t = _bias(model, node, len(bias), dtype)
            shape = numpy_helper.to_array(bias_t).shape
            _store(bias_t, (bias / beta).reshape(shape), dtype)
