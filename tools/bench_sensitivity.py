"""Time ``onnxprune analyze --sensitivity`` on the CIFAR ResNet-56: every prunable group × 9
ratios on 512 samples (issue goal: under 60 s on 2 cores).

Builds ResNet-56 in plain torch (``models.resnet56``, seeded weights), exports it with BN folded
and a dynamic batch, writes 512 seeded random 3×32×32 calibration samples, then runs the real
command line in a fresh process and times it (interpreter start, load, analysis, the curves and
the JSON included)::

    onnxprune analyze resnet56.onnx --sensitivity --data calib.npz --jobs J --json sens.json

Prints one JSON line: groups, ratios, samples, jobs, wall seconds, and the seconds the report
itself measured. Usage::

    python tools/bench_sensitivity.py [--jobs 2] [--samples 512] [--recover none]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import ARCHITECTURES, build  # noqa: E402
from models.export import export_onnx  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--recover", default="none")
    parser.add_argument("--model", default="resnet56")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shape = ARCHITECTURES[args.model].input_shape
        model = export_onnx(build(args.model), folder / f"{args.model}.onnx", shape, fold_bn=True, dynamic_batch=True)
        data = np.random.default_rng(0).standard_normal((args.samples, *shape[1:])).astype(np.float32)
        np.savez(folder / "calib.npz", input=data)
        cmd = [sys.executable, "-m", "onnxprune.cli", "analyze", str(model), "--sensitivity", "--data",
               str(folder / "calib.npz"), "--jobs", str(args.jobs), "--recover", args.recover, "--json",
               str(folder / "sens.json"), "-q"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        report = json.loads((folder / "sens.json").read_text())["sensitivity"]
    print(json.dumps({"model": args.model, "groups": len(report["curves"]),
                      "ratios": len(report["curves"][0]["points"]), "samples": report["samples"], "jobs": args.jobs,
                      "recover": args.recover, "metric": report["metric"], "wall_s": round(wall, 1),
                      "measured_s": report["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
