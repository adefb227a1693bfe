"""Property tests on random valid CNN graphs (``tests/randgraph.py``).

The fast profile is deterministic (``derandomize=True``, no example database) so CI sees the
same examples on every run; ``tools/property_long.py`` runs the same properties with many more
random examples. The whole fast profile runs in about 10 s.

Properties (bodies in ``randgraph.check_*``): every group is prunable or blocked with a reason
(and only graph outputs block, since the generator only uses supported ops); ``self_check``
passes; the dead-channel oracle with a drawn fraction and seed is exact, checker-clean and
costed right; so is dropping dead residual blocks together with dead channels; removing nothing
changes nothing; ``prune_model`` + ``finalize`` at a drawn ratio
or MACs target and criterion gives a checked model that runs, is deterministic, and is
reproduced by its saved plan.

Regression tests for the bugs the properties found (self-check emptying a tensor; params of a
shared weight sliced into value-equal copies) are at the bottom.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import randgraph as rg

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=250)

models = rg.cnn_models()


@FAST
@given(models)
def test_every_group_prunable_or_blocked_with_reason(m):
    rg.check_groups(m)


@FAST
@given(models)
def test_self_check_passes(m):
    rg.check_self_check(m)


@FAST
@given(models, rg.fractions, rg.seeds)
def test_dead_channels_prune_exactly(m, fraction, seed):
    rg.check_dead_oracle(m, fraction, seed)


@FAST
@given(rg.residual_models(), rg.fractions, rg.seeds)
def test_dead_blocks_and_channels_prune_exactly(m, fraction, seed):
    rg.check_depth_oracle(m, fraction, seed)


@FAST
@given(models)
def test_keep_all_changes_nothing(m):
    rg.check_keep_all(m)


@FAST
@given(models, rg.ratios, rg.criteria, st.booleans(), rg.round_tos, rg.targets)
def test_prune_gives_a_valid_model(m, ratio, criterion, global_rank, round_to, target_macs):
    rg.check_prune(m, ratio, criterion, global_rank, round_to, target_macs)


# ---------------------------------------------------------------------------- bigger profile


@pytest.mark.slow
@SLOW
@given(models)
def test_self_check_passes_slow(m):
    rg.check_self_check(m)


@pytest.mark.slow
@SLOW
@given(models, rg.fractions, rg.seeds)
def test_dead_channels_prune_exactly_slow(m, fraction, seed):
    rg.check_dead_oracle(m, fraction, seed)


@pytest.mark.slow
@SLOW
@given(models, rg.ratios, rg.criteria, st.booleans(), rg.round_tos, rg.targets)
def test_prune_gives_a_valid_model_slow(m, ratio, criterion, global_rank, round_to, target_macs):
    rg.check_prune(m, ratio, criterion, global_rank, round_to, target_macs)


# ---------------------------------------------------------------------------- regressions


def _one_channel_split_model(opset: int):
    """x[1,1,4,4] → conv0(2, k1) → Split [1, 1] → Concat(split0_y0, conv1(split0_y1, 2)) →
    conv2(1) → output. Groups: g0 = conv0 (2 channels, through the Split), g1 = conv1, g2 blocked.
    Removing either channel of g0 empties one Split output."""
    from graphs import Builder

    g = Builder(opset)
    y = g.conv(g.input([1, 1, 4, 4]), 2, k=1)
    a, b = g.split(y, [1, 1])
    return g.output(g.conv(g.concat([a, g.conv(b, 2, k=1)]), 1, k=1)).model()


def _grouped_conv_over_concat_model(opset: int):
    """x[1,1,4,4] → conv0(2, k1) → Concat(conv1(2, k1), conv2(2, k1)) → conv3 (group 2) →
    conv4(1) → output. Group g1 = {conv1, conv2, conv3} has 2 units: conv-group k of conv3 ties
    ALL of conv(1+k)'s channels, so removing either unit empties conv1_y or conv2_y."""
    from graphs import Builder

    g = Builder(opset)
    y0 = g.conv(g.input([1, 1, 4, 4]), 2, k=1)
    y = g.conv(g.concat([g.conv(y0, 2, k=1), g.conv(y0, 2, k=1)]), 2, k=1, group=2)
    return g.output(g.conv(y, 1, k=1)).model()


@pytest.mark.parametrize("opset", rg.OPSETS)
@pytest.mark.parametrize("case", ["split", "grouped_conv_over_concat"])
def test_self_check_when_half_the_units_empty_a_tensor(case, opset):
    from onnxprune.selfcheck import self_check

    build = _one_channel_split_model if case == "split" else _grouped_conv_over_concat_model
    a = rg.analyze_model(rg.RandModel(build(opset), opset, "init", 1))
    assert [g.prunable for g in a.groups] == [True, True, False]
    from onnxprune.decide.plan import fill_empty_tensors
    from onnxprune.selfcheck import dead_channel_plan

    assert fill_empty_tensors(dead_channel_plan(a, 0.5, 0), a, {})  # the case that needs the repair
    result = self_check(a)
    assert result.passed, result


def _shared_zero_weight_model(opset: int = 17):
    """x[1,1,4,4] → conv0(2, k1) → conv1(2, k1, all-zero weight W); AveragePool(conv0_y) →
    conv2 reading the same W (weight tying); Concat(conv1_y, conv2_y) → conv3(2) → output.
    Groups: g0 conv0, g1 conv1 (2), g2 conv2 (2), g3 conv3 (blocked: graph output)."""
    import numpy as np
    from graphs import Builder

    g = Builder(opset)
    y0 = g.conv(g.input([1, 1, 4, 4]), 2, k=1, bias=False)
    y1 = g.conv(y0, 2, k=1, bias=False, w=np.zeros((2, 2, 1, 1), np.float32))
    pooled = g.unary("AveragePool", y0, kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4)
    y2 = g.op("Conv", [pooled, "conv1_w"], name="tied", kernel_shape=[1, 1], strides=[1, 1], pads=[0] * 4, group=1)
    return g.output(g.conv(g.concat([y1, y2]), 2, k=1)).model()


@pytest.mark.parametrize("opset", [11, 17])
def test_params_of_a_shared_weight_sliced_into_equal_copies(opset):
    import numpy as np

    from onnxprune.analysis.cost import CostModel
    from onnxprune.analysis.groups import analyze
    from onnxprune.rewrite import apply_removal

    a = rg.analyze_model(rg.RandModel(_shared_zero_weight_model(opset), opset, "init", 1))
    assert [(g.anchor, g.channels, g.prunable) for g in a.groups] == [
        ("conv0", 2, True), ("conv1", 2, True), ("tied", 2, True), ("conv2", 2, False)]
    removed = np.array([a.groups[1].units[1], a.groups[2].units[0]])  # conv1 keeps 0, tied keeps 1
    pruned = apply_removal(a, removed)
    measured = CostModel(analyze(pruned)).cost()
    assert measured.params == rg._float_params(pruned)
    assert measured == CostModel(a).cost_without(removed)
