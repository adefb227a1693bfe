"""The plan-scoring interface: in-memory rewrite, fixed calibration data, parallel workers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.decide.plan import PruningPlan
from onnxprune.runtime.scoring import EvaluatorSpec, PlanEvaluator, evaluate_plans, ratio_plan

MODEL = "models/digits/resnet8_digits.onnx"
DATA = "models/digits/digits_test.npz"


@pytest.fixture(scope="module")
def evaluator():
    return PlanEvaluator(EvaluatorSpec(MODEL, data=DATA))


def test_keep_all_scores_perfect(evaluator):
    score = evaluator(PruningPlan())
    assert score.macs_kept == 1.0 and score.params_kept == 1.0
    assert score.max_abs_error == 0.0 and score.top1_agreement == 1.0
    data = np.load(DATA)
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    expected = float((session.run(None, {"input": data["input"]})[0].argmax(1) == data["labels"]).mean())
    assert score.accuracy == pytest.approx(expected)


def test_more_pruning_costs_fidelity_and_macs(evaluator):
    gids = [g.id for g in evaluator.analysis.prunable_groups]
    light = evaluator(ratio_plan(evaluator, {gid: 0.1 for gid in gids}))
    heavy = evaluator(ratio_plan(evaluator, {gid: 0.6 for gid in gids}))
    assert heavy.macs_kept < light.macs_kept < 1.0
    assert heavy.cosine_similarity < light.cosine_similarity <= 1.0
    assert light.max_abs_error > 0


def test_one_group_at_a_time_is_a_sensitivity_scan(evaluator):
    """Per-group sensitivity: pruning one group leaves the others' MACs; every score differs."""
    gids = [g.id for g in evaluator.analysis.prunable_groups]
    scores = [evaluator(ratio_plan(evaluator, {gid: 0.5})) for gid in gids]
    assert all(0.0 < s.macs_kept < 1.0 for s in scores)
    assert len({round(s.cosine_similarity, 9) for s in scores}) == len(gids)


def test_parallel_equals_serial():
    spec = EvaluatorSpec(MODEL, data=DATA)
    ev = PlanEvaluator(spec)
    plans = [ratio_plan(ev, {g.id: r for g in ev.analysis.prunable_groups}) for r in (0.0, 0.25, 0.5)]
    serial = evaluate_plans(spec, plans, workers=1)
    parallel = evaluate_plans(spec, plans, workers=2)
    assert serial == parallel


def test_bad_plan_and_workers(evaluator):
    plan = ratio_plan(evaluator, {"g0": 0.5})
    plan.groups["g0"].channels += 1
    with pytest.raises(OnnxPruneError, match="does not match"):
        evaluator(plan)
    with pytest.raises(OnnxPruneError, match="workers"):
        evaluate_plans(EvaluatorSpec(MODEL), [], workers=0)
