"""Fusion after pruning (``--fuse``): BN-kept exports of every architecture, pruned and fused,
lose every foldable BatchNormalization, match the unfused pruned model within fp32 round-off,
and are smaller on disk."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphs import Builder
from onnxprune.pipeline import PruneOptions, finalize, float_params, load_and_analyze, prune_model
from onnxprune.selfcheck import random_feeds
from onnxprune.transform.fuse import fuse

torch = pytest.importorskip("torch")

from models import ARCHITECTURES  # noqa: E402

# BN that follows no Conv, ConvTranspose or Gemm (DenseNet's pre-activation BN after a Concat)
# has no producer to fold into; a ReLU stands between it and the next Conv.
UNFOLDABLE_BN = {"densenet"}


def outputs(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # compare our graphs, not ORT's
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n != "resnet50"])
def test_pruned_and_fused(exported, name):
    path = exported(name, False)
    a = load_and_analyze(path)
    depth = {"drop_count": 1} if a.removable_blocks else {}
    plain = prune_model(a, PruneOptions(ratio=0.5, fuse=False, **depth), model_path=path)
    fused = prune_model(load_and_analyze(path), PruneOptions(ratio=0.5, fuse=True, **depth), model_path=path)
    finalize(fused.model, a)
    bn_before = sum(n.op_type == "BatchNormalization" for n in plain.model.graph.node)
    bn_after = sum(n.op_type == "BatchNormalization" for n in fused.model.graph.node)
    if name in UNFOLDABLE_BN:
        assert 0 < bn_after < bn_before
    else:
        assert bn_after == 0 and (bn_before > 0) == (name not in ("vit", "bert", "convnext"))
    feeds = random_feeds(a)
    for ref, got in zip(outputs(plain.model, feeds), outputs(fused.model, feeds)):
        assert np.abs(ref - got).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    if bn_before:
        assert len(fused.model.SerializeToString()) < len(plain.model.SerializeToString())
        assert fused.after.params < plain.after.params and fused.after.macs == plain.after.macs
        assert fused.fusion.removed["BatchNormalization"] == bn_before - bn_after
    assert fused.after.params == float_params(fused.model)
    assert [p.key for p in fused.model.metadata_props] == [p.key for p in plain.model.metadata_props]
    names = [n.name for n in fused.model.graph.node]
    assert len(set(names)) == len(names) and set(names) <= {n.name for n in plain.model.graph.node}


def test_fuse_keeps_interface_and_reports():
    g = Builder(opset=13)
    x = g.input([1, 3, 8, 8])
    y = g.unary("Identity", g.relu(g.bn(g.conv(x, 8))))
    model = g.output(g.conv(y, 4)).model()
    fused, report = fuse(model)
    assert report.removed.get("BatchNormalization") == 1 and report.removed.get("Identity") == 1
    assert [n.name for n in fused.graph.node] == ["conv0", "relu0", "conv1"]
    assert [i.name for i in fused.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in fused.graph.output] == [o.name for o in model.graph.output]
    assert fused.opset_import[0].version == 13
    onnx.checker.check_model(fused, full_check=True)
    assert "BatchNormalization" in report.describe()


def test_matmul_and_bias_become_one_gemm():
    g = Builder(opset=17)
    x = g.input([4, 16])
    y = g.add(g.matmul(x, 8), g.random([8]))
    model = g.output(g.relu(y)).model()
    fused, report = fuse(model)
    assert [n.op_type for n in fused.graph.node] == ["Gemm", "Relu"]
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    ref, got = outputs(model, feeds)[0], outputs(fused, feeds)[0]
    assert np.abs(ref - got).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_nothing_to_fuse_returns_the_model_as_it_is(exported):
    """A BN-folded export has nothing any rule matches: the library is not even run."""
    model = onnx.load(exported("resnet20", True))
    fused, report = fuse(model)
    assert fused is model and report.removed == {} and report.nodes_before == report.nodes_after
