"""``--target-latency`` against ``--target-macs`` at the same latency: accuracy and measured speed.

For each trained MNIST model (``python tools/mnist_task.py --arch ARCH``; 3 seeds) and each
schedule (``global``, ``sensitivity``), without training:

* **latency**: ``prune --target-latency T`` (per-layer latency tables, :mod:`onnxprune.runtime.latency`;
  the schedules rank channels by latency saved, HALP-style);
* **macs**: ``prune --target-macs M``, with ``M`` bisected until the plan's *predicted* latency
  (the same tables) equals the latency plan's, so that both are compared at the same latency;

both with ``--recover reconstruct`` on ``mnist_calib.npz`` (500 training digits; the sensitivity
curves are measured once per seed on the same digits, without recovery). Accuracy is on
the 1,000 held-out digits of ``mnist_test.npz``. The original and all pruned models of a seed are
timed side by side in one interleaved onnxruntime CPU run at ``--batch``; ``measured`` is the
pruned median over the original's.

Prints one JSON line per (arch, seed, schedule, method), then a summary (mean ± std over seeds).
Usage::

    python tools/latency_target.py [--dir /work/mnist_task] [--arch resnet56] [--seeds 0 1 2]
                                   [--target 0.5] [--batch 32] [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from onnxprune.analysis.cost import CostModel  # noqa: E402
from onnxprune.api import sensitivity as measure_sensitivity  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, make_plan, prune_file  # noqa: E402
from onnxprune.runtime.bench import bench  # noqa: E402
from onnxprune.runtime.evaluate import verify  # noqa: E402
from onnxprune.runtime.latency import LatencyTable  # noqa: E402


def macs_at_same_latency(analysis, cost_model, options: dict, latency: float) -> float:
    """The ``target_macs`` whose plan (same schedule) has the predicted latency fraction ``latency``."""
    full = cost_model.cost().latency

    def predicted(m: float) -> float:
        plan, _ = make_plan(analysis, PruneOptions(target_macs=m, **options), cost_model)
        return cost_model.cost_without(plan.removed_units(analysis)).latency / full

    lo, hi = 0.05, 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        if predicted(mid) > latency:
            hi = mid
        else:
            lo = mid
    return round((lo + hi) / 2, 4)


def run_seed(args, arch: str, seed: int, work: Path) -> list[dict]:
    model = args.dir / f"{arch}_mnist_s{seed}.onnx"
    calib, test = args.dir / "mnist_calib.npz", args.dir / "mnist_test.npz"
    shapes = {"input": (args.batch, 3, 32, 32)}
    analysis = load_and_analyze(model, shapes)
    cost_model = CostModel(analysis).with_latency(LatencyTable())
    report = measure_sensitivity(model, calib, input_shapes=shapes)
    rows, files = [], [str(model)]
    for schedule in args.schedules:
        common = dict(schedule=schedule, recover="reconstruct", data=str(calib),
                      sensitivity=report if schedule == "sensitivity" else None)
        out = work / f"{arch}_s{seed}_{schedule}_latency.onnx"
        result = prune_file(model, out, PruneOptions(target_latency=args.target, **common), shapes)
        predicted = result.latency.predicted
        macs = macs_at_same_latency(analysis, cost_model, common, predicted)
        out_macs = work / f"{arch}_s{seed}_{schedule}_macs.onnx"
        result_macs = prune_file(model, out_macs, PruneOptions(target_macs=macs, **common), shapes)
        predicted_macs = result_macs.after.macs and (
            cost_model.cost_without(result_macs.plan.removed_units(analysis)).latency / cost_model.cost().latency)
        for method, path, res, pred, target in (("latency", out, result, predicted, args.target),
                                               ("macs", out_macs, result_macs, predicted_macs, macs)):
            check = verify(model, path, data_path=test, batch_size=args.batch).to_dict()
            rows.append({"arch": arch, "seed": seed, "schedule": schedule, "method": method, "target": target,
                         "macs_kept": round(res.after.macs / res.before.macs, 4), "predicted_latency": round(pred, 4),
                         "accuracy": check["outputs"][0].get("accuracy_pruned"), "file": str(path)})
            files.append(str(path))
    timing = bench(files, threads=None, batch=args.batch, runs=args.runs, warmup=5, shapes=shapes)
    base = timing.models[0].median_ms
    for row, lat in zip(rows, timing.models[1:]):
        row["measured_latency"] = round(lat.median_ms / base, 4)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/work/mnist_task"))
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schedules", nargs="+", default=["global", "sensitivity"])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="latency_target_"))
    rows = [row for seed in args.seeds for row in run_seed(args, args.arch, seed, work)]
    for schedule in args.schedules:
        for method in ("latency", "macs"):
            sel = [r for r in rows if r["schedule"] == schedule and r["method"] == method]

            def ms(key, sel=sel):
                values = [r[key] for r in sel if r[key] is not None]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.4f} ± {sd:.4f}"

            print(json.dumps({"summary": f"{args.arch} {schedule} {method}", "macs_kept": ms("macs_kept"),
                              "predicted_latency": ms("predicted_latency"), "measured_latency": ms("measured_latency"),
                              "accuracy": ms("accuracy"), "seeds": len(sel)}))


if __name__ == "__main__":
    main()
