"""The ``onnxprune`` command line: analyze, prune, verify, bench.

Thin by design: every command calls the Python API and formats its result. Exit codes: 0 ok,
2 bad input or options (one line on stderr, ``error: ...``), 130 interrupted, 1 internal error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from functools import wraps
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from .. import __version__
from ..errors import OnnxPruneError

out = Console()
err = Console(stderr=True)

INPUT_SHAPE = click.option(
    "--input-shape", "input_shape", multiple=True, metavar="NAME:DIMS",
    help="Fix an input's dims, e.g. input:1x3x224x224 (repeatable). Dynamic batch defaults to 1.",
)
JSON_OUT = click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON to this file.")


def _errors(fn):
    """Turn errors into one line and an exit code; no traceback unless ONNXPRUNE_DEBUG=1."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OnnxPruneError as exc:
            err.print(f"[bold red]error:[/] {rich_escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            written = getattr(exc, "written", None)  # set when SIGINT came while an output was committed
            err.print(f"interrupted after {written} was written" if written else "interrupted; nothing was written",
                      highlight=False, markup=False, soft_wrap=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # pragma: no cover - the safety net
            if os.environ.get("ONNXPRUNE_DEBUG"):
                traceback.print_exc()
            first = (str(exc).splitlines() or [""])[0][:300]
            err.print(f"internal error: {type(exc).__name__}: {first} (set ONNXPRUNE_DEBUG=1 for details)",
                      highlight=False, markup=False, soft_wrap=True)
            sys.exit(1)

    return wrapper


def _shapes(specs) -> dict:
    from ..runtime.evaluate import parse_input_shapes

    return parse_input_shapes(specs)


def _check_writable(*paths) -> None:
    """Fail before any work if an output's folder is missing (so nothing is half-written)."""
    for path in paths:
        if path and not Path(path).resolve().parent.is_dir():
            raise OnnxPruneError(f"cannot write {path}: folder {Path(path).parent} does not exist")


def _write_json(path: str | None, data: dict) -> None:
    if path:
        try:
            Path(path).write_text(json.dumps(data, indent=1) + "\n")
        except OSError as exc:
            raise OnnxPruneError(f"cannot write JSON to {path}: {exc.strerror}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="onnxprune")
def main() -> None:
    """Structured channel pruning for ONNX models: analyze, prune, verify, bench.

    \b
    Typical session:
      onnxprune analyze model.onnx
      onnxprune prune model.onnx -o pruned.onnx --ratio 0.3
      onnxprune verify model.onnx pruned.onnx --data val.npz
      onnxprune bench model.onnx pruned.onnx
    """


# ---------------------------------------------------------------- analyze
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@INPUT_SHAPE
@JSON_OUT
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG bar chart of MACs per group.")
@click.option("--details", is_flag=True, help="List each group's nodes and weight tensors.")
@click.option("--self-check", "self_check", is_flag=True,
              help="Prove the rewrite exact on this model: prune dead channels, compare outputs and MACs.")
@_errors
def analyze(model, input_shape, json_path, plot_path, details, self_check):
    """Find the coupled-channel groups of MODEL and what blocks them.

    Prints one row per channel group: channels, the params and MACs it carries, and whether it
    can be pruned or why not, then model totals at the input shape.
    """
    from ..pipeline import load_and_analyze
    from .report import analysis_report, human, plot_groups

    _check_writable(json_path, plot_path)
    analysis = load_and_analyze(model, _shapes(input_shape))
    report = analysis_report(analysis)
    report["model"] = str(model)
    table = Table(title=f"Channel groups of {model}", title_justify="left")
    for col, kw in (("group", {}), ("anchor", {"overflow": "fold"}), ("channels", {"justify": "right"}),
                    ("params", {"justify": "right"}), ("MACs", {"justify": "right"}), ("status", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for g in report["groups"]:
        status = "[green]prunable[/]" if g["prunable"] else f"[red]blocked[/]: {g['blocked'][0]}"
        table.add_row(g["id"], g["anchor"], str(g["channels"]), human(g["params"]), human(g["macs"]), status)
        if details:
            table.add_row("", "nodes: " + ", ".join(g["nodes"]), "", "", "", "weights: " + ", ".join(g["weights"]))
    out.print(table)
    t = report["totals"]
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in report["input_shapes"].items())
    out.print(f"MACs {human(t['macs'])} at {shapes} | params {human(t['params'])} | groups {t['groups']} "
              f"({t['prunable_groups']} prunable, {t['blocked_groups']} blocked) | prunable share of MACs {t['prunable_macs_share']:.1%}",
              highlight=False, soft_wrap=True)
    if t["nodes_without_macs_shape"]:
        err.print(f"warning: {len(t['nodes_without_macs_shape'])} layers have shapes that could not be inferred and count 0 MACs "
                  "(if an input has dynamic dims, --input-shape may resolve them)", soft_wrap=True)
    if self_check:
        from ..selfcheck import self_check as run_self_check

        check = run_self_check(analysis)
        report["self_check"] = check.to_dict()
        verdict = "[green]passed[/]" if check.passed else "[red]FAILED[/]"
        out.print(f"self-check {verdict}: {check.channels_removed} dead channels in {check.groups_checked} groups removed; "
                  f"max abs output error {check.max_abs_error:.3g}; MACs planned {human(check.macs_planned)}, "
                  f"measured {human(check.macs_measured)}", soft_wrap=True)
    _write_json(json_path, report)
    if self_check and not report["self_check"]["passed"]:
        raise OnnxPruneError("self-check failed: please report this model (the rewrite is not exact on it)")
    if plot_path:
        plot_groups(report, plot_path)
        out.print(f"plot written to {plot_path}")


# ---------------------------------------------------------------- prune
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the pruned model (never the input).")
@click.option("--criterion", type=click.Choice(["l1", "l2", "bn-scale", "fpgm", "random"]), default="l1", show_default=True,
              help="Channel importance: weight norms, BN scale (network slimming), geometric median, or a random baseline.")
@click.option("--ratio", type=float, help="Pruning ratio: the fraction of each group's channels to remove, in [0, 1).")
@click.option("--global", "global_rank", is_flag=True, help="Rank channels across all groups instead of per group.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True, help="Cap on the fraction removed from any one group.")
@click.option("--target-macs", type=float, help="Keep this fraction of total MACs, in (0, 1]; the ratio is searched.")
@click.option("--round-to", type=int, default=1, show_default=True, help="Keep a multiple of N channels per group.")
@click.option("--min-channels", type=int, default=1, show_default=True, help="Keep at least N channels per group.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Leave groups touching matching node/tensor names alone (repeatable).")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False),
              help="With --ratio/--target-macs: save the plan here. Alone: apply this saved plan.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random criterion.")
@INPUT_SHAPE
@JSON_OUT
@_errors
def prune(model, output, criterion, ratio, global_rank, max_ratio, target_macs, round_to, min_channels,
          exclude, plan_path, seed, input_shape, json_path):
    """Remove channels from MODEL and write the smaller model to OUTPUT.

    The output passes onnx.checker (full check) and runs in onnxruntime before it is written
    atomically. Graph inputs, outputs, opset and dynamic dims are kept.
    """
    from ..decide.plan import PruningPlan
    from ..pipeline import PruneOptions, prune_file

    plan = None
    save_plan = None
    _check_writable(output, json_path, plan_path)
    if plan_path and ratio is None and target_macs is None:
        plan = PruningPlan.load(plan_path)
    else:
        save_plan = plan_path
    options = PruneOptions(criterion=criterion, ratio=ratio, global_rank=global_rank, max_ratio=max_ratio,
                           target_macs=target_macs, round_to=round_to, min_channels=min_channels,
                           exclude=tuple(exclude), plan=plan, seed=seed)
    with err.status("pruning…", spinner="dots"):
        result = prune_file(model, output, options, _shapes(input_shape), plan_out=save_plan)
    try:
        _prune_report(model, output, result, round_to, save_plan, json_path)
    except KeyboardInterrupt as exc:
        exc.written = str(output)  # for the message: the model was written before the interrupt
        raise


def _prune_report(model, output, result, round_to, save_plan, json_path) -> None:
    from .report import human

    summary = result.to_dict()
    summary.update(model=str(model), output=str(output))
    table = Table(title=f"{model} → {output}", title_justify="left")
    for col in ("", "before", "after", "kept"):
        table.add_column(col, justify="right" if col else "left")
    for label, b, a in (("MACs", result.before.macs, result.after.macs), ("params", result.before.params, result.after.params),
                        ("file size (bytes)", result.bytes_before, result.bytes_after)):
        table.add_row(label, human(b), human(a), f"{a / b:.1%}" if b else "-")
    out.print(table)
    out.print(f"groups: {result.groups_pruned} pruned, {result.groups_blocked} blocked, {result.groups_untouched} untouched | "
              f"criterion {summary['criterion']} | {result.seconds:.2f} s", highlight=False, soft_wrap=True)
    odd = sum(1 for g in result.plan.groups.values() if g.removed and len(g.keep) % 8)
    if round_to == 1 and odd:
        out.print(f"hint: {odd} pruned groups keep a channel count that is not a multiple of 8; onnxruntime's fastest CPU "
                  "convolutions (NCHWc) need multiples of 8 (AVX2) or 16 (AVX-512): try --round-to 16", soft_wrap=True)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)
    if save_plan:
        out.print(f"plan written to {save_plan}")
    _write_json(json_path, summary)


# ---------------------------------------------------------------- verify
@main.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", type=click.Path(dir_okay=False),
              help=".npz with one array per input name (samples on axis 0) and optional int 'labels'.")
@click.option("--samples", type=int, default=8, show_default=True, help="Random samples when no --data is given.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@INPUT_SHAPE
@JSON_OUT
@_errors
def verify(original, pruned, data_path, samples, seed, batch_size, provider, input_shape, json_path):
    """Run ORIGINAL and PRUNED on the same inputs and compare their outputs.

    Reports per output: max/mean absolute error, cosine similarity, top-1 agreement for
    classifier outputs [N, K], and each model's accuracy when the data has labels.
    """
    from ..runtime.evaluate import verify as run_verify

    _check_writable(json_path)
    for path in (original, pruned):
        if not Path(path).is_file():
            raise OnnxPruneError(f"{path}: no such file")
    report = run_verify(original, pruned, data_path=data_path, n_random=samples, shapes=_shapes(input_shape) or None,
                        seed=seed, batch_size=batch_size, provider=provider, progress=sys.stderr.isatty())
    data = report.to_dict()
    table = Table(title=f"{pruned} vs {original} on {data['data_source']} ({data['n_samples']} samples)", title_justify="left")
    for col in ("output", "max abs err", "mean abs err", "cosine", "top-1 agree", "acc original", "acc pruned"):
        table.add_column(col, justify="left" if col == "output" else "right")

    def fmt(v, pct=False):
        return "-" if v is None else (f"{v:.2%}" if pct else f"{v:.4g}")

    for o in data["outputs"]:
        table.add_row(o["name"], fmt(o["max_abs_error"]), fmt(o["mean_abs_error"]), fmt(o["cosine_similarity"]),
                      fmt(o["top1_agreement"], True), fmt(o["accuracy_original"], True), fmt(o["accuracy_pruned"], True))
    out.print(table)
    _write_json(json_path, data)


# ---------------------------------------------------------------- bench
@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, help="onnxruntime intra-op threads (default: onnxruntime's choice).")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=50, show_default=True, help="Timed rounds; each round runs every model once.")
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@INPUT_SHAPE
@JSON_OUT
@_errors
def bench(models, provider, threads, batch, runs, warmup, seed, input_shape, json_path):
    """Latency of MODELS side by side, with each model's speedup against the first.

    Runs are interleaved in rotating rounds after warm-up, so machine noise hits all models alike.
    """
    from ..runtime.bench import bench as run_bench

    _check_writable(json_path)
    for path in models:
        if not Path(path).is_file():
            raise OnnxPruneError(f"{path}: no such file")
    report = run_bench(list(models), provider=provider, threads=threads, batch=batch, warmup=warmup, runs=runs,
                       shapes=_shapes(input_shape) or None, seed=seed, progress=sys.stderr.isatty())
    data = report.to_dict()
    table = Table(title=f"latency on {provider}, batch {batch}, {runs} interleaved rounds", title_justify="left")
    for col in ("model", "median ms", "p90 ms", "throughput /s", "speedup"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in data["models"]:
        table.add_row(m["name"], f"{m['median_ms']:.3f}", f"{m['p90_ms']:.3f}", f"{m['throughput']:.1f}", f"{m['speedup_vs_first']:.2f}x")
    out.print(table)
    _write_json(json_path, data)


if __name__ == "__main__":  # pragma: no cover
    main()
