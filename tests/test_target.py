"""A YOLOv8-style detector as Ultralytics exports it (BN folded, input ``images`` with dynamic
batch, H and W): one input-shape rule in every command, and MACs targets met within 0.02 with
channel rounding (``onnxprune.decide.target``).

Oracles: the static export of the same network (its groups and MACs), and the MACs recounted
on each written model by a fresh analysis.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

torch = pytest.importorskip("torch")

from clirun import assert_bad_input, cli, ok  # noqa: E402
from models import build  # noqa: E402
from models.export import export_onnx  # noqa: E402
from onnxprune.analysis.cost import CostModel  # noqa: E402
from onnxprune.pipeline import load_and_analyze  # noqa: E402

SHAPE = "images:1x3x64x64"


@pytest.fixture(scope="module")
def yolo(tmp_path_factory) -> tuple[Path, Path]:
    """(dynamic-H/W export, static export) of the registry's YOLOv8-style detector."""
    folder = tmp_path_factory.mktemp("yolo")
    model = build("yolo_c2f")
    dynamic = export_onnx(model, folder / "dyn.onnx", (1, 3, 64, 64), fold_bn=True, dynamic_hw=True, input_name="images")
    static = export_onnx(model, folder / "static.onnx", (1, 3, 64, 64), fold_bn=True, input_name="images")
    return dynamic, static


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("args", [["analyze"], ["analyze", "--self-check"], ["analyze", "--plot", "PLOT"],
                                  ["prune", "--ratio", "0.5", "-o", "OUT"]])
def test_dynamic_hw_without_input_shape_is_refused(args, yolo, tmp_path):
    """Not ``MACs 0``, an empty plot, a TypeError, or other groups: the error that says what to pass."""
    command, *rest = args
    rest = [str(tmp_path / "g.png") if a == "PLOT" else str(tmp_path / "o.onnx") if a == "OUT" else a for a in rest]
    assert_bad_input(cli(command, yolo[0], *rest), "images", "[?, 3, ?, ?]", "pass --input-shape images:1x3x<d2>x<d3>")
    assert list(tmp_path.iterdir()) == []


def test_dynamic_hw_with_input_shape_analyzes_like_the_static_export(yolo, tmp_path):
    ok(cli("analyze", yolo[0], "--input-shape", SHAPE, "--json", tmp_path / "dyn.json", "--self-check",
           "--plot", tmp_path / "g.png"))
    ok(cli("analyze", yolo[1], "--json", tmp_path / "static.json"))
    dynamic, static = read(tmp_path / "dyn.json"), read(tmp_path / "static.json")
    assert dynamic["totals"]["macs"] == static["totals"]["macs"] > 0
    assert [(g["channels"], g["prunable"], g["blocked"]) for g in dynamic["groups"]] == \
           [(g["channels"], g["prunable"], g["blocked"]) for g in static["groups"]]
    assert dynamic["totals"]["blocked_groups"] == 2
    assert dynamic["self_check"]["passed"]
    assert (tmp_path / "g.png").stat().st_size > 10_000


@pytest.mark.parametrize("round_to", [1, 8, 16])
@pytest.mark.parametrize("target", [0.7, 0.5])
def test_macs_target_met_with_rounding(target, round_to, yolo, tmp_path):
    out = tmp_path / "p.onnx"
    ok(cli("prune", yolo[0], "--input-shape", SHAPE, "-o", out, "--target-macs", target, "--round-to", round_to,
           "--plan", tmp_path / "plan.json", "--json", tmp_path / "s.json"))
    summary, plan = read(tmp_path / "s.json"), read(tmp_path / "plan.json")
    assert abs(summary["macs_kept"] - target) <= 0.02, summary["notes"]
    # recounted on the written model, at the same input shape
    shapes = {"images": (1, 3, 64, 64)}
    before = CostModel(load_and_analyze(yolo[0], shapes)).cost().macs
    after = CostModel(load_and_analyze(out, shapes)).cost().macs
    assert after == summary["macs_after"] and abs(after / before - target) <= 0.02
    for g in plan["groups"]:
        kept = len(g["keep"])
        assert kept == g["channels"] or kept % round_to == 0, g
    assert [d.dim_param for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim] == \
           ["batch", "", "height", "width"]


def test_global_macs_target_with_rounding(yolo, tmp_path):
    ok(cli("prune", yolo[0], "--input-shape", SHAPE, "-o", tmp_path / "p.onnx", "--global", "--target-macs", "0.5",
           "--round-to", "16", "--json", tmp_path / "s.json"))
    assert abs(read(tmp_path / "s.json")["macs_kept"] - 0.5) <= 0.02


def test_target_that_rounding_cannot_meet_says_why(yolo, tmp_path):
    """With --min-channels as large as most groups, the smallest widths allowed keep too much."""
    assert_bad_input(cli("prune", yolo[0], "--input-shape", SHAPE, "-o", tmp_path / "p.onnx", "--target-macs", "0.2",
                         "--min-channels", "64"), "cannot be met", "smallest widths allowed", "--min-channels 64")
    assert list(tmp_path.iterdir()) == []
