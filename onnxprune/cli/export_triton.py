"""``onnxprune export-triton``: a Triton Inference Server model repository entry for a model."""

from __future__ import annotations

import click

from .common import (
    Column,
    Output,
    flag,
    handle_errors,
    input_shape_option,
    json_text,
    output_options,
    parse_shapes,
)


@click.command("export-triton")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--repo", "repo", required=True, metavar="DIR",
              help="The model repository folder (created if missing; its parent must exist).")
@click.option("--name", metavar="NAME",
              help="Model name and folder under --repo (default: the model file's stem, made safe).")
@click.option("--max-batch-size", "max_batch_size", type=click.IntRange(min=0), metavar="B",
              help="Triton's max_batch_size; 0 disables Triton's batching and gives full dims (default: 4 when "
                   "every input and output has a dynamic first dim, else 0).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Execution instances of the model (instance_group count).")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Where the instances run (instance_group kind: KIND_CPU or KIND_GPU).")
@click.option("--dynamic-batching", "dynamic_batching", is_flag=True,
              help="Add Triton's dynamic batcher (needs a max batch size above 0).")
@click.option("--plan", "plan", metavar="PATH", help="Record this plan (saved by onnxprune prune --plan) in the card.")
@click.option("--accuracy-from", "accuracy_from", metavar="JSON",
              help="Record accuracy from this report of onnxprune verify ORIGINAL MODEL --json.")
@click.option("--latency-from", "latency_from", metavar="JSON",
              help="Record latency from this report of onnxprune bench ... MODEL --json.")
@input_shape_option
@output_options
@handle_errors
def export_triton(model, repo, name, max_batch_size, instances, kind, dynamic_batching, plan, accuracy_from,
                  latency_from, input_shape, json_path, fmt, quiet, verbose):
    """Write a Triton model repository entry for MODEL: DIR/NAME/config.pbtxt, DIR/NAME/1/model.onnx
    (a copy, with its external data files) and DIR/NAME/model_card.json.

    The configuration (platform onnxruntime_onnx) takes the inputs' and outputs' names, data
    types and dims from the graph. With a max batch size above 0 the first dim of every input
    and output is Triton's batch axis and is left out of dims; a model with a fixed first dim
    (e.g. 1) gets max batch size 0 and full dims. Dynamic dims are -1. The text is parsed into Triton's
    ModelConfig (from tritonclient: pip install 'tritonclient[grpc,http]') before anything is
    written; without tritonclient that check is skipped and said so.

    The card records what onnxprune prune stored in the model (criterion, amount, MACs and
    params before and after), MACs and params counted now (at --input-shape; a dynamic batch
    is 1), and the plan, accuracy and latency when given; unknown fields are null.

    Nothing is ever overwritten: DIR/NAME must hold no file. The folder appears whole, or not
    at all.
    """
    from ..deploy.triton import (
        ModelFolder,
        check_name,
        default_name,
        export_into,
        publish,
    )
    from ..errors import OnnxPruneError
    from ..graph.outputs import OutputSet

    out = Output(fmt, quiet, verbose, json_path)
    name = check_name(name) if name is not None else default_name(model)
    reads = {"the model": model, "the plan": plan, "the verify report": accuracy_from,
             "the bench report": latency_from}
    with OutputSet({"json_path": out.json_file}, reads) as outputs, ModelFolder(repo, name) as folder:
        if out.json_file and _inside(out.json_file, folder.dest):
            raise OnnxPruneError(f"{{json_path}} {out.json_file} lies inside the model folder {folder.dest}; write it "
                                 "elsewhere")
        with out.status("exporting"):
            result = export_into(folder, model, outputs=outputs, max_batch_size=max_batch_size, instances=instances,
                                 kind=kind, dynamic_batching=dynamic_batching, input_shapes=parse_shapes(input_shape),
                                 plan=plan, accuracy_from=accuracy_from, latency_from=latency_from, spell=flag)
        data = result.to_dict(flag)
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(data).encode())
        publish(folder, outputs)
    _print(out, result)
    out.emit_json(data)


def _inside(path, folder) -> bool:
    from pathlib import Path

    return Path(folder).resolve() in Path(path).resolve().parents


def _print(out: Output, result) -> None:
    from .report import human

    config = result.config
    batching = f"max_batch_size {config.max_batch_size}" + (", dynamic batching" if config.dynamic_batching else "")
    count = f"{config.instances} {config.kind} instance{'s' if config.instances > 1 else ''}"
    columns = [Column("tensor"), Column("kind"), Column("data type"), Column("dims"), Column("model shape")]
    rows = []
    for t in config.inputs + config.outputs:
        dims = "[" + ", ".join(map(str, t.dims)) + "]" + (" reshape []" if t.reshape is not None else "")
        shape = "[" + ", ".join("?" if d is None else str(d) for d in t.model_shape) + "]"
        rows.append([t.name, t.kind, t.data_type, dims, shape])
    out.table(f"Triton model {config.name} in {result.repository} ({config.platform}, {batching}, {count})",
              columns, rows)
    for note in result.notes_text(flag):
        out.note(note)
    card = result.card
    cost = card["cost"]
    if cost["macs"] is not None:
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in cost["input_shapes"].items())
        out.line(f"MACs {human(cost['macs'])} at {shapes} | params {human(cost['params'])}")
    pruning = card["pruning"]
    if pruning["by_onnxprune"] and pruning["macs_kept"] is not None:
        out.line(f"pruned by onnxprune ({pruning['amount']}, {pruning['criterion']}): MACs kept "
                 f"{pruning['macs_kept']:.1%}, params kept {pruning['params_kept']:.1%}")
    if out.verbose:
        for line in result.config_text.rstrip("\n").splitlines():
            out.line(line)
    if result.validated:
        out.line(f"config validated: {result.validation}")
    else:
        out.warn(f"config not validated: {result.validation}")
    written = [result.config_path, result.model_path, result.card_path]
    out.line("wrote " + ", ".join(map(str, written)) + (f" and {len(result.external_data)} external data files"
                                                        if result.external_data else ""))
