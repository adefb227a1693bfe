"""``--steps``: gradual pruning in rounds (onnxprune.transform.gradual) on the digits ResNet."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from clirun import assert_bad_input, cli
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import PruneOptions, prune_file
from onnxprune.transform.gradual import step_targets

MODEL = "models/digits/resnet8_digits.onnx"
DATA = "models/digits/digits_test.npz"


def test_step_targets_cut_the_same_fraction_of_what_is_left():
    targets = step_targets(0.5, 3)
    assert targets[-1] == pytest.approx(0.5)
    ratios = [targets[0]] + [b / a for a, b in zip(targets, targets[1:])]
    assert ratios == pytest.approx([0.5 ** (1 / 3)] * 3)


@pytest.mark.parametrize("kind", ["macs", "params"])
def test_steps_meet_the_target_in_rounds_and_count_from_the_original(kind, tmp_path):
    out = tmp_path / "p.onnx"
    options = PruneOptions(**{f"target_{kind}": 0.5}, steps=3, recover="reconstruct", data=DATA)
    result = prune_file(MODEL, out, options)
    once = prune_file(MODEL, tmp_path / "once.onnx", PruneOptions(**{f"target_{kind}": 0.5}))
    assert result.before == once.before  # the original's cost, not the last round's input
    kept = getattr(result.after, kind) / getattr(result.before, kind)
    assert abs(kept - 0.5) <= 0.02
    assert [r.round for r in result.rounds] == [1, 2, 3]
    fractions = [getattr(r, f"{kind}_kept") for r in result.rounds]
    assert fractions == sorted(fractions, reverse=True) and fractions[-1] == pytest.approx(kept)
    for r, goal in zip(result.rounds, step_targets(0.5, 3)):
        assert abs(getattr(r, f"{kind}_kept") - goal) <= 0.03
        assert r.metric == "accuracy" and 0.0 <= r.value <= 1.0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[f"onnxprune.{kind}_before"] == str(getattr(result.before, kind))
    assert meta["onnxprune.amount"] == f"target_{kind}=0.5 steps=3"
    z = np.load(DATA)
    logits = ort.InferenceSession(str(out)).run(None, {"input": z["input"][:16]})[0]
    assert logits.shape == (16, 10) and np.isfinite(logits).all()
    assert sum(n.startswith("round") for n in result.notes) >= 3


def test_steps_on_the_command_line_report_every_round(tmp_path):
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    res = cli("prune", MODEL, "-o", out, "--target-macs", "0.6", "--steps", "2", "--data", DATA, "--recover", "bn",
              "--json", report)
    assert res.exit_code == 0, res.output
    assert "round 1/2" in res.output and "round 2/2" in res.output
    rounds = json.loads(report.read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["macs_kept"] < rounds[0]["macs_kept"]


@pytest.mark.parametrize("extra, match", [
    ({"target_macs": 0.5}, "give calibration data"),
    ({"ratio": 0.3, "data": DATA}, "give target_macs or target_params"),
    ({"target_latency": 0.5, "data": DATA}, "give target_macs or target_params"),
    ({"target_macs": 0.5, "data": DATA, "depth_ratio": 0.5}, "depth amount"),
])
def test_steps_refuse_what_they_cannot_do(extra, match):
    with pytest.raises(OnnxPruneError, match=match):
        PruneOptions(steps=2, **extra).validate()


def test_steps_refuse_to_save_one_plan_and_write_nothing(tmp_path):
    out, plan = tmp_path / "p.onnx", tmp_path / "plan.json"
    assert_bad_input(cli("prune", MODEL, "-o", out, "--target-macs", "0.5", "--steps", "2", "--data", DATA,
                         "--plan", plan), "one plan per round")
    assert not out.exists() and not plan.exists()


def test_compose_maps_channels_back_to_the_first_model():
    from onnxprune.transform.recover import compose

    first = {"a": np.array([0, 2, 3, 5]), "b": np.array([1, 2])}
    second = {"a": np.array([1, 3]), "c": np.array([0])}
    out = compose(first, second)
    assert out["a"].tolist() == [2, 5] and out["b"].tolist() == [1, 2] and out["c"].tolist() == [0]


def test_each_round_recovers_towards_the_original(tmp_path, monkeypatch):
    """Rounds after the first hand recovery the original model and the composed channel index."""
    from onnxprune.transform import recover as recover_module

    seen = []
    real = recover_module.recover

    def spy(analysis, pruned, removed, data, method, **kw):
        seen.append(kw.get("teacher"))
        return real(analysis, pruned, removed, data, method, **kw)

    monkeypatch.setattr("onnxprune.pipeline.recover", spy)
    prune_file(MODEL, tmp_path / "p.onnx", PruneOptions(target_macs=0.5, steps=2, recover="reconstruct", data=DATA))
    assert seen[0] is None and seen[1] is not None
    teacher, index = seen[1]
    assert {n.name for n in teacher.graph.node} >= {n.name for n in onnx.load(MODEL).graph.node if n.op_type == "Conv"}
    assert index and all(np.all(np.diff(v) > 0) for v in index.values())
