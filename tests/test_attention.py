"""Transformer blocks: FFN hidden neurons and whole attention heads are pruned exactly.

The block is written in plain ops (separate q/k/v Linear, reshape into heads, two activation
MatMuls, softmax), exported by torch's TorchScript exporter with dynamic batch and sequence
(head reshapes get targets computed from ``Shape``) and with static shapes (constant targets).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from onnxprune.analysis.groups import OUT  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file  # noqa: E402
from onnxprune.selfcheck import run, self_check  # noqa: E402

D, HEADS, T = 32, 4, 8


class Block(nn.Module):
    """Pre-LN encoder block (Vaswani et al. 2017): x + MHSA(LN(x)), then x + FFN(LN(x)); [B,T,D]->[B,T,D]."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.f1, self.f2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x):
        b, t, d = x.shape
        dh = d // HEADS
        y = self.ln1(x)
        q, k, v = (m(y).reshape(b, t, HEADS, dh).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = ((q @ k.transpose(-2, -1)) * dh ** -0.5).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.f2(nn.functional.gelu(self.f1(self.ln2(x))))


@pytest.fixture(scope="module", params=["dynamic", "static"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("attn") / f"{request.param}.onnx"
    dynamic = {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}} if request.param == "dynamic" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Block().eval(), torch.randn(1, T, D), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes=dynamic)
    return request.param, str(path)


def test_groups_are_heads_and_ffn_neurons(exported):
    _, path = exported
    analysis = load_and_analyze(path, {"x": (1, T, D)})
    prunable = sorted((g.channels for g in analysis.prunable_groups))
    assert prunable == [HEADS, 4 * D]  # one unit per head; one per FFN neuron
    heads = next(g for g in analysis.prunable_groups if g.channels == HEADS)
    producers = {s.tensor for s in heads.slots if s.role == OUT}
    assert len(producers) == 3  # the q, k and v projections
    blocked = [g for g in analysis.groups if not g.prunable]
    assert blocked and all(g.blocked for g in blocked)  # the residual stream: LayerNorm and the graph input


def test_self_check_exact(exported):
    _, path = exported
    check = self_check(load_and_analyze(path, {"x": (1, T, D)}))
    assert check.passed and check.max_abs_error <= 1e-5


def test_half_the_heads_go_whole(exported, tmp_path):
    kind, path = exported
    out = tmp_path / "pruned.onnx"
    result = prune_file(path, out, PruneOptions(ratio=0.5), {"x": (1, T, D)})
    assert result.after.macs < 0.6 * result.before.macs
    model = onnx.load(out)
    dims = [tuple(t.dims) for t in model.graph.initializer]
    assert dims.count((D, D // 2)) == 3  # q, k, v keep two whole heads of width 8
    assert dims.count((D // 2, D)) == 1  # the output projection reads those 16 columns
    shape = (3, 11, D) if kind == "dynamic" else (1, T, D)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y,) = run(model, {"x": x})
    assert y.shape == shape and np.isfinite(y).all()
    if kind == "dynamic":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_param


def test_fused_attention_is_blocked_with_a_reason(tmp_path):
    """onnxruntime's fused com.microsoft Attention has no rule: its channels are blocked, named."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [D, D], rng.standard_normal((D, D)).astype(np.float32).ravel())
    qkv = helper.make_tensor("qkv_w", TensorProto.FLOAT, [D, 3 * D], rng.standard_normal((D, 3 * D)).astype(np.float32).ravel())
    qkv_b = helper.make_tensor("qkv_b", TensorProto.FLOAT, [3 * D], np.zeros(3 * D, np.float32))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Attention", ["h", "qkv_w", "qkv_b"], ["a"], name="attn", domain="com.microsoft", num_heads=HEADS),
        helper.make_node("MatMul", ["a", "w"], ["y"], name="out"),
    ]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])], [w, qkv, qkv_b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "fused.onnx"
    onnx.save(model, path)
    analysis = load_and_analyze(path)
    proj = next(g for g in analysis.groups if g.anchor == "proj")
    assert not proj.prunable and any("com.microsoft::Attention has no pruning rule" in r for r in proj.blocked)
