"""``onnxprune prune``: remove channels and write the smaller model."""

from __future__ import annotations

import click

from ..decide.names import CRITERIA, DEFAULT_WITH_DATA

from .common import Column, Output, flag, handle_errors, input_shape_option, json_text, output_options, parse_shapes


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, metavar="PATH", help="Where to write the pruned model (never the input).")
@click.option("--ratio", type=float, help="Pruning ratio: the fraction of each group's channels to remove, in [0, 1).")
@click.option("--target-macs", type=float,
              help="Keep this fraction of total MACs, in (0, 1]; met within 0.02 (0.5 means 0.48-0.52).")
@click.option("--plan", "plan_path", metavar="PATH",
              help="With --ratio/--target-macs: save the plan here. Alone: apply this saved plan.")
@click.option("--target-params", type=float, help="Keep this fraction of the params, in (0, 1]; met within 0.02.")
@click.option("--target-latency", type=float,
              help="Keep this fraction of the latency on --provider, in (0, 1], as predicted by per-layer latency "
                   "tables measured in onnxruntime (cached per machine); the summary gives the measured fraction.")
@click.option("--schedule", type=click.Choice(["uniform", "global", "sensitivity", "evolution"]), default="uniform",
              show_default=True, help="How per-group ratios are chosen under the budget: the same ratio, ranked across "
                                      "groups, from sensitivity curves, or by differential evolution on --data.")
@click.option("--sensitivity-from", "sensitivity_path", metavar="JSON",
              help="Sensitivity curves saved by 'analyze --sensitivity --json' (the sensitivity schedule then "
                   "measures nothing).")
@click.option("--data", "data_path", metavar="NPZ",
              help="Calibration .npz: for --recover, the sensitivity and evolution schedules (keep it apart from "
                   "the data you verify on).")
@click.option("--calib-samples", type=click.IntRange(min=2), help="Use the first N samples of --data (default: all).")
@click.option("--granularity", type=click.Choice(["channel", "weight"]), default="channel", show_default=True,
              help="channel: remove whole channels (smaller and faster); weight: zero each layer's smallest weights "
                   "(unstructured: same graph and speed, smaller compressed file; takes --target-params or --ratio).")
@click.option("--recover", type=click.Choice(["auto", "none", "bn", "reconstruct"]), default="auto", show_default=True,
              help="Repair the pruned layers on --data without training: least-squares reconstruction, or BN "
                   "statistics re-estimation. auto: reconstruct with --data, else none.")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Reach --target-macs/--target-params in N rounds: prune the same fraction of what is left, "
                   "recover (--recover), re-measure the task metric on --data, repeat. Needs --data.")
@click.option("--metric", type=click.Choice(["auto", "accuracy", "agreement", "top1", "map50", "ctc", "iou", "cosine", "rel_mse"]), default="auto",
              show_default=True, help="What the measuring schedules optimize (see 'analyze --help').")
@click.option("--evaluations", type=click.IntRange(min=1), default=300, show_default=True,
              help="Fitness evaluations of the evolution schedule.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel worker processes for the measuring schedules.")
@click.option("--scheduler", metavar="ADDRESS", help="Run the measuring schedules on a Dask cluster (see 'analyze --help').")
@click.option("--drop-blocks", "drop_blocks", metavar="N|NAME,...",
              help="Remove residual blocks: the N least important (--block-criterion), or these blocks by id (b3) or "
                   "Add node name. Alone, or with a width amount (--target-macs then counts the blocks too).")
@click.option("--depth-ratio", type=float,
              help="Remove this fraction of the removable residual blocks, in [0, 1) (the least important first).")
@click.option("--block-criterion", type=click.Choice(["norm", "similarity", "drop"]), default="norm", show_default=True,
              help="Which blocks go first: the weight norm of the branch's last layer, 1 - cos(input, output) on "
                   "--data, or the metric's measured drop on --data.")
@click.option("--mix-blocks", is_flag=True,
              help="Let the sensitivity or evolution schedule drop residual blocks too, under the same target.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="After pruning, fold BatchNorm and per-channel scales into the layers before them and drop no-op "
                   "nodes (onnxscript's rewrite rules; exact up to fp32 round-off).")
@click.option("--criterion", type=click.Choice(("auto", *CRITERIA)), default="auto", show_default=True,
              help="Channel importance: weight norms, BN scale (network slimming), geometric median, a random baseline; "
                   "with --data: mean |activation|, 1 - APoZ, structured Wanda (|W| x |X|) of what the consumer layers "
                   "read, or greedy: keep the channels the others explain least (what --recover reconstruct "
                   "cannot rebuild). auto: wanda with --data, else l1.")
@click.option("--global", "global_rank", is_flag=True, help="Same as --schedule global.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True, help="Cap on the fraction removed from any one group.")
@click.option("--round-to", metavar="N|auto", default="auto", show_default=True,
              help="Keep a multiple of N channels per group. auto: the multiple that --provider's fast kernels need "
                   "(CPU: the NCHWc block, 16 with AVX-512, 8 with AVX2; CUDA/TensorRT: 8), any count below it "
                   "allowed; 1: exact ratios.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="The target the pruned model will run on; sets --round-to auto.")
@click.option("--min-channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Keep at least N channels per group.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave alone the groups touching a matching node or tensor name (repeatable; must match something).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random criterion.")
@click.option("--allow-noop", is_flag=True, help="Write an unchanged copy when the plan removes nothing (an error otherwise).")
@click.option("--strict", is_flag=True,
              help="Make a goal that is not met an error (exit 2, nothing written): a --target-latency measured more "
                   "than 10% away from the target. Without it such a miss is a warning.")
@input_shape_option
@output_options
@handle_errors
def prune(model, output, ratio, target_macs, plan_path, target_params, target_latency, schedule, sensitivity_path, data_path,
          calib_samples, granularity, recover, steps, metric, evaluations, jobs, scheduler, drop_blocks, depth_ratio,
          block_criterion, mix_blocks, fuse, criterion, global_rank, max_ratio, round_to, provider, min_channels, exclude, seed,
          allow_noop, strict,
          input_shape, json_path, fmt, quiet, verbose):
    """Remove channels (and residual blocks) from MODEL and write the smaller model to OUTPUT.

    Give exactly one amount for the width: --ratio, --target-macs, --target-params,
    --target-latency, or --plan
    with an existing plan file; and/or one for the depth: --drop-blocks or --depth-ratio. The sensitivity and evolution schedules need a target and calibration data
    (--data; the sensitivity schedule can reuse curves with --sensitivity-from instead);
    --recover repairs the result on --data.

    After pruning, BatchNorm and per-channel scales are folded into the layers before them
    (--no-fuse keeps them). The output passes onnx.checker (full check) and runs in onnxruntime
    before it is written.
    All outputs (model, plan, JSON) are written atomically, all or none, and never over a file
    that the command reads. Graph inputs, outputs, opset and dynamic dims are kept. A plan that
    removes nothing is an error unless --allow-noop.
    """
    from ..decide.plan import PruningPlan
    from ..decide.sensitivity import SensitivityReport
    from ..graph.outputs import OutputSet
    from ..pipeline import PruneOptions, prune_into

    out = Output(fmt, quiet, verbose, json_path)
    drop_names, drop_count = _drop_blocks(drop_blocks)
    apply_plan = (plan_path is not None and ratio is None and target_macs is None and target_params is None
                  and target_latency is None and drop_blocks is None and depth_ratio is None)
    writes = {"out_path": output, "plan_out": None if apply_plan else plan_path, "json_path": out.json_file}
    reads = {"the input model": model, "the plan": plan_path if apply_plan else None, "the data": data_path,
             "the sensitivity report": sensitivity_path}
    criterion, recover, scan_recover, chosen = _measured_defaults(criterion, recover, data_path, granularity)
    with OutputSet(writes, reads, models=["out_path"]) as outputs:
        options = PruneOptions(criterion=criterion, ratio=ratio, global_rank=global_rank, max_ratio=max_ratio,
                               target_macs=target_macs, round_to=_round_to(round_to), provider=provider,
                               min_channels=min_channels, exclude=tuple(exclude), plan=PruningPlan.load(plan_path) if apply_plan else None,
                               seed=seed, allow_noop=allow_noop, schedule=schedule, target_params=target_params,
                               target_latency=target_latency,
                               sensitivity=SensitivityReport.load(sensitivity_path) if sensitivity_path else None,
                               data=data_path, calib_samples=calib_samples, metric=metric, evaluations=evaluations,
                               jobs=jobs, scheduler=scheduler, recover=recover, granularity=granularity,
                               drop_blocks=drop_names, drop_count=drop_count, depth_ratio=depth_ratio,
                               block_criterion=block_criterion, fuse=fuse, mix_blocks=mix_blocks, strict=strict,
                               steps=steps, scan_recover=scan_recover)
        shapes = parse_shapes(input_shape)
        with out.status("pruning") as stage:
            result = prune_into(outputs, model, options, shapes,
                                plan_label="plan_out" if writes["plan_out"] else None, progress=stage)
        if chosen:
            result.notes.insert(0, f"with {{data}}, the defaults are {' and '.join(chosen)} (the choice measured "
                                   "on real tasks: README, Accuracy on real tasks); choose others with {criterion} and "
                                   "{recover}")
        summary = result.to_dict(flag)
        summary.update(model=str(model), output=str(output), plan=writes["plan_out"])
        if out.json_file:
            outputs.stage_bytes("json_path", json_text(summary).encode())
        outputs.commit()
    _print(out, model, output, result, writes["plan_out"])
    out.emit_json(summary)


def _round_to(text: str) -> int | str:
    """``--round-to``: ``auto`` or an integer >= 1."""
    from ..errors import OnnxPruneError

    text = text.strip().lower()
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise OnnxPruneError(f"--round-to takes 'auto' or an integer >= 1, got {text!r}")
    return int(text)


def _drop_blocks(text: str | None) -> tuple[tuple[str, ...], int | None]:
    """``--drop-blocks``: a count, or block names separated by commas."""
    from ..errors import OnnxPruneError

    if text is None:
        return (), None
    text = text.strip()
    if text.isdigit():
        return (), int(text)
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise OnnxPruneError("--drop-blocks takes a count or block names separated by commas, got an empty value")
    return names, None


def _print(out: Output, model, output, result, plan_out) -> None:
    from .report import human

    rows = []
    params = "nonzero params" if result.plan.meta.get("granularity") == "weight" else "params"
    for label, b, a in (("MACs", result.before.macs, result.after.macs), (params, result.before.params, result.after.params),
                        ("file size (bytes)", result.bytes_before, result.bytes_after)):
        rows.append([label, human(b), human(a), f"{a / b:.1%}" if b else "-"])
    out.table(f"{model} → {output}", [Column(""), Column("before", "right"), Column("after", "right"),
                                      Column("kept", "right")], rows)
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in result.input_shapes.items())
    recovery = f" | recovery {result.recovery.method}" if result.recovery else ""
    blocks = (f" | blocks: {len(result.blocks_dropped)} of {result.blocks_removable} removable dropped"
              if result.blocks_dropped else "")
    out.line(f"groups: {result.groups_pruned} pruned, {result.groups_blocked} blocked, {result.groups_untouched} "
             f"untouched{blocks} | schedule {result.schedule} | criterion {result.criterion}{recovery} | "
             f"round-to {result.round_to} | at {shapes} | "
             f"{result.seconds:.2f} s")
    if result.fusion is not None and result.fusion.removed:
        out.line(result.fusion.describe())
    if out.verbose:
        kept = [[gp.id, gp.anchor, str(gp.channels), str(len(gp.keep)), f"{gp.removed / gp.channels:.1%}"]
                for gp in result.plan.groups.values()]
        out.table("per group", [Column("group"), Column("anchor"), Column("channels", "right"), Column("kept", "right"),
                                Column("pruned", "right")], kept)
    odd = sum(1 for g in result.plan.groups.values() if g.removed and len(g.keep) % 8)
    if result.round_to == "1" and odd:
        out.line(f"hint: {odd} pruned groups keep a channel count that is not a multiple of 8; onnxruntime's fastest CPU "
                 "convolutions (NCHWc) need multiples of 8 (AVX2) or 16 (AVX-512): try --round-to 16")
    for note in result.notes_text(flag):
        out.note(note)
    for warning in result.to_dict(flag)["warnings"]:
        out.warn(warning)
    if plan_out:
        out.line(f"plan written to {plan_out}")


def _measured_defaults(criterion: str, recover: str, data_path, granularity: str):
    """``auto`` resolved: with ``--data`` (channel pruning) the measured pair
    (:data:`~onnxprune.decide.names.DEFAULT_WITH_DATA`), else ``l1`` and no recovery. Returns
    ``(criterion, recover, scan_recover, what was chosen)``; a measuring schedule scores its
    candidates one-shot when the recovery was not asked for (``scan_recover``)."""
    with_data = bool(data_path) and granularity == "channel"
    chosen = []
    if criterion == "auto":
        criterion = DEFAULT_WITH_DATA[0] if with_data else "l1"
        if with_data:
            chosen.append(f"criterion {criterion}")
    scan_recover = None
    if recover == "auto":
        recover = DEFAULT_WITH_DATA[1] if with_data else "none"
        if with_data:
            chosen.append(f"recovery {recover}")
            scan_recover = "none"
    return criterion, recover, scan_recover, chosen
