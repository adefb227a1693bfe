"""Residual blocks: detection, the depth oracle, cost, and depth in plans and the CLI.

The depth oracle (issue 8): zero a block's last layer so that ``F(x) = 0``; dropping that
block must keep every output within 1e-4. It runs on every architecture in ``models/`` with
residual blocks, BN kept and folded, with all removable blocks dead and dropped together, and
with width pruning of dead channels at the same time.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from graphs import Builder
from onnxprune.analysis.cost import CostModel
from onnxprune.decide.depth import dropped_nodes, norm_scores
from onnxprune.decide.plan import PruningPlan
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import normalize
from onnxprune.analysis.groups import analyze
from onnxprune.pipeline import PruneOptions, finalize, prune_model
from onnxprune.selfcheck import dead_channel_plan, kill_block, kill_channels, random_feeds, run
from onnxprune.rewrite import apply_removal
from onnxprune.transform.depth import drop_blocks


def blocks_of(model: onnx.ModelProto):
    a = analyze(normalize(model))
    return a, a.blocks


def dropped_model(a, blocks) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(a.model)
    return drop_blocks(copy, blocks)


def basic_block(g: Builder, x: str, c: int, *, swap: bool = False, relu_after: bool = True, identity: bool = False) -> str:
    y = g.conv(g.relu(g.bn(g.conv(x, c))), c)
    shortcut = g.unary("Identity", x) if identity else x
    out = g.add(y, shortcut) if swap else g.add(shortcut, y)
    return g.relu(out) if relu_after else out


# ---------------------------------------------------------------- detection on small graphs
@pytest.mark.parametrize("swap", [False, True], ids=["x+F", "F+x"])
@pytest.mark.parametrize("identity", [False, True], ids=["plain", "identity-shortcut"])
def test_resnet_v1_block_is_found_and_its_relu_goes(swap, identity):
    g = Builder()
    x = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    y = basic_block(g, x, 8, swap=swap, identity=identity)
    a, blocks = blocks_of(g.output(g.conv(y, 4)).model())
    assert len(blocks) == 1 and blocks[0].removable
    b = blocks[0]
    assert b.relu is not None and b.relu_goes  # x comes from a ReLU: relu(x) == x
    assert [n for n in b.nodes] == ["conv1", "bn0", "relu1", "conv2"]
    assert b.macs == 2 * 8 * 8 * 8 * 8 * 9 and b.params == 2 * (8 * 8 * 9 + 8) + 4 * 8


def test_relu_stays_when_the_shortcut_may_be_negative():
    g = Builder()
    x = g.conv(g.input([1, 3, 8, 8]), 8)  # no activation: x can be negative
    a, blocks = blocks_of(g.output(g.conv(basic_block(g, x, 8), 4)).model())
    b = blocks[0]
    assert b.removable and b.relu is not None and not b.relu_goes
    dropped = dropped_model(a, [b])
    assert [n.op_type for n in dropped.graph.node] == ["Conv", "Relu", "Conv"]
    feeds = random_feeds(a)
    # The model without the block computes conv(relu(x)), as y = relu(x + 0) would.
    killed = kill_block(a.model, b)
    for ref, got in zip(run(killed, feeds), run(dropped, feeds)):
        assert np.abs(ref - got).max() < 1e-5


def test_downsample_block_is_listed_but_never_removable():
    g = Builder()
    x = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    branch = g.conv(g.relu(g.conv(x, 8, stride=2)), 8)
    shortcut = g.bn(g.conv(x, 8, k=1, stride=2, pad=0))
    y = g.relu(g.add(branch, shortcut))
    a, blocks = blocks_of(g.output(g.conv(y, 4)).model())
    assert len(blocks) == 1 and not blocks[0].removable
    assert "not the identity" in blocks[0].reason and "node conv3" in blocks[0].reason
    assert not norm_scores(a)  # never ranked
    with pytest.raises(OnnxPruneError, match="cannot be removed: the shortcut is not the identity"):
        prune_model(a, PruneOptions(drop_blocks=(blocks[0].id,)))


def test_block_whose_output_is_a_graph_output_is_not_removable():
    g = Builder()
    x = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    y = basic_block(g, x, 8, relu_after=False)
    _, blocks = blocks_of(g.output(y).model())
    assert len(blocks) == 1 and not blocks[0].removable and "graph output" in blocks[0].reason


def test_adds_that_are_not_residual_blocks():
    g = Builder()
    x = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    twice = g.add(x, x)                                   # x + x: no branch
    bias = g.add(twice, g.random([1, 8, 1, 1]))           # a constant
    other = g.conv(g.input([1, 3, 8, 8], name="z"), 8)
    unrelated = g.add(bias, other)                        # two unrelated tensors
    broadcast = g.add(unrelated, g.gap(unrelated))        # shapes differ (broadcast)
    _, blocks = blocks_of(g.output(g.conv(broadcast, 4)).model())
    assert blocks == []


def test_a_tensor_of_the_branch_read_elsewhere_stays():
    """Only the nodes nothing else reads go with the block; the rest is not counted as saved."""
    g = Builder()
    x = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    h = g.relu(g.conv(x, 8))
    y = g.relu(g.add(x, g.conv(h, 8)))
    out = g.concat([y, h])
    a, blocks = blocks_of(g.output(g.conv(out, 4)).model())
    b = blocks[0]
    assert b.removable and b.nodes == ["conv2"]
    dropped = dropped_model(a, [b])
    names = [n.name for n in dropped.graph.node]
    assert "conv1" in names and "conv2" not in names


def test_nested_blocks_dropped_together_are_counted_once():
    g = Builder()
    x = g.relu(g.conv(g.input([1, 3, 8, 8]), 8))
    inner = basic_block(g, g.relu(g.conv(x, 8)), 8)
    outer = g.relu(g.add(x, g.conv(inner, 8)))
    a, blocks = blocks_of(g.output(g.conv(outer, 4)).model())
    assert [b.removable for b in blocks] == [True, True]
    both = dropped_nodes(a, blocks)
    assert both == dropped_nodes(a, [blocks[1]])  # the outer block contains the inner one
    model = dropped_model(a, blocks)
    onnx.checker.check_model(model, full_check=True)
    planned = CostModel(a).dropping(both).cost_without(np.zeros(0, dtype=np.int64))
    assert planned == CostModel(analyze(model)).cost()


# ---------------------------------------------------------------- architectures
torch = pytest.importorskip("torch")

from models import ARCHITECTURES  # noqa: E402

EXPECTED = {  # removable blocks / all listed blocks
    "resnet20": (7, 9), "resnet56": (25, 27), "mobilenetv2": (10, 10), "yolo_c2f": (6, 6), "se_resnet": (4, 6),
    "resnext": (1, 4), "regnet": (1, 4), "mobilenetv3": (3, 3), "efficientnet": (1, 1), "convnext": (4, 4),
    "vit": (6, 6), "bert": (4, 4), "resnet50": (12, 16), "vgg16_bn": (0, 0), "densenet": (0, 0),
    "inception": (0, 0), "unet": (0, 0),
}
WITH_BLOCKS = [n for n in ARCHITECTURES if EXPECTED[n][0] and n != "resnet50"]
CASES = [pytest.param(n, fold, id=f"{n}-{'folded' if fold else 'bn'}") for n in WITH_BLOCKS for fold in (False, True)]
CASES.append(pytest.param("resnet50", True, id="resnet50-folded", marks=pytest.mark.slow))


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n != "resnet50"])
def test_blocks_found_on_every_architecture(exported, name):
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(exported(name, True))
    assert (len(a.removable_blocks), len(a.blocks)) == EXPECTED[name]
    for b in a.blocks:
        assert b.removable or "not the identity" in b.reason


def test_pre_ln_transformer_sublayers_are_separate_blocks(exported):
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(exported("vit", False))
    ops = [{n.op_type for n in a.model.graph.node if n.name in b.nodes} for b in a.removable_blocks]
    attention = [o for o in ops if "Softmax" in o]
    ffn = [o for o in ops if "Softmax" not in o]
    assert len(attention) == len(ffn) == 3
    assert all("LayerNormalization" in o for o in ops)  # x + Attn(LN(x)), x + FFN(LN(x))


@pytest.mark.parametrize("name, fold", CASES)
def test_dead_blocks_drop_exactly_with_dead_channels(exported, name, fold):
    """All removable blocks dead and dropped, and half of every group's channels dead and pruned,
    in one rewrite: outputs within 1e-4, planned cost equal to the cost recounted."""
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(exported(name, fold))
    plan = dead_channel_plan(a, 0.5, seed=5)
    removed = plan.removed_units(a)
    model = kill_channels(a, removed)
    for block in a.removable_blocks:
        model = kill_block(model, block)
        assert model is not None, f"{block.id} cannot be zeroed"
    killed = analyze(model)
    blocks = killed.removable_blocks
    assert [b.add for b in blocks] == [b.add for b in a.removable_blocks]
    pruned = drop_blocks(apply_removal(killed, removed), blocks)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = random_feeds(a)
    for ref, got in zip(run(model, feeds), run(pruned, feeds)):
        assert ref.shape == got.shape
        assert np.abs(ref - got).max() < 1e-4
    planned = CostModel(killed).dropping(dropped_nodes(killed, blocks)).cost_without(removed)
    assert planned == CostModel(analyze(pruned)).cost()
    assert len(pruned.graph.node) < len(model.graph.node)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "convnext", "bert"])
def test_one_dead_block_among_live_ones(exported, name):
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(exported(name, False))
    block = a.removable_blocks[len(a.removable_blocks) // 2]
    model = kill_block(a.model, block)
    assert norm_scores(analyze(model))[block.id] == 0.0  # ranked first by the norm criterion
    pruned = drop_blocks(onnx.load_from_string(model.SerializeToString()), [block])
    feeds = random_feeds(a)
    for ref, got in zip(run(model, feeds), run(pruned, feeds)):
        assert np.abs(ref - got).max() < 1e-4


# ---------------------------------------------------------------- prune with depth
@pytest.fixture(scope="module")
def resnet20(exported):
    return exported("resnet20", True)


def _prune(path, **options):
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(path)
    result = prune_model(a, PruneOptions(**options), model_path=path)
    finalize(result.model, a)
    return a, result


def test_drop_count_picks_lowest_norm_and_reports_cost(resnet20):
    a, result = _prune(resnet20, drop_count=3)
    norms = norm_scores(a)
    lowest = sorted(norms, key=norms.get)[:3]
    assert sorted(result.blocks_dropped) == sorted(lowest)
    assert result.groups_pruned == 0 and not result.noop
    assert CostModel(analyze(result.model)).cost() == result.after
    assert result.after.macs == result.before.macs - sum(b.macs for b in a.blocks if b.id in lowest)


def test_depth_and_width_meet_one_macs_target(resnet20):
    a, result = _prune(resnet20, depth_ratio=0.3, target_macs=0.5)
    assert len(result.blocks_dropped) == 2  # 0.3 of 7, rounded
    assert abs(result.after.macs / result.before.macs - 0.5) <= 0.02
    assert CostModel(analyze(result.model)).cost() == result.after
    # No group that lives only inside a dropped block is pruned (nothing is spent on them).
    inside = {n for b in a.blocks if b.id in result.blocks_dropped for n in b.nodes}
    for gp in result.plan.groups.values():
        if gp.removed:
            assert not set(a.group(gp.id).nodes) <= inside


def test_plan_with_drop_blocks_round_trips(resnet20):
    a, result = _prune(resnet20, drop_blocks=("b1", "/stages/stages.2/stages.2.2/Add"), ratio=0.25)
    plan = PruningPlan.from_dict(json.loads(result.plan.to_json()))
    assert plan.drop_blocks == ["/stages/stages.0/stages.0.1/Add", "/stages/stages.2/stages.2.2/Add"]
    _, replay = _prune(resnet20, plan=plan)
    assert replay.model.graph.SerializeToString() == result.model.graph.SerializeToString()


@pytest.mark.parametrize("options, message", [
    (dict(drop_blocks=("b42",)), "no residual block 'b42'"),
    (dict(drop_blocks=("b3",)), "b3 .* cannot be removed: the shortcut is not the identity"),
    (dict(drop_count=8), "cannot drop 8 residual blocks: the model has 7 removable"),
    (dict(drop_count=2, depth_ratio=0.5), "one depth amount"),
    (dict(depth_ratio=1.0), "depth_ratio must be in"),
    (dict(drop_count=7, target_macs=0.9), "dropping 7 residual blocks alone keeps 0.191 of the macs"),
    (dict(drop_count=2, block_criterion="similarity"), "block criterion similarity measures the model"),
    (dict(drop_count=2, ratio=0.5, plan=PruningPlan()), "exactly one of"),
])
def test_bad_depth_options(resnet20, options, message):
    with pytest.raises(OnnxPruneError, match=message):
        _prune(resnet20, **options)


def test_model_without_blocks_says_so(exported):
    with pytest.raises(OnnxPruneError, match="no removable residual block"):
        _prune(exported("vgg16_bn", True), drop_count=1)


# ---------------------------------------------------------------- measured criteria and schedules
DIGITS = "models/digits/resnet8_digits.onnx"


@pytest.fixture(scope="module")
def digits_calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    with np.load("models/digits/digits_calib.npz") as z:
        np.savez(path, input=z["input"][:200], labels=z["labels"][:200])
    return str(path)


@pytest.fixture(scope="module")
def killed_resnet20(resnet20, tmp_path_factory):
    """ResNet-20 whose block b4 is dead (F = 0): dropping it costs nothing."""
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(resnet20)
    path = tmp_path_factory.mktemp("killed") / "r20_dead_b4.onnx"
    onnx.save(kill_block(a.model, next(b for b in a.blocks if b.id == "b4")), path)
    rng = np.random.default_rng(0)
    calib = path.with_suffix(".npz")
    np.savez(calib, input=rng.standard_normal((48, 3, 32, 32)).astype(np.float32))
    return str(path), str(calib)


def test_sensitivity_measures_each_block_and_is_reused(digits_calib, tmp_path):
    from onnxprune.decide.sensitivity import SensitivityReport, measure
    from onnxprune.runtime.scoring import EvaluatorSpec, PlanEvaluator

    report = measure(EvaluatorSpec(DIGITS, data=digits_calib), [0.5])
    assert [(b.id, b.add) for b in report.blocks] == [("b0", "/layer1/Add")]
    evaluator = PlanEvaluator(EvaluatorSpec(DIGITS, data=digits_calib))
    full = evaluator(PruningPlan(drop_blocks=["/layer1/Add"]))
    assert report.blocks[0].value == full.accuracy and report.blocks[0].macs_saved == pytest.approx(1 - full.macs_kept)
    report.save(tmp_path / "s.json")
    again = SensitivityReport.load(tmp_path / "s.json")
    assert again.blocks == report.blocks
    # --block-criterion drop reuses the saved measurement: no --data needed
    a = __import__("onnxprune.pipeline", fromlist=["x"]).load_and_analyze(DIGITS)
    result = prune_model(a, PruneOptions(drop_count=1, block_criterion="drop", sensitivity=again), model_path=DIGITS)
    assert result.blocks_dropped == ["b0"]


def test_similarity_and_drop_rank_a_dead_block_first(killed_resnet20):
    path, calib = killed_resnet20
    from onnxprune.pipeline import load_and_analyze

    for criterion in ("similarity", "drop", "norm"):
        result = prune_model(load_and_analyze(path), PruneOptions(drop_count=1, block_criterion=criterion, data=calib, metric="cosine"),
                             model_path=path)
        assert result.blocks_dropped == ["b4"], criterion


@pytest.mark.parametrize("schedule", ["sensitivity", "evolution"])
def test_schedules_mix_blocks_under_one_target(killed_resnet20, schedule):
    """Offered the blocks, both measuring schedules drop the dead one and meet the target."""
    path, calib = killed_resnet20
    from onnxprune.pipeline import load_and_analyze

    a = load_and_analyze(path)
    options = PruneOptions(schedule=schedule, target_macs=0.7, mix_blocks=True, data=calib, evaluations=60,
                           metric="cosine")
    result = prune_model(a, options, model_path=path)
    finalize(result.model, a)
    assert abs(result.after.macs / result.before.macs - 0.7) <= 0.02
    assert CostModel(analyze(result.model)).cost() == result.after
    if schedule == "sensitivity":
        assert "/stages/stages.1/stages.1.1/Add" in result.plan.drop_blocks  # b4: dropping it costs nothing
    assert any("residual blocks offered" in n for n in result.notes)
    with pytest.raises(OnnxPruneError, match="mix_blocks"):
        prune_model(a, PruneOptions(schedule="uniform", target_macs=0.7, mix_blocks=True))


# ---------------------------------------------------------------- the commands
def test_cli_analyze_lists_blocks_and_prune_drops_them(resnet20, tmp_path):
    from clirun import cli, ok

    result = ok(cli("analyze", resnet20, "--json", tmp_path / "a.json"))
    assert "Residual blocks" in result.stdout and "not removable: the shortcut is not the identity" in result.stdout
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["totals"]["blocks"] == 9 and report["totals"]["removable_blocks"] == 7
    assert {b["id"] for b in report["blocks"] if not b["removable"]} == {"b3", "b6"}
    result = ok(cli("prune", resnet20, "-o", tmp_path / "p.onnx", "--drop-blocks", "b0,b4", "--target-macs", "0.6",
                    "--plan", tmp_path / "plan.json", "--fuse", "--json", tmp_path / "s.json"))
    assert "blocks: 2 of 7 removable dropped" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["blocks_dropped"] == ["b0", "b4"] and abs(summary["macs_kept"] - 0.6) <= 0.02
    written = onnx.load(str(tmp_path / "p.onnx"))
    assert not any(n.name in ("/stages/stages.0/stages.0.0/Add", "/stages/stages.1/stages.1.1/Add")
                   for n in written.graph.node)
    meta = {p.key: p.value for p in written.metadata_props}
    assert meta["onnxprune.blocks_dropped"] == "/stages/stages.0/stages.0.0/Add,/stages/stages.1/stages.1.1/Add"
    assert len(json.loads((tmp_path / "plan.json").read_text())["drop_blocks"]) == 2
    ok(cli("prune", resnet20, "-o", tmp_path / "d.onnx", "--depth-ratio", "0.5"))


@pytest.mark.parametrize("args, needle", [
    (["--drop-blocks", "b3"], "block b3 (/stages/stages.1/stages.1.0/Add) cannot be removed"),
    (["--drop-blocks", "nope"], "no residual block 'nope'"),
    (["--drop-blocks", ","], "--drop-blocks takes a count or block names"),
    (["--drop-blocks", "9"], "cannot drop 9 residual blocks"),
    (["--drop-blocks", "2", "--depth-ratio", "0.2"], "one depth amount"),
    (["--depth-ratio", "1.5"], "--depth-ratio must be in [0, 1)"),
    (["--drop-blocks", "2", "--block-criterion", "drop"], "block criterion drop measures the model: give --data"),
    (["--target-macs", "0.5", "--mix-blocks"], "--mix-blocks lets the sensitivity or evolution schedule"),
])
def test_cli_bad_depth_input(resnet20, tmp_path, args, needle):
    from clirun import assert_bad_input, cli

    assert_bad_input(cli("prune", resnet20, "-o", tmp_path / "o.onnx", *args), needle)
    assert not (tmp_path / "o.onnx").exists()
