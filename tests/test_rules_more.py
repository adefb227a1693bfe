"""Rules added for third-party graphs: size-1 reshape moves, Gather on other axes, computed
Pad, and LSTM input features. Each graph is checked with the dead-channel oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.groups import IN, analyze
from onnxprune.graph import normalize
from onnxprune.selfcheck import self_check

RNG = np.random.default_rng(0)


def const(name, shape, values=None):
    arr = RNG.standard_normal(shape).astype(np.float32) if values is None else np.asarray(values)
    return numpy_helper.from_array(arr, name)


def model(nodes, inits, x_shape, y_name="y", opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return analyze(normalize(m))


def test_reshape_moving_size_one_dims():
    """tf2onnx: ``[N,C,1,1] -> [-1,1,1,C]`` then a MatMul on the last axis."""
    a = model([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Reshape", ["p", "shape"], ["r"], name="nhwc"),
        helper.make_node("MatMul", ["r", "fc"], ["y"], name="fc"),
    ], [const("w", (8, 3, 3, 3)), const("shape", None, np.array([-1, 1, 1, 8], np.int64)), const("fc", (8, 5))], [1, 3, 6, 6])
    conv = next(g for g in a.groups if g.anchor == "conv")
    assert conv.prunable and conv.channels == 8
    assert a.axes["r"].axis == 3
    assert self_check(a).passed


def test_gather_on_time_axis_passes_channels():
    """CRNN: a scalar Gather picks a time step of ``[T, B, C]``; the channel axis shifts down."""
    a = model([
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj"),
        helper.make_node("Gather", ["h", "t0"], ["g"], name="pick", axis=0),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="head"),
    ], [const("w1", (6, 10)), const("t0", None, np.array(2, np.int64)), const("w2", (10, 4))], [5, 1, 6])
    assert a.axes["g"].axis == 1
    assert a.group("g0").prunable
    assert self_check(a).passed


def test_gather_on_channel_axis_blocks():
    a = model([
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj"),
        helper.make_node("Gather", ["h", "idx"], ["y"], name="pick", axis=1),
    ], [const("w1", (6, 10)), const("idx", None, np.array([0, 3], np.int64))], [5, 6])
    assert any("Gather along the channel axis" in r for r in a.groups[0].blocked)


def test_computed_spatial_pads_pass_through():
    """TF "SAME" padding from Shape: pads computed at run time, channel dim unchanged."""
    a = model([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Shape", ["c"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i2"], ["h"], name="h", axis=0),
        helper.make_node("Mod", ["h", "two"], ["odd"], name="odd"),
        helper.make_node("Concat", ["zeros6", "odd", "odd"], ["pads"], name="pads", axis=0),
        helper.make_node("Pad", ["c", "pads"], ["p"], name="pad", mode="edge"),
        helper.make_node("Conv", ["p", "w2"], ["y"], name="conv2"),
    ], [const("w", (8, 3, 3, 3)), const("i2", None, np.array([2], np.int64)), const("two", None, np.array([2], np.int64)),
        const("zeros6", None, np.zeros(6, np.int64)), const("w2", (4, 8, 3, 3))], [1, 3, 7, 7])
    conv = next(g for g in a.groups if g.anchor == "conv")
    assert conv.prunable, conv.blocked
    assert self_check(a).passed


@pytest.mark.parametrize("op, gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_recurrent_input_features_are_a_consumer_slot(op, gates):
    hidden, feats = 5, 6
    a = model([
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj"),
        helper.make_node(op, ["h", "W", "R"], ["y"], name="rnn", hidden_size=hidden),
    ], [const("w1", (4, feats)), const("W", (1, gates * hidden, feats)), const("R", (1, gates * hidden, hidden))], [7, 2, 4])
    proj = next(g for g in a.groups if g.anchor == "proj")
    assert proj.prunable and any(s.tensor == "W" and s.axis == 2 and s.role == IN for s in proj.slots)
    rnn = next(g for g in a.groups if g.anchor == "rnn")
    assert not rnn.prunable and any("hidden size" in r for r in rnn.blocked)
    from onnxprune.analysis.cost import CostModel

    lstm_macs = 7 * 2 * gates * hidden * (feats + hidden)
    assert CostModel(a).cost().macs == 7 * 2 * 4 * feats + lstm_macs
    assert self_check(a).passed


def test_weights_behind_cast_are_folded_and_pruned(tmp_path):
    """Mixed-precision exports store weights as fp16 behind ``Cast(to=FLOAT)``."""
    from onnxprune.pipeline import PruneOptions, prune_file

    w1 = numpy_helper.from_array(RNG.standard_normal((8, 3, 3, 3)).astype(np.float16), "w1_fp16")
    w2 = numpy_helper.from_array(RNG.standard_normal((4, 8, 3, 3)).astype(np.float16), "w2_fp16")
    nodes = [
        helper.make_node("Cast", ["w1_fp16"], ["w1"], name="cast1", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w2_fp16"], ["w2"], name="cast2", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
    ]
    a = model(nodes, [w1, w2], [1, 3, 8, 8])
    conv1 = next(g for g in a.groups if g.anchor == "conv1")
    assert conv1.prunable and conv1.channels == 8
    assert {s.tensor for s in conv1.slots} == {"w1", "w2"}  # the folded Cast outputs
    assert self_check(a).passed
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w1, w2])
    src = tmp_path / "cast.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), src)
    result = prune_file(src, tmp_path / "out.onnx", PruneOptions(ratio=0.5))
    assert result.after.macs < 0.6 * result.before.macs
