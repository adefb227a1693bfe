"""Coverage report: every architecture in ``models/``, the shipped digits model and the PP-OCR
classifier, analyzed, self-checked for exactness and pruned at ``--ratio 0.5``.

For each model: channel groups (prunable / blocked), the prunable share of MACs, the
dead-channel self-check (max abs output error, planned == measured MACs), and a ``--ratio 0.5``
prune written to disk and run in onnxruntime (MACs and params kept), with blocked reasons.
Every architecture of ``models/`` is also exported by torch's dynamo exporter, with its weights
as external data, and self-checked (the "dynamo" column). Prints a Markdown table (the README's)
and, with ``--json``, the raw figures.

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
    """(row name, onnx path, input shapes, dynamo export or None) for every model in the report."""
    yield "digits ResNet-8 (shipped default)", ROOT / "models/digits/resnet8_digits.onnx", {}, None
    try:
        import onnx
        from test_thirdparty import CASES
        from thirdparty import PPOCR_CLS, wheel_file

        yield "PP-OCR text-direction classifier (Paddle, opset 11)", wheel_file(*PPOCR_CLS), {"x": (1, 3, 48, 192)}, None
        for case in CASES:
            path = wheel_file(*case.source)
            model = onnx.load(path, load_external_data=False)
            exporter = model.producer_name or "paddle2onnx"
            opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
            yield f"{case.id} ({case.source[0]}; {exporter}, opset {opset})", path, case.shapes, None
    except Exception as exc:  # reported, not hidden
        print(f"third-party files unavailable: {exc}", file=sys.stderr)
    try:
        from models import ALL, build
        from models.export import export_onnx
    except ImportError:
        print("torch is not installed: models/ architectures skipped", file=sys.stderr)
        return
    for name, arch in ALL.items():
        path = tmp / f"{name}.onnx"
        export_onnx(build(name), path, arch.input_shape, fold_bn=False, dynamic_batch=True)
        label = re.split(r",|:| on \[", arch.description)[0]
        yield f"{name} ({label})", path, {}, dynamo(name, arch, tmp)
    yield from variants(tmp)


def dynamo(name: str, arch, tmp: Path) -> Path:
    """``name`` exported by the dynamo exporter (BN kept, dynamic batch), weights as external data."""
    import onnx
    from models import build
    from models.export import export_onnx

    inline = export_onnx(build(name), tmp / f"{name}_dynamo_inline.onnx", arch.input_shape, dynamic_batch=True,
                         dynamo=True)
    path = tmp / f"{name}_dynamo.onnx"
    onnx.save(onnx.load(inline), path, save_as_external_data=True, location=f"{path.name}.data", size_threshold=0)
    return path


def variants(tmp: Path):
    """Other export styles of the same networks: fused attention, fp16."""
    from models.export import fuse_attention, to_fp16

    fused = fuse_attention(tmp / "bert.onnx", tmp / "bert_fused.onnx", num_heads=4, hidden_size=64)
    yield "bert, onnxruntime-fused com.microsoft Attention", fused, {}, None
    half = to_fp16(tmp / "resnet20.onnx", tmp / "resnet20_fp16.onnx")
    yield "resnet20, fp16 weights and I/O", half, {}, None


def row(name: str, path: Path, shapes: dict, dynamo_path: Path | None, tmp: Path) -> dict:
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
        "dynamo_self_check": None if dynamo_path is None else _dynamo_check(dynamo_path),
    }


def _dynamo_check(path: Path) -> dict:
    check = self_check(load_and_analyze(path))
    return {"passed": check.passed, "max_abs_error": check.max_abs_error, "selections": list(check.selections)}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | groups (prunable) | residual blocks (removable) | prunable MACs | exact (max err) | dynamo export, external data: exact (max err) | `--ratio 0.5` runs in ORT | MACs kept | params kept | blocked groups: reason |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        blocked = "; ".join(f"{n}× {reason}" for reason, n in r["blocked"].items()) or "none"
        d = r["dynamo_self_check"]
        dyn = "-" if d is None else f"{'✓' if d['passed'] else '✗'} ({d['max_abs_error']:.1e})"
        lines.append(
            f"| {r['model']} | {r['groups']} ({r['prunable_groups']}) | {r['blocks']} ({r['removable_blocks']}) | "
            f"{r['prunable_macs_share']:.0%} | "
            f"{'✓' if r['self_check_passed'] else '✗'} ({r['self_check_max_abs_error']:.1e}) | {dyn} | "
            f"{'✓' if r['ratio_0.5_runs_in_ort'] else '✗'} | {r['ratio_0.5_macs_kept']:.1%} | {r['ratio_0.5_params_kept']:.1%} | {blocked} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row(name, Path(path), shapes, dynamo_path, Path(tmp))
                for name, path, shapes, dynamo_path in sources(Path(tmp))]
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
