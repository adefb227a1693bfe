"""GPU benchmark: pruned ResNet-50 and YOLOv8-style detectors on CUDA fp32, CUDA fp16 and TensorRT.

One command on a machine with an NVIDIA GPU, the ``[gpu]`` and ``[torch]`` extras
installed, does everything, sized to finish within about 5 minutes (``--budget-s``)::

    python tools/bench_gpu.py [--out-dir DIR] > gpu.jsonl

Steps:

1. Probe: onnxruntime's CUDA provider must create a session and run a tiny Conv; TensorRT is
   probed the same way. Without a usable CUDA provider (or without onnxruntime, or torch) the
   script prints exactly one line, a ``skip`` covering everything, with ``reason``,
   ``onnxruntime``, ``providers``, ``gpu`` and ``seconds``, and exits 0 (so it runs anywhere,
   e.g. in CI without a GPU).
2. Build ResNet-50 (``models.resnet50``, 1x3x224x224, 25.6M params) and the YOLOv8n-style
   detector (``models.yolo_c2f``, C2f/SPPF/PAN, exported at ``--yolo-size``, default 640x640 as
   YOLOv8 deploys) in plain torch with seeded weights; export with BN folded and a dynamic batch.
3. Prune each with the real command line, in parallel processes::

       onnxprune prune MODEL -o OUT --target-macs T --round-to 8 --json SUMMARY

   for T in ``--targets`` (default 0.75 0.5 0.3). ``--round-to 8``: cuDNN's and TensorRT's
   tensor-core kernels want channel counts that are multiples of 8.
4. For each model family, provider (``cuda``, then ``tensorrt`` where present), precision
   (``fp32``, ``fp16``) and batch (``--batches``, default 1 32): one interleaved
   :func:`onnxprune.runtime.bench.bench` run of the original and its pruned versions, with
   inputs bound on the GPU (IO binding: no host↔device copy is timed). ``fp16`` times the
   float16 copies of :func:`onnxprune.runtime.precision.to_fp16` (float32 inputs and outputs;
   TensorRT also gets ``trt_fp16_enable``). TensorRT keeps its engine and timing caches in
   ``OUT_DIR/trt_cache``, so a second run with the same ``--out-dir`` skips the engine builds.
   All CUDA settings run before TensorRT's (its engine builds are the slow part). When the
   elapsed time plus the last duration of a like setting (same model and provider; 60 s for a
   first TensorRT one) would pass ``--budget-s``, the setting is not run and a ``skip`` line
   says so.

Output: JSON Lines on stdout, one object per line, progress on stderr. Every object has
``kind``:

- ``"row"``: one model timed at one setting.

  - ``model``: ``"resnet50"`` or ``"yolov8_c2f"``; ``variant``: ``"original"`` or ``"pruned"``.
  - ``target_macs``: the ``--target-macs`` it was pruned with (``null`` for the original).
  - ``macs_kept`` / ``params_kept``: MACs and parameters after / before, counted by onnxprune
    on the pruned graph (1.0 for the original).
  - ``provider``: ``"cuda"``, ``"tensorrt"`` (or ``"cpu"`` with ``--cpu-dry-run``);
    ``precision``: ``"fp32"`` or ``"fp16"``; ``io_binding``: inputs bound on the device.
  - ``batch``: samples per run; ``input_shape``: the full input shape, NCHW.
  - ``median_ms``, ``p90_ms``, ``min_ms``: latency of one run of one batch, milliseconds,
    over ``runs`` timed rounds after ``warmup`` untimed ones.
  - ``throughput``: samples per second at the median latency.
  - ``speedup_vs_original``: the original's median / this median, at the same provider,
    precision and batch, from the same interleaved run (the number to trust).
  - ``ideal_speedup``: ``1 / macs_kept``, what the MACs alone promise.
  - ``ratio_of_ideal``: ``speedup_vs_original / ideal_speedup`` (1.0: the whole MACs saving
    shows up as latency; below 1: the GPU was not MACs-bound, e.g. launch overhead at batch 1).
  - ``speedup_vs_cuda_fp32``: the original's CUDA fp32 median at the same batch / this
    median: what fp16, TensorRT and pruning give together. It compares separate runs, so it
    carries the machine's drift; ``null`` where that setting did not run (with
    ``--cpu-dry-run``: against the CPU fp32 original).
- ``"prune"``: one ``onnxprune prune`` call: ``model``, ``target_macs``, ``macs_kept``,
  ``params_kept``, ``prune_s`` (wall seconds, interpreter start included).
- ``"skip"``: ``what`` was not run and ``reason``.
- ``"summary"`` (last line): ``seconds`` in all, ``rows``, ``skipped``, ``onnxruntime``
  (version), ``providers`` (what onnxruntime offers), ``gpu`` (``nvidia-smi``'s name or
  ``null``), ``budget_s``.

``--cpu-dry-run`` runs the same steps on the CPU provider (fp32 and fp16, no TensorRT), to check
the script on a machine without a GPU; try ``--models yolo --yolo-size 64 --targets 0.5
--batches 1 --runs 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

FAMILIES = {"resnet50": "resnet50", "yolo": "yolov8_c2f"}
"""``--models`` names → the ``model`` field of the rows."""

FIRST_TRT_SETTING_S = 60.0
"""What the budget assumes for a model family's first TensorRT setting (four engine builds),
before one has been measured."""


def emit(**fields) -> None:
    """Print one JSON line on stdout, at once."""
    print(json.dumps(fields), flush=True)


def log(message: str) -> None:
    print(f"[bench_gpu] {message}", file=sys.stderr, flush=True)


def tiny_model():
    """A 1x3x8x8 → 1x4x8x8 Conv, for probing a provider."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def probe(provider: str) -> str | None:
    """``None`` if ``provider`` creates a session and runs the tiny model, else the reason."""
    import numpy as np

    from onnxprune.errors import OnnxPruneError
    from onnxprune.runtime.session import make_session

    try:
        session = make_session(tiny_model(), provider)
        session.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    except OnnxPruneError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  (any failure of a run on the device means: not usable)
        return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    return None


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], check=False,
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip().splitlines() or [None])[0]


def build_models(families: list[str], out_dir: Path, yolo_size: int, seed: int) -> dict[str, tuple[Path, tuple]]:
    """Export each family's original (BN folded, dynamic batch); ``{family: (path, shape)}``."""
    from models import ARCHITECTURES, build
    from models.export import export_onnx

    built = {}
    for family in families:
        arch = "resnet50" if family == "resnet50" else "yolo_c2f"
        shape = ARCHITECTURES[arch].input_shape if family == "resnet50" else (1, 3, yolo_size, yolo_size)
        path = out_dir / f"{FAMILIES[family]}.onnx"
        start = time.perf_counter()
        export_onnx(build(arch, seed=seed), path, shape, fold_bn=True, dynamic_batch=True)
        log(f"exported {path.name} at {'x'.join(map(str, shape))} in {time.perf_counter() - start:.1f} s")
        built[family] = (path, tuple(shape))
    return built


def prune(src: Path, target: float, round_to: int) -> dict:
    """Run ``onnxprune prune`` in a fresh process; its summary, or ``{"error": ...}``."""
    out = src.with_name(f"{src.stem}_macs{target}.onnx")
    summary = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "onnxprune.cli", "prune", str(src), "-o", str(out), "--target-macs", str(target),
           "--round-to", str(round_to), "--json", str(summary)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]}
    data = json.loads(summary.read_text())
    return {"file": out, "target_macs": target, "macs_kept": round(data["macs_kept"], 4),
            "params_kept": round(data["params_after"] / data["params_before"], 4), "prune_s": round(wall, 2)}


def settings(families: list[str], providers: list[str], batches: list[int]) -> list[tuple[str, str, str, int]]:
    """(family, provider, precision, batch) in run order: every CUDA (or CPU) setting first,
    then TensorRT with fp16 first (engine builds are slow; the budget cuts the tail)."""
    order = []
    for provider in providers:
        precisions = ("fp16", "fp32") if provider == "tensorrt" else ("fp32", "fp16")
        families_in_order = sorted(families, key=lambda f: f != "yolo") if provider == "tensorrt" else families
        for family in families_in_order:
            for precision in precisions:
                for batch in batches:
                    order.append((family, provider, precision, batch))
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(FAMILIES), default=["resnet50", "yolo"])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.75, 0.5, 0.3])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=50, help="timed interleaved rounds per setting (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    parser.add_argument("--round-to", type=int, default=8, help="channel multiple for prune (default 8)")
    parser.add_argument("--yolo-size", type=int, default=640, help="YOLO input H=W, a multiple of 32 (default 640)")
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="start no setting that would end after this many seconds (default 270)")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip TensorRT even where it is present")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run every step on the CPU provider instead (checks the script without a GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None, help="models, summaries and TensorRT caches")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    counts = {"rows": 0, "skipped": 0}

    def skip(what: str, reason: str) -> None:
        counts["skipped"] += 1
        emit(kind="skip", what=what, reason=reason)

    def summary(**extra) -> None:
        emit(kind="summary", seconds=round(time.perf_counter() - began, 1), **counts, budget_s=args.budget_s, **extra)

    everything = (f"{', '.join(FAMILIES[m] for m in args.models)} at target MACs "
                  f"{'/'.join(map(str, args.targets))}: CUDA fp32, CUDA fp16, TensorRT; batch "
                  f"{', '.join(map(str, args.batches))}")

    def skip_all(reason: str, **extra) -> int:  # the whole run: one line, exit 0
        emit(kind="skip", what=everything, reason=reason, seconds=round(time.perf_counter() - began, 1), **extra)
        return 0

    try:
        import onnxruntime
    except ImportError:
        return skip_all('onnxruntime is not installed (pip install onnxruntime-gpu)', onnxruntime=None,
                        providers=[], gpu=None)
    available = onnxruntime.get_available_providers()
    info = {"onnxruntime": onnxruntime.__version__, "providers": available}
    if args.cpu_dry_run:
        providers = ["cpu"]
    else:
        if "CUDAExecutionProvider" in available and hasattr(onnxruntime, "preload_dlls"):
            # CUDA and cuDNN from the nvidia-* wheels, if any; its notes go to stderr
            with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(Exception):
                onnxruntime.preload_dlls()
        reason = probe("cuda")
        if reason is not None:
            return skip_all(f"no usable CUDA: {reason}", **info, gpu=gpu_name())
        providers = ["cuda"]
        if args.no_tensorrt:
            skip("all TensorRT settings", "--no-tensorrt")
        elif (trt := probe("tensorrt")) is not None:
            skip("all TensorRT settings", trt)
        else:
            providers.append("tensorrt")

    warnings.simplefilter("ignore")
    try:
        import torch  # noqa: F401  (the model definitions need it)
    except ImportError:
        return skip_all('torch is not installed (pip install torch); it builds the models', **info,
                        gpu=gpu_name())
    from onnxprune.errors import OnnxPruneError
    from onnxprune.runtime.bench import bench

    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = out_dir / "trt_cache"
    cache.mkdir(exist_ok=True)
    log(f"writing to {out_dir}")
    originals = build_models(args.models, out_dir, args.yolo_size, args.seed)

    jobs = [(family, target) for family in args.models for target in args.targets]
    workers = max(1, min(len(jobs), (os.cpu_count() or 2) // 2))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda job: prune(originals[job[0]][0], job[1], args.round_to), jobs))
    pruned: dict[str, list[dict]] = {family: [] for family in args.models}
    for (family, target), result in zip(jobs, results):
        if "error" in result:
            skip(f"{FAMILIES[family]} at target MACs {target}", f"onnxprune prune failed: {result['error']}")
            continue
        pruned[family].append(result)
        emit(kind="prune", model=FAMILIES[family], target_macs=target, macs_kept=result["macs_kept"],
             params_kept=result["params_kept"], prune_s=result["prune_s"])
    log(f"pruned {sum(map(len, pruned.values()))} models in {time.perf_counter() - began:.0f} s so far")

    cuda_fp32: dict[tuple[str, int], float] = {}
    last_duration: dict[tuple[str, str], float] = {}
    for family, provider, precision, batch in settings(args.models, providers, args.batches):
        what = f"{FAMILIES[family]} {provider} {precision} batch {batch}"
        elapsed = time.perf_counter() - began
        expected = last_duration.get((family, provider), FIRST_TRT_SETTING_S if provider == "tensorrt" else 0.0)
        if elapsed + expected > args.budget_s:
            skip(what, f"time budget: {elapsed:.0f} s spent, a like setting took {expected:.0f} s, "
                       f"--budget-s {args.budget_s:g}")
            continue
        src, shape = originals[family]
        full = (batch, *shape[1:])
        variants = [{"file": src, "target_macs": None, "macs_kept": 1.0, "params_kept": 1.0}] + pruned[family]
        options = None
        if provider == "tensorrt":
            options = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                       "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}
        start = time.perf_counter()
        try:
            report = bench([str(v["file"]) for v in variants], provider=provider, batch=batch, runs=args.runs,
                           warmup=args.warmup, shapes={"input": full}, fp16=precision == "fp16",
                           provider_options=options)
        except OnnxPruneError as exc:
            skip(what, str(exc))
            continue
        finally:
            last_duration[(family, provider)] = time.perf_counter() - start
        log(f"{what}: {last_duration[(family, provider)]:.1f} s")
        base = report.models[0].median_ms
        if provider == ("cpu" if args.cpu_dry_run else "cuda") and precision == "fp32":
            cuda_fp32[(family, batch)] = base
        reference = cuda_fp32.get((family, batch))
        for variant, latency in zip(variants, report.models):
            ideal = 1.0 / variant["macs_kept"]
            speedup = base / latency.median_ms
            counts["rows"] += 1
            emit(kind="row", model=FAMILIES[family], variant="original" if variant["target_macs"] is None else "pruned",
                 target_macs=variant["target_macs"], macs_kept=variant["macs_kept"], params_kept=variant["params_kept"],
                 provider=provider, precision=precision, io_binding=report.io_binding, batch=batch,
                 input_shape=list(full), median_ms=round(latency.median_ms, 4), p90_ms=round(latency.p90_ms, 4),
                 min_ms=round(latency.min_ms, 4), throughput=round(latency.throughput, 1),
                 speedup_vs_original=round(speedup, 4), ideal_speedup=round(ideal, 4),
                 ratio_of_ideal=round(speedup / ideal, 4),
                 speedup_vs_cuda_fp32=round(reference / latency.median_ms, 4) if reference else None,
                 runs=args.runs, warmup=args.warmup)
    summary(**info, gpu=gpu_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
