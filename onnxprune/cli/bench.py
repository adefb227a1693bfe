"""``onnxprune bench``: latency of several models side by side, in interleaved rounds.

``--provider cuda|tensorrt`` times on the GPU with inputs bound on the device (IO binding), so
no host-device copy is timed; ``--fp16`` times float16 copies (float32 inputs and outputs).
See :mod:`onnxprune.runtime.bench`.
"""

from __future__ import annotations

import click

from .common import Column, Output, handle_errors, input_shape_option, json_text, output_options, parse_shapes


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="onnxruntime execution provider. cuda and tensorrt time with inputs already on the GPU "
                   "(IO binding); tensorrt falls back to CUDA, then CPU, for nodes TensorRT rejects.")
@click.option("--fp16", is_flag=True,
              help="Time float16 copies of the models (onnxruntime's converter; inputs and outputs stay float32). "
                   "Meant for GPUs; on the CPU it runs, usually slower than float32.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads (default: onnxruntime's choice).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per run.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed rounds; each round runs every model once.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed rounds first.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs.")
@input_shape_option
@output_options
@handle_errors
def bench(models, provider, fp16, threads, batch_size, runs, warmup, seed, input_shape, json_path, fmt, quiet, verbose):
    """Latency of MODELS side by side, with each model's speedup against the first.

    Runs are interleaved in rotating rounds after warm-up, so machine noise hits all models alike.
    """
    from ..graph import external_data_files
    from ..graph.outputs import OutputSet
    from ..runtime.bench import bench as run_bench

    out = Output(fmt, quiet, verbose, json_path)
    with OutputSet({"json_path": out.json_file}, {"a benchmarked model": list(models)}) as outputs:
        if out.json_file:
            outputs.add_reads({"external data of a model": [f for m in models for f in external_data_files(m)]})
        report = run_bench(list(models), provider=provider, threads=threads, batch=batch_size, warmup=warmup, runs=runs,
                           shapes=parse_shapes(input_shape) or None, seed=seed, progress=out.progress(), fp16=fp16)
        data = report.to_dict()
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(data).encode())
        outputs.commit()
    columns = [Column("model"), Column("median ms", "right"), Column("p90 ms", "right")]
    columns += [Column("mean ms", "right"), Column("min ms", "right")] if verbose else []
    columns += [Column("throughput /s", "right"), Column("speedup", "right")]
    rows = []
    for m in data["models"]:
        extra = [f"{m['mean_ms']:.3f}", f"{m['min_ms']:.3f}"] if verbose else []
        rows.append([m["name"], f"{m['median_ms']:.3f}", f"{m['p90_ms']:.3f}", *extra, f"{m['throughput']:.1f}",
                     f"{m['speedup_vs_first']:.2f}x"])
    where = f"{provider} fp16" if fp16 else provider
    bound = ", inputs on the device" if data["io_binding"] and provider != "cpu" else ""
    out.table(f"latency on {where}, batch {batch_size}, {runs} interleaved rounds{bound}", columns, rows)
    out.emit_json(data)
