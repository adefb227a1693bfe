"""Deep real architectures: wall time of ``onnxprune analyze`` and ``onnxprune prune`` on a
ResNet-152 (BN folded, 1x3x224x224) and a 24-layer post-LN transformer encoder (D=256, 8 heads,
T=128), each exported from plain torch with seeded random weights.

Each command runs in a fresh process (interpreter start, load and save included), median of 3.
Prints JSON: nodes, file size, groups (prunable), and seconds per command.

    python tools/bench_deep.py [--out-dir DIR]
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
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402
import torch  # noqa: E402

from models.export import export_onnx  # noqa: E402
from models.resnet import Bottleneck, ConvBNAct, ResNet  # noqa: E402
from models.transformer import BertEncoder  # noqa: E402


def resnet152() -> torch.nn.Module:
    """ResNet-152 (He et al. 2016): bottleneck stages (3, 8, 36, 3); ``(N,3,224,224) -> (N,1000)``."""
    stem = torch.nn.Sequential(ConvBNAct(3, 64, 7, 2), torch.nn.MaxPool2d(3, 2, 1))
    return ResNet(stem, 64, Bottleneck, (3, 8, 36, 3), (64, 128, 256, 512), 1000).eval()


def median_seconds(cmd: list[str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return round(sorted(times)[len(times) // 2], 2)


def measure(name: str, path: Path, shape_arg: str) -> dict:
    report = path.with_suffix(".json")
    cli = [sys.executable, "-m", "onnxprune.cli"]
    analyze = median_seconds(cli + ["analyze", str(path), "--input-shape", shape_arg, "--json", str(report)])
    prune = median_seconds(cli + ["prune", str(path), "-o", str(path.with_name(path.stem + "_pruned.onnx")),
                                  "--ratio", "0.3", "--round-to", "1",
                                  "--input-shape", shape_arg])
    totals = json.loads(report.read_text())["totals"]
    return {"model": name, "nodes": len(onnx.load(path, load_external_data=False).graph.node),
            "megabytes": round(path.stat().st_size / 1e6, 1), "groups": totals["groups"],
            "prunable_groups": totals["prunable_groups"], "analyze_s": analyze, "prune_ratio_0.3_s": prune}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_deep_"))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rows = []
    path = out / "resnet152.onnx"
    export_onnx(resnet152(), path, (1, 3, 224, 224), fold_bn=True, dynamic_batch=True)
    rows.append(measure("resnet152", path, "input:1x3x224x224"))
    path = out / "encoder24.onnx"
    export_onnx(BertEncoder(dim=256, depth=24, num_heads=8).eval(), path, (1, 128, 256), fold_bn=True, dynamic_batch=True)
    rows.append(measure("transformer encoder, 24 layers", path, "input:1x128x256"))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
