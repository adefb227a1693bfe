"""Importance criteria on weights set by hand; expected scores are computed in each test.

The documented aggregation: per weight slot, one raw score per channel, divided by the slot's
mean over the group's channels, then averaged over the slots a channel appears in.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

import graphs
from graphs import Builder
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import normalize
from onnxprune.analysis.groups import analyze
from onnxprune.decide.importance import all_importance, group_importance
from onnxprune.decide.names import WEIGHT_CRITERIA

# Four 1x1 filters over 2 input channels, chosen so that L1 and L2 order them differently:
#   f0 = [3, 4]: L1 7, L2 5;  f1 = [6, 0]: L1 6, L2 6;  f2 = [1, 1]: L1 2, L2 1.414;  f3 = [-9, -0.5]: L1 9.5, L2 9.01
FILTERS = np.array([[3, 4], [6, 0], [1, 1], [-9, -0.5]], dtype=np.float32)


def chain(filters: np.ndarray, consumer=None, gamma=None):
    """x[1,2,4,4] → conv0 1x1 (filters, no bias) → [bn0(gamma)] → relu → conv1 1x1 (consumer, 3 outputs)."""
    c = len(filters)
    g = Builder()
    y = g.conv(g.input([1, filters.shape[1], 4, 4]), c, k=1, bias=False, w=filters.reshape(c, -1, 1, 1))
    if gamma is not None:
        y = g.bn(y, gamma=np.asarray(gamma, np.float32))
    consumer = np.ones((3, c), np.float32) if consumer is None else np.asarray(consumer, np.float32)
    y = g.conv(g.relu(y), 3, k=1, bias=False, w=consumer.reshape(3, c, 1, 1))
    a = analyze(normalize(g.output(y).model()))
    return a, a.groups[0]


def test_l1_ranks_by_filter_l1_norm():
    a, g0 = chain(FILTERS)
    scores = group_importance(a, g0, "l1")
    out_l1 = np.array([3 + 4, 6 + 0, 1 + 1, 9 + 0.5])
    in_l1 = np.array([3.0, 3.0, 3.0, 3.0])  # the consumer's columns: three ones each
    expected = (out_l1 / out_l1.mean() + in_l1 / in_l1.mean()) / 2
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert list(np.argsort(scores)) == [2, 1, 0, 3]
    assert scores.dtype == np.float64 and scores.shape == (4,)


def test_l2_ranks_by_filter_l2_norm():
    a, g0 = chain(FILTERS)
    scores = group_importance(a, g0, "l2")
    out_l2 = np.array([5.0, 6.0, np.sqrt(2.0), np.sqrt(81 + 0.25)])
    in_l2 = np.full(4, np.sqrt(3.0))
    expected = (out_l2 / out_l2.mean() + in_l2 / in_l2.mean()) / 2
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert list(np.argsort(scores)) == [2, 0, 1, 3]  # f0 and f1 swap places against L1


def test_consumer_columns_count_too():
    # Equal filters: only the consumer's columns (L1 per channel: 3, 6, 9, 12) tell channels apart.
    filters = np.ones((4, 2), np.float32)
    consumer = np.array([[1, 2, 3, 4]] * 3)
    a, g0 = chain(filters, consumer)
    in_l1 = np.array([3.0, 6.0, 9.0, 12.0])
    np.testing.assert_allclose(group_importance(a, g0, "l1"), (1 + in_l1 / in_l1.mean()) / 2, rtol=1e-6)


def test_aggregation_normalizes_each_slot_by_its_mean():
    # Filters' L1: 1, 2, 3, 10 (mean 4); consumer columns' L1 1000x larger: 3000, 9000, 9000, 3000.
    filters = np.array([[1, 0], [2, 0], [3, 0], [10, 0]], np.float32)
    consumer = 1000 * np.array([[1, 3, 3, 1]] * 3)
    a, g0 = chain(filters, consumer)
    scores = group_importance(a, g0, "l1")
    out_part = np.array([1, 2, 3, 10]) / 4  # 0.25 0.5 0.75 2.5
    in_part = np.array([3000, 9000, 9000, 3000]) / 6000  # 0.5 1.5 1.5 0.5
    np.testing.assert_allclose(scores, (out_part + in_part) / 2, rtol=1e-6)
    # Normalized, the order is 0 < 1 < 2 < 3; a raw sum would be dominated by the consumer (0, 3, 1, 2).
    assert list(np.argsort(scores)) == [0, 1, 2, 3]
    assert np.isclose(scores.mean(), 1.0)


def test_flatten_gemm_columns_are_summed_per_channel():
    # conv0 (4 equal filters) → flatten → gemm0: channel c owns 9 columns, all set to c + 1.
    g = Builder()
    y = g.conv(g.input([1, 2, 3, 3]), 4, bias=False, w=np.ones((4, 2, 3, 3), np.float32))
    w = np.repeat(np.arange(1, 5, dtype=np.float32), 9)[None, :].repeat(5, axis=0)  # [5, 36]
    a = analyze(normalize(g.output(g.gemm(g.flatten(g.relu(y)), 5, w=w)).model()))
    in_l1 = 5 * 9 * np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(group_importance(a, a.groups[0], "l1"), (1 + in_l1 / in_l1.mean()) / 2, rtol=1e-6)


def test_bn_scale_follows_abs_gamma():
    gamma = [0.5, -3.0, 1.0, 2.0]
    a, g0 = chain(FILTERS, gamma=gamma)
    scores = group_importance(a, g0, "bn-scale")
    abs_gamma = np.abs(gamma)
    np.testing.assert_allclose(scores, abs_gamma / abs_gamma.mean(), rtol=1e-6)
    assert list(np.argsort(scores)) == [0, 2, 3, 1]


def test_bn_scale_without_norm_layer_falls_back_to_l1():
    a, g0 = chain(FILTERS)
    np.testing.assert_allclose(group_importance(a, g0, "bn-scale"), group_importance(a, g0, "l1"))


def test_fpgm_outlier_most_and_centre_least_important():
    # Six 2-D filters: four around the origin, one at the centre, one far away.
    filters = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0], [5, 5]], np.float32)
    a, g0 = chain(filters)
    scores = group_importance(a, g0, "fpgm")
    distance_sums = np.array([sum(np.hypot(*(fi - fj)) for fj in filters) for fi in filters.astype(np.float64)])
    np.testing.assert_allclose(scores, distance_sums / distance_sums.mean(), rtol=1e-6)
    assert int(np.argmax(scores)) == 5
    assert int(np.argmin(scores)) == 4


def test_random_is_seeded():
    a, g0 = chain(FILTERS)
    first = group_importance(a, g0, "random", seed=7)
    np.testing.assert_array_equal(first, group_importance(a, g0, "random", seed=7))
    assert not np.array_equal(first, group_importance(a, g0, "random", seed=8))
    assert first.shape == (4,) and np.all((first >= 0) & (first < 1))


def test_all_importance_covers_prunable_groups_only():
    a = analyze(normalize(graphs.concat_channels()))
    scores = all_importance(a, "l1")
    assert sorted(scores) == ["g0", "g1"]  # g2 reaches the output
    assert [len(scores[k]) for k in ("g0", "g1")] == [4, 6]
    for criterion in WEIGHT_CRITERIA:
        assert sorted(all_importance(a, criterion)) == ["g0", "g1"]


def test_grouped_conv_units_score_whole_conv_groups():
    a = analyze(normalize(graphs.grouped()))
    g0 = a.groups[0]
    scores = group_importance(a, g0, "l1")
    assert scores.shape == (2,)
    w = {t.name: np.abs(numpy_helper.to_array(t)).astype(np.float64) for t in a.model.graph.initializer}
    # Unit k holds conv0 filters 4k..4k+3, conv1 filters 4k..4k+3 and conv2 columns 4k..4k+3.
    parts = [
        np.array([w["conv0_w"][4 * k:4 * k + 4].sum() for k in range(2)]),
        np.array([w["conv1_w"][4 * k:4 * k + 4].sum() for k in range(2)]),
        np.array([w["conv2_w"][:, 4 * k:4 * k + 4].sum() for k in range(2)]),
    ]
    np.testing.assert_allclose(scores, sum(p / p.mean() for p in parts) / 3, rtol=1e-6)


def test_concat_consumer_columns_are_split_between_groups():
    # concat(conv0 (4), conv1 (6)) → conv2: g0 owns conv2's columns 0..3, g1 columns 4..9.
    a = analyze(normalize(graphs.concat_channels()))
    w = {t.name: np.abs(numpy_helper.to_array(t)).astype(np.float64) for t in a.model.graph.initializer}
    for gid, filters, columns in (("g0", "conv0_w", slice(0, 4)), ("g1", "conv1_w", slice(4, 10))):
        out_l1 = w[filters].reshape(len(w[filters]), -1).sum(axis=1)
        in_l1 = w["conv2_w"][:, columns].sum(axis=(0, 2, 3))
        expected = (out_l1 / out_l1.mean() + in_l1 / in_l1.mean()) / 2
        np.testing.assert_allclose(group_importance(a, a.group(gid), "l1"), expected, rtol=1e-6)


def test_unknown_criterion():
    a, g0 = chain(FILTERS)
    with pytest.raises(OnnxPruneError, match="unknown criterion"):
        group_importance(a, g0, "taylor")
