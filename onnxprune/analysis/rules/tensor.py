"""Ops that move channel indices: Concat, Split, Slice, Flatten, Reshape, Transpose, (Un)Squeeze.

Index maps:

* **Concat** on the channel axis concatenates the inputs' ids (an offset map); untraced inputs
  (graph inputs, constants) get a frozen space of their own. On another axis it couples the
  inputs' channels, like a residual Add.
* **Split** and **Slice** (step 1) on the channel axis take contiguous runs of ids; the rewrite
  recomputes split sizes and slice bounds from the kept channels.
* **Flatten** and **Reshape** that merge the channel axis with neighbouring dims expand each id
  over the columns it becomes (``np.repeat``/``np.tile``), so a following Gemm/MatMul slices
  exactly those columns. A Reshape that splits the channel axis into (outer, inner) dims, as
  attention does into heads, makes each outer index (a head) one unit. Reshapes that mix the
  channel axis otherwise, or merge it into the batch, freeze.
"""

from __future__ import annotations

import numpy as np

from .base import Rule, int_list, norm_axis, numel, register


@register("Concat")
class ConcatRule(Rule):
    def trace(self, node, t) -> None:
        inputs = [x for x in node.inputs if x.name]
        traced = [t.axis_of(x) for x in inputs]
        if not any(ax is not None for ax in traced):
            return
        shape = t.shape(node.outputs[0]) or next((t.shape(x) for x in inputs if t.shape(x)), None)
        if shape is None:
            t.block(node, "Concat with unknown rank")
            return
        axis = norm_axis(int(node.attrs["axis"]), len(shape))
        channel_axes = {ax.axis for ax in traced if ax is not None}
        if len(channel_axes) != 1:
            t.block(node, "Concat inputs have channels on different axes")
            return
        c = channel_axes.pop()
        if axis != c:
            self._couple(node, t, inputs, traced, c)
            return
        runs = []
        for x, ax in zip(inputs, traced):
            if ax is not None:
                runs.append(ax.ids)
                continue
            size = (t.shape(x) or [None] * (c + 1))[c]
            if size is None:
                t.block(node, "Concat of a tensor with unknown channel count")
                return
            runs.append(t.uf.make(int(size)))
            t.spaces.append(_untraced_space(node, x, runs[-1]))
            t.freeze(runs[-1], f"concatenated with untraced tensor {x.name!r} (node {node.name})")
        t.set_axis(node, node.outputs[0], c, np.concatenate(runs))

    @staticmethod
    def _couple(node, t, inputs, traced, c) -> None:
        first = next(ax for ax in traced if ax is not None)
        for x, ax in zip(inputs, traced):
            if ax is None:
                t.freeze(first.ids, f"concatenated with untraced tensor {x.name!r} (node {node.name})")
            elif len(ax.ids) != len(first.ids):
                t.block(node, "Concat inputs with different channel counts")
                return
            else:
                t.union(first.ids, ax.ids)
        t.set_axis(node, node.outputs[0], c, first.ids)


def _untraced_space(node, tensor, ids):
    from ..groups import Space

    return Space(node.name, tensor.name, ids, f"untraced input {tensor.name!r}")


def _split_sizes(node, t, dim: int) -> list[int] | None:
    """Split sizes from the ``split`` input (opset 13+), the attribute, or an equal split."""
    if t.input(node, 1) is not None:
        values = t.const(node.inputs[1])
        return None if values is None else int_list(values)
    if "split" in node.attrs:
        return [int(s) for s in node.attrs["split"]]
    n = int(node.attrs.get("num_outputs", len(node.outputs)))
    chunk = -(-dim // n)
    return [min(chunk, dim - k * chunk) for k in range(n)]


@register("Split")
class SplitRule(Rule):
    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(shape))
        if axis != xa.axis:
            for k in range(len(node.outputs)):
                t.passthrough(node, 0, k)
            return
        sizes = _split_sizes(node, t, len(xa.ids))
        if sizes is None or sum(sizes) != len(xa.ids) or len(sizes) != len(node.outputs):
            t.block(node, "Split with computed or inconsistent sizes")
            return
        offsets = np.cumsum([0] + sizes)
        for k, out in enumerate(node.outputs):
            t.set_axis(node, out, axis, xa.ids[offsets[k]:offsets[k + 1]])

    def rewrite(self, node, rw) -> None:
        x = node.inputs[0]
        ax = rw.axis_of(x)
        if ax is None or rw.kept(x) == rw.channels(x):
            return
        out_axes = [rw.axis_of(o) for o in node.outputs]
        if any(a is None or a.axis != ax.axis for a in out_axes):
            return  # split along another axis: nothing to change
        sizes = np.array([rw.kept(o) for o in node.outputs], dtype=np.int64)
        if len(node.inputs) > 1 and node.inputs[1].name:
            rw.set_const_input(node, 1, sizes)
        elif rw.opset >= 13:
            rw.drop_attr(node, "num_outputs")
            rw.set_const_input(node, 1, sizes)
        else:
            rw.set_attr(node, "split", [int(s) for s in sizes])


def _slice_params(node, t, rank: int):
    """(starts, ends, axes, steps) as int lists, or None when any is computed."""
    if t.opset < 10:
        starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
        axes = node.attrs.get("axes", list(range(len(starts))))
        return list(starts), list(ends), [norm_axis(a, rank) for a in axes], [1] * len(starts)
    values = []
    for i in (1, 2, 3, 4):
        tensor = t.input(node, i)
        if tensor is None:
            values.append(None)
        elif t.const(tensor) is None:
            return None
        else:
            values.append(int_list(t.const(tensor)))
    starts, ends, axes, steps = values
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    return starts, ends, [norm_axis(a, rank) for a in axes], steps


@register("Slice")
class SliceRule(Rule):
    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        params = _slice_params(node, t, len(shape))
        if params is None:
            t.block(node, "Slice with computed bounds")
            return
        starts, ends, axes, steps = params
        if xa.axis not in axes:
            t.passthrough(node)
            return
        k = axes.index(xa.axis)
        if steps[k] != 1:
            t.block(node, "Slice with a step on the channel axis")
            return
        ids = xa.ids[slice(starts[k], ends[k])]
        if len(ids) == 0:
            t.block(node, "Slice selects no channel")
            return
        t.set_axis(node, node.outputs[0], xa.axis, ids)

    def rewrite(self, node, rw) -> None:
        x = node.inputs[0]
        xa = rw.axis_of(x)
        if xa is None or rw.kept(x) == rw.channels(x):
            return
        starts, ends, axes, _ = _slice_params(node, rw, len(rw.shape(x)))
        if xa.axis not in axes:
            return
        k = axes.index(xa.axis)
        span = range(len(xa.ids))[slice(starts[k], ends[k])]
        new_start = int(rw.alive(xa.ids[: span.start]).sum())
        new_end = new_start + rw.kept(node.outputs[0])
        starts[k], ends[k] = new_start, new_end
        if rw.opset < 10:
            rw.set_attr(node, "starts", starts)
            rw.set_attr(node, "ends", ends)
        else:
            dtype = node.inputs[1].values.dtype
            rw.set_const_input(node, 1, np.array(starts, dtype=dtype))
            rw.set_const_input(node, 2, np.array(ends, dtype=dtype))


def _shared_literal(node, t, position: int):
    """The constant element behind entry ``position`` of ``node``'s computed shape input (input
    1 of a Reshape or Expand), as :func:`~onnxprune.analysis.shape_expr.constant_source` finds
    it; None when there is none. Rewriting it changes the shape for every node that reads it,
    so when tracing (``t`` has ``defer``) the channels are frozen after the trace unless each
    of those nodes is a Reshape or Expand whose data carries the same channel ids."""
    from ..shape_expr import constant_source, readers

    rank = lambda x: None if t.shape(x) is None else len(t.shape(x))  # noqa: E731
    found = constant_source(node.inputs[1], position, t.const, rank)
    if found is not None and hasattr(t, "defer"):
        ids = t.axis_of(node.inputs[0]).ids

        def all_readers_agree() -> None:
            for reader in readers(node.inputs[1]):
                other = t.axis_of(reader.inputs[0]) if reader.op in ("Reshape", "Expand") else None
                if other is None or not np.array_equal(other.ids, ids):
                    t.freeze(ids, f"{node.op} shares its computed shape with {reader.op} {reader.name}, which reads "
                                  f"other channels (node {node.name})")
                    return

        t.defer(all_readers_agree)
    return found


def merged_ids(ids: np.ndarray, in_shape, c: int, j: int, k: int) -> np.ndarray:
    """Ids along one output axis made of input dims ``[j, k)`` (row-major), channel axis ``c``."""
    inner = int(np.prod(in_shape[c + 1:k], dtype=np.int64))
    outer = int(np.prod(in_shape[j:c], dtype=np.int64))
    return np.tile(np.repeat(ids, inner), outer)


def _find_merge(in_shape, out_shape, c: int):
    """The (j, k) such that input dims ``[j, k)`` (containing ``c``) become output dim ``j``.

    Requires equal leading dims ``[0, j)`` and the same product after; None when the reshape
    splits the channel axis instead.
    """
    for j in range(c, 0, -1):
        if tuple(out_shape[:j]) != tuple(in_shape[:j]) or len(out_shape) <= j:
            continue
        for k in range(c + 1, len(in_shape) + 1):
            if out_shape[j] == numel(in_shape[j:k]) and numel(out_shape[j + 1:]) == numel(in_shape[k:]):
                return j, k
    return None


def _find_split(in_shape, out_shape, c: int):
    """The (p, k) such that input dim ``c`` becomes output dims ``[c, c+k)``, other dims equal;
    ``p`` is the first of those dims larger than 1 (the outer, e.g. the head axis of
    ``[B,T,D] -> [B,T,H,Dh]``). None when the reshape is no such split."""
    if tuple(out_shape[:c]) != tuple(in_shape[:c]):
        return None
    for k in range(2, len(out_shape) - c + 1):
        if numel(out_shape[c:c + k]) == in_shape[c] and tuple(out_shape[c + k:]) == tuple(in_shape[c + 1:]):
            p = next((c + i for i in range(k) if out_shape[c + i] > 1), c)
            return p, k
    return None


def _find_move(in_shape, out_shape, c: int):
    """The output axis of channel axis ``c`` when the reshape only adds, drops or moves size-1
    dims (tf2onnx writes an NCHW->NHWC transpose at 1x1 as ``[N,C,1,1] -> [-1,1,1,C]``). The
    batch axis 0 stays first on both sides; None otherwise."""
    if in_shape[c] == 1 or in_shape[0] != out_shape[0]:
        return None
    big_in = [(a, d) for a, d in enumerate(in_shape) if d != 1 and a > 0]
    big_out = [(a, d) for a, d in enumerate(out_shape) if d != 1 and a > 0]
    if [d for _, d in big_in] != [d for _, d in big_out]:
        return None
    axis = big_out[[a for a, _ in big_in].index(c)][0]
    return axis if axis > 0 else None


def _find_regroup(in_shape, out_shape, c: int):
    """The ``(a, (m, q))`` such that output axis ``a`` (not the batch axis) holds channel
    ``(p // m) % C`` at index ``p`` and no other output axis depends on the channel: row-major
    order puts channel ``c`` at input stride ``s = numel(in[c+1:])``; with output stride
    ``S = numel(out[a+1:])``, that holds when ``S`` divides ``s`` (``m = s / S``) and ``C·m``
    divides ``out[a]`` (``q = out[a] / (C·m)``). magika packs 4 tokens into one,
    ``[1, 2048, 64] → [1, 512, 256]``: channel ``j = 64·t + c`` (``m = 1``, ``q = 4``). None
    otherwise, and when the batch dim changes."""
    size, stride = in_shape[c], numel(in_shape[c + 1:])
    if c == 0 or out_shape[0] != in_shape[0]:
        return None
    for a in range(1, len(out_shape)):
        out_stride = numel(out_shape[a + 1:])
        if out_stride and stride % out_stride == 0 and out_shape[a] % (size * (stride // out_stride)) == 0:
            m = stride // out_stride
            return a, (m, out_shape[a] // (size * m))
    return None


def _channel_map(in_shape, out_shape, c: int):
    """How a reshape moves channel axis ``c``: ``("merge", j, k)`` (input dims ``[j, k)`` become
    output dim ``j``), ``("split", p, k)`` (dim ``c`` becomes dims ``[c, c+k)``, channels on the
    outer one, ``p``), ``("move", p, 0)`` (only size-1 dims change; channels land on axis ``p``),
    ``("regroup", a, (m, q))`` (channels interleave with other dims on axis ``a``, see
    :func:`_find_regroup`), or None (the reshape mixes channels with other dims)."""
    found = _find_merge(in_shape, out_shape, c)
    if found is not None:
        return ("merge",) + found
    found = _find_split(in_shape, out_shape, c)
    if found is not None:
        return ("split",) + found
    axis = _find_move(in_shape, out_shape, c)
    if axis is not None:
        return ("move", axis, 0)
    found = _find_regroup(in_shape, out_shape, c)
    return None if found is None else ("regroup",) + found


class _ReshapeLikeRule(Rule):
    """Shared by Flatten and Reshape.

    * A **merge** of the channel axis with neighbouring dims repeats each id over the columns it
      becomes (Flatten before a Gemm).
    * A **split** of the channel axis into ``(outer, inner)`` dims, e.g. attention's
      ``[B,T,D] -> [B,T,H,Dh]``, ties each run of ``inner`` channels into one unit (a head, or a
      channel-shuffle group) and puts the channel ids on the outer axis: whole heads go.
    """

    def map_channels(self, node, t):
        x = t.input(node, 0)
        xa, in_shape, out_shape = t.axis_of(x), t.shape(x), t.shape(node.outputs[0])
        if xa is None:
            return None
        if numel(in_shape) is None or numel(out_shape) is None:
            t.block(node, f"{node.op} with unknown shapes")
            return None
        found = _channel_map(in_shape, out_shape, xa.axis)
        if found is None:
            t.block(node, f"{node.op} mixes the channel axis with other dims or merges it into the batch axis")
            return None
        kind, axis, k = found
        if kind == "merge":
            ids = merged_ids(xa.ids, in_shape, xa.axis, axis, k)
        elif kind == "regroup":
            m, q = k
            ids = np.tile(np.repeat(xa.ids, m), q)
        elif kind == "move":
            ids = xa.ids
        else:
            inner = numel(out_shape[axis + 1:xa.axis + k])
            if inner > 1:
                for h in range(len(xa.ids) // inner):
                    t.union_all(xa.ids[h * inner:(h + 1) * inner])
            ids = xa.ids[::inner]
        t.set_axis(node, node.outputs[0], axis, ids)
        return found


@register("Flatten")
class FlattenRule(_ReshapeLikeRule):
    def trace(self, node, t) -> None:
        found = self.map_channels(node, t)
        if found is not None and found[0] != "merge":
            t.block(node, "Flatten that does not merge the channel axis")


@register("Reshape")
class ReshapeRule(_ReshapeLikeRule):
    """The target is rewritten at the channel axis. A constant target keeps its other entries
    (and the node its ``allowzero``). A computed target (Paddle's ``Concat(Shape(x)[0:1], [C])``,
    torch's head reshapes built from ``Shape``) is replaced by ``[0, ..., 0, kept, inner..., -1?]``:
    zeros copy the leading dims, so batch and sequence stay dynamic.

    ONNX spec (Reshape-14): with ``allowzero=1`` a 0 in the target is a real zero, not "copy
    the input's dim" (the dynamo exporter writes ``allowzero=1`` on every Reshape). The zeros
    written here copy dims that the output shares with the input, so the node gets
    ``allowzero=0``: the same output shape whatever the input, an empty batch included."""

    def trace(self, node, t) -> None:
        found = self.map_channels(node, t)
        if found is None:
            return
        target = t.const(node.inputs[1])
        if target is not None:
            if found[0] == "regroup" and not node.attrs.get("allowzero", 0) and 0 in np.asarray(target).tolist():
                t.block(node, "Reshape that interleaves channels with a target that copies input dims (0)")
            return
        if found[0] == "move":
            t.block(node, "Reshape that moves the channel axis with a computed target")
        elif found[0] == "regroup" and self._channel_entry(node, t, found[1]) is None:
            t.block(node, "Reshape that interleaves the channel axis with a computed target whose channel entry is "
                          "not a constant")
        elif found[0] in ("merge", "split") and \
                len(self._synthesized_tail(found, t.shape(node.outputs[0]), t.axis_of(node.inputs[0]).axis)) > 1:
            t.block(node, "Reshape with a computed target and several trailing dims")

    @staticmethod
    def _channel_entry(node, t, axis: int):
        """The constant element that writes output axis ``axis`` into a computed target (magika's
        ``Concat(Shape(x)[0:1], [512], [256])``), see :func:`_shared_literal`."""
        return _shared_literal(node, t, axis)

    @staticmethod
    def _synthesized_tail(found, out_shape, c: int) -> list:
        kind, axis, k = found
        end = axis + 1 if kind == "merge" else c + k
        return list(out_shape[end:])

    def rewrite(self, node, rw) -> None:
        out = node.outputs[0]
        oa = rw.axis_of(out)
        if oa is None or rw.kept(out) == rw.channels(out):
            return
        axis, kept = oa.axis, rw.kept(out)
        target = node.inputs[1]
        if hasattr(target, "values"):
            values = np.array(target.values, copy=True)
            if values[axis] in (0, -1):
                return
            values[axis] = kept
        elif _channel_map(rw.shape(node.inputs[0]), rw.shape(out), rw.axis_of(node.inputs[0]).axis)[0] == "regroup":
            concat, k, position = self._channel_entry(node, rw, axis)
            part = np.array(concat.inputs[k].values, copy=True)
            part.reshape(-1)[position] = kept
            rw.set_const_input(concat, k, part)  # the expression stays; only the channel entry changes
            return
        else:
            c = rw.axis_of(node.inputs[0]).axis
            out_shape = rw.shape(out)
            found = _channel_map(rw.shape(node.inputs[0]), out_shape, c)
            kind, _, k = found
            middle = [] if kind == "merge" else list(out_shape[axis + 1:c + k])
            head = [0] * min(c, axis) + list(out_shape[min(c, axis):axis])
            tail = [-1] * len(self._synthesized_tail(found, out_shape, c))
            values = np.array(head + [kept] + middle + tail, dtype=np.int64)
            if node.attrs.get("allowzero", 0):
                rw.set_attr(node, "allowzero", 0)
        rw.set_const_input(node, 1, values)


@register("Gather")
class GatherRule(Rule):
    """Constant indices along a non-channel axis (picking time steps or tokens) pass channels
    through; a scalar index drops that axis. Gathering along the channel axis freezes it."""

    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        _, xa, shape = found
        indices = t.const(node.inputs[1])
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(shape))
        if indices is None or axis == xa.axis:
            t.block(node, "Gather along the channel axis or with computed indices")
            return
        shift = indices.ndim - 1  # the gathered axis is replaced by the indices' dims
        t.set_axis(node, node.outputs[0], xa.axis + shift if axis < xa.axis else xa.axis, xa.ids)


@register("Transpose")
class TransposeRule(Rule):
    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        perm = list(node.attrs.get("perm", list(range(len(shape)))[::-1]))
        t.set_axis(node, node.outputs[0], perm.index(xa.axis), xa.ids)


def _raw_axes(node, t) -> list[int] | None:
    """The ``axes`` input (opset 13+) or attribute, un-normalized; None when absent or computed."""
    if t.input(node, 1) is not None:
        values = t.const(node.inputs[1])
        return None if values is None else int_list(values)
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


@register("Squeeze")
class SqueezeRule(Rule):
    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        axes = _raw_axes(node, t)
        axes = None if axes is None else [norm_axis(a, len(shape)) for a in axes]
        if axes is None:
            if any(d is None for d in shape):
                t.block(node, "Squeeze with computed axes")
                return
            axes = [a for a, d in enumerate(shape) if d == 1]
        if xa.axis in axes:
            t.block(node, "Squeeze removes the channel axis")
            return
        t.set_axis(node, node.outputs[0], xa.axis - sum(a < xa.axis for a in axes), xa.ids)


@register("Unsqueeze")
class UnsqueezeRule(Rule):
    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        axes = _raw_axes(node, t)
        if axes is None:
            t.block(node, "Unsqueeze with computed axes")
            return
        axes = [norm_axis(a, len(shape) + len(axes)) for a in axes]
        kept_positions = [p for p in range(len(shape) + len(axes)) if p not in axes]
        t.set_axis(node, node.outputs[0], kept_positions[xa.axis], xa.ids)


@register("DepthToSpace")
class DepthToSpaceRule(Rule):
    """``[N, C·b², H, W] → [N, C, H·b, W·b]`` (ONNX spec, DepthToSpace-13). Output channel ``c``
    reads ``b²`` input channels: ``(i·b + j)·C + c`` in ``DCR`` mode (the default),
    ``c·b² + i·b + j`` in ``CRD`` mode. Those ``b²`` channels are one unit, so whole output
    channels go, and the kept input channels stay in the layout the mode expects."""

    def trace(self, node, t) -> None:
        xa = t.nchw_input(node)
        if xa is None:
            return
        b2 = int(node.attrs["blocksize"]) ** 2
        c = len(xa.ids) // b2
        blocks = xa.ids.reshape(c, b2) if node.attrs.get("mode", "DCR") == "CRD" else xa.ids.reshape(b2, c).T
        for unit in blocks:
            t.union_all(unit)
        t.set_axis(node, node.outputs[0], 1, blocks[:, 0].copy())


@register("SpaceToDepth")
class SpaceToDepthRule(Rule):
    """``[N, C, H, W] → [N, C·b², H/b, W/b]`` (ONNX spec, SpaceToDepth-13): output channel
    ``(i·b + j)·C + c`` is input channel ``c``, so each id repeats ``b²`` times, ``C`` apart
    (an expand map, like Flatten's)."""

    def trace(self, node, t) -> None:
        xa = t.nchw_input(node)
        if xa is None:
            return
        t.set_axis(node, node.outputs[0], 1, np.tile(xa.ids, int(node.attrs["blocksize"]) ** 2))


@register("Expand")
class ExpandRule(Rule):
    """``Expand(x, shape)`` broadcasts ``x`` to ``shape``, numpy's rules aligned from the right
    (ONNX spec, Expand-13). The channels pass through when the target's entry at the channel
    axis leaves that axis as it is: 1, the channel count itself (a constant, rewritten with the
    kept count), or the dim read at run time from a tensor with the same channels there
    (``BroadcastTo`` of a decomposed LayerNorm's statistics to ``Shape(x)``)."""

    def trace(self, node, t) -> None:
        found = t.channel_input(node)
        if found is None:
            return
        x, xa, shape = found
        out_shape = t.shape(node.outputs[0])
        target = t.input(node, 1)
        entries = None if target is None else t.shape_entries(target)
        if out_shape is None or entries is None:
            t.block(node, "Expand with an unknown output shape or a target computed otherwise")
            return
        axis = xa.axis + len(out_shape) - len(shape)
        position = axis - (len(out_shape) - len(entries))
        entry = entries[position] if position >= 0 else 1
        channels = len(xa.ids)
        if isinstance(entry, tuple):
            source = t.axes.get(entry[1])
            same = source is not None and source.axis == entry[2] and np.array_equal(source.ids, xa.ids)
        else:
            same = entry in (1, channels) and out_shape[axis] == channels
            if same and entry == channels != 1 and t.const(target) is None:  # a literal inside a computed target
                same = self._literal(node, t, position) is not None
        if not same:
            t.block(node, "Expand whose target may change the channel axis")
            return
        t.set_axis(node, node.outputs[0], axis, xa.ids)

    @staticmethod
    def _literal(node, t, position: int):
        return _shared_literal(node, t, position)

    def rewrite(self, node, rw) -> None:
        x, target = node.inputs[0], node.inputs[1]
        xa = rw.axis_of(x)
        if xa is None or rw.kept(x) == rw.channels(x):
            return
        entries = rw.const(target)
        entries = entries if entries is not None else rw.shape(target) and [None] * int(rw.shape(target)[0])
        position = rw.axis_of(node.outputs[0]).axis - (len(rw.shape(node.outputs[0])) - len(entries))
        if position < 0:
            return
        if hasattr(target, "values"):
            values = np.array(target.values, copy=True).reshape(-1)
            if values[position] == rw.channels(x) != 1:
                values[position] = rw.kept(x)
                rw.set_const_input(node, 1, values)
            return
        source = self._literal(node, rw, position)
        if source is not None:
            concat, k, element = source
            part = np.array(concat.inputs[k].values, copy=True)
            if part.reshape(-1)[element] == rw.channels(x) != 1:
                part.reshape(-1)[element] = rw.kept(x)
                rw.set_const_input(concat, k, part)
