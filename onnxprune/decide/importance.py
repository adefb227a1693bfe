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

**BN-aware filters.** A producer filter followed by BatchNormalization is scored as if BN were
folded into it (rows scaled by ``|gamma| / sqrt(var + eps)``), so a model ranks the same whether
its exporter kept BN or folded it: BN makes the raw filter norm meaningless (scale invariance).

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

from ..errors import OnnxPruneError
from ..groups import IN, NORM, OUT, Analysis, ChannelGroup, decoded

CRITERIA = ("l1", "l2", "bn-scale", "fpgm", "random")


def group_importance(analysis: Analysis, group: ChannelGroup, criterion: str = "l1", seed: int = 0) -> np.ndarray:
    """Scores of ``group``'s channels, shape ``[group.channels]``, float64, higher = keep.

    Errors: an unknown criterion (``OnnxPruneError``).
    """
    if criterion not in CRITERIA:
        raise OnnxPruneError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if criterion == "random":
        rng = np.random.default_rng([seed, int(group.id[1:])])
        return rng.random(group.channels)
    if criterion == "bn-scale":
        scores = _aggregate(analysis, group, (NORM,), _lp(1))
        return scores if scores is not None else group_importance(analysis, group, "l1")
    if criterion == "fpgm":
        scores = _aggregate(analysis, group, (OUT,), _fpgm)
        return scores if scores is not None else group_importance(analysis, group, "l2")
    p = 1 if criterion == "l1" else 2
    scores = _aggregate(analysis, group, (OUT, IN), _lp(p))
    return scores if scores is not None else np.zeros(group.channels)


def all_importance(analysis: Analysis, criterion: str = "l1", seed: int = 0) -> dict[str, np.ndarray]:
    """Scores of every prunable group, keyed by group id."""
    return {g.id: group_importance(analysis, g, criterion, seed) for g in analysis.prunable_groups}


def _lp(p: int):
    def score(rows: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
        per_row = np.abs(rows).sum(axis=1) if p == 1 else np.square(rows).sum(axis=1)
        out = np.zeros(n_units)
        np.add.at(out, unit, per_row)
        return out if p == 1 else np.sqrt(out)

    return score


def _fpgm(rows: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    # One filter vector per channel: the sum of its rows (one row each, except grouped convs).
    filters = np.zeros((n_units, rows.shape[1]))
    np.add.at(filters, unit, rows)
    sq = np.square(filters).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * filters @ filters.T, 0.0)
    return np.sqrt(d2).sum(axis=1)


def _bn_factors(analysis: Analysis, group: ChannelGroup) -> dict[int, np.ndarray]:
    """Per producer node index: ``|gamma|/sqrt(var+eps)`` of the BatchNorm reading its output."""
    factors: dict[int, np.ndarray] = {}
    index = analysis.node_index
    for slot in group.slots:
        node = analysis.graph.nodes[slot.node_index]
        if node.op != "BatchNormalization" or slot.input_index != 1 or len(node.inputs) < 5:
            continue
        producers = node.inputs[0].inputs
        if len(producers) != 1 or producers[0].op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if len(node.inputs[0].outputs) != 1:
            continue  # the raw conv output is read elsewhere too: its scale matters there
        gamma = np.abs(np.asarray(decoded(node.inputs[1]), dtype=np.float64))
        var = np.asarray(decoded(node.inputs[4]), dtype=np.float64)
        factors[index[id(producers[0])]] = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    return factors


def _aggregate(analysis: Analysis, group: ChannelGroup, roles, score_fn) -> np.ndarray | None:
    factors = _bn_factors(analysis, group)
    k = analysis.group_index[group.id]
    total = np.zeros(group.channels)
    count = np.zeros(group.channels)
    for slot in group.slots:
        if slot.role not in roles:
            continue
        roots = analysis.root_of[slot.ids]
        inside = analysis.unit_group[roots] == k
        pos = analysis.unit_position[roots]
        values = decoded(analysis.graph.nodes[slot.node_index].inputs[slot.input_index])
        rows = np.moveaxis(np.asarray(values), slot.axis, 0)
        rows = rows.reshape(rows.shape[0], -1).astype(np.float64)
        if slot.role == OUT and slot.node_index in factors and len(factors[slot.node_index]) == len(rows):
            rows = rows * factors[slot.node_index][:, None]
        rows = rows[inside]
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
