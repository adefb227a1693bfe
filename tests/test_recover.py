"""Recovery without training (``onnxprune.transform.recover``).

* The dead-channel oracle: on a model whose removed channels contribute nothing, every recovery
  leaves the outputs as they were (within 1e-4, relative to their size), on every architecture
  in ``models/``, with BN kept and folded.
* On the trained digits model pruned to half its MACs, recovery is never worse than none on the
  calibration data, reconstruction restores the accuracy, and what is written passes the checker.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from models import ARCHITECTURES  # noqa: E402
from onnxprune.decide.plan import fill_empty_tensors  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.analysis.groups import analyze  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, make_plan  # noqa: E402
from onnxprune.rewrite import apply_removal  # noqa: E402
from onnxprune.runtime.evaluate import Dataset, compare_outputs, load_data, run_model  # noqa: E402
from onnxprune.runtime.session import graph_input_specs, make_session  # noqa: E402
from onnxprune.transform.recover import recover  # noqa: E402

from oracle import dead_channel_plan, kill_channels, random_feeds, run  # noqa: E402

MODEL = "models/digits/resnet8_digits.onnx"
DATA = "models/digits/digits_test.npz"
SLOW = {"resnet50", "resnet56", "densenet", "inception"}
# ResNet-50 (224x224) only as exported for deployment, BN folded: its BN-kept export adds
# nothing the other ResNets do not test, and costs half a minute.
CASES = [pytest.param(name, fold, method, id=f"{name}-{'folded' if fold else 'bn'}-{method}",
                      marks=[pytest.mark.slow] if name in SLOW else [])
         for name in ARCHITECTURES for fold in (False, True) for method in ("bn", "reconstruct")
         if fold or name != "resnet50"]


def random_data(analysis, n: int = 6, seed: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset({spec.name: rng.standard_normal((n, *analysis.shapes[spec.name][1:])).astype(spec.dtype)
                    for spec in graph_input_specs(analysis.model)})


@pytest.mark.parametrize("name, fold, method", CASES)
def test_recovery_is_exact_on_dead_channels(exported, name, fold, method):
    analysis = load_and_analyze(exported(name, fold))
    plan = dead_channel_plan(analysis, 0.5, seed=0)
    fill_empty_tensors(plan, analysis, {})
    removed = plan.removed_units(analysis)
    killed = kill_channels(analysis, removed)
    killed_analysis = analyze(killed, analysis.input_shapes)
    pruned, report = recover(killed_analysis, apply_removal(killed_analysis, removed), removed,
                             random_data(killed_analysis), method)
    assert report.layers, "no layer was examined: the oracle would prove nothing"
    feeds = random_feeds(killed_analysis, seed=1)
    onnx.checker.check_model(pruned, full_check=True)
    for want, got in zip(run(killed, feeds), run(pruned, feeds)):
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(want - got).max() <= 1e-4 * scale


@pytest.fixture(scope="module")
def digits_half():
    """The digits model planned to half its MACs (uniform l1), and a calibration/test split."""
    analysis = load_and_analyze(MODEL)
    plan, _ = make_plan(analysis, PruneOptions(target_macs=0.5))
    data = load_data(DATA, graph_input_specs(analysis.model))
    half = len(data) // 2
    calib = Dataset({k: v[:half] for k, v in data.inputs.items()}, data.labels[:half])
    test = Dataset({k: v[half:] for k, v in data.inputs.items()}, data.labels[half:])
    return analysis, plan.removed_units(analysis), calib, test


def accuracy(model, data: Dataset) -> float:
    reference = run_model(make_session(MODEL), data, 64)
    outputs = run_model(make_session(model.SerializeToString()), data, 64)
    return compare_outputs(reference, outputs, data.labels)[0].accuracy_pruned


@pytest.mark.parametrize("method", ["bn", "reconstruct"])
def test_recovery_never_worse_than_none_on_calibration(method, digits_half):
    analysis, removed, calib, test = digits_half
    none = accuracy(apply_removal(analysis, removed), calib)
    repaired, report = recover(analysis, apply_removal(analysis, removed), removed, calib, method)
    assert accuracy(repaired, calib) >= none
    assert all(f.error_after <= f.error_before for f in report.layers)
    assert any(f.applied for f in report.layers)
    onnx.checker.check_model(repaired, full_check=True)


def test_reconstruction_restores_the_digits_model(digits_half):
    """One-shot at 50% MACs the digits net falls to chance; reconstruction on 270 calibration
    samples brings the held-out accuracy back within 1 pp (measured: 99.26% both ways)."""
    analysis, removed, calib, test = digits_half
    assert accuracy(apply_removal(analysis, removed), test) < 0.5
    repaired, report = recover(analysis, apply_removal(analysis, removed), removed, calib, "reconstruct")
    original = compare_outputs(*(run_model(make_session(MODEL), test, 64),) * 2, test.labels)[0].accuracy_pruned
    assert accuracy(repaired, test) >= original - 0.01
    assert report.samples == len(calib) and all(f.applied for f in report.layers)


def test_bad_recovery_arguments(digits_half):
    analysis, removed, calib, _ = digits_half
    with pytest.raises(OnnxPruneError, match="unknown recovery"):
        recover(analysis, apply_removal(analysis, removed), removed, calib, "magic")
    one = Dataset({k: v[:1] for k, v in calib.inputs.items()})
    with pytest.raises(OnnxPruneError, match="at least 2 calibration samples"):
        recover(analysis, apply_removal(analysis, removed), removed, one, "bn")


@pytest.mark.parametrize("method", ["bn", "reconstruct"])
def test_pipeline_keeps_recovery_only_when_the_calibration_metric_improves(method, tmp_path):
    from onnxprune.pipeline import prune_file

    result = prune_file(MODEL, tmp_path / "p.onnx", PruneOptions(target_macs=0.5, recover=method, data=DATA))
    report = result.recovery
    assert report.metric == "accuracy" and report.kept and report.loss_with <= report.loss_without


def test_pipeline_undoes_a_recovery_that_hurts(tmp_path, monkeypatch):
    """A recovery that wrecks the model (every weight of the first refit layer zeroed) passes
    the per-layer bookkeeping but not the model-level check: the unrecovered model is written."""
    from onnx import numpy_helper

    from onnxprune import pipeline

    real = pipeline.recover

    def harmful(analysis, model, removed, data, method, **kw):
        model, report = real(analysis, model, removed, data, method, **kw)
        tensor = next(t for t in model.graph.initializer if t.name == model.graph.node[0].input[1])
        tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(tensor)), tensor.name))
        return model, report

    plain = pipeline.prune_file(MODEL, tmp_path / "plain.onnx", PruneOptions(target_macs=0.5))
    monkeypatch.setattr(pipeline, "recover", harmful)
    result = pipeline.prune_file(MODEL, tmp_path / "p.onnx", PruneOptions(target_macs=0.5, recover="reconstruct", data=DATA))
    assert not result.recovery.kept and result.recovery.loss_with > result.recovery.loss_without
    assert any("it was undone" in w for w in result.to_dict()["warnings"])
    written = {t.name: t.SerializeToString() for t in onnx.load(str(tmp_path / "p.onnx")).graph.initializer}
    assert written == {t.name: t.SerializeToString() for t in plain.model.graph.initializer}
