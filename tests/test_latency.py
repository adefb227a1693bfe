"""Per-layer latency tables and ``prune --target-latency``.

Where a test needs the search to be deterministic, layer timing is replaced by a function of the
layer's shapes (its MACs); the real timing path runs too, but no test asserts on a time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.analysis.cost import CostModel
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file
from onnxprune.runtime import latency
from onnxprune.runtime.latency import LatencyTable

from clirun import assert_bad_input, cli, ok
from graphs import conv_bn_relu_conv, depthwise


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(folder))
    return folder / "latency"


def macs_of(layer: dict) -> float:
    """A deterministic stand-in for a layer's time: its MACs (weights · output pixels), in M."""
    x, w = layer["inputs"][0]["dims"], layer["inputs"][1]["dims"]
    return float(np.prod(w)) * float(np.prod(x[2:])) / 1e6


@pytest.fixture
def fake_timing(monkeypatch):
    calls = []

    def time_layer(layer, provider, threads):
        calls.append(layer)
        return macs_of(layer)

    monkeypatch.setattr(latency, "_time_layer", time_layer)
    return calls


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_conv(), path)
    return path


def test_real_timing_of_a_layer_is_positive_and_cached(model_path, cache):
    analysis = load_and_analyze(model_path)
    table = LatencyTable()
    total = CostModel(analysis).with_latency(table).cost().latency
    assert total > 0 and table.measured == 2 and not table.untimed  # two convolutions
    table.save()
    (saved,) = cache.glob("*.json")
    data = json.loads(saved.read_text())
    assert data["format"] == "onnxprune.latency/1" and len(data["times"]) == 2
    again = LatencyTable()
    assert CostModel(analysis).with_latency(again).cost().latency == pytest.approx(total)
    assert again.measured == 0  # all from the cache


def test_a_corrupt_cache_is_ignored_and_replaced(model_path, cache, fake_timing):
    table = LatencyTable()
    cache.mkdir(parents=True)
    table.path.write_text("{not json")
    fresh = LatencyTable()
    assert fresh.times == {}
    CostModel(load_and_analyze(model_path)).with_latency(fresh).cost()
    fresh.save()
    assert json.loads(table.path.read_text())["times"]


def test_the_cache_is_per_machine(model_path, cache, fake_timing):
    table = LatencyTable()
    CostModel(load_and_analyze(model_path)).with_latency(table).cost()
    table.save()
    data = json.loads(table.path.read_text())
    data["machine"]["onnxruntime"] = "0.0.0"  # another onnxruntime: nothing carries over
    table.path.write_text(json.dumps(data))
    assert LatencyTable().times == {}


def test_pruned_shapes_are_what_is_timed(tmp_path, fake_timing):
    """A depthwise convolution is timed with its group following its kept channels."""
    path = tmp_path / "dw.onnx"
    onnx.save(depthwise(), path)
    analysis = load_and_analyze(path)
    group = next(g for g in analysis.prunable_groups if g.channels == 8)
    cost_model = CostModel(analysis).with_latency(LatencyTable())
    full = cost_model.cost().latency
    alive = analysis.alive_ids(np.asarray(group.units[:3]))
    less = cost_model.cost(alive).latency
    assert less < full
    dw = [layer for layer in fake_timing if layer["attrs"].get("group", 1) > 1]
    assert {layer["attrs"]["group"] for layer in dw} == {8, 5}
    assert all(layer["inputs"][0]["dims"][1] == layer["attrs"]["group"] for layer in dw)


@pytest.fixture
def fake_whole_model(monkeypatch):
    """Whole-model timing replaced by a deterministic stand-in: the pruned model's float params
    over the original's, plus a fixed overhead of 30% of the original (what the layer tables
    leave out), so the first plan's measured fraction overshoots its predicted one."""
    from onnxprune import pipeline

    def latency_ms(analysis, model, options):
        original = pipeline.float_params(analysis.model)
        return 1.0, 0.3 + 0.7 * pipeline.float_params(model) / original

    monkeypatch.setattr(pipeline, "_latency_ms", latency_ms)


def test_target_latency_meets_the_predicted_target(model_path, tmp_path, fake_timing, fake_whole_model):
    result = prune_file(model_path, tmp_path / "p.onnx", PruneOptions(target_latency=0.75, round_to=1))
    check = result.latency
    assert result.after.latency / result.before.latency == pytest.approx(check.predicted)
    assert check.original_ms == 1.0 and check.measured == pytest.approx(check.pruned_ms)
    assert any("predicted" in note for note in result.notes)
    meta = {p.key: p.value for p in onnx.load(tmp_path / "p.onnx").metadata_props}
    assert meta["onnxprune.amount"] == "target_latency=0.75"


def test_a_missed_measurement_plans_again(tmp_path, fake_timing, fake_whole_model):
    """The first plan meets the predicted target but measures above it: the predicted target is
    lowered and the plan made again; the plan measured closest to the target is kept."""
    digits = Path(__file__).resolve().parent.parent / "models" / "digits" / "resnet8_digits.onnx"
    result = prune_file(digits, tmp_path / "p.onnx", PruneOptions(target_latency=0.8, round_to=1))
    (note,) = [n for n in result.notes if n.startswith("latency plans")]
    rounds = [(float(a), float(b)) for a, b in
              (part.split(" → measured ") for part in note.split(": ", 1)[1].split(";")[:-1]
               if "→" in part for part in [part.replace("predicted ", "").strip()])]
    assert len(rounds) >= 2
    assert rounds[1][0] < rounds[0][0]  # asked for less predicted latency after measuring too much
    assert rounds[0][1] > 0.8 * 1.05  # the first plan measured too slow
    assert min(abs(m - 0.8) for _, m in rounds[1:]) < abs(rounds[0][1] - 0.8)  # the correction got closer
    assert result.latency is not None and result.latency.target == 0.8


def test_cli_reports_predicted_and_measured(model_path, tmp_path, fake_timing, fake_whole_model):
    """Both timings are stand-ins here (a real whole-model timing would make the re-planning, and
    so the plan, depend on the machine's load)."""
    result = ok(cli("prune", model_path, "-o", tmp_path / "p.onnx", "--target-latency", "0.75", "--round-to", "1",
                    "--json", "-"))
    summary = json.loads(result.stdout)
    data = summary["latency"]
    assert set(data) == {"target", "predicted", "measured", "original_ms", "pruned_ms", "runs", "met"}
    assert data["target"] == 0.75 and data["original_ms"] == 1.0
    assert data["measured"] == pytest.approx(data["pruned_ms"], abs=1e-4)
    assert "latency: predicted" in result.stderr
    assert any(note.startswith("latency plans") for note in summary["notes"])


@pytest.fixture
def slow_whole_model(monkeypatch):
    """A pruned model that always measures 0.9 of the original, whatever the plan: a target
    of 0.5 cannot be met."""
    from onnxprune import pipeline

    monkeypatch.setattr(pipeline, "_latency_ms", lambda analysis, model, options: (1.0, 0.9))


def test_a_missed_latency_target_is_a_warning_or_with_strict_an_error(model_path, tmp_path, fake_timing,
                                                                      slow_whole_model):
    """Missed by more than 10%: exit 0 with a warning in the summary and the JSON; ``--strict``
    makes it exit 2 with nothing written. No note shows a re-planned target as if it were the
    option the user gave."""
    result = ok(cli("prune", model_path, "-o", tmp_path / "p.onnx", "--target-latency", "0.5", "--round-to", "1",
                    "--json", "-"))
    summary = json.loads(result.stdout)
    assert summary["latency"]["met"] is False and summary["latency"]["measured"] == pytest.approx(0.9)
    (warning,) = summary["warnings"]
    assert warning.startswith("--target-latency 0.5 not met: the pruned model measured 0.900")
    assert f"warning: {warning}" in result.stderr
    shown = [float(w) for note in summary["notes"] for w in re.findall(r"--target-latency ([0-9.]+)", note)]
    assert shown and set(shown) == {0.5}
    (tmp_path / "p.onnx").unlink()
    assert_bad_input(cli("prune", model_path, "-o", tmp_path / "q.onnx", "--target-latency", "0.5", "--round-to", "1",
                         "--strict"), "--target-latency 0.5 not met", "--strict makes this an error")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--ratio", "0.3"], "give exactly one of"),
    (["--granularity", "weight"], "--granularity weight"),
    (["--schedule", "sensitivity"], "schedule sensitivity needs"),
])
def test_bad_combinations(model_path, tmp_path, extra, needle):
    assert_bad_input(cli("prune", model_path, "-o", tmp_path / "p.onnx", "--target-latency", "0.5", *extra), needle)
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="CUDA is available here")
def test_a_missing_provider_is_one_clear_error(model_path, tmp_path):
    assert_bad_input(cli("prune", model_path, "-o", tmp_path / "p.onnx", "--target-latency", "0.5",
                         "--provider", "cuda"), "CUDA execution provider is not available")
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.parametrize("value", ["0", "1.5", "nan"])
def test_target_latency_range(model_path, tmp_path, value):
    assert_bad_input(cli("prune", model_path, "-o", tmp_path / "p.onnx", "--target-latency", value),
                     "--target-latency must be in (0, 1]")
