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

from models import ALL, ARCHITECTURES  # noqa: E402
from onnxprune.analysis.cost import CostModel  # noqa: E402
from onnxprune.analysis.groups import analyze  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file  # noqa: E402
from onnxprune.cli.report import analysis_report  # noqa: E402
from onnxprune.rewrite import apply_removal  # noqa: E402

from oracle import compare, dead_channel_plan, kill_channels, random_feeds, run  # noqa: E402

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
    exact = compare(killed, pruned, random_feeds(analysis))
    assert exact.max_abs_error < 1e-4, exact.errors
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


# ---------------------------------------------------------------- the dynamo exporter
@pytest.fixture(scope="session")
def dynamo_exported(tmp_path_factory):
    """``dynamo_exported(name)``: architecture ``name`` exported once per session by the dynamo
    exporter (torch's default), BN kept, dynamic batch, its weights in an external data file."""
    from models import build
    from models.export import export_onnx

    cache: dict = {}

    def get(name: str) -> str:
        if name not in cache:
            folder = tmp_path_factory.mktemp("dynamo")
            inline = export_onnx(build(name), folder / "inline.onnx", ALL[name].input_shape,
                                 dynamic_batch=True, dynamo=True)
            path = folder / f"{name}.onnx"
            onnx.save(onnx.load(inline), path, save_as_external_data=True, location=f"{name}.onnx.data",
                      size_threshold=0)
            inline.unlink()
            cache[name] = str(path)
        return cache[name]

    return get


DYNAMO = [pytest.param(name, marks=pytest.mark.slow) if name == "resnet50" else name for name in ALL]


@pytest.mark.parametrize("name", DYNAMO)
def test_dynamo_exports_self_check_and_prune(dynamo_exported, name, tmp_path):
    """Every architecture as torch's dynamo exporter writes it (``allowzero=1`` reshapes, its own
    names and constant folding) with external data: the self-check (dead-channel and dead-block
    oracles, planned MACs equal to the recount) passes, and ``--ratio 0.5`` writes a model, with
    its data file, that runs at batch 2."""
    from onnxprune.selfcheck import self_check

    src = dynamo_exported(name)
    analysis = load_and_analyze(src)
    assert analysis.prunable_groups
    check = self_check(analysis)
    assert check.passed, check
    out = tmp_path / "pruned.onnx"
    result = prune_file(src, out, PruneOptions(ratio=0.5))
    assert result.after.macs < result.before.macs
    assert (tmp_path / "pruned.onnx.data").is_file()
    shape = (2,) + ALL[name].input_shape[1:]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y,) = run(onnx.load(out), {onnx.load(src, load_external_data=False).graph.input[0].name: x})
    assert y.shape[0] == 2 and np.isfinite(y).all()


@pytest.mark.parametrize("name", ["vit", "bert", "yolo_c2f"])
def test_torchscript_exports_with_external_data_prune(exported, name, tmp_path):
    src = tmp_path / "external.onnx"
    onnx.save(onnx.load(exported(name, False)), src, save_as_external_data=True, location="external.onnx.data",
              size_threshold=0)
    from onnxprune.selfcheck import self_check

    assert self_check(load_and_analyze(src)).passed
    result = prune_file(src, tmp_path / "p.onnx", PruneOptions(ratio=0.5))
    assert result.after.macs < result.before.macs and (tmp_path / "p.onnx.data").is_file()


def test_dynamo_reshapes_computed_from_shape_with_allowzero(tmp_path):
    """BERT with a dynamic batch *and* sequence: the dynamo exporter builds every head reshape's
    target from ``Shape`` (``Concat(Shape(x)[0], Shape(x)[1], [4], [16])``, ``allowzero=1``).
    The pruned model runs at other batch and sequence sizes, and the self-check passes."""
    from models import build
    from models.export import export_onnx
    from onnxprune.selfcheck import self_check

    src = export_onnx(build("bert"), tmp_path / "bert.onnx", (1, 16, 64), dynamo=True, dynamic_seq=True)
    model = onnx.load(src)
    computed = [n for n in model.graph.node if n.op_type == "Reshape"
                and any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
                and n.input[1] not in {t.name for t in model.graph.initializer}]
    assert len(computed) >= 4
    assert self_check(load_and_analyze(src, {"input": (1, 16, 64)})).passed
    prune_file(src, tmp_path / "p.onnx", PruneOptions(ratio=0.5), {"input": (1, 16, 64)})
    for shape in ((3, 7, 64), (1, 16, 64)):
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        (y,) = run(onnx.load(tmp_path / "p.onnx"), {"input": x})
        (ref,) = run(model, {"input": x})
        assert y.shape == ref.shape
