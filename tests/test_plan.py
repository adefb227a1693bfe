"""``PruningPlan``: keep counts, uniform and global plans, JSON, validation and resolution.

The model: x[1,3,6,6] → conv0(8) → relu → conv1(6) → relu → conv2(2) → out, so g0 (8 channels,
anchor conv0) and g1 (6, conv1) are prunable and g2 (2, conv2) is blocked by the output.
Scores are given by hand, so every expected keep list is written out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphs import Builder
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import normalize
from onnxprune.analysis.groups import analyze
from onnxprune.decide.plan import (
    GroupPlan,
    PruningPlan,
    check_ratio,
    global_plan,
    keep_count,
    resolve,
    top_k,
    uniform_plan,
)


@pytest.fixture(scope="module")
def a():
    g = Builder()
    y = g.conv(g.relu(g.conv(g.relu(g.conv(g.input([1, 3, 6, 6]), 8)), 6)), 2)
    analysis = analyze(normalize(g.output(y).model()))
    assert [(grp.id, grp.anchor, grp.channels, grp.prunable) for grp in analysis.groups] == [
        ("g0", "conv0", 8, True), ("g1", "conv1", 6, True), ("g2", "conv2", 2, False)]
    return analysis


SCORES = {
    "g0": np.array([0.3, 0.9, 0.8, 0.1, 0.95, 0.7, 0.85, 0.99]),
    "g1": np.array([0.2, 0.6, 0.98, 0.4, 0.97, 0.96]),
}


# ----------------------------------------------------------------------------- keep_count


@pytest.mark.parametrize("n, ratio, kwargs, expected", [
    (10, 0.0, {}, 10),
    (10, 0.5, {}, 5),
    (10, 0.3, {}, 7),          # 0.3 * 10 = 3.0000000000000004 in floats
    (10, 0.7, {}, 3),          # 0.7 * 10 = 7.000000000000001
    (100, 0.29, {}, 71),       # 0.29 * 100 = 28.999999999999996: still 29 removed
    (7, 0.5, {}, 4),           # floor(3.5) = 3 removed
    (10, 0.99, {}, 1),         # floor(9.9) = 9 removed
    (1, 0.9, {}, 1),           # never zero
    (10, 0.9, {"min_channels": 4}, 4),
    (10, 0.5, {"min_channels": 20}, 10),  # never more than n
    (10, 0.5, {"round_to": 4}, 8),        # 5 rounded up to 8
    (10, 0.3, {"round_to": 4}, 8),        # 7 → 8
    (16, 0.5, {"round_to": 8}, 8),        # already a multiple
    (6, 0.0, {"round_to": 4}, 6),         # 8 is capped at n
    (10, 0.9, {"min_channels": 3, "round_to": 4}, 4),  # max(1, 3) = 3 → 4
])
def test_keep_count(n, ratio, kwargs, expected):
    assert keep_count(n, ratio, **kwargs) == expected


def test_top_k_keeps_highest_and_lower_index_on_ties():
    assert top_k(np.array([0.5, 0.1, 0.9, 0.5]), 2) == [0, 2]
    assert top_k(np.array([1.0, 1.0, 1.0]), 2) == [0, 1]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5"])
def test_check_ratio_rejects(ratio):
    with pytest.raises(OnnxPruneError, match="must be in"):
        check_ratio(ratio)


# ----------------------------------------------------------------------------- uniform and global


def test_uniform_plan(a):
    plan = uniform_plan(a, SCORES, 0.5, criterion="l1")
    assert sorted(plan.groups) == ["g0", "g1"]  # never the blocked g2
    # g0: the 4 best of [.3 .9 .8 .1 .95 .7 .85 .99] are .99 .95 .9 .85 → 1, 4, 6, 7
    assert plan.groups["g0"] == GroupPlan("g0", "conv0", 8, 0.5, [1, 4, 6, 7])
    # g1: the 3 best of [.2 .6 .98 .4 .97 .96] → 2, 4, 5
    assert plan.groups["g1"] == GroupPlan("g1", "conv1", 6, 0.5, [2, 4, 5])
    assert plan.criterion == "l1"
    plan.validate(a)


def test_uniform_plan_round_to_min_channels_and_exclude(a):
    plan = uniform_plan(a, SCORES, 0.75, round_to=4, min_channels=3)
    # g0: 8 - 6 = 2 → min 3 → 4; g1: 6 - 4 = 2 → 3 → 4
    assert plan.groups["g0"].keep == [1, 4, 6, 7]
    assert plan.groups["g1"].keep == [1, 2, 4, 5]
    # --exclude leaves alone every group a matching node or weight *touches*: conv1 reads g0 and
    # writes g1, conv2 reads g1, conv0 only writes g0.
    assert sorted(uniform_plan(a, SCORES, 0.5, exclude=["conv1"]).groups) == []
    assert sorted(uniform_plan(a, SCORES, 0.5, exclude=["conv2"]).groups) == ["g0"]
    assert sorted(uniform_plan(a, SCORES, 0.5, exclude=["conv0*"]).groups) == ["g1"]
    assert sorted(uniform_plan(a, SCORES, 0.5, exclude=["relu1"]).groups) == ["g0"]
    assert sorted(uniform_plan(a, SCORES, 0.5, exclude=["nothing*"]).groups) == ["g0", "g1"]


def test_global_plan_ranks_across_groups(a):
    plan = global_plan(a, SCORES, 0.3)
    # 14 channels, floor(0.3 * 14) = 4 removed: the lowest overall are .1 (g0#3), .2 (g1#0),
    # .3 (g0#0), .4 (g1#3).
    assert plan.groups["g0"].keep == [1, 2, 4, 5, 6, 7]
    assert plan.groups["g1"].keep == [1, 2, 4, 5]
    assert plan.groups["g0"].ratio == 0.25
    assert plan.groups["g1"].ratio == pytest.approx(1 / 3, abs=1e-6)
    plan.validate(a)


def test_global_plan_takes_the_lowest_group_first(a):
    scores = {"g0": np.arange(8) / 100, "g1": 1 + np.arange(6) / 100}
    plan = global_plan(a, scores, 0.25)  # floor(3.5) = 3, all from g0
    assert plan.groups["g0"].keep == [3, 4, 5, 6, 7]
    assert plan.groups["g1"].keep == [0, 1, 2, 3, 4, 5]


def test_global_plan_respects_max_ratio(a):
    scores = {"g0": np.arange(8) / 100, "g1": 1 + np.arange(6) / 100}
    plan = global_plan(a, scores, 0.25, max_ratio=0.25)
    # g0 may lose at most floor(0.25 * 8) = 2; the third removal goes to g1's lowest.
    assert plan.groups["g0"].keep == [2, 3, 4, 5, 6, 7]
    assert plan.groups["g1"].keep == [1, 2, 3, 4, 5]
    for gid, gp in plan.groups.items():
        assert gp.removed <= 0.25 * gp.channels


def test_global_plan_respects_min_channels(a):
    scores = {"g0": np.arange(8) / 100, "g1": 1 + np.arange(6) / 100}
    plan = global_plan(a, scores, 0.25, min_channels=7)
    # g0 may lose 8 - 7 = 1 channel, g1 (6 < 7) none: only one of the 3 budgeted removals happens.
    assert plan.groups["g0"].keep == [1, 2, 3, 4, 5, 6, 7]
    assert plan.groups["g1"].keep == [0, 1, 2, 3, 4, 5]


def test_global_plan_zero_ratio_keeps_everything(a):
    plan = global_plan(a, SCORES, 0.0)
    assert {gid: gp.keep for gid, gp in plan.groups.items()} == {"g0": list(range(8)), "g1": list(range(6))}
    assert len(plan.removed_units(a)) == 0


# ----------------------------------------------------------------------------- JSON


def test_json_round_trip(a, tmp_path):
    plan = uniform_plan(a, SCORES, 0.5, criterion="fpgm")
    plan.groups["g2"] = GroupPlan("g2", "conv2", 2, None, None)
    plan.meta["note"] = "hand-made"
    path = tmp_path / "plan.json"
    plan.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "onnxprune.plan/1"
    assert data["groups"][0] == {"id": "g0", "anchor": "conv0", "channels": 8, "ratio": 0.5, "keep": [1, 4, 6, 7]}
    loaded = PruningPlan.load(path)
    assert loaded == plan
    assert loaded.to_dict() == plan.to_dict()


def test_load_errors(tmp_path):
    with pytest.raises(OnnxPruneError, match="not found"):
        PruningPlan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(OnnxPruneError, match="not valid JSON"):
        PruningPlan.load(tmp_path / "bad.json")
    with pytest.raises(OnnxPruneError, match="not an onnxprune plan"):
        PruningPlan.from_dict({"groups": []})
    with pytest.raises(OnnxPruneError, match="malformed"):
        PruningPlan.from_dict({"format": "onnxprune.plan/1", "groups": [{"id": "g0"}]})
    with pytest.raises(OnnxPruneError, match="malformed"):
        PruningPlan.from_dict({"format": "onnxprune.plan/1", "groups": [{"id": "g0", "channels": 8, "keep": [1.5]}]})


# ----------------------------------------------------------------------------- validate


def entry(gid="g0", anchor="conv0", channels=8, ratio=None, keep=None) -> PruningPlan:
    return PruningPlan(groups={gid: GroupPlan(gid, anchor, channels, ratio, keep)})


@pytest.mark.parametrize("plan, message", [
    (entry(anchor="conv1", keep=[0]), "does not match"),
    (entry(channels=7, keep=[0]), "does not match"),
    (entry(keep=[0, 8]), "keep must list"),
    (entry(keep=[-1, 2]), "keep must list"),
    (entry(keep=[1, 1]), "keep must list"),
    (entry(keep=[]), "keep must list"),
    (entry(ratio=1.0), "ratio of group g0"),
    (entry("g2", "conv2", 2, keep=[0]), "blocked group g2: reaches graph output 'conv2_y'"),
    (entry("g9", keep=[0]), "no channel group 'g9'"),
    (PruningPlan(drop_blocks=["layer1.0"]), "no residual block 'layer1.0'"),
])
def test_validate_errors(a, plan, message):
    with pytest.raises(OnnxPruneError, match=message):
        plan.validate(a)


def test_validate_accepts(a):
    entry(keep=[7, 0, 3]).validate(a)             # any order
    entry(anchor="", keep=[0]).validate(a)        # no anchor: only the size is checked
    entry("g2", "conv2", 2, keep=[0, 1]).validate(a)  # keeping all of a blocked group is fine
    entry(ratio=0.5).validate(a)


def test_removed_units(a):
    plan = PruningPlan(groups={"g0": GroupPlan("g0", "conv0", 8, None, [0, 2, 4, 5, 6, 7]),
                               "g1": GroupPlan("g1", "conv1", 6, None, [0, 1, 2, 3, 4])})
    g0, g1 = a.groups[0], a.groups[1]
    np.testing.assert_array_equal(plan.removed_units(a), [g0.units[1], g0.units[3], g1.units[5]])
    with pytest.raises(OnnxPruneError, match="resolve the plan first"):
        entry(ratio=0.5).removed_units(a)


# ----------------------------------------------------------------------------- resolve


def test_resolve_fills_keep_from_ratios(a):
    plan = PruningPlan(groups={
        "g0": GroupPlan("g0", "conv0", 8, 0.5),
        "g1": GroupPlan("g1", "conv1", 6, None, [0, 1]),  # an explicit keep is left alone
        "g2": GroupPlan("g2", "conv2", 2, 0.0),           # ratio 0 on a blocked group: keep all
    })
    resolve(plan, a, SCORES)
    assert plan.groups["g0"].keep == [1, 4, 6, 7]
    assert plan.groups["g1"].keep == [0, 1]
    assert plan.groups["g2"].keep == [0, 1]
    plan.validate(a)


def test_resolve_round_to_and_min_channels(a):
    plan = resolve(PruningPlan(groups={"g1": GroupPlan("g1", "conv1", 6, 0.8)}), a, SCORES, round_to=2, min_channels=1)
    # floor(4.8) = 4 removed → keep 2 (a multiple of 2): .98 and .97
    assert plan.groups["g1"].keep == [2, 4]
    plan = resolve(PruningPlan(groups={"g1": GroupPlan("g1", "conv1", 6, 0.8)}), a, SCORES, min_channels=3)
    assert plan.groups["g1"].keep == [2, 4, 5]


def test_resolve_rejects_ratio_on_blocked_group(a):
    with pytest.raises(OnnxPruneError, match="blocked group g2"):
        resolve(PruningPlan(groups={"g2": GroupPlan("g2", "conv2", 2, 0.5)}), a, SCORES)
