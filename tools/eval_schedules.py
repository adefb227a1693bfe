"""One-shot accuracy of every schedule and recovery on the harder labeled task (CIFAR ResNet-20
on 5,000 MNIST digits, ``tools/mnist_task.py``), at a MACs target, over the trained seeds.

For each seed's model, without any training:

* ``uniform``, ``global``, ``sensitivity`` and ``evolution`` schedules (l1 criterion), each with
  ``--recover none`` and ``--recover reconstruct``, and ``uniform`` with ``bn``;
* the ``random`` criterion with the uniform schedule, as a floor;
* Torch-Pruning's one-shot L1 on the torch model at the same MACs target (ratio bisected with
  its own counter), as the external anchor, where ``torch-pruning`` is installed.

Calibration (sensitivity curves, evolution's fitness, recovery) uses ``mnist_calib.npz`` (500
training images); accuracy is measured on the 1,000 held-out ``mnist_test.npz`` images. The
sensitivity curves are measured once per seed and recovery setting and reused. Prints one JSON
line per (seed, method), then the table of mean ± std over seeds. Usage::

    python tools/eval_schedules.py [--dir /tmp/mnist_task] [--seeds 0 1 2] [--target 0.5]
                                   [--evaluations 300] [--jobs 2] [--digits]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from onnxprune.decide.sensitivity import measure  # noqa: E402
from onnxprune.pipeline import PruneOptions, prune_file  # noqa: E402
from onnxprune.runtime.evaluate import verify  # noqa: E402
from onnxprune.runtime.scoring import EvaluatorSpec  # noqa: E402

METHODS = [("uniform", "none"), ("uniform", "bn"), ("uniform", "reconstruct"), ("global", "none"),
           ("global", "reconstruct"), ("sensitivity", "none"), ("sensitivity", "reconstruct"), ("evolution", "none"),
           ("evolution", "reconstruct"), ("random", "none"), ("random", "reconstruct")]


def test_accuracy(original: Path, pruned: Path, test: Path) -> tuple[float, float]:
    out = verify(original, pruned, data_path=test, batch_size=250).outputs[0]
    return out.accuracy_original, out.accuracy_pruned


def run_seed(folder: Path, seed: int, target: float, evaluations: int, jobs: int, work: Path,
             digits: bool = False) -> list[dict]:
    if digits:
        model = ROOT / "models" / "digits" / "resnet8_digits.onnx"
        calib, test = model.parent / "digits_calib.npz", model.parent / "digits_test.npz"
    else:
        model = folder / f"resnet20_mnist_s{seed}.onnx"
        calib, test = folder / "mnist_calib.npz", folder / "mnist_test.npz"
    curves = {}
    rows = []
    for schedule, recover in METHODS:
        start = time.perf_counter()
        options = PruneOptions(target_macs=target, schedule="uniform" if schedule == "random" else schedule,
                               criterion="random" if schedule == "random" else "l1", recover=recover, data=str(calib),
                               evaluations=evaluations, jobs=jobs, seed=seed, round_to=1)
        if schedule == "sensitivity":
            if recover not in curves:
                curves[recover] = measure(EvaluatorSpec(str(model), data=str(calib), recover=recover), jobs=jobs)
            options.sensitivity = curves[recover]
        out = work / f"s{seed}_{schedule}_{recover}.onnx"
        result = prune_file(model, out, options)
        before, after = test_accuracy(model, out, test)
        rows.append({"seed": seed, "method": f"{schedule}/{recover}", "macs_kept": round(result.after.macs / result.before.macs, 4),
                     "accuracy_original": before, "accuracy": after, "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if not digits:
        rows.append(torch_pruning_row(folder, seed, target, test))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def torch_pruning_row(folder: Path, seed: int, target: float, test: Path) -> dict:
    import torch

    from mnist_task import build
    from tp_baseline import prune_to_macs

    model = build(seed)
    model.load_state_dict(torch.load(folder / f"resnet20_mnist_s{seed}.pt"))
    model.eval()
    done = prune_to_macs(model, (1, 3, 32, 32), target)
    if done is None:
        return {"seed": seed, "method": "torch-pruning/none", "skipped": "torch-pruning is not installed"}
    pruned, kept, ratio, _ = done
    with np.load(test) as z, torch.no_grad():
        accuracy = float((pruned(torch.from_numpy(z["input"])).argmax(1).numpy() == z["labels"]).mean())
    return {"seed": seed, "method": "torch-pruning/none", "macs_kept": round(kept, 4), "accuracy": accuracy,
            "ratio": round(ratio, 4)}


def table(rows: list[dict]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows if "accuracy" in r))
    base = [r["accuracy_original"] for r in rows if r.get("method") == "uniform/none"]
    lines = [f"original: {100 * np.mean(base):.2f} ± {100 * np.std(base):.2f} %", "",
             "| method (schedule/recovery) | MACs kept | accuracy (mean ± std over seeds) |", "|---|---|---|"]
    for m in methods:
        acc = [r["accuracy"] for r in rows if r["method"] == m]
        kept = [r["macs_kept"] for r in rows if r["method"] == m]
        lines.append(f"| {m} | {np.mean(kept):.3f} | {100 * np.mean(acc):.2f} ± {100 * np.std(acc):.2f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mnist_task"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--digits", action="store_true",
                        help="Evaluate the shipped digits model instead (calibration and test splits in models/digits).")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in ([0] if args.digits else args.seeds):
            rows += run_seed(args.dir, seed, args.target, args.evaluations, args.jobs, Path(tmp), args.digits)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
