"""``onnxprune verify``: run the original and the pruned model on the same inputs and compare."""

from __future__ import annotations

import click

from .common import Column, Output, handle_errors, input_shape_option, json_text, output_options, parse_shapes

METRIC_HELP = ("Task metric per output: auto (from the output's shape and op: top1 for [N, K], map50 for YOLO and "
               "end-to-end detections, ctc for [N, T, K] sequences, iou for dense maps, else cosine), a name "
               "(top1, accuracy, agreement, map50, ctc, iou, cosine, rel_mse) for every output, or OUTPUT=NAME "
               "(repeatable).")


def parse_metric(values) -> str | dict[str, str]:
    """``--metric``: one name, or ``OUTPUT=NAME`` pairs (the other outputs ``auto``)."""
    from ..errors import OnnxPruneError

    values = list(values) or ["auto"]
    pairs = [v for v in values if "=" in v]
    if not pairs:
        if len(values) > 1:
            raise OnnxPruneError("--metric takes one name, or OUTPUT=NAME pairs")
        return values[0]
    if len(pairs) != len(values):
        raise OnnxPruneError("--metric takes one name, or OUTPUT=NAME pairs, not both")
    return {out: name for out, _, name in (v.rpartition("=") for v in pairs)}


@click.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", metavar="NPZ",
              help=".npz with one array per input name (samples on axis 0) and optional 'labels': int [N] for a "
                   "classifier, [N, L] token ids for CTC, [N, M, 6] boxes for detection.")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Random samples when no --data is given.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples per onnxruntime run (a model with a fixed batch runs at its own size).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider (a GPU provider that is missing or falls back is an error).")
@click.option("--metric", "metric", multiple=True, metavar="NAME|OUTPUT=NAME", help=METRIC_HELP)
@click.option("--max-drop", type=click.FloatRange(min=0), metavar="F",
              help="Exit 1 when any output's task metric drops by more than F (0.01: one point of accuracy or "
                   "mAP); the gate of a deployment script.")
@input_shape_option
@output_options
@handle_errors
def verify(original, pruned, data_path, samples, seed, batch_size, provider, metric, max_drop, input_shape, json_path,
           fmt, quiet, verbose):
    """Run ORIGINAL and PRUNED on the same inputs and compare their outputs.

    Reports per output its task metric (the original's value, the pruned model's, the drop),
    then max/mean absolute error, cosine similarity, top-1 agreement for classifier outputs
    [N, K], and each model's accuracy when the data has labels. An output chosen by a
    selection (an end-to-end detector's TopK) is also compared at the tensors the selection
    reads, as --self-check does. With --max-drop, exits 1 when a metric dropped more.
    """
    from ..graph import external_data_files
    from ..graph.outputs import OutputSet
    from ..runtime.evaluate import verify as run_verify

    out = Output(fmt, quiet, verbose, json_path)
    reads = {"the original model": original, "the pruned model": pruned, "the data": data_path}
    with OutputSet({"json_path": out.json_file}, reads) as outputs:
        if out.json_file:
            outputs.add_reads({"external data of a model": external_data_files(original) + external_data_files(pruned)})
        report = run_verify(original, pruned, data_path=data_path, n_random=samples, shapes=parse_shapes(input_shape) or None,
                            seed=seed, batch_size=batch_size, provider=provider, progress=out.progress(),
                            metric=parse_metric(metric), max_drop=max_drop)
        data = report.to_dict()
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(data).encode())
        outputs.commit()
    _print(out, original, pruned, data, verbose)
    out.emit_json(data)
    failed = report.failed
    if failed:
        worst = max(failed, key=lambda m: m.drop)
        from .common import fail

        fail(f"verify failed: {len(failed)} output{'s' * (len(failed) != 1)} dropped more than --max-drop {max_drop} "
             f"({worst.output}: {worst.metric} {worst.original:.4g} → {worst.pruned:.4g}, drop {worst.drop:.4g})", 1)


def _print(out: Output, original, pruned, data: dict, verbose: bool) -> None:
    def fmt_value(v, pct=False):
        return "-" if v is None else (f"{v:.2%}" if pct else f"{v:.4g}")

    title = f"{original} vs {pruned} on {data['data_source']} ({data['n_samples']} samples)"
    rows = []
    for m in data["metrics"]:
        extra = m["extra"] or {}
        detail = ", ".join(f"{k} {fmt_value(v)}" for k, v in extra.items())
        rows.append([m["output"], m["metric"] + (" (labels)" if m["labels"] else ""), fmt_value(m["original"]),
                     fmt_value(m["pruned"]), fmt_value(m["drop"]), detail])
    out.table(f"{title}: task metrics", [Column("output"), Column("metric"), Column("original", "right"),
                                         Column("pruned", "right"), Column("drop", "right"),
                                         Column("details", wrap=True)], rows)
    columns = [Column("output"), Column("max abs err", "right"), Column("mean abs err", "right"),
               Column("cosine", "right")] + ([Column("cosine min", "right")] if verbose else []) + [
               Column("top-1 agree", "right"), Column("acc original", "right"), Column("acc pruned", "right")]
    read_by = {name: o for o, names in data["selected"].items() for name in names}
    rows = []
    for o in data["outputs"]:
        name = f"{o['name']} (selection input of {read_by[o['name']]})" if o["name"] in read_by else o["name"]
        rows.append([name, fmt_value(o["max_abs_error"]), fmt_value(o["mean_abs_error"]),
                     fmt_value(o["cosine_similarity"])] + ([fmt_value(o["cosine_similarity_min"])] if verbose else []) +
                    [fmt_value(o["top1_agreement"], True), fmt_value(o["accuracy_original"], True),
                     fmt_value(o["accuracy_pruned"], True)])
    out.table(f"{title}: output errors", columns, rows)
    for output, names in data["selected"].items():
        out.note(f"{output} is chosen by a selection (TopK, NonMaxSuppression, ArgMax, ...): row by row it differs "
                 f"wherever round-off swaps a near-tie; compare it at what the selection reads: {', '.join(names)}")
    for note in data["notes"]:
        out.note(note)
    if data["max_drop"] is not None and data["passed"]:
        out.line(f"passed: no task metric dropped more than {data['max_drop']:g}")
