"""Schedules under a budget: every one meets its MACs or params target within 0.02, records
itself in the plan, replays exactly from the plan, and the evolution schedule is seeded."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from clirun import assert_bad_input, cli, ok
from onnxprune.decide.plan import PruningPlan
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline import PruneOptions, load_and_analyze, make_plan, prune_file

MODEL = "models/digits/resnet8_digits.onnx"
DATA = "models/digits/digits_test.npz"


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    with np.load(DATA) as z:
        np.savez(path, input=z["input"][:160], labels=z["labels"][:160])
    return str(path)


def options(schedule: str, calib: str, **kw) -> PruneOptions:
    return PruneOptions(schedule=schedule, data=calib, evaluations=48, **kw)


@pytest.mark.parametrize("budget", [{"target_macs": 0.5}, {"target_macs": 0.75}, {"target_params": 0.4}])
@pytest.mark.parametrize("schedule", ["uniform", "global", "sensitivity", "evolution"])
def test_every_schedule_meets_its_budget(schedule, budget, calib, tmp_path):
    result = prune_file(MODEL, tmp_path / "p.onnx", options(schedule, calib, round_to=2, **budget))
    target = next(iter(budget.values()))
    kept = (result.after.macs / result.before.macs if "target_macs" in budget
            else result.after.params / result.before.params)
    assert abs(kept - target) <= 0.02, (kept, result.notes)
    assert result.schedule == schedule and result.plan.meta["schedule"] == schedule
    onnx.checker.check_model(str(tmp_path / "p.onnx"), full_check=True)


def test_sensitivity_with_recovery_meets_the_budget(calib, tmp_path):
    """Curves measured after reconstruction predict no loss up to high ratios for several
    groups: the allocation must still start from no pruning and meet the target, not jump."""
    result = prune_file(MODEL, tmp_path / "p.onnx", options("sensitivity", calib, target_macs=0.6, recover="reconstruct",
                                                            calib_samples=64))
    assert abs(result.after.macs / result.before.macs - 0.6) <= 0.02, result.notes
    assert result.recovery is not None and any(f.applied for f in result.recovery.layers)


def test_schedule_plans_replay_exactly(calib, tmp_path):
    result = prune_file(MODEL, tmp_path / "p.onnx", options("sensitivity", calib, target_macs=0.6), plan_out=tmp_path / "plan.json")
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["meta"]["schedule"] == "sensitivity" and all("ratio" in g for g in plan["groups"])
    again = prune_file(MODEL, tmp_path / "q.onnx", PruneOptions(plan=PruningPlan.load(tmp_path / "plan.json")))
    assert again.model.graph.SerializeToString() == result.model.graph.SerializeToString()


def test_evolution_is_seeded_and_no_worse_than_uniform(calib):
    """The finished plan is measured against the uniform allocation on the search's own
    fitness (the calibration accuracy) and never loses to it; the same seed gives the same plan."""
    from onnxprune.runtime.scoring import EvaluatorSpec, PlanEvaluator

    analysis = load_and_analyze(MODEL)
    plans = [make_plan(analysis, PruneOptions(schedule="evolution", data=calib, evaluations=24, target_macs=0.5,
                                              seed=1, calib_samples=80), model_path=MODEL)[0] for _ in range(2)]
    assert plans[0].to_dict() == plans[1].to_dict()
    evaluator = PlanEvaluator(EvaluatorSpec(MODEL, data=calib, calib_samples=80))
    assert evaluator(plans[0]).accuracy >= evaluator(_projected_uniform(analysis)).accuracy


def _projected_uniform(analysis) -> PruningPlan:
    """The uniform allocation as evolution builds it (one ratio for all, then the budget's steps)."""
    from onnxprune.analysis.cost import CostModel
    from onnxprune.decide.evolution import Projection
    from onnxprune.decide.importance import all_importance
    from onnxprune.decide.target import meet_target

    scores = all_importance(analysis, "l1")
    cost = CostModel(analysis)
    total = cost.cost().macs
    groups = analysis.prunable_groups
    projection = Projection(groups, scores, lambda p: cost.cost_without(p.removed_units(analysis)).macs / total, 0.5,
                            max_ratio=0.9)
    return meet_target(analysis, cost, lambda r: projection.plan(np.ones(len(groups)), r), scores, 0.5,
                       max_ratio=0.9).plan


@pytest.mark.parametrize("kw, needle", [
    ({"schedule": "sensitivity", "target_macs": 0.5}, "schedule sensitivity needs sensitivity (a saved report) or data"),
    ({"schedule": "evolution", "target_macs": 0.5}, "schedule evolution needs calibration data: data"),
    ({"schedule": "sensitivity", "ratio": 0.5, "data": DATA}, "chooses the ratios itself"),
    ({"ratio": 0.5, "recover": "bn"}, "recovery bn needs calibration data"),
    ({"target_macs": 0.5, "target_params": 0.5}, "give exactly one of"),
    ({"schedule": "magic", "target_macs": 0.5}, "unknown schedule"),
    ({"schedule": "evolution", "target_macs": 0.5, "global_rank": True, "data": DATA}, "global_rank is the global schedule"),
])
def test_option_errors_name_parameters(kw, needle):
    with pytest.raises(OnnxPruneError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        PruneOptions(**kw).validate()


def test_cli_schedule_with_recovery(calib, tmp_path):
    ok(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--schedule", "global", "--target-macs", "0.5", "--recover",
           "reconstruct", "--data", calib, "--json", tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["schedule"] == "global" and summary["recovery"]["method"] == "reconstruct"
    assert any(layer["applied"] for layer in summary["recovery"]["layers"])
    result = ok(cli("verify", MODEL, tmp_path / "p.onnx", "--data", DATA, "--json", "-"))
    assert json.loads(result.stdout)["outputs"][0]["accuracy_pruned"] > 0.95
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "q.onnx", "--schedule", "evolution", "--target-macs", "0.5"),
                     "needs calibration data: --data")
