"""``onnxprune verify``: run the original and the pruned model on the same inputs and compare."""

from __future__ import annotations

import click

from .common import Column, Output, handle_errors, input_shape_option, json_text, output_options, parse_shapes


@click.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", metavar="NPZ",
              help=".npz with one array per input name (samples on axis 0) and optional int 'labels'.")
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Random samples when no --data is given.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples per onnxruntime run.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider (a GPU provider that is missing or falls back is an error).")
@input_shape_option
@output_options
@handle_errors
def verify(original, pruned, data_path, samples, seed, batch_size, provider, input_shape, json_path, fmt, quiet, verbose):
    """Run ORIGINAL and PRUNED on the same inputs and compare their outputs.

    Reports per output: max/mean absolute error, cosine similarity, top-1 agreement for
    classifier outputs [N, K], and each model's accuracy when the data has labels. An output
    chosen by a selection (an end-to-end detector's TopK) is also compared at the tensors the
    selection reads, as --self-check does.
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
                            seed=seed, batch_size=batch_size, provider=provider, progress=out.progress())
        data = report.to_dict()
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(data).encode())
        outputs.commit()
    columns = [Column("output"), Column("max abs err", "right"), Column("mean abs err", "right"),
               Column("cosine", "right")] + ([Column("cosine min", "right")] if verbose else []) + [
               Column("top-1 agree", "right"), Column("acc original", "right"), Column("acc pruned", "right")]

    def fmt_value(v, pct=False):
        return "-" if v is None else (f"{v:.2%}" if pct else f"{v:.4g}")

    read_by = {name: out for out, names in data["selected"].items() for name in names}
    rows = []
    for o in data["outputs"]:
        name = f"{o['name']} (selection input of {read_by[o['name']]})" if o["name"] in read_by else o["name"]
        rows.append([name, fmt_value(o["max_abs_error"]), fmt_value(o["mean_abs_error"]),
                     fmt_value(o["cosine_similarity"])] + ([fmt_value(o["cosine_similarity_min"])] if verbose else []) +
                    [fmt_value(o["top1_agreement"], True), fmt_value(o["accuracy_original"], True),
                     fmt_value(o["accuracy_pruned"], True)])
    out.table(f"{original} vs {pruned} on {data['data_source']} ({data['n_samples']} samples)", columns, rows)
    for output, names in data["selected"].items():
        out.note(f"{output} is chosen by a selection (TopK, NonMaxSuppression, ArgMax, ...): row by row it differs "
                 f"wherever round-off swaps a near-tie; compare it at what the selection reads: {', '.join(names)}")
    out.emit_json(data)
