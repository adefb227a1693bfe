"""The dead-channel oracle on every small graph of :mod:`graphs`, at opsets 11, 13, 17 and 21.

For each graph: remove a random half of every prunable group (``dead_channel_plan``), zero
those channels' weights (``kill_channels``) so they contribute exactly nothing, analyze the
killed model and prune it (``apply_removal``). The pruned model must pass the full ONNX
checker, run in onnxruntime and match the killed model to fp32 round-off; its planned cost
must be the cost counted afresh on the pruned model, and its parameter count the number of
float initializer elements it really holds. A keep-all removal must change nothing at all.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphs
from graphs import OPSETS
from oracle import dead_channel_plan, kill_channels, random_feeds, run
from onnxprune.analysis.cost import CostModel
from onnxprune.graph import normalize
from onnxprune.analysis.groups import analyze
from onnxprune.decide.plan import GroupPlan, PruningPlan, fill_empty_tensors
from onnxprune.rewrite import apply_removal

TOLERANCE = 1e-5


@functools.lru_cache(maxsize=None)
def analysis_of(case: str, opset: int, weights: str = "init"):
    return analyze(normalize(graphs.CASES[case](opset, weights)))


def float_params(model: onnx.ModelProto) -> int:
    """Elements of every float initializer: the parameters the file really carries."""
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT)


def max_error(a: list, b: list) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def prune_dead(case: str, opset: int, weights: str = "init", seed: int = 0):
    """(killed analysis, removed units, pruned model, plan) for the dead-channel oracle."""
    return prune_dead_analysis(analysis_of(case, opset, weights), seed)


def prune_dead_analysis(a, seed: int = 0):
    plan = dead_channel_plan(a, seed=seed)
    fill_empty_tensors(plan, a, {})  # a Split output may otherwise lose all its channels
    assert plan.groups, "the case has no prunable group"
    killed = analyze(kill_channels(a, plan.removed_units(a)))
    plan.validate(killed)
    removed = plan.removed_units(killed)
    assert len(removed) > 0
    return killed, removed, apply_removal(killed, removed), plan


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(graphs.CASES))
def test_dead_channels_prune_exactly(case, opset):
    killed, removed, pruned, plan = prune_dead(case, opset)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(killed)
    expected = run(killed.model, feeds)
    assert max_error(run(pruned, feeds), expected) <= TOLERANCE

    # Planned cost == cost counted on the pruned model, and params == what the file holds.
    planned = CostModel(killed).cost_without(removed)
    after = analyze(pruned)
    assert CostModel(after).cost() == planned
    assert float_params(pruned) == planned.params
    assert planned.params < CostModel(killed).cost().params

    # Every traced activation of the pruned model has exactly the planned channel count on its
    # channel axis: the channels of the kept positions of each group.
    kept_units = set()
    for g in killed.groups:
        positions = plan.groups[g.id].keep if g.id in plan.groups else range(g.channels)
        kept_units |= {int(g.units[i]) for i in positions}
    for name, ax in killed.axes.items():
        if name in after.shapes:
            expected_count = sum(int(killed.root_of[i]) in kept_units for i in ax.ids)
            assert after.shapes[name][ax.axis] == expected_count, name


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("case", ["split_concat", "grouped", "concat_channels", "computed36_reshape_gemm"])
def test_dead_channels_other_draws(case, seed):
    killed, removed, pruned, _ = prune_dead(case, 17, seed=seed)
    feeds = random_feeds(killed, seed=seed)
    assert max_error(run(pruned, feeds), run(killed.model, feeds)) <= TOLERANCE
    assert CostModel(analyze(pruned)).cost() == CostModel(killed).cost_without(removed)


@pytest.mark.parametrize("weights", ["constant", "identity"])
@pytest.mark.parametrize("case", sorted(graphs.CASES))
def test_dead_channels_with_folded_weights(case, weights):
    """Weights in Constant nodes (Paddle) or behind Identity (torch): same exactness, and the
    pruned file holds only the pruned weights (no unread full-size copy survives)."""
    killed, removed, pruned, _ = prune_dead(case, 17, weights)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(killed)
    assert max_error(run(pruned, feeds), run(killed.model, feeds)) <= TOLERANCE
    planned = CostModel(killed).cost_without(removed)
    assert CostModel(analyze(pruned)).cost() == planned
    assert float_params(pruned) == planned.params


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(graphs.CASES))
def test_keep_all_changes_nothing(case, opset):
    a = analysis_of(case, opset)
    same = apply_removal(a, np.zeros(0, dtype=np.int64))
    before = {t.name: t.SerializeToString() for t in a.model.graph.initializer}
    after = {t.name: t.SerializeToString() for t in same.graph.initializer}
    assert after == before
    assert [n.SerializeToString() for n in same.graph.node] == [n.SerializeToString() for n in a.model.graph.node]
    feeds = random_feeds(a)
    for x, y in zip(run(same, feeds), run(a.model, feeds)):
        np.testing.assert_array_equal(x, y)
    assert CostModel(a).cost_without(np.zeros(0, dtype=np.int64)) == CostModel(a).cost()


def test_weights_zeroed_by_kill_are_really_pruned():
    """Sanity of the oracle itself: on the plain chain, the pruned conv0 keeps exactly the
    filters that were not zeroed, and conv1 exactly their input columns."""
    killed, removed, pruned, plan = prune_dead("conv_bn_relu_conv", 17)
    keep = plan.groups["g0"].keep
    original = {t.name: numpy_helper.to_array(t) for t in killed.model.graph.initializer}
    result = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    np.testing.assert_array_equal(result["conv0_w"], original["conv0_w"][keep])
    np.testing.assert_array_equal(result["conv1_w"], original["conv1_w"][:, keep])
    np.testing.assert_array_equal(result["bn0_scale"], original["bn0_scale"][keep])
    assert not np.any(original["conv0_w"][[i for i in range(8) if i not in keep]])


@pytest.mark.parametrize("opset", OPSETS)
def test_plan_that_empties_a_split_output_is_repaired(opset):
    """Removing channels 0..4 of conv0 would leave split0_y0 ([0:4]) empty: one is given back
    (the best-scoring, channel 3), the Split sizes become [1, 3], and pruning stays exact."""
    a = analysis_of("split_concat", opset)
    plan = PruningPlan(groups={"g0": GroupPlan("g0", "conv0", 8, None, [5, 6, 7])})
    notes = fill_empty_tensors(plan, a, {"g0": np.arange(8.0)})
    assert notes == ["kept channel 3 of g0 so that split0_y0 keeps one channel"]
    assert plan.groups["g0"].keep == [3, 5, 6, 7]
    killed = analyze(kill_channels(a, plan.removed_units(a)))
    pruned = apply_removal(killed, plan.removed_units(killed))
    onnx.checker.check_model(pruned, full_check=True)
    (split,) = [n for n in pruned.graph.node if n.op_type == "Split"]
    if opset < 13:
        sizes = [list(at.ints) for at in split.attribute if at.name == "split"][0]
    else:
        inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
        sizes = inits[split.input[1]].tolist()
    assert sizes == [1, 3]
    feeds = random_feeds(killed)
    assert max_error(run(pruned, feeds), run(killed.model, feeds)) <= TOLERANCE


@pytest.mark.parametrize("opset", [11, 17])
def test_initializers_listed_as_graph_inputs(opset):
    model = graphs.conv_bn_relu_conv(opset)
    for t in model.graph.initializer:  # as torch.onnx.export(keep_initializers_as_inputs=True) writes them
        model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    onnx.checker.check_model(model, full_check=True)
    killed, removed, pruned, _ = prune_dead_analysis(analyze(normalize(model)))
    feeds = random_feeds(killed)
    assert max_error(run(pruned, feeds), run(killed.model, feeds)) <= TOLERANCE
    onnx.checker.check_model(pruned, full_check=True)
