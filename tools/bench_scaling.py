"""Benchmark: how analyze and prune time grow with the node count.

Generates synthetic ResNet-like graphs with ``onnx.helper`` (no torch): a stem conv, then
residual blocks ``conv-BN-relu-conv-BN + skip → relu`` (7 nodes), and every fourth block a
side branch ``conv-BN-relu`` concatenated onto the trunk and reduced back by a 1x1 conv-BN-relu
(7 more nodes), at 8x8 spatial size and 16-32 channels, so the weights are small and the time
is the graph processing. Sizes default to about 1k, 5k and 20k nodes.

Each model is pruned in-process (``--ratio 0.3``), timed stage by stage:

* ``load``: read and check the file (``graph.read_model``)
* ``analyze``: normalize + shape inference + channel tracing (``groups.analyze``)
* ``plan``: importance and plan (``prune.make_plan``)
* ``rewrite``: ``rewrite.apply_removal`` (includes re-inferring shapes)
* ``check``: ``onnx.checker`` full check and the onnxruntime smoke run (``prune.finalize``)
* ``save``: the atomic write

and the JSON output gives, for each stage, the seconds per size and the growth exponent
between consecutive sizes, ``log(t2/t1) / log(n2/n1)`` (1.0 = linear, 2.0 = quadratic).
``--profile N`` runs cProfile on the model of about N nodes and prints the top functions.

    python tools/bench_scaling.py [--sizes 1000 5000 20000] [--profile 20000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ("load", "analyze", "plan", "rewrite", "check", "save")


def resnet_like(n_nodes: int, seed: int = 0) -> onnx.ModelProto:
    """A ResNet-like graph with about ``n_nodes`` nodes (see the module doc)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    count = [0]

    def name(prefix):
        count[0] += 1
        return f"{prefix}{count[0]}"

    def conv_bn(x, c_in, c_out, k=3, relu=True):
        n = name("conv")
        w = numpy_helper.from_array((rng.standard_normal((c_out, c_in, k, k)) * 0.1).astype(np.float32), f"{n}.w")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, w.name], [f"{n}.y"], name=n, pads=[k // 2] * 4))
        b = name("bn")
        for suffix, values in (("scale", rng.uniform(0.5, 1.5, c_out)), ("bias", rng.standard_normal(c_out) * 0.1),
                               ("mean", rng.standard_normal(c_out) * 0.1), ("var", rng.uniform(0.5, 1.5, c_out))):
            inits.append(numpy_helper.from_array(values.astype(np.float32), f"{b}.{suffix}"))
        nodes.append(helper.make_node("BatchNormalization", [f"{n}.y"] + [f"{b}.{s}" for s in ("scale", "bias", "mean", "var")],
                                      [f"{b}.y"], name=b))
        if not relu:
            return f"{b}.y"
        r = name("relu")
        nodes.append(helper.make_node("Relu", [f"{b}.y"], [f"{r}.y"], name=r))
        return f"{r}.y"

    width = 32
    x = conv_bn("input", 3, width)
    block = 0
    while len(nodes) < n_nodes - 4:
        y = conv_bn(conv_bn(x, width, width), width, width, relu=False)
        a = name("add")
        nodes.append(helper.make_node("Add", [y, x], [f"{a}.y"], name=a))
        r = name("relu")
        nodes.append(helper.make_node("Relu", [f"{a}.y"], [f"{r}.y"], name=r))
        x = f"{r}.y"
        block += 1
        if block % 4 == 0:
            side = conv_bn(x, width, 16)
            c = name("concat")
            nodes.append(helper.make_node("Concat", [x, side], [f"{c}.y"], name=c, axis=1))
            x = conv_bn(f"{c}.y", width + 16, width, k=1)
    g = name("gap")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [f"{g}.y"], name=g))
    nodes.append(helper.make_node("Flatten", [f"{g}.y"], ["flat"], name="flatten"))
    inits.append(numpy_helper.from_array((rng.standard_normal((10, width)) * 0.1).astype(np.float32), "head.w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "head.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"], name="head", transB=1))
    graph = helper.make_graph(nodes, "scaling", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def time_stages(path: Path, out: Path, ratio: float = 0.3) -> dict:
    """Seconds per stage of one in-process prune of ``path`` into ``out``."""
    from onnxprune.graph import normalize, read_model, save_model_atomic
    from onnxprune.analysis.groups import analyze
    from onnxprune.pipeline import PruneOptions, finalize, make_plan
    from onnxprune.rewrite import apply_removal

    t = {}
    start = time.perf_counter()
    model, _ = read_model(path)
    t["load"] = time.perf_counter() - start

    start = time.perf_counter()
    analysis = analyze(normalize(model, inplace=True))
    t["analyze"] = time.perf_counter() - start

    start = time.perf_counter()
    plan, _ = make_plan(analysis, PruneOptions(ratio=ratio, round_to=1))
    t["plan"] = time.perf_counter() - start

    start = time.perf_counter()
    pruned = apply_removal(analysis, plan.removed_units(analysis))
    t["rewrite"] = time.perf_counter() - start

    start = time.perf_counter()
    data = finalize(pruned, analysis)
    t["check"] = time.perf_counter() - start

    start = time.perf_counter()
    save_model_atomic(data, out, never_overwrite=path)
    t["save"] = time.perf_counter() - start
    t["total"] = sum(t.values())
    t["groups"] = len(analysis.groups)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--profile", type=int, help="cProfile the model of about this many nodes")
    parser.add_argument("--top", type=int, default=25, help="functions to list with --profile")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="onnxprune_scaling_") as tmp:
        tmp = Path(tmp)
        rows = []
        for size in args.sizes:
            model = resnet_like(size)
            path = tmp / f"m{size}.onnx"
            onnx.save(model, str(path))
            row = {"target_nodes": size, "nodes": len(model.graph.node), "bytes": path.stat().st_size}
            row.update({k: (round(v, 3) if isinstance(v, float) else v) for k, v in time_stages(path, tmp / f"p{size}.onnx").items()})
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        growth = []
        for a, b in zip(rows, rows[1:]):
            ratio = b["nodes"] / a["nodes"]
            growth.append({"nodes": f"{a['nodes']}→{b['nodes']}", "node_ratio": round(ratio, 2),
                           **{stage: round(math.log(max(b[stage], 1e-4) / max(a[stage], 1e-4)) / math.log(ratio), 2)
                              for stage in (*STAGES, "total")}})
        report = {"runs": rows, "growth_exponent": growth}

        if args.profile:
            model = resnet_like(args.profile)
            path = tmp / "profiled.onnx"
            onnx.save(model, str(path))
            profiler = cProfile.Profile()
            profiler.enable()
            time_stages(path, tmp / "profiled_out.onnx")
            profiler.disable()
            stream = io.StringIO()
            stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
            stats.print_stats(args.top)
            report["profile"] = {"nodes": len(model.graph.node), "top_by_tottime": stream.getvalue().splitlines()}
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
