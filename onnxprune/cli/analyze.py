"""``onnxprune analyze``: the channel groups of a model, what blocks them, their cost."""

from __future__ import annotations

import click

from ..errors import OnnxPruneError
from .common import Column, Output, handle_errors, input_shape_option, json_text, output_options, parse_shapes


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@input_shape_option
@output_options
@click.option("--plot", "plot_path", metavar="PATH",
              help="Draw the MACs each group carries as an image (PNG, SVG, PDF, ...: by the extension).")
@click.option("--details", is_flag=True, help="List each group's nodes and weight tensors (as -v does).")
@click.option("--self-check", "self_check", is_flag=True,
              help="Prove the rewrite exact on this model: prune dead channels, compare outputs and MACs.")
@handle_errors
def analyze(model, input_shape, json_path, fmt, quiet, verbose, plot_path, details, self_check):
    """Find the coupled-channel groups of MODEL and what blocks them.

    Prints one row per channel group: channels, the params and MACs it carries, and whether it
    can be pruned or why not, then model totals at the input shape.
    """
    from ..graph.outputs import OutputSet
    from ..pipeline import load_and_analyze
    from .report import analysis_report, plot_format, plot_groups

    out = Output(fmt, quiet, verbose, json_path)
    plot_fmt = plot_format(plot_path) if plot_path is not None else None
    with OutputSet({"json_path": out.json_file, "plot_path": plot_path}, {"the input model": model}) as outputs:
        shapes = parse_shapes(input_shape)
        with out.status("analyzing") as stage:
            analysis = load_and_analyze(model, shapes, outputs)
            report = analysis_report(analysis)
            report["model"] = str(model)
            if self_check:
                from ..selfcheck import self_check as run_self_check

                stage("self-check")
                report["self_check"] = run_self_check(analysis).to_dict()
            if json_path is not None and not out.json_stdout:
                outputs.stage_bytes("json_path", json_text(report).encode())
            if plot_path is not None:
                stage("plotting")
                outputs.stage_file("plot_path", lambda temp: plot_groups(report, temp, plot_fmt))
        outputs.commit()
    _print(out, model, report, details or verbose, plot_path)
    out.emit_json(report)
    if self_check and not report["self_check"]["passed"]:
        raise OnnxPruneError("self-check failed: please report this model (the rewrite is not exact on it)")


def _print(out: Output, model, report: dict, details: bool, plot_path) -> None:
    from .report import human

    columns = [Column("group"), Column("anchor"), Column("channels", "right"), Column("params", "right"),
               Column("MACs", "right"), Column("status", wrap=True)]
    rows = []
    for g in report["groups"]:
        status = "prunable" if g["prunable"] else f"blocked: {g['blocked'][0]}"
        rows.append([g["id"], g["anchor"], str(g["channels"]), human(g["params"]), human(g["macs"]), status])
        if details:
            rows.append(["", "nodes: " + ", ".join(g["nodes"]), "", "", "", "weights: " + ", ".join(g["weights"])])
    out.table(f"Channel groups of {model}", columns, rows)
    t = report["totals"]
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in report["input_shapes"].items())
    out.line(f"MACs {human(t['macs'])} at {shapes} | params {human(t['params'])} | groups {t['groups']} "
             f"({t['prunable_groups']} prunable, {t['blocked_groups']} blocked) | "
             f"prunable share of MACs {t['prunable_macs_share']:.1%}")
    if t["nodes_without_macs_shape"]:
        out.warn(f"{len(t['nodes_without_macs_shape'])} layers have shapes that could not be inferred; their MACs "
                 "are not counted, so the MACs above are a lower bound")
    check = report.get("self_check")
    if check:
        verdict = "passed" if check["passed"] else "FAILED"
        out.line(f"self-check {verdict}: {check['channels_removed']} dead channels in {check['groups_checked']} groups "
                 f"removed; max abs output error {check['max_abs_error']:.3g}; MACs planned "
                 f"{human(check['macs_planned'])}, measured {human(check['macs_measured'])}")
    if plot_path is not None:
        out.line(f"plot written to {plot_path}")
