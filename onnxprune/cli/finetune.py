"""``onnxprune finetune``: recover a pruned model's accuracy by distillation from the original."""

from __future__ import annotations

import click

from .common import (
    Column,
    Output,
    handle_errors,
    input_shape_option,
    json_text,
    output_options,
    parse_shapes,
)


@click.command()
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--teacher", required=True, type=click.Path(dir_okay=False),
              help="The original model: its outputs are the distillation targets.")
@click.option("--data", "data_path", required=True, metavar="NPZ",
              help="Training .npz: one array per input name (samples on axis 0), optional int 'labels'.")
@click.option("-o", "--output", required=True, metavar="PATH", help="Where to write the fine-tuned model (never an input).")
@click.option("--val", "val_path", metavar="NPZ",
              help="Held-out .npz scored before training and after each epoch; the best weights are kept "
                   "(accuracy with labels, else agreement with the teacher).")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="Passes over --data.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True,
              help="Peak Adam learning rate (cosine decay to 0).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Samples per step.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Distillation temperature T for classifier and CTC outputs (not for Softmax outputs, "
                   "already distributions).")
@click.option("--kd-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Weight α of the distillation loss when the data has labels that train the first output "
                   "([N] classes: cross-entropy; [N, L] strings: CTC): (1-α)·supervised + α·KD. Otherwise KD alone.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the shuffling.")
@input_shape_option
@output_options
@handle_errors
def finetune(pruned, teacher, data_path, output, val_path, epochs, lr, batch_size, temperature, kd_weight, seed,
             input_shape, json_path, fmt, quiet, verbose):
    """Fine-tune PRUNED by knowledge distillation from --teacher, with no source code.

    The graph runs as a torch module (needs PyTorch: `pip install torch`); its trained weights
    are written back by initializer name, so the output keeps PRUNED's structure, names and
    metadata. With --val, the best-scoring weights are kept, the starting ones included.
    """
    from ..errors import OnnxPruneError
    from ..graph.outputs import OutputSet

    try:
        import torch  # noqa: F401
    except ImportError:
        raise OnnxPruneError("finetune needs PyTorch: pip install torch") from None
    from ..torch.finetune import FinetuneOptions, finetune_into

    out = Output(fmt, quiet, verbose, json_path)
    reads = {"the pruned model": pruned, "the teacher model": teacher, "the data": data_path, "the validation data": val_path}
    with OutputSet({"out_path": output, "json_path": out.json_file}, reads, models=["out_path"]) as outputs:
        options = FinetuneOptions(epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature,
                                  kd_weight=kd_weight, seed=seed)
        result = finetune_into(outputs, "out_path", pruned, teacher, data_path, val_path=val_path, options=options,
                               progress=out.progress(), shapes=parse_shapes(input_shape))
        summary = {**result.to_dict(), "model": str(pruned), "teacher": str(teacher), "output": str(output)}
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(summary).encode())
        outputs.commit()
    rows = [[str(h["epoch"]), f"{h['loss']:.4f}", "-" if "val" not in h else f"{h['val']:.4f}"] for h in result.history]
    out.table(f"fine-tuned {pruned} on {result.samples} samples ({'labels + ' if result.labels else ''}distillation)",
              [Column("epoch", "right"), Column("loss", "right"), Column(result.metric or "val", "right")], rows)
    if result.metric:
        out.line(f"{result.metric}: {result.val_before:.4f} before, {result.val_after:.4f} kept (epoch {result.best_epoch})")
    for note in result.notes:
        out.note(note)
    out.line(f"wrote {output} ({result.seconds:.1f} s of training)")
    out.emit_json(summary)
