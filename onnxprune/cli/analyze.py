"""``onnxprune analyze``: the channel groups of a model, what blocks them, their cost."""

from __future__ import annotations

import os
import sys

import click

from ..decide.names import CRITERIA

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
@click.option("--sensitivity", is_flag=True,
              help="Measure each prunable group's sensitivity: prune it alone at each ratio and run the data.")
@click.option("--data", "data_path", metavar="NPZ",
              help="Calibration .npz for --sensitivity (one array per input, samples on axis 0, optional 'labels').")
@click.option("--calib-samples", type=click.IntRange(min=2), help="Use the first N samples of --data (default: all).")
@click.option("--ratios", default=",".join(f"{r:g}" for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
              show_default=True, metavar="R,R,...", help="Pruning ratios at which --sensitivity measures each group.")
@click.option("--metric", type=click.Choice(["auto", "accuracy", "agreement", "top1", "map50", "ctc", "iou", "cosine", "rel_mse"]), default="auto",
              show_default=True, help="The task metric --sensitivity measures on the first output; auto: accuracy "
                                      "with labels, else top-1 agreement for classifiers, mAP@0.5 for detection "
                                      "heads, CTC string agreement for [N, T, K] sequences, IoU for dense maps, "
                                      "else cosine similarity.")
@click.option("--criterion", type=click.Choice(CRITERIA), default="l1",
              show_default=True, help="Which channels --sensitivity removes at each ratio.")
@click.option("--recover", type=click.Choice(["none", "bn", "reconstruct"]), default="none", show_default=True,
              help="Score each --sensitivity point after this recovery, as prune --recover would write it.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel worker processes for --sensitivity.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run --sensitivity on a Dask cluster (tcp://host:8786, or 'local' for a local one of --jobs "
                   "workers); needs Dask (pip install distributed) and the files at the same paths on every worker.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out of --sensitivity the groups touching a matching node or tensor name (as prune "
                   "--exclude; repeatable; must match something).")
@click.option("--resume", is_flag=True,
              help="Continue a --sensitivity scan from its checkpoint (--json PATH keeps one, PATH.partial, while "
                   "the scan runs and after it fails or is interrupted).")
@handle_errors
def analyze(model, input_shape, json_path, fmt, quiet, verbose, plot_path, details, self_check, sensitivity, data_path,
            calib_samples, ratios, metric, criterion, recover, jobs, scheduler, exclude, resume):
    """Find the coupled-channel groups and residual blocks of MODEL, and what blocks them.

    Prints one row per channel group: channels, the params and MACs it carries, and whether it
    can be pruned or why not; one row per residual block: its Add, the params and MACs that
    dropping it saves, its weight norm, and whether it is removable or why not; then model
    totals at the input shape.

    With --sensitivity --data calib.npz, also prunes each group alone at each of --ratios (and
    drops each removable residual block alone), runs the calibration data in onnxruntime, and
    ranks the groups and blocks from the least to the most sensitive; --json keeps every curve (reusable by prune --sensitivity-from), --plot draws
    them as a heatmap. With --json PATH, every finished group and block is saved to
    PATH.partial as the scan goes; --resume continues from it.
    """
    from ..graph.outputs import OutputSet
    from ..pipeline import load_and_analyze
    from .report import analysis_report, plot_format, plot_groups, save_figure, sensitivity_figure

    out = Output(fmt, quiet, verbose, json_path)
    plot_fmt = plot_format(plot_path) if plot_path is not None else None
    if sensitivity and not data_path:
        raise OnnxPruneError("--sensitivity needs --data: a calibration .npz (see --help)")
    if (resume or exclude) and not sensitivity:
        raise OnnxPruneError(f"{'--resume' if resume else '--exclude'} applies to --sensitivity")
    checkpoint = f"{out.json_file}.partial" if sensitivity and out.json_file else None
    if resume and checkpoint is None:
        raise OnnxPruneError("--resume continues from the checkpoint that --json PATH keeps (PATH.partial): give --json")
    ratio_list = _ratios(ratios)
    reads = {"the input model": model, "the data": data_path,
             "the checkpoint": checkpoint if resume and os.path.exists(checkpoint) else None}
    writes = {"json_path": out.json_file, "plot_path": plot_path}
    with OutputSet(writes, reads) as outputs:
        shapes = parse_shapes(input_shape)
        with out.status("analyzing") as stage:
            analysis = load_and_analyze(model, shapes, outputs)
            report = analysis_report(analysis)
            report["model"] = str(model)
            if self_check:
                from ..selfcheck import self_check as run_self_check

                stage("self-check")
                report["self_check"] = run_self_check(analysis).to_dict()
        if sensitivity:
            if exclude:
                from ..pipeline import check_exclude

                check_exclude(analysis, exclude)
            previous = _checkpoint(checkpoint) if resume else None
            report["sensitivity"] = _measure(out, model, shapes, data_path, calib_samples, ratio_list, metric, criterion,
                                             recover, jobs, scheduler, exclude, checkpoint, previous).to_dict()
        if json_path is not None and not out.json_stdout:
            outputs.stage_bytes("json_path", json_text(report).encode())
        if plot_path is not None:
            if sensitivity:
                outputs.stage_file("plot_path", lambda temp: save_figure(sensitivity_figure(report["sensitivity"]),
                                                                         temp, plot_fmt))
            else:
                outputs.stage_file("plot_path", lambda temp: plot_groups(report, temp, plot_fmt))
        outputs.commit()
    if checkpoint is not None and os.path.exists(checkpoint):
        os.unlink(checkpoint)  # the scan is published whole
    _print(out, model, report, details or verbose, plot_path)
    if sensitivity:
        _print_sensitivity(out, report["sensitivity"])
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
    if report["blocks"]:
        _print_blocks(out, report["blocks"], details)
    t = report["totals"]
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in report["input_shapes"].items())
    out.line(f"MACs {human(t['macs'])} at {shapes} | params {human(t['params'])} | groups {t['groups']} "
             f"({t['prunable_groups']} prunable, {t['blocked_groups']} blocked) | "
             f"prunable share of MACs {t['prunable_macs_share']:.1%} | residual blocks {t['blocks']} "
             f"({t['removable_blocks']} removable)")
    if t["nodes_without_macs_shape"]:
        out.warn(f"{len(t['nodes_without_macs_shape'])} layers have shapes that could not be inferred; their MACs "
                 "are not counted, so the MACs above are a lower bound")
    check = report.get("self_check")
    if check:
        verdict = "passed" if check["passed"] else "FAILED"
        blocks = f" and {check['blocks_checked']} dead residual blocks dropped" if check.get("blocks_checked") else ""
        where = (f" (outputs selected by {', '.join(check['selections'])} compared at the tensors it reads)"
                 if check.get("selections") else "")
        result = (check["error"] if check.get("error") else
                  f"max abs output error {check['max_abs_error']:.3g}{where}; MACs planned "
                  f"{human(check['macs_planned'])}, measured {human(check['macs_measured'])}")
        out.line(f"self-check {verdict}: {check['channels_removed']} dead channels in {check['groups_checked']} groups "
                 f"removed{blocks}; {result}")
    if plot_path is not None:
        out.line(f"plot written to {plot_path}")


def _print_blocks(out: Output, blocks: list[dict], details: bool) -> None:
    from .report import human

    columns = [Column("block"), Column("add"), Column("nodes", "right"), Column("params", "right"),
               Column("MACs", "right"), Column("norm", "right"), Column("status", wrap=True)]
    rows = []
    for b in blocks:
        if b["removable"]:
            status = "removable" + (f" (its {'ReLU goes too' if b['relu_goes'] else 'ReLU stays'})" if b["relu"] else "")
        else:
            status = f"not removable: {b['reason']}"
        norm = "-" if b["norm"] is None else f"{b['norm']:.3g}"
        saves = [str(len(b["nodes"])), human(b["params"]), human(b["macs"])] if b["removable"] else ["-", "-", "-"]
        rows.append([b["id"], b["add"], *saves, norm, status])
        if details and b["nodes"]:
            rows.append(["", "nodes: " + ", ".join(b["nodes"]), "", "", "", "", ""])
    out.table("Residual blocks (y = x + F(x); dropping one removes F)", columns, rows)


def _ratios(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OnnxPruneError(f"--ratios must be numbers separated by commas, got {text!r}") from None
    from ..decide.sensitivity import check_ratios

    return check_ratios(values)


def _checkpoint(path: str):
    from ..decide.sensitivity import SensitivityReport

    if not os.path.exists(path):
        raise OnnxPruneError(f"no checkpoint {path} to resume: it is kept while a scan with this --json runs, and after "
                             "it fails or is interrupted")
    return SensitivityReport.from_dict(_read(path))


def _read(path: str) -> dict:
    import json

    try:
        return json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise OnnxPruneError(f"cannot read the checkpoint {path}: {exc}") from None


def _measure(out: Output, model, shapes, data_path, calib_samples, ratios, metric, criterion, recover, jobs, scheduler,
             exclude=(), checkpoint=None, resume=None):
    """The sensitivity scan, with a progress bar on a terminal and a plain line every few
    seconds otherwise; a failure says where the finished part is kept."""
    import time

    from ..decide.sensitivity import measure
    from ..runtime.scoring import EvaluatorSpec

    spec = EvaluatorSpec(str(model), shapes, str(data_path), criterion=criterion, calib_samples=calib_samples,
                         recover=recover, metric=metric)
    kw = dict(jobs=jobs, scheduler=scheduler, exclude=tuple(exclude), checkpoint=checkpoint, resume=resume)
    try:
        if out.progress():
            return _with_bar(spec, ratios, metric, kw)
        started, last = time.monotonic(), [time.monotonic()]

        def lines(done, total):
            now = time.monotonic()
            if not out.quiet and (now - last[0] >= PROGRESS_EVERY_S or done == total):
                last[0] = now
                sys.stderr.write(f"sensitivity: {done}/{total} groups and blocks measured, {now - started:.0f} s\n")
                sys.stderr.flush()

        return measure(spec, ratios, metric, progress=lines, **kw)
    except KeyboardInterrupt as exc:
        if checkpoint is not None and os.path.exists(checkpoint):
            exc.kept = checkpoint
        raise
    except (OnnxPruneError, RuntimeError) as exc:
        if checkpoint is None or not os.path.exists(checkpoint):
            raise
        where = f"; the finished groups and blocks are in {checkpoint}: rerun with --resume to continue"
        if isinstance(exc, OnnxPruneError):
            raise OnnxPruneError(f"{exc.template}{where}") from None
        raise RuntimeError(f"{exc}{where}") from exc


PROGRESS_EVERY_S = 5.0
"""Without a terminal, ``analyze --sensitivity`` prints a progress line at most this often."""


def _with_bar(spec, ratios, metric, kw):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..decide.sensitivity import measure

    columns = (TextColumn("sensitivity"), BarColumn(), TextColumn("{task.completed}/{task.total} groups and blocks"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sensitivity", total=None)
        return measure(spec, ratios, metric, progress=lambda done, total: bar.update(task, completed=done, total=total),
                       **kw)


def _print_sensitivity(out: Output, report: dict) -> None:
    """The ranked table: least to most sensitive, the loss at a few ratios (all with -v) and
    what pruning the group at the middle ratio saves."""
    from ..decide.sensitivity import SensitivityReport

    sens = SensitivityReport.from_dict(report)
    ratios = [p.ratio for p in sens.curves[0].points] if sens.curves else []
    shown = ratios if out.verbose or len(ratios) <= 3 else [ratios[0], ratios[len(ratios) // 2], ratios[-1]]
    middle = ratios[len(ratios) // 2] if ratios else None
    columns = [Column("rank", "right"), Column("group"), Column("anchor"), Column("channels", "right"),
               Column("mean loss", "right")] + [Column(f"loss@{r:g}", "right") for r in shown]
    if middle is not None:
        columns += [Column(f"MACs saved@{middle:g}", "right"), Column(f"params saved@{middle:g}", "right")]
    rows = []
    for k, curve in enumerate(sens.ranked(), 1):
        by_ratio = {p.ratio: p for p in curve.points}
        row = [str(k), curve.id, curve.anchor, str(curve.channels), f"{curve.area:.4g}"]
        row += [f"{by_ratio[r].loss:.4g}" for r in shown]
        if middle is not None:
            row += [f"{by_ratio[middle].macs_saved:.1%}", f"{by_ratio[middle].params_saved:.1%}"]
        rows.append(row)
    recovered = f", after recovery {sens.recover}" if sens.recover != "none" else ""
    out.table(f"Sensitivity ({sens.metric}{recovered}, baseline {sens.baseline:.4g}, {sens.samples} samples, "
              f"{sens.seconds:.1f} s), least to most sensitive", columns, rows)
    if sens.blocks:
        block_rows = [[str(k), b.id, b.add, f"{b.loss:.4g}", f"{b.macs_saved:.1%}", f"{b.params_saved:.1%}"]
                      for k, b in enumerate(sorted(sens.blocks, key=lambda b: (b.loss, int(b.id[1:]))), 1)]
        out.table(f"Residual blocks dropped alone ({sens.metric}{recovered}), least to most sensitive",
                  [Column("rank", "right"), Column("block"), Column("add"), Column("loss", "right"),
                   Column("MACs saved", "right"), Column("params saved", "right")], block_rows)
