"""MACs and params (``onnxprune.analysis.cost``) against values computed by hand in each test.

MACs count Conv, ConvTranspose, Gemm and MatMul at batch 1: a Conv costs
``C_out * H_out * W_out * (C_in / group) * k * k``. Params are all float initializer elements.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphs
from graphs import Builder
from onnxprune.analysis.cost import Cost, CostModel, model_cost
from onnxprune.graph import normalize
from onnxprune.analysis.groups import analyze
from onnxprune.decide.plan import GroupPlan, PruningPlan
from onnxprune.rewrite import apply_removal


def cost_of(model) -> Cost:
    return model_cost(analyze(normalize(model)))


def test_single_conv_stride_1_pad_1():
    g = Builder()
    model = g.output(g.conv(g.input([1, 3, 32, 32]), 8, k=3, pad=1)).model()
    assert cost_of(model) == Cost(macs=8 * 32 * 32 * 3 * 3 * 3, params=8 * 3 * 3 * 3 + 8)


def test_strided_conv():
    g = Builder()
    model = g.output(g.conv(g.input([1, 3, 32, 32]), 8, k=3, stride=2, pad=1)).model()
    # (32 + 2*1 - 3) // 2 + 1 = 16
    assert cost_of(model) == Cost(macs=8 * 16 * 16 * 3 * 3 * 3, params=8 * 3 * 3 * 3 + 8)


def test_conv_without_padding_and_bias():
    g = Builder()
    model = g.output(g.conv(g.input([1, 4, 10, 10]), 6, k=5, pad=0, bias=False)).model()
    assert cost_of(model) == Cost(macs=6 * 6 * 6 * 4 * 5 * 5, params=6 * 4 * 5 * 5)


def test_depthwise_conv():
    g = Builder()
    model = g.output(g.conv(g.input([1, 8, 16, 16]), 8, k=3, group=8)).model()
    assert cost_of(model) == Cost(macs=8 * 16 * 16 * 1 * 3 * 3, params=8 * 1 * 3 * 3 + 8)


def test_grouped_conv():
    g = Builder()
    model = g.output(g.conv(g.input([1, 8, 16, 16]), 16, k=3, group=2)).model()
    assert cost_of(model) == Cost(macs=16 * 16 * 16 * (8 // 2) * 3 * 3, params=16 * 4 * 3 * 3 + 16)


def test_conv_transpose():
    g = Builder()
    model = g.output(g.conv_transpose(g.input([1, 8, 8, 8]), 4, k=2, stride=2)).model()
    # Each of the 8*8*8 input elements is scattered to C_out * k * k = 4*2*2 outputs; equally,
    # each of the 4*16*16 outputs gathers exactly one tap from each of the 8 input channels.
    assert 8 * 8 * 8 * 4 * 2 * 2 == 4 * 16 * 16 * 8
    assert cost_of(model) == Cost(macs=8 * 8 * 8 * 4 * 2 * 2, params=8 * 4 * 2 * 2 + 4)


def test_grouped_conv_transpose():
    g = Builder()
    model = g.output(g.conv_transpose(g.input([1, 8, 4, 4]), 6, k=2, stride=2, group=2)).model()
    # W[8, 6/2, 2, 2]: every input element feeds (6/2)*2*2 outputs.
    assert cost_of(model) == Cost(macs=8 * 4 * 4 * 3 * 2 * 2, params=8 * 3 * 2 * 2 + 6)


@pytest.mark.parametrize("trans_b", [True, False])
def test_gemm(trans_b):
    g = Builder()
    model = g.output(g.gemm(g.input([1, 64]), 10, trans_b=trans_b)).model()
    assert cost_of(model) == Cost(macs=64 * 10, params=64 * 10 + 10)


def test_gemm_with_trans_a():
    g = Builder()
    # A is [K=64, M=2]; Gemm computes A^T @ B = [2, 64] @ [64, 10].
    y = g.op("Gemm", [g.input([64, 2]), g.weight("w", g.random((64, 10))), g.weight("b", g.random(10))],
             transA=1, shape=(2, 10))
    assert cost_of(g.output(y).model()) == Cost(macs=2 * 10 * 64, params=64 * 10 + 10)


def test_conv_1d():
    g = Builder()
    y = g.op("Conv", [g.input([1, 4, 10]), g.weight("w", g.random((6, 4, 3)))], kernel_shape=[3], pads=[1, 1])
    assert cost_of(g.output(y).model()) == Cost(macs=6 * 10 * 4 * 3, params=6 * 4 * 3)


def test_dilated_conv():
    g = Builder()
    y = g.op("Conv", [g.input([1, 4, 8, 8]), g.weight("w", g.random((6, 4, 3, 3)))], kernel_shape=[3, 3],
             dilations=[2, 2])
    # Effective kernel 5: 8 - 5 + 1 = 4; still 3*3 taps per output.
    assert cost_of(g.output(y).model()) == Cost(macs=6 * 4 * 4 * 4 * 3 * 3, params=6 * 4 * 3 * 3)


def test_batch_size_scales_macs_not_params():
    g = Builder()
    model = g.output(g.conv(g.input(["N", 3, 8, 8]), 4)).model()
    assert cost_of(model) == Cost(macs=4 * 8 * 8 * 3 * 9, params=4 * 27 + 4)  # batch defaults to 1
    a = analyze(normalize(model), {"x": (3, 3, 8, 8)})
    assert model_cost(a) == Cost(macs=3 * 4 * 8 * 8 * 3 * 9, params=4 * 27 + 4)


def test_matmul_on_tokens():
    g = Builder()
    model = g.output(g.matmul(g.input([1, 5, 16]), 32)).model()
    # [1, T=5, D=16] @ [16, 32]: T*D*N.
    assert cost_of(model) == Cost(macs=5 * 16 * 32, params=16 * 32)


def test_batch_norm_and_pointwise_ops_count_params_not_macs():
    g = Builder()
    y = g.add(g.relu(g.bn(g.input([1, 6, 4, 4]))), np.ones((1, 6, 1, 1), np.float32))
    model = g.output(y).model()
    assert cost_of(model) == Cost(macs=0, params=4 * 6 + 6)


def test_integer_constants_are_not_params():
    g = Builder()
    y = g.reshape(g.conv(g.input([1, 3, 4, 4]), 2, k=1, bias=False), [1, -1])
    assert cost_of(g.output(y).model()) == Cost(macs=2 * 4 * 4 * 3, params=2 * 3)


def test_conv_bn_relu_conv_total():
    # x[1,3,8,8] → conv0 3x3 (8) → bn → relu → conv1 3x3 (4)
    macs = 8 * 8 * 8 * 3 * 9 + 4 * 8 * 8 * 8 * 9
    params = (8 * 3 * 9 + 8) + 4 * 8 + (4 * 8 * 9 + 4)
    assert cost_of(graphs.conv_bn_relu_conv()) == Cost(macs, params)


def test_flatten_gemm_total():
    # x[1,2,3,3] → conv0 3x3 (4) → flatten (36) → gemm0 (5)
    assert cost_of(graphs.flatten_gemm()) == Cost(4 * 9 * 2 * 9 + 5 * 36, (4 * 2 * 9 + 4) + (5 * 36 + 5))


# ----------------------------------------------------------------------------- after pruning


def removal(analysis, keeps: dict[str, list[int]]) -> np.ndarray:
    plan = PruningPlan(groups={gid: GroupPlan(gid, analysis.group(gid).anchor, analysis.group(gid).channels, None, keep)
                               for gid, keep in keeps.items()})
    plan.validate(analysis)
    return plan.removed_units(analysis)


def test_pruning_half_of_a_group():
    g = Builder()
    y = g.conv(g.relu(g.conv(g.input([1, 3, 8, 8]), 8)), 4)
    a = analyze(normalize(g.output(y).model()))
    removed = removal(a, {"g0": [1, 3, 5, 7]})
    # conv0 keeps 4 of 8 filters; conv1 reads 4 channels.
    macs = 4 * 8 * 8 * 3 * 9 + 4 * 8 * 8 * 4 * 9
    params = (4 * 3 * 9 + 4) + (4 * 4 * 9 + 4)
    assert CostModel(a).cost_without(removed) == Cost(macs, params)
    assert CostModel(a).cost() == Cost(8 * 64 * 27 + 4 * 64 * 8 * 9, (8 * 27 + 8) + (4 * 8 * 9 + 4))


def test_pruning_one_of_two_conv_groups():
    a = analyze(normalize(graphs.grouped()))
    removed = removal(a, {"g0": [1]})
    # conv0 keeps 4 filters; conv1 keeps one conv-group (W[4, 4, 3, 3], now group=1); conv2 1x1 reads 4.
    macs = 4 * 64 * 3 * 9 + 4 * 64 * 4 * 9 + 3 * 64 * 4
    params = (4 * 27 + 4) + (4 * 4 * 9 + 4) + (3 * 4 + 3)
    assert CostModel(a).cost_without(removed) == Cost(macs, params)


def test_pruning_depthwise_group():
    a = analyze(normalize(graphs.depthwise()))
    removed = removal(a, {"g0": [0, 2, 4]})
    # conv0 3x3 (3 kept) → bn → relu → depthwise 3x3 (3) → bn → relu → conv2 1x1 (6)
    macs = 3 * 64 * 3 * 9 + 3 * 64 * 1 * 9 + 6 * 64 * 3
    params = (3 * 27 + 3) + 4 * 3 + (3 * 9 + 3) + 4 * 3 + (6 * 3 + 6)
    assert CostModel(a).cost_without(removed) == Cost(macs, params)


def test_pruning_before_flatten_gemm():
    a = analyze(normalize(graphs.flatten_gemm()))
    removed = removal(a, {"g0": [0, 3]})
    # 2 of 4 channels: the Gemm reads 2*9 = 18 features.
    assert CostModel(a).cost_without(removed) == Cost(2 * 9 * 2 * 9 + 5 * 18, (2 * 2 * 9 + 2) + (5 * 18 + 5))


def test_pruning_mlp_hidden():
    a = analyze(normalize(graphs.mlp()))
    removed = removal(a, {"g0": list(range(0, 32, 4))})
    assert CostModel(a).cost_without(removed) == Cost(16 * 8 + 8 * 10, (16 * 8 + 8) + (8 * 10 + 10))


def test_pruning_conv_transpose_input_and_output():
    a = analyze(normalize(graphs.conv_transpose()))
    removed = removal(a, {"g0": [0, 1, 2], "g1": [3]})
    # x[1,3,4,4] → conv0 3x3 (3 of 6) → convt0 k2 s2 (in 3, out 1) → conv1 3x3 on 8x8 (3, reads 1)
    macs = 3 * 16 * 3 * 9 + 3 * 16 * 1 * 2 * 2 + 3 * 64 * 1 * 9
    params = (3 * 27 + 3) + (3 * 1 * 2 * 2 + 1) + (3 * 1 * 9 + 3)
    assert CostModel(a).cost_without(removed) == Cost(macs, params)


def test_shared_weight_read_by_two_convs():
    g = Builder()
    w = g.weight("shared_w", g.random((8, 8, 3, 3)))
    y = g.relu(g.conv(g.input([1, 3, 4, 4]), 8, bias=False))
    y = g.relu(g.op("Conv", [y, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    y = g.relu(g.op("Conv", [y, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    a = analyze(normalize(g.output(g.conv(y, 2, k=1, bias=False)).model()))
    assert [grp.anchor for grp in a.groups] == ["conv0", "conv1", "conv2", "conv3"]
    removed = removal(a, {"g0": list(range(6)), "g1": list(range(4)), "g2": list(range(2))})
    # conv1 reads 6 and writes 4 channels with its copy W[4, 6]; conv2 reads 4, writes 2 with W[2, 4].
    hw = 4 * 4
    macs = 6 * hw * 3 * 9 + 4 * hw * 6 * 9 + 2 * hw * 4 * 9 + 2 * hw * 2
    params = 6 * 3 * 9 + 4 * 6 * 9 + 2 * 4 * 9 + 2 * 2
    pruned = apply_removal(a, removed)
    assert sum(int(np.prod(t.dims)) for t in pruned.graph.initializer) == params  # the rewrite agrees
    assert CostModel(a).cost_without(removed) == Cost(macs, params)
