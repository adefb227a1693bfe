"""Where ``onnxprune prune`` spends its time, on ResNet-50 (or any model).

1. **Wall time** of the whole command as a user runs it, in a fresh process each time
   (interpreter start, imports, load, analyze, plan, rewrite, check, smoke run, save): the median
   of ``--repeats`` runs of ``onnxprune prune MODEL -o OUT --target-macs 0.5 -q``.
2. **Stages**: the same command once more, in-process under ``cProfile``, with the cumulative
   time of each pipeline stage's entry point, plus the imports (timed before the profile).
   cProfile adds overhead to Python-heavy stages, so the stages sum to more than the wall time.

The model defaults to ``tools/bench_resnet50.py``'s export (BN folded, dynamic batch), built
here when ``--model`` is not given (needs torch). Prints one JSON document. Usage::

    python tools/profile_prune.py [--model resnet50.onnx] [--repeats 5] [--args "--target-macs 0.5"]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

STAGES = {  # label: (file suffix, function name or names) of the entry point
    "read (parse + input check)": ("graph/load.py", "read_model"),
    "normalize": ("graph/normalize.py", "normalize"),
    "analyze": ("analysis/groups.py", "analyze"),
    "importance": ("decide/importance.py", "all_importance"),
    "target search": ("decide/schedule.py", "plan_for_budget"),
    "rewrite": ("onnxprune/rewrite.py", "apply_removal"),
    "fuse": ("transform/fuse.py", "fuse"),
    "finalize (serialize, check, smoke run)": ("onnxprune/pipeline.py", "finalize"),
    "  of which onnx.checker (full)": ("onnxprune/graph/proto.py", "check_model"),
    "  of which onnxruntime smoke run": ("onnxprune/pipeline.py", "smoke_run"),
    "save (serialize, write, rename)": ("graph/outputs.py", ("stage_model", "commit")),
}


def resnet50(folder: Path) -> Path:
    from models import ARCHITECTURES, build
    from models.export import export_onnx

    path = folder / "resnet50.onnx"
    export_onnx(build("resnet50", seed=0), path, ARCHITECTURES["resnet50"].input_shape, fold_bn=True,
                dynamic_batch=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--args", default="--target-macs 0.5", help="prune options (default: --target-macs 0.5)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="profile_prune_"))
    model = args.model or resnet50(work)
    options = shlex.split(args.args)

    walls = []
    for k in range(args.repeats):
        out = work / f"wall{k}.onnx"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(model), "-o", str(out), *options, "-q"],
                       check=True)
        walls.append(time.perf_counter() - start)
        out.unlink()

    start = time.perf_counter()
    from onnxprune.cli import main as cli  # noqa: F401  (what the command imports first)
    import onnxprune.pipeline  # noqa: F401
    imports = time.perf_counter() - start
    profile = cProfile.Profile()
    sys.argv = ["onnxprune", "prune", str(model), "-o", str(work / "profiled.onnx"), *options, "-q"]
    start = time.perf_counter()
    profile.enable()
    try:
        cli()
    except SystemExit:
        pass
    profile.disable()
    in_process = time.perf_counter() - start
    stats = pstats.Stats(profile).stats
    stages = {"imports (before the profile)": round(imports, 3)}
    for label, (suffix, functions) in STAGES.items():
        names = {functions} if isinstance(functions, str) else set(functions)
        total = sum(cumulative for (file, _, name), (_, _, _, cumulative, _) in stats.items()
                    if name in names and file.endswith(suffix))
        stages[label] = round(total, 3)
    print(json.dumps({"model": str(model), "options": options, "wall_s": [round(w, 3) for w in walls],
                      "wall_median_s": round(statistics.median(walls), 3),
                      "in_process_profiled_s": round(in_process, 3), "stages_s": stages}, indent=1))


if __name__ == "__main__":
    main()
