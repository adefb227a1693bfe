"""Sensitivity analysis: per-group curves measured in onnxruntime, fast and reproducible, the
same whatever runs them (serial, local processes, a Dask cluster), and reusable as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clirun import assert_bad_input, cli, ok
from onnxprune.decide.sensitivity import SensitivityReport, measure
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import load_and_analyze
from onnxprune.runtime.scoring import EvaluatorSpec, PlanEvaluator

MODEL = "models/digits/resnet8_digits.onnx"
DATA = "models/digits/digits_test.npz"
RATIOS = [0.2, 0.5, 0.8]


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    """The first 200 held-out digits as calibration data."""
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    with np.load(DATA) as z:
        np.savez(path, input=z["input"][:200], labels=z["labels"][:200])
    return str(path)


@pytest.fixture(scope="module")
def serial(calib) -> SensitivityReport:
    return measure(EvaluatorSpec(MODEL, data=calib), RATIOS)


def without_time(report: SensitivityReport) -> dict:
    data = report.to_dict()
    data.pop("seconds")
    return data


def test_curves_rise_with_the_ratio_on_a_trained_model(serial):
    assert serial.metric == "accuracy" and 0.98 < serial.baseline <= 1.0
    assert [c.id for c in serial.curves] == ["g0", "g1", "g2", "g3", "g4", "g5"]
    for curve in serial.curves:
        losses = [p.loss for p in curve.points]
        assert losses[-1] > losses[0] and losses[-1] > 0.02, curve
        assert [p.ratio for p in curve.points] == RATIOS
        assert all(0 < p.macs_saved < 1 and 0 < p.params_saved < 1 for p in curve.points)
        assert all(a.macs_saved < b.macs_saved for a, b in zip(curve.points, curve.points[1:]))
    ranked = serial.ranked()
    assert [c.area for c in ranked] == sorted(c.area for c in ranked)


@pytest.mark.parametrize("recover", ["none", "reconstruct"])
def test_fast_curves_equal_full_evaluations(recover, calib):
    """The prefix-reusing path scores exactly what rewriting and running the whole model does."""
    evaluator = PlanEvaluator(EvaluatorSpec(MODEL, data=calib, recover=recover))
    for group in evaluator.analysis.prunable_groups[::2]:
        fast = evaluator.group_scores(group.id, [0.3, 0.7])
        full = [evaluator(evaluator.plan_for({group.id: r})) for r in (0.3, 0.7)]
        for a, b in zip(fast, full):
            assert a.accuracy == b.accuracy and a.macs_kept == b.macs_kept
            assert a.cosine_similarity == pytest.approx(b.cosine_similarity, abs=1e-6)


def test_reproducible_and_parallel_equals_serial(serial, calib):
    spec = EvaluatorSpec(MODEL, data=calib)
    assert without_time(measure(spec, RATIOS)) == without_time(serial)
    assert without_time(measure(spec, RATIOS, jobs=2)) == without_time(serial)


def test_dask_cluster_equals_serial(serial, calib):
    """A local Dask cluster, started here, as a real one would be reached (--scheduler ADDRESS)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = measure(EvaluatorSpec(MODEL, data=calib), RATIOS, scheduler=cluster.scheduler_address)
    assert without_time(report) == without_time(serial)


def test_json_round_trip_and_model_check(serial, tmp_path):
    serial.save(tmp_path / "s.json")
    again = SensitivityReport.load(tmp_path / "s.json")
    assert again.to_dict() == serial.to_dict()
    again.validate(load_and_analyze(MODEL))
    from test_cli import three_conv_model

    other = load_and_analyze(three_conv_model(tmp_path / "other.onnx", "Relu"))
    with pytest.raises(OnnxPruneError, match="does not match this model"):
        again.validate(other)


def test_cli_sensitivity_table_json_plot_and_reuse(calib, tmp_path):
    result = ok(cli("analyze", MODEL, "--sensitivity", "--data", calib, "--ratios", "0.3,0.6", "--json",
                    tmp_path / "a.json", "--plot", tmp_path / "s.png"))
    assert "least to most sensitive" in result.stdout
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["totals"]["groups"] == 7 and len(report["sensitivity"]["curves"]) == 6
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    # prune reuses the curves (measures nothing: no --data needed)
    ok(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--schedule", "sensitivity", "--sensitivity-from",
           tmp_path / "a.json", "--target-macs", "0.6", "--json", tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["schedule"] == "sensitivity" and abs(summary["macs_kept"] - 0.6) <= 0.02
    assert not any("measured the sensitivity" in n for n in summary["notes"])


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, needle", [
    ("no-input", "has no array for model input 'input'"),
    ("shape", "has 28 on axis 2"),
    ("dtype", "has dtype <U1"),
    ("one", "calibration data has 1 sample"),
])
def test_bad_calibration_data(case, needle, tmp_path):
    good = np.zeros((4, 1, 32, 32), np.float32)
    arrays = {"no-input": {"pixels": good}, "shape": {"input": np.zeros((4, 1, 28, 28), np.float32)},
              "dtype": {"input": np.full((4, 1, 32, 32), "a")}, "one": {"input": good[:1]}}[case]
    data = _npz(tmp_path / "d.npz", **arrays)
    assert_bad_input(cli("analyze", MODEL, "--sensitivity", "--data", data), needle, quiet=False)


def test_sensitivity_needs_data_and_sane_ratios(tmp_path):
    assert_bad_input(cli("analyze", MODEL, "--sensitivity"), "--sensitivity needs --data")
    assert_bad_input(cli("analyze", MODEL, "--sensitivity", "--data", DATA, "--ratios", "0.5,1.5"), "--ratios")
    assert_bad_input(cli("analyze", MODEL, "--sensitivity", "--data", DATA, "--ratios", "a,b"), "--ratios")


def test_sensitivity_json_from_another_model(calib, tmp_path):
    from test_cli import three_conv_model

    other = three_conv_model(tmp_path / "other.onnx", "Relu")
    ok(cli("analyze", other, "--sensitivity", "--data", _npz(tmp_path / "o.npz", x=np.zeros((4, 3, 8, 8), np.float32)),
           "--ratios", "0.5", "--json", tmp_path / "other.json"))
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--schedule", "sensitivity", "--sensitivity-from",
                         tmp_path / "other.json", "--target-macs", "0.5"), "does not match this model")
    assert not (tmp_path / "p.onnx").exists()
