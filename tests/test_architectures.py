"""Acceptance on every architecture in ``models/``, exported with BN kept and with BN folded.

* Exactness: dead channels (all weights that index them zeroed) are pruned; outputs match
  the unpruned model within 1e-4, and the MACs drop by what those channels carry (the cost
  planned from shapes equals the cost recounted on the rewritten graph).
* Round trip: keeping every channel gives identical outputs and byte-identical weights.
* ``--ratio 0.5``: a valid model that onnxruntime runs, with MACs clearly reduced: at least 40%
  of the MACs in layers that touch a prunable group go (CNNs lose about 75% of all MACs; in
  transformers and ConvNeXt the residual stream is blocked by LayerNorm over channels, which no
  exact rewrite can prune, so heads and MLP widths carry the reduction).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from models import ARCHITECTURES  # noqa: E402
from onnxprune.analysis.cost import CostModel  # noqa: E402
from onnxprune.analysis.groups import analyze  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file  # noqa: E402
from onnxprune.cli.report import analysis_report  # noqa: E402
from onnxprune.rewrite import apply_removal  # noqa: E402

from oracle import dead_channel_plan, kill_channels, random_feeds, run  # noqa: E402

FAST = [name for name in ARCHITECTURES if name != "resnet50"]
CASES = [pytest.param(name, fold, id=f"{name}-{'folded' if fold else 'bn'}") for name in FAST for fold in (False, True)]
CASES.append(pytest.param("resnet50", True, id="resnet50-folded", marks=pytest.mark.slow))


@pytest.mark.parametrize("name, fold", CASES)
def test_dead_channels_prune_exactly(exported, name, fold):
    analysis = load_and_analyze(exported(name, fold))
    assert analysis.prunable_groups, "every architecture has prunable groups"
    plan = dead_channel_plan(analysis, 0.5, seed=3)
    removed = plan.removed_units(analysis)
    killed = kill_channels(analysis, removed)
    killed_analysis = analyze(killed)
    pruned = apply_removal(killed_analysis, removed)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(analysis)
    for ref, got in zip(run(killed, feeds), run(pruned, feeds)):
        assert ref.shape == got.shape
        assert np.abs(ref - got).max() < 1e-4
    cost = CostModel(killed_analysis)
    planned = cost.cost_without(removed)
    assert planned == CostModel(analyze(pruned)).cost()
    assert planned.macs < 0.75 * cost.cost().macs


@pytest.mark.parametrize("name, fold", [c for c in CASES if c.values[0] in ("resnet20", "yolo_c2f", "densenet")])
def test_keep_all_is_identity(exported, name, fold):
    analysis = load_and_analyze(exported(name, fold))
    pruned = apply_removal(analysis, np.zeros(0, dtype=np.int64))
    before = {t.name: t.SerializeToString() for t in analysis.model.graph.initializer}
    after = {t.name: t.SerializeToString() for t in pruned.graph.initializer}
    assert before == after
    feeds = random_feeds(analysis)
    for ref, got in zip(run(analysis.model, feeds), run(pruned, feeds)):
        assert np.array_equal(ref, got)


@pytest.mark.parametrize("name, fold", CASES)
def test_ratio_half_runs_and_shrinks(exported, name, fold, tmp_path):
    src = exported(name, fold)
    out = tmp_path / "pruned.onnx"
    result = prune_file(src, out, PruneOptions(ratio=0.5))
    prunable_macs = analysis_report(load_and_analyze(src))["totals"]["prunable_macs_share"] * result.before.macs
    assert prunable_macs > 0.5 * result.before.macs
    assert result.after.macs <= result.before.macs - 0.4 * prunable_macs
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    original = onnx.load(src)
    assert [i.name for i in model.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in model.graph.output] == [o.name for o in original.graph.output]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch kept
    shape = (2,) + ARCHITECTURES[name].input_shape[1:]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y,) = run(model, {model.graph.input[0].name: x})
    (y_ref,) = run(original, {model.graph.input[0].name: x})
    assert y.shape == y_ref.shape and np.isfinite(y).all()
