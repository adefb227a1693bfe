"""What users expect of a command-line tool: output that is never cut, plain text when piped,
``--json -``, ``-q``, a help line for every option, the argument order in titles, and plots that
stay readable from 7 groups to 70."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from clirun import cli, ok
from onnxprune.cli import main
from onnxprune.cli.report import groups_figure

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "digits" / "resnet8_digits.onnx"
DATA = REPO / "models" / "digits" / "digits_test.npz"
BOX = set("─│┃━┏┓┗┛┡┩╇╋┼┬┴├┤┌┐└┘")


def long_anchor_model(tmp_path: Path) -> tuple[Path, list[str]]:
    """The digits model with node names of 60+ characters (as real exporters write them)."""
    import onnx

    model = onnx.load(str(MODEL))
    names = []
    for node in model.graph.node:
        node.name = f"/model.backbone.stage_{len(names)}/block.residual_branch/{node.op_type}"
        names.append(node.name)
    path = tmp_path / "long.onnx"
    onnx.save(model, str(path))
    return path, names


@pytest.mark.parametrize("fmt", ["plain", "table", "auto"])
def test_tables_never_cut_anchors_at_80_columns(fmt, tmp_path):
    model, _ = long_anchor_model(tmp_path)
    result = ok(cli("analyze", model, "--format", fmt, "--json", tmp_path / "a.json", env={"COLUMNS": "80"}))
    anchors = [g["anchor"] for g in json.loads((tmp_path / "a.json").read_text())["groups"]]
    assert all(len(a) > 45 for a in anchors)
    for anchor in anchors:
        assert anchor in result.stdout, anchor
    if fmt != "table":  # auto: the test's stdout is not a terminal
        assert not BOX & set(result.stdout)


def test_table_format_draws_boxes_when_it_fits():
    result = ok(cli("analyze", MODEL, "--format", "table", env={"COLUMNS": "160"}))
    assert BOX & set(result.stdout) and "/layer1/conv1/Conv" in result.stdout


def test_json_to_stdout_keeps_stdout_pure(tmp_path):
    result = ok(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--json", "-"))
    summary = json.loads(result.stdout)
    assert summary["output"] == str(tmp_path / "p.onnx") and summary["macs_after"] < summary["macs_before"]
    assert "MACs" in result.stderr  # the human summary went to stderr
    for command in (["analyze", MODEL], ["verify", MODEL, tmp_path / "p.onnx"],
                    ["bench", MODEL, "--runs", "2", "--warmup", "0"]):
        assert isinstance(json.loads(ok(cli(*command, "--json", "-")).stdout), dict)


def test_quiet_prints_nothing(tmp_path):
    result = ok(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "-q"))
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "p.onnx").is_file()


def test_verbose_adds_details(tmp_path):
    result = ok(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "-v"))
    assert "per group" in result.stdout and "/layer3/conv2/Conv" in result.stdout


def test_verify_title_follows_the_argument_order(tmp_path):
    ok(cli("prune", MODEL, "-o", tmp_path / "p.onnx", "--ratio", "0.5"))
    title = ok(cli("verify", MODEL, tmp_path / "p.onnx", "--data", DATA)).stdout.splitlines()[0]
    assert title.startswith(f"{MODEL} vs {tmp_path / 'p.onnx'}")


def test_every_option_has_a_help_line():
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


def test_same_option_names_across_commands():
    options = {name: {o for p in c.params for o in getattr(p, "opts", [])} for name, c in main.commands.items()}
    assert "--batch-size" in options["verify"] and "--batch-size" in options["bench"]
    assert not any("--batch" in opts for opts in options.values())
    for shared in ("--json", "--format", "--quiet", "--verbose"):
        assert all(shared in opts for opts in options.values()), shared
    runs_models = {name: opts for name, opts in options.items() if name != "data"}  # data sizes images: --size
    assert all("--input-shape" in opts for opts in runs_models.values())


def test_prune_help_says_which_amount_is_required():
    text = " ".join(ok(cli("prune", "--help")).stdout.split())
    text = text.replace("- ", "-")  # click may wrap an option name at its hyphen
    assert ("Give exactly one amount for the width: --ratio, --target-macs, --target-params, --target-latency, or "
            "--plan") in text
    assert "and/or one for the depth: --drop-blocks or --depth-ratio" in text


def _report(n: int, blocked_every: int) -> dict:
    groups = [{"id": f"g{k}", "anchor": f"/stage{k // 10}/block{k % 10}/conv/Conv", "prunable": k % blocked_every != 0,
               "blocked": [] if k % blocked_every else ["reaches graph output 'output'"],
               "macs": 0 if k % blocked_every == 0 else 1_000_000 * (1 + k % 7)} for k in range(n)]
    return {"model": "m.onnx", "groups": groups, "totals": {"prunable_macs_share": 0.9}}


@pytest.mark.parametrize("n", [7, 70])
def test_plot_is_readable_for_7_and_70_groups(n, tmp_path):
    """Every group has a labelled row; blocked groups of 0 MACs are still marked and explained;
    axes are labelled; a legend; the figure grows with the groups (the image is saved with a
    tight bounding box, so no label is clipped)."""
    import matplotlib.pyplot as plt

    report = _report(n, 5)
    fig = groups_figure(report)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{g['id']}  {g['anchor']}" for g in report["groups"]]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and ax.get_legend() is not None
    blocked = [g for g in report["groups"] if not g["prunable"]]
    markers = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(markers) == len(blocked) and all(line.get_xdata()[0] == 0 for line in markers)
    assert sum("graph output" in t.get_text() for t in ax.texts) == len(blocked)
    height = fig.get_size_inches()[1]
    plt.close(fig)
    assert height >= 0.26 * n


def test_plot_file_grows_with_groups(tmp_path):
    from onnxprune.cli.report import plot_groups

    plot_groups(_report(7, 5), tmp_path / "small.png")
    plot_groups(_report(70, 5), tmp_path / "large.png")
    import struct

    def png_height(path):
        return struct.unpack(">I", path.read_bytes()[20:24])[0]

    assert png_height(tmp_path / "large.png") > 3 * png_height(tmp_path / "small.png")


def _api_only_names() -> list[str]:
    """Python parameter names that the CLI spells otherwise (``input_shapes`` is
    ``--input-shape``, ``target_macs`` is ``--target-macs``)."""
    import dataclasses

    from onnxprune.cli.common import FLAGS, flag
    from onnxprune.pipeline import PruneOptions

    names = {f.name for f in dataclasses.fields(PruneOptions)} | set(FLAGS)
    return sorted(n for n in names if flag(n) != "--" + n and n != "sensitivity")  # "sensitivity" is also a word


def test_messages_name_options_as_placeholders_not_as_python_names():
    """Every message the code writes (errors, notes, warnings, lines) names an option as
    ``{name}``, which the CLI renders as its flag and the Python API as its parameter: a bare
    ``input_shapes`` or ``target_macs`` in a message would reach CLI users as API words."""
    import ast
    import re

    pattern = re.compile(r"(?<![{\w.=-])(" + "|".join(_api_only_names()) + r")(?![}\w=])")
    calls = {"OnnxPruneError", "append", "note", "warn", "line", "fail", "warning"}
    found = []
    for path in sorted((REPO / "onnxprune").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name not in calls:
                continue
            for arg in node.args:
                for part in ast.walk(arg):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        found += [f"{path.relative_to(REPO)}:{part.lineno}: {m.group(1)}"
                                  for m in pattern.finditer(part.value)]
    assert not found, found


def test_wrapped_errors_keep_their_placeholders(tmp_path):
    """An error embedded in another keeps ``{name}``: the CLI spells the inner one's options too."""
    from onnxprune.errors import OnnxPruneError

    inner = OnnxPruneError("pass {input_shapes} x:1x3x<d2>x<d3>")
    outer = OnnxPruneError(f"model.onnx: {inner.template}")
    from onnxprune.cli.common import flag

    assert outer.render(flag) == "model.onnx: pass --input-shape x:1x3x<d2>x<d3>"
