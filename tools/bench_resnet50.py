"""Benchmark: prune a ResNet-50 at several MACs targets; wall time, MACs kept, ORT CPU speedup.

Builds ResNet-50 in plain torch (``models.resnet50``: seeded random weights, BN statistics
varied), exports it with BN folded by the exporter and a dynamic batch, then for each
``--target-macs`` runs the real command line in a fresh process::

    onnxprune prune resnet50.onnx -o pruned.onnx --target-macs T --json summary.json

with default options (``--round-to auto``: the MLAS NCHWc block of this CPU, 16 with AVX-512,
8 with AVX2) unless ``--round-to R`` is given, and times it (wall clock, interpreter start, load
and save included; median of 3 runs). All models are then timed
side by side in ONE interleaved onnxruntime CPU run (``onnxprune.runtime.bench``), and each speedup is
compared with the ideal, ``MACs before / MACs after``.

Where ``torch-pruning`` is installed, Torch-Pruning (DepGraph, L1 magnitude, uniform ratio) is
run on the same torch model for the same MACs targets (its ratio found by bisection with its own
MACs counter), exported, and timed in the same interleaved run.

Prints one JSON document. Usage::

    python tools/bench_resnet50.py [--targets 0.75 0.5 0.3] [--runs 30] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import torch  # noqa: E402

from models import ARCHITECTURES, build  # noqa: E402
from models.export import export_onnx  # noqa: E402
from onnxprune.decide.rounding import resolve  # noqa: E402
from onnxprune.runtime.bench import bench  # noqa: E402

SHAPE = ARCHITECTURES["resnet50"].input_shape


def prune_with_cli(src: Path, out: Path, target: float, round_to: str | None) -> dict:
    summary = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "onnxprune.cli", "prune", str(src), "-o", str(out), "--target-macs", str(target),
           *(["--round-to", round_to] if round_to else []), "--json", str(summary)]
    walls = []
    for _ in range(3):  # the median of three runs: single wall times on a shared machine are noisy
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"onnxprune failed: {proc.stderr.strip()}")
    wall = sorted(walls)[1]
    data = json.loads(summary.read_text())
    return {"tool": "onnxprune", "target_macs": target, "prune_wall_s": round(wall, 3),
            "prune_in_process_s": data["seconds"], "macs_kept": round(data["macs_kept"], 4),
            "params_kept": round(data["params_after"] / data["params_before"], 4), "file": str(out)}


def prune_with_torch_pruning(model: torch.nn.Module, out: Path, target: float, round_to: int) -> dict | None:
    from tp_baseline import prune_to_macs

    done = prune_to_macs(model, SHAPE, target, round_to)
    if done is None:
        return None
    pruned, kept, ratio, seconds = done
    export_onnx(pruned, out, SHAPE, fold_bn=True, dynamic_batch=True)
    return {"tool": "torch-pruning", "target_macs": target, "ratio": round(ratio, 4), "prune_s": round(seconds, 3),
            "macs_kept": round(kept, 4), "file": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-to", default=None,
                        help="onnxprune's --round-to (default: not given, so auto); Torch-Pruning gets the same "
                             "multiple (auto: this CPU's NCHWc block)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_resnet50_"))
    out_dir.mkdir(parents=True, exist_ok=True)

    model = build("resnet50", seed=args.seed)
    src = out_dir / "resnet50.onnx"
    export_onnx(model, src, SHAPE, fold_bn=True, dynamic_batch=True)

    rows = []
    tp_round_to = resolve(args.round_to or "auto").multiple
    for target in args.targets:
        rows.append(prune_with_cli(src, out_dir / f"onnxprune_{target}.onnx", target, args.round_to))
        tp_row = prune_with_torch_pruning(model, out_dir / f"torch_pruning_{target}.onnx", target, tp_round_to)
        if tp_row:
            rows.append(tp_row)

    report = bench([str(src)] + [r["file"] for r in rows], names=["resnet50"] + [f"{r['tool']}@{r['target_macs']}" for r in rows],
                   threads=args.threads, runs=args.runs, warmup=args.warmup, shapes={"input": SHAPE})
    base = report.models[0]
    for row, lat in zip(rows, report.models[1:]):
        ideal = 1.0 / row["macs_kept"]
        row.update(median_ms=round(lat.median_ms, 2), speedup=round(lat.speedup_vs_first, 3),
                   ideal_speedup=round(ideal, 3), speedup_vs_ideal=round(lat.speedup_vs_first / ideal, 3))
    print(json.dumps({
        "model": "resnet50 (BN folded, 1x3x224x224)", "onnxruntime_cpu_threads": args.threads or "default",
        "runs": args.runs, "round_to": args.round_to or f"auto ({tp_round_to})", "baseline_median_ms": round(base.median_ms, 2), "results": rows,
        "torch_pruning": any(r["tool"] == "torch-pruning" for r in rows),
    }, indent=1))


if __name__ == "__main__":
    main()
