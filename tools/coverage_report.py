"""Coverage report: every architecture in ``models/``, the shipped digits model and the PP-OCR
classifier, analyzed, self-checked for exactness and pruned at ``--ratio 0.5``.

For each model: channel groups (prunable / blocked), the prunable share of MACs, the
dead-channel self-check (max abs output error, planned == measured MACs), and a ``--ratio 0.5``
prune written to disk and run in onnxruntime (MACs and params kept), with blocked reasons.
Prints a Markdown table (the README's) and, with ``--json``, the raw figures.

    python tools/coverage_report.py [--json out.json]
"""

from __future__ import annotations

import argparse
import re
import json
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402

from onnxprune.analysis.cost import CostModel  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file  # noqa: E402
from onnxprune.cli.report import analysis_report  # noqa: E402
from onnxprune.selfcheck import random_feeds, run, self_check  # noqa: E402


def sources(tmp: Path):
    """(row name, onnx path, input shapes) for every model in the report."""
    yield "digits ResNet-8 (shipped default)", ROOT / "models/digits/resnet8_digits.onnx", {}
    try:
        import onnx
        from test_thirdparty import CASES
        from thirdparty import PPOCR_CLS, wheel_file

        yield "PP-OCR text-direction classifier (Paddle, opset 11)", wheel_file(*PPOCR_CLS), {"x": (1, 3, 48, 192)}
        for case in CASES:
            path = wheel_file(*case.source)
            model = onnx.load(path, load_external_data=False)
            exporter = model.producer_name or "paddle2onnx"
            opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
            yield f"{case.id} ({case.source[0]}; {exporter}, opset {opset})", path, case.shapes
    except Exception as exc:  # reported, not hidden
        print(f"third-party files unavailable: {exc}", file=sys.stderr)
    try:
        from models import ARCHITECTURES, build
        from models.export import export_onnx
    except ImportError:
        print("torch is not installed: models/ architectures skipped", file=sys.stderr)
        return
    for name, arch in ARCHITECTURES.items():
        path = tmp / f"{name}.onnx"
        export_onnx(build(name), path, arch.input_shape, fold_bn=False, dynamic_batch=True)
        label = re.split(r",|:| on \[", arch.description)[0]
        yield f"{name} ({label})", path, {}
    yield from variants(tmp)


def variants(tmp: Path):
    """Other export styles of the same networks: dynamo (symbolic dims), fused attention, fp16."""
    from models import ARCHITECTURES, build
    from models.export import export_onnx, fuse_attention, to_fp16

    shape = ARCHITECTURES["resnet20"].input_shape
    path = tmp / "resnet20_dynamo.onnx"
    export_onnx(build("resnet20"), path, shape, dynamo=True, dynamic_batch=True)
    yield "resnet20, dynamo exporter (symbolic batch dim)", path, {}
    path = tmp / "vit_dynamo.onnx"
    export_onnx(build("vit"), path, ARCHITECTURES["vit"].input_shape, dynamo=True, dynamic_batch=True)
    yield "vit, dynamo exporter", path, {}
    fused = fuse_attention(tmp / "bert.onnx", tmp / "bert_fused.onnx", num_heads=4, hidden_size=64)
    yield "bert, onnxruntime-fused com.microsoft Attention", fused, {}
    half = to_fp16(tmp / "resnet20.onnx", tmp / "resnet20_fp16.onnx")
    yield "resnet20, fp16 weights and I/O", half, {}


def row(name: str, path: Path, shapes: dict, tmp: Path) -> dict:
    analysis = load_and_analyze(path, shapes)
    report = analysis_report(analysis, CostModel(analysis))
    check = self_check(analysis)
    out = tmp / f"pruned_{path.stem}.onnx"
    result = prune_file(path, out, PruneOptions(ratio=0.5, round_to=1), shapes)
    runs = all(np.isfinite(o).all() for o in run(result.model, random_feeds(analysis)))
    reasons = Counter(r.split(" (node")[0] for g in analysis.groups for r in g.blocked[:1])
    t = report["totals"]
    return {
        "model": name, "groups": t["groups"], "prunable_groups": t["prunable_groups"], "macs": t["macs"],
        "prunable_macs_share": round(t["prunable_macs_share"], 4), "self_check_passed": check.passed,
        "self_check_max_abs_error": check.max_abs_error, "ratio_0.5_runs_in_ort": runs,
        "ratio_0.5_macs_kept": round(result.after.macs / result.before.macs, 4),
        "ratio_0.5_params_kept": round(result.after.params / result.before.params, 4),
        "blocked": dict(reasons), "blocks": len(analysis.blocks), "removable_blocks": len(analysis.removable_blocks),
        "self_check_blocks": check.blocks_checked,
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| model | groups (prunable) | residual blocks (removable) | prunable MACs | exact (max err) | `--ratio 0.5` runs in ORT | MACs kept | params kept | blocked groups: reason |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        blocked = "; ".join(f"{n}× {reason}" for reason, n in r["blocked"].items()) or "none"
        lines.append(
            f"| {r['model']} | {r['groups']} ({r['prunable_groups']}) | {r['blocks']} ({r['removable_blocks']}) | "
            f"{r['prunable_macs_share']:.0%} | "
            f"{'✓' if r['self_check_passed'] else '✗'} ({r['self_check_max_abs_error']:.1e}) | "
            f"{'✓' if r['ratio_0.5_runs_in_ort'] else '✗'} | {r['ratio_0.5_macs_kept']:.1%} | {r['ratio_0.5_params_kept']:.1%} | {blocked} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row(name, Path(path), shapes, Path(tmp)) for name, path, shapes in sources(Path(tmp))]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
