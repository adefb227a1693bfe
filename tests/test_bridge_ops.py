"""The torch bridge's recurrent ops and ``auto_pad``, node by node against onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")

from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.torch.graph_module import GraphModule  # noqa: E402

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
T, N, I, H = 5, 3, 4, 6


def _model(node, inputs, initializers, outputs, opset=14):
    graph = helper.make_graph([node], "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _compare(model, feed, atol=1e-5):
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    module = GraphModule(model)
    with torch.no_grad():
        got = module(*(torch.from_numpy(feed[n]) for n in module.input_names))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g.numpy(), e, atol=atol, rtol=1e-4)
    return module


def _recurrent(op, direction, *, states=False, lens=False, peepholes=False, extra=None, seed=0):
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    x_shape, state_shape = [T, N, I], [d, N, H]
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (d, g * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 0.4, (d, g * H, H)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.normal(0, 0.2, (d, 2 * g * H)).astype(np.float32), "B")]
    names = ["X", "W", "R", "B"]
    feed = {"X": rng.normal(size=x_shape).astype(np.float32)}
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    names.append("lens" if lens else "")
    if lens:
        feed["lens"] = np.array([T, 2, 4], dtype=np.int32)
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [N]))
    for s in (["h0", "c0"] if op == "LSTM" else ["h0"]):
        names.append(s if states else "")
        if states:
            feed[s] = rng.normal(size=state_shape).astype(np.float32)
            inputs.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, state_shape))
    if peepholes:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (d, 3 * H)).astype(np.float32), "P"))
        names.append("P")
    while names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, names, outs, hidden_size=H, direction=direction, **(extra or {}))
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * (4 if o == "Y" else 3)) for o in outs]
    return _model(node, inputs, inits, outputs), feed


def _check(op, direction, layout, **kw):
    """The bridge against onnxruntime; onnxruntime has no ``layout = 1`` (batch first), so
    that layout is checked against onnxruntime's ``layout = 0`` on the transposed tensors."""
    model, feed = _recurrent(op, direction, **kw)
    if not layout:
        return _compare(model, feed)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    node = model.graph.node[0]
    node.attribute.append(helper.make_attribute("layout", 1))
    batch_first = {k: (v if k == "lens" else np.ascontiguousarray(v.swapaxes(0, 1))) for k, v in feed.items()}
    module = GraphModule(model)
    with torch.no_grad():
        got = module(*(torch.from_numpy(batch_first[n]) for n in module.input_names))
    np.testing.assert_allclose(got[0].numpy(), expected[0].transpose(2, 0, 1, 3), atol=1e-5, rtol=1e-4)
    for g, e in zip(got[1:], expected[1:]):
        np.testing.assert_allclose(g.numpy(), e.swapaxes(0, 1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("op, direction, layout", list(itertools.product(
    ["LSTM", "GRU", "RNN"], ["forward", "reverse", "bidirectional"], [0, 1])))
def test_recurrent_ops_compute_what_onnxruntime_computes(op, direction, layout):
    _check(op, direction, layout)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_recurrent_ops_with_initial_states_and_sequence_lengths(op, direction):
    _check(op, direction, 0, states=True, lens=True, seed=1)
    _check(op, "reverse", 1, states=True, lens=True, seed=2)


def test_lstm_peepholes_clip_and_gru_linear_before_reset():
    _check("LSTM", "bidirectional", 0, peepholes=True, extra={"clip": 0.5})
    _check("GRU", "bidirectional", 0, extra={"linear_before_reset": 1})
    _check("RNN", "forward", 0, extra={"activations": ["Relu"]})


def test_recurrent_weights_train():
    model, feed = _recurrent("LSTM", "bidirectional", lens=True)
    module = GraphModule(model)
    y = module(*(torch.from_numpy(feed[n]) for n in module.input_names))[0]
    y.square().sum().backward()
    grads = {module.parameter_names[k]: p.grad for k, p in module.named_parameters()}
    assert set(grads) == {"W", "R", "B"}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("extra, match", [({"input_forget": 1}, "input_forget"),
                                          ({"activations": ["Sigmoid", "Softsign", "Tanh"]}, "Softsign")])
def test_recurrent_options_the_bridge_lacks_are_refused_by_name(extra, match):
    model, feed = _recurrent("LSTM", "forward", extra=extra)
    module = GraphModule(model)
    with pytest.raises(OnnxPruneError, match=match):
        module(*(torch.from_numpy(feed[n]) for n in module.input_names))


@pytest.mark.parametrize("op", ["Conv", "MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("stride, size", [(1, 7), (2, 7), (2, 8), (3, 10)])
def test_auto_pad_computes_what_onnxruntime_computes(op, auto_pad, stride, size):
    rng = np.random.default_rng(stride * size)
    x = rng.normal(size=(2, 3, size, size + 1)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    if op == "Conv":
        w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 2)).astype(np.float32), "w")
        node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[stride, stride])
        inits = [w]
    else:
        node = helper.make_node(op, ["x"], ["y"], auto_pad=auto_pad, strides=[stride, stride], kernel_shape=[3, 2])
        inits = []
    model = _model(node, inputs, inits, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)])
    _compare(model, {"x": x})


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
@pytest.mark.parametrize("shape, pads", [((2, 9), [0, 3, 0, 2]), ((2, 3, 5, 6), [0, 1, 2, 0, 0, 2, 1, 3]),
                                         ((2, 3, 5, 6), [0, 0, -1, 2, 0, 0, 2, -2])])
def test_pad_modes_on_any_axis_compute_what_onnxruntime_computes(mode, shape, pads):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)
    inits = [numpy_helper.from_array(np.array(pads, dtype=np.int64), "pads")]
    model = _model(node, inputs, inits, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(shape))])
    _compare(model, {"x": x})
