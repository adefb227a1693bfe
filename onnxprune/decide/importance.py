"""Importance criteria: a score per channel of a channel group, from the weights it indexes.

Criteria (``CRITERIA``):

* ``l1`` / ``l2``: the L1 / L2 norm of the weights of each channel (Li et al., "Pruning Filters
  for Efficient ConvNets", ICLR 2017).
* ``bn-scale``: ``|gamma|`` of the BatchNorm/InstanceNorm scale (Liu et al., "Learning Efficient
  Convolutional Networks through Network Slimming", ICCV 2017). Groups without a norm layer
  fall back to ``l1``.
* ``fpgm``: distance to the geometric median of the filters, approximated as the sum of
  Euclidean distances to all other filters of the layer (He et al., "Filter Pruning via
  Geometric Median", CVPR 2019). Uses output-filter slots only; without one, falls back to ``l2``.
* ``random``: seeded uniform scores, a baseline.
* ``activation``, ``apoz``, ``wanda``, ``greedy``: from calibration activations, see
  :mod:`onnxprune.decide.data_importance`.

**BN-aware weights.** A Conv/Gemm/MatMul weight whose output is read only by a BatchNormalization
is scored as the weight the exporter would fold that BN into: ``W * gamma / sqrt(var + eps)``
along the layer's own output axis (signed gamma, as the fold). This applies to every slot the
weight has, producer filters *and* consumer columns: a consumer's column ``W2[:, c]`` of a
folded export carries the consumer's own BN scale per row. So a model scores the same, up to
float round-off, whether its exporter kept BN or folded it; BN makes the raw weight norms
meaningless (scale invariance).

**Aggregation over the group's slots.** A group's channel appears in several weight slots:
producer filters (``W[c, ...]`` of each Conv/Gemm that outputs it), consumer columns
(``W[:, c, ...]`` of each layer that reads it, all H*W columns after a Flatten), and for
``bn-scale`` the norm scales. For each slot we compute one raw score per channel (the norm of
all its entries in that slot), divide it by the slot's mean over the group's channels so that
layers of different scale weigh the same, and average these normalized scores over the slots
in which the channel appears. Scores are therefore dimensionless, about 1 on average in each
group, which also makes them comparable across groups for global ranking (as Torch-Pruning's
group "mean" normalization).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..analysis.groups import IN, NORM, OUT, Analysis, ChannelGroup, decoded
from ..errors import OnnxPruneError
from .data_importance import data_importance, feature_statistics, has_data_reads
from .folded import bn_folded, bn_scale
from .names import CRITERIA, DATA_CRITERIA


def group_importance(analysis: Analysis, group: ChannelGroup, criterion: str = "l1", seed: int = 0,
                     stats: dict | None = None) -> np.ndarray:
    """Scores of ``group``'s channels, shape ``[group.channels]``, float64, higher = keep.
    ``stats``: :func:`~onnxprune.decide.data_importance.feature_statistics`, needed by the data
    criteria (:mod:`onnxprune.decide.data_importance`).

    Errors: an unknown criterion, a data criterion without ``stats`` (``OnnxPruneError``).
    """
    if criterion not in CRITERIA:
        raise OnnxPruneError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if criterion in DATA_CRITERIA:
        if stats is None:
            raise OnnxPruneError(f"criterion {criterion} measures the model: give calibration data ({{data}})")
        scores = data_importance(analysis, group, criterion, stats)
        return scores if scores is not None else group_importance(analysis, group, "l1")
    if criterion == "random":
        rng = np.random.default_rng([seed, int(group.id[1:])])
        return rng.random(group.channels)
    if criterion == "bn-scale":
        scores = _aggregate(analysis, group, (NORM,), _Lp(1))
        return scores if scores is not None else group_importance(analysis, group, "l1")
    if criterion == "fpgm":
        scores = _aggregate(analysis, group, (OUT,), _fpgm)
        return scores if scores is not None else group_importance(analysis, group, "l2")
    p = 1 if criterion == "l1" else 2
    scores = _aggregate(analysis, group, (OUT, IN), _Lp(p))
    return scores if scores is not None else np.zeros(group.channels)


def criterion_used(group: ChannelGroup, criterion: str, analysis: Analysis | None = None) -> str:
    """The criterion :func:`group_importance` actually applies to ``group``: ``bn-scale`` falls
    back to ``l1`` for a group without a BatchNorm/InstanceNorm scale, ``fpgm`` to ``l2`` for a
    group without producer filters, a data criterion to ``l1`` for a group that no layer it
    can read consumes (``analysis`` tells); ``none`` when there are no weights to score at all."""
    roles = {slot.role for slot in group.slots}
    if criterion in DATA_CRITERIA and analysis is not None and not has_data_reads(analysis, group):
        criterion = "l1"
    if criterion == "bn-scale" and NORM not in roles:
        criterion = "l1"
    if criterion == "fpgm" and OUT not in roles:
        criterion = "l2"
    if criterion in ("l1", "l2") and not roles & {OUT, IN}:
        return "none"
    return criterion


def all_importance(analysis: Analysis, criterion: str = "l1", seed: int = 0, data=None) -> dict[str, np.ndarray]:
    """Scores of every prunable group, keyed by group id. ``data`` (a
    :class:`~onnxprune.runtime.evaluate.Dataset`): the calibration data a data criterion reads."""
    stats = (feature_statistics(analysis, data, gram=criterion == "greedy")
             if criterion in DATA_CRITERIA and data is not None else None)
    return {g.id: group_importance(analysis, g, criterion, seed, stats) for g in analysis.prunable_groups}


class _Lp:
    """The L1 or L2 norm of each channel's weights (Li et al. 2017, "Pruning Filters for
    Efficient ConvNets"). Reduces a weight straight to per-row sums of ``|w|^p`` (accumulated in
    float64) without a float64 copy of the weight: on ResNet-50 this was most of a prune's time."""

    def __init__(self, p: int) -> None:
        self.p = p

    def row_sums(self, values: np.ndarray, axis: int, scale: np.ndarray | None, scale_axis: int | None) -> np.ndarray:
        """``sum |w * s|^p`` over every axis but ``axis``: one value per row, float64.
        ``scale`` (per index of ``scale_axis``) is a folded BatchNorm's factor."""
        mag = np.abs(values) if self.p == 1 else np.square(values)
        keep = {axis} if scale is None else {axis, scale_axis}
        other = tuple(a for a in range(mag.ndim) if a not in keep)
        reduced = mag.sum(axis=other, dtype=np.float64, keepdims=True) if other else mag.astype(np.float64)
        if scale is not None:
            shape = [1] * mag.ndim
            shape[scale_axis] = -1
            factor = np.abs(scale) if self.p == 1 else np.square(scale)
            reduced = reduced * factor.reshape(shape)
        rest = tuple(a for a in range(mag.ndim) if a != axis)
        return reduced.sum(axis=rest) if rest else reduced

    def __call__(self, per_row: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
        out = np.zeros(n_units)
        np.add.at(out, unit, per_row)
        return out if self.p == 1 else np.sqrt(out)


def _fpgm(rows: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    # One filter vector per channel: the sum of its rows (one row each, except grouped convs).
    filters = np.zeros((n_units, rows.shape[1]))
    np.add.at(filters, unit, rows)
    sq = np.square(filters).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * filters @ filters.T, 0.0)
    return np.sqrt(d2).sum(axis=1)


def _aggregate(analysis: Analysis, group: ChannelGroup, roles, score_fn) -> np.ndarray | None:
    k = analysis.group_index[group.id]
    total = np.zeros(group.channels)
    count = np.zeros(group.channels)
    for slot in group.slots:
        if slot.role not in roles:
            continue
        roots = analysis.root_of[slot.ids]
        inside = analysis.unit_group[roots] == k
        pos = analysis.unit_position[roots]
        values = np.asarray(decoded(analysis.graph.nodes[slot.node_index].inputs[slot.input_index]))
        if not np.issubdtype(values.dtype, np.floating) or values.dtype.itemsize < 4:
            values = values.astype(np.float32)  # float16 squares would overflow
        folds = slot.input_index == 1 and slot.role in (OUT, IN)
        if isinstance(score_fn, _Lp):
            scale, scale_axis = bn_scale(analysis, slot.node_index, values) if folds else (None, None)
            rows = score_fn.row_sums(values, slot.axis, scale, scale_axis)[inside]
        else:
            values = values.astype(np.float64)
            if folds:
                values = bn_folded(analysis, slot.node_index, values)
            rows = np.moveaxis(values, slot.axis, 0)
            rows = rows.reshape(rows.shape[0], -1)[inside]
        present = np.unique(pos[inside])
        local = np.searchsorted(present, pos[inside])
        raw = score_fn(rows, local, len(present))
        mean = raw.mean()
        if mean <= 0:
            continue
        total[present] += raw / mean
        count[present] += 1
    if not count.any():
        return None
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
