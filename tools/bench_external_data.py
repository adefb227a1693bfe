"""Benchmark: peak memory and wall time of ``onnxprune prune`` on a large external-data model.

Builds a synthetic model quickly, without torch: a stack of 3x3 convolutions (+ bias, Relu) at a
4x4 spatial size, then GlobalAveragePool, Flatten and a stack of Gemm layers (+ Relu), with
seeded random float32 weights written straight into one external data file (4 KiB-aligned
offsets, as ``onnx.save_model(save_as_external_data=True)`` would store them). About half of
the bytes are in the convolutions and half in the Gemms; ``--gb`` sets the total.

Then it runs the real command line in a fresh process, under ``/usr/bin/time -v``::

    onnxprune prune big.onnx -o out/pruned.onnx --ratio R

and reports the peak resident set size (max RSS) of that process, which covers load, analysis,
importance, plan, rewrite, full check, onnxruntime smoke run and save. It also measures an
interpreter that only imports onnxprune and onnxruntime (the fixed overhead) and, with
``--analyze``, ``onnxprune analyze`` alone. Prints one JSON document::

    python tools/bench_external_data.py [--gb 2.2] [--ratio 0.3] [--workdir DIR] [--keep] [--analyze]

The interesting figure is ``prune.rss_over_model``: peak RSS divided by the model's size on
disk (1.0 would be exactly one copy of the weights and nothing else).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
ALIGN = 4096


def _external_tensor(name: str, array: np.ndarray, data, location: str) -> TensorProto:
    """A TensorProto whose bytes are appended (aligned) to the open file ``data``."""
    offset = data.tell()
    pad = (-offset) % ALIGN
    if pad:
        data.write(b"\0" * pad)
        offset += pad
    array = np.ascontiguousarray(array)
    data.write(array.tobytes())
    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=list(array.shape))
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(array.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def build_big_model(folder: Path, gb: float, *, conv_width: int = 1024, gemm_width: int = 4096,
                    seed: int = 0, name: str = "big.onnx") -> Path:
    """Write ``folder/name`` and ``folder/name.data`` (about ``gb`` * 1e9 bytes of float32 weights).

    Returns the model path. Used by the robustness tests too (with a small ``gb``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = gb * 1e9
    conv_bytes = conv_width * conv_width * 9 * 4
    gemm_bytes = gemm_width * gemm_width * 4
    n_conv = max(1, round(total / 2 / conv_bytes))
    n_gemm = max(1, math.ceil((total - n_conv * conv_bytes) / gemm_bytes))  # at least ``gb`` in all
    location = f"{name}.data"
    nodes, inits = [], []
    c_in = 64
    with open(folder / location, "wb") as data:

        def weight(tname, *shape, fan_in):
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(np.sqrt(2.0 / fan_in))
            inits.append(_external_tensor(tname, w, data, location))
            return tname

        def bias(tname, n):
            inits.append(_external_tensor(tname, rng.standard_normal(n, dtype=np.float32) * np.float32(0.01), data, location))
            return tname

        x = "input"
        for i in range(n_conv):
            w = weight(f"conv{i}.weight", conv_width, c_in, 3, 3, fan_in=c_in * 9)
            b = bias(f"conv{i}.bias", conv_width)
            nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
            x, c_in = f"relu{i}", conv_width
        nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
        x, k = "flat", c_in
        for i in range(n_gemm):
            w = weight(f"fc{i}.weight", gemm_width, k, fan_in=k)
            b = bias(f"fc{i}.bias", gemm_width)
            nodes.append(helper.make_node("Gemm", [x, w, b], [f"fc{i}"], name=f"fc{i}", transB=1))
            nodes.append(helper.make_node("Relu", [f"fc{i}"], [f"fc_relu{i}"], name=f"fc_relu{i}"))
            x, k = f"fc_relu{i}", gemm_width
        w = weight("head.weight", 1000, k, fan_in=k)
        b = bias("head.bias", 1000)
        nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], name="head", transB=1))
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def disk_size(model: Path) -> int:
    """Bytes of ``model`` plus every external data file it names."""
    proto = onnx.load(str(model), load_external_data=False)
    files = {model.resolve()}
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                files.add((model.parent / entry.value).resolve())
    return sum(f.stat().st_size for f in files if f.exists())


def timed(cmd: list[str], src: Path = ROOT) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v`` with ``src`` first on the Python path; its peak
    RSS, wall time and exit status."""
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    rss = int(match.group(1)) * 1024 if match else None
    tail = [line for line in proc.stderr.splitlines() if not line.startswith("\t")][-3:]
    return {"exit": proc.returncode, "peak_rss_bytes": rss, "wall_s": round(wall, 2),
            **({"stderr": tail} if proc.returncode else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.2, help="weights in GB (1e9 bytes)")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the built and pruned models")
    parser.add_argument("--analyze", action="store_true", help="also measure `onnxprune analyze` alone")
    parser.add_argument("--src", type=Path, default=ROOT, help="folder holding the onnxprune package to measure")
    parser.add_argument("--model", type=Path, help="measure this model instead of building one")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="onnxprune_bench_ext_"))
    try:
        start = time.perf_counter()
        model = args.model or build_big_model(work / "in", args.gb)
        build_s = 0.0 if args.model else time.perf_counter() - start
        size = disk_size(model)
        (work / "out").mkdir(parents=True, exist_ok=True)
        out = work / "out" / "pruned.onnx"
        cli = [sys.executable, "-m", "onnxprune.cli"]
        report: dict = {"src": str(args.src), "model": {"bytes_on_disk": size, "gb": round(size / 1e9, 3), "build_s": round(build_s, 1),
                                  "nodes": len(onnx.load(str(model), load_external_data=False).graph.node)}}
        base = timed([sys.executable, "-c", "import onnxprune.pipeline, onnxruntime, onnx_graphsurgeon"], args.src)
        report["baseline_interpreter"] = base
        if args.analyze:
            report["analyze"] = timed([*cli, "analyze", str(model)], args.src)
        prune = timed([*cli, "prune", str(model), "-o", str(out), "--ratio", str(args.ratio),
                        "--round-to", "1"], args.src)
        report["prune"] = prune
        for key in ("analyze", "prune"):
            run = report.get(key)
            if run and run["peak_rss_bytes"]:
                run["rss_over_model"] = round(run["peak_rss_bytes"] / size, 3)
                run["rss_minus_baseline_over_model"] = round((run["peak_rss_bytes"] - base["peak_rss_bytes"]) / size, 3)
        if prune["exit"] == 0:
            report["output"] = {"bytes_on_disk": disk_size(out),
                                "files": sorted(p.name for p in out.parent.iterdir())}
        print(json.dumps(report, indent=1))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
