"""Data-aware importance criteria: a channel's score from what the layers that read it see.

A channel of a group is read by its consumer layers (``IN`` slots: Conv with ``group = 1``,
ConvTranspose with ``group = 1``, Gemm, and MatMul with a constant right operand). Row ``j``
of such a layer's weight along the slot's axis multiplies feature ``j`` of its data input
``X`` (Conv ``X[:, j]``, Gemm/MatMul ``X[..., j]``), so the calibration data gives each row a
statistic of the activation it reads, after the producer's non-linearity: exactly what
removing the channel takes away.

Criteria (``DATA_CRITERIA``; each needs calibration data):

* ``activation``: mean ``|x_j|`` over samples and positions (the mean-activation criterion of
  Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient Inference",
  ICLR 2017, section 2.2).
* ``apoz``: ``1 - APoZ``, one minus the fraction of entries that are exactly zero (Hu et al.,
  "Network Trimming", arXiv:1607.03250, 2016). Meaningful after ReLU; where no entry is zero
  (SiLU, no activation) every channel ties, and ties are ordered by ``activation``.
* ``greedy``: greedy reconstruction-error selection, refit-aware: with the consumer's
  features weighted by their weight rows, ``v_j = ‖W_j‖₂ · X_j``, channels are chosen to *keep*
  one at a time, each the one whose feature the already chosen ones explain least (largest
  residual after least-squares projection: pivoted Cholesky of the Gram matrix ``VᵀV``). A
  channel chosen late is one whose removal a least-squares refit of the next layer
  (``--recover reconstruct``) absorbs best; an exact copy of another channel is chosen last.
  Score: ``C - p`` for the channel chosen ``p``-th. This is the selection step of channel
  pruning by reconstruction (He et al., "Channel Pruning for Accelerating Very Deep Neural
  Networks", ICCV 2017; Luo et al., ThiNet, ICCV 2017), solved greedily on the features'
  Gram matrix; a Conv's ``k x k`` window is read as its centre (the feature map itself).
* ``wanda``: ``‖W_j‖₂ · ‖X_j‖₂``, the consumer's weight row times the RMS of the feature it
  reads (structured Wanda: Sun et al., "A Simple and Effective Pruning Approach for Large
  Language Models", ICLR 2024; the channel form of An et al., FLAP, AAAI 2024). A consumer
  weight read by a BatchNorm alone is scored as folded, as the weight criteria do.

A channel with several rows in a slot (a Flatten before a Gemm: one row per position) sums
them. Scores are normalized per slot by their mean over the group's channels and averaged
over slots, as :mod:`onnxprune.decide.importance` does, so groups compare for global ranking.
A group with no such consumer (its channels reach only a graph output, a grouped conv, or a
non-constant MatMul) falls back to ``l1``; :func:`criterion_used` says so.

Statistics are taken once per model and calibration set (:func:`feature_statistics`), in
chunks of a few tensors at a time, so memory stays near one chunk's activations on every sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.groups import IN, Analysis, ChannelGroup, decoded
from .folded import bn_folded
from .names import DATA_CRITERIA  # noqa: F401  (the criteria this module computes)

CHUNK = 8  # tensors captured per pass over the calibration data
GRAM_LIMIT = 4096  # features above which ``greedy`` skips a slot (its Gram matrix would be too large)


@dataclass
class FeatureStats:
    """Per feature of one tensor, over every sample and position: ``abs_mean`` mean ``|x|``,
    ``rms`` root mean square, ``zero`` fraction of exact zeros; each shape ``[features]``."""

    abs_mean: np.ndarray
    rms: np.ndarray
    zero: np.ndarray
    gram: np.ndarray | None = None  # [features, features]: mean of x xᵀ (for ``greedy``)


def _reads(analysis: Analysis, group: ChannelGroup):
    """``(slot, data tensor name, feature axis of that tensor)`` for each consumer slot of
    ``group`` whose weight rows are the features of the layer's data input."""
    for slot in group.slots:
        if slot.role != IN or slot.input_index != 1:
            continue
        node = analysis.graph.nodes[slot.node_index]
        if not node.inputs or node.inputs[0] is None or not node.inputs[0].name:
            continue
        if node.op in ("Conv", "ConvTranspose"):
            if int(node.attrs.get("group", 1)) != 1:
                continue
            axis = 1
        elif node.op == "Gemm":
            axis = 0 if node.attrs.get("transA", 0) else 1
        elif node.op == "MatMul":
            axis = -1
        else:
            continue
        yield slot, node.inputs[0].name, axis


def feature_statistics(analysis: Analysis, data, batch_size: int = 64,
                       gram: bool = False) -> dict[tuple[str, int], FeatureStats]:
    """:class:`FeatureStats` of the data input of every consumer layer of every prunable group,
    keyed by ``(tensor name, feature axis)``, on ``data`` (a
    :class:`~onnxprune.runtime.evaluate.Dataset` for ``analysis.model``); with ``gram``, each
    with its Gram matrix."""
    from ..runtime.activations import capture
    from ..runtime.samples import trace_axes

    model = analysis.model
    known = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    wanted = sorted({(name, axis) for g in analysis.prunable_groups for _, name, axis in _reads(analysis, g)
                     if name in known})
    names = sorted({name for name, _ in wanted})
    computed = [n for n in names if n not in data.inputs]
    axes = trace_axes(model, data, computed) if computed else {}
    out: dict[tuple[str, int], FeatureStats] = {}
    for start in range(0, len(names), CHUNK):
        chunk = names[start:start + CHUNK]
        captured = capture(model, data, chunk, batch_size, axes=axes)
        for name in chunk:
            values = np.asarray(captured.joined(name), dtype=np.float64)
            for key in [k for k in wanted if k[0] == name]:
                moved = np.moveaxis(values, key[1], 0).reshape(values.shape[key[1]], -1)
                out[key] = FeatureStats(np.abs(moved).mean(1), np.sqrt(np.square(moved).mean(1)), (moved == 0).mean(1),
                                        moved @ moved.T / moved.shape[1] if gram and len(moved) <= GRAM_LIMIT else None)
        del captured
    return out


def _row_norms(analysis: Analysis, slot) -> np.ndarray:
    """``‖W_j‖₂`` for each row ``j`` of the slot's weight along its axis (BN-folded where the
    layer's output is read by a BatchNorm alone)."""
    values = np.asarray(decoded(analysis.graph.nodes[slot.node_index].inputs[slot.input_index]), dtype=np.float64)
    values = bn_folded(analysis, slot.node_index, values)
    rows = np.moveaxis(values, slot.axis, 0)
    return np.sqrt(np.square(rows.reshape(rows.shape[0], -1)).sum(1))


def data_importance(analysis: Analysis, group: ChannelGroup, criterion: str,
                    stats: dict[tuple[str, int], FeatureStats]) -> np.ndarray | None:
    """Scores of ``group``'s channels by a data criterion (shape ``[group.channels]``, higher =
    keep), or ``None`` when no consumer slot has statistics (the caller falls back to ``l1``)."""
    k = analysis.group_index[group.id]
    total = np.zeros(group.channels)
    count = np.zeros(group.channels)
    for slot, name, axis in _reads(analysis, group):
        feature = stats.get((name, axis))
        if feature is None or len(feature.rms) != len(slot.ids):
            continue
        roots = analysis.root_of[slot.ids]
        inside = analysis.unit_group[roots] == k
        if criterion == "greedy":
            if feature.gram is None:
                continue
            per_row = greedy_order_scores(feature.gram, _row_norms(analysis, slot))
        elif criterion == "activation":
            per_row = feature.abs_mean
        elif criterion == "apoz":
            mean = feature.abs_mean.mean()
            per_row = (1.0 - feature.zero) + 1e-6 * (feature.abs_mean / mean if mean > 0 else 0.0)
        else:
            per_row = _row_norms(analysis, slot) * feature.rms
        pos = analysis.unit_position[roots][inside]
        raw = np.zeros(group.channels)
        np.add.at(raw, pos, per_row[inside])
        present = np.unique(pos)
        mean = raw[present].mean()
        if mean <= 0:
            continue
        total[present] += raw[present] / mean
        count[present] += 1
    if not count.any():
        return None
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def has_data_reads(analysis: Analysis, group: ChannelGroup) -> bool:
    """Whether a data criterion can score ``group`` (it has a consumer slot it reads)."""
    return any(True for _ in _reads(analysis, group))


def greedy_order_scores(gram: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``C - p`` for the feature chosen ``p``-th by pivoted Cholesky of ``D G D`` (``G`` the
    features' Gram matrix ``[C, C]``, ``D = diag(weights)``): each step keeps the feature with
    the largest residual energy after projecting out those already kept. Features the kept
    ones explain completely (residual below 1e-9 of the largest energy) come last, in the
    order of their energy."""
    g = gram * np.outer(weights, weights)
    n = len(g)
    residual = np.diag(g).astype(np.float64).copy()
    scale = float(residual.max()) if n else 0.0
    chosen = np.zeros(n, bool)
    columns = np.zeros((n, n))
    order: list[int] = []
    for k in range(n):
        candidates = np.where(chosen, -np.inf, residual)
        j = int(np.argmax(candidates))
        if candidates[j] <= 1e-9 * scale:
            break
        order.append(j)
        chosen[j] = True
        column = (g[:, j] - columns[:, :k] @ columns[j, :k]) / np.sqrt(residual[j])
        columns[:, k] = column
        residual = residual - column ** 2
    rest = [int(j) for j in np.argsort(-np.diag(g), kind="stable") if not chosen[j]]
    scores = np.zeros(n)
    scores[np.array(order + rest, dtype=int)] = np.arange(n, 0, -1, dtype=np.float64)
    return scores
