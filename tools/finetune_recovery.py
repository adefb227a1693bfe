"""Source-less fine-tuning by distillation alone (no labels): how much of what pruning lost does
``onnxprune finetune`` recover, on the shipped digits model and on real third-party files?

* **digits** (``models/digits/resnet8_digits.onnx``): pruned to ``--digits-target`` of its MACs
  (uniform l1, no recovery), fine-tuned on the 500 calibration digits *without their labels*,
  scored by accuracy on the 540 held-out digits of ``digits_test.npz``;
* **ppocr_cls / ppocr_det** (paddle2onnx files in RapidOCR's PyPI wheel): pruned to ``--target``
  (uniform l1, no recovery), fine-tuned on the calibration crops of ``tools/ppocr_recovery.py``
  (left halves of scikit-image's text images), scored on the held-out crops (right halves) by
  top-1 agreement with the original (classifier) or cosine similarity of the text map (detector).

``recovered`` is ``(after − pruned) / (original − pruned)``: the share of the loss won back
(the original scores 1 against itself). Every fine-tune: ``--epochs``, Adam ``--lr``, batch 32,
T = 4, the held-out set also picking the best epoch. Prints one JSON line per model. Usage::

    python tools/finetune_recovery.py [--target 0.5] [--digits-target 0.3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]

from onnxprune.pipeline import PruneOptions, prune_file
from onnxprune.runtime.evaluate import Dataset, verify
from onnxprune.torch.finetune import FinetuneOptions, finetune


def score(original: Path, model: Path, data: Path, labels: bool) -> float:
    out = verify(original, model, data_path=data, batch_size=64).outputs[0]
    if labels:
        return out.accuracy_pruned
    return out.top1_agreement if out.top1_agreement is not None else out.cosine_similarity


def run(name: str, original: Path, train: Dataset, held_out: Path, labels: bool, target: float, args, work: Path,
        shapes: dict | None = None) -> dict:
    pruned = work / f"{name}_pruned.onnx"
    prune_file(original, pruned, PruneOptions(target_macs=target, round_to=1), shapes)
    with np.load(held_out) as z:
        val = Dataset({k: z[k] for k in z.files if k != "labels"}, z["labels"] if "labels" in z.files else None)
    start = time.perf_counter()
    result = finetune(onnx.load(str(pruned)), str(original), train, val=val,
                      options=FinetuneOptions(epochs=args.epochs, lr=args.lr, batch_size=32))
    tuned = work / f"{name}_tuned.onnx"
    onnx.save(result.model, str(tuned))
    base = score(original, original, held_out, labels)
    before, after = score(original, pruned, held_out, labels), score(original, tuned, held_out, labels)
    row = {"model": name, "target_macs": target, "metric": "accuracy" if labels else "agreement",
           "original": round(base, 4), "pruned": round(before, 4), "finetuned": round(after, 4),
           "recovered": round((after - before) / (base - before), 3) if base > before else None,
           "best_epoch": result.best_epoch, "train_samples": len(train), "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--digits-target", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--models", nargs="+", default=["digits", "ppocr_cls"],
                        help="also ppocr_det (slow: PyTorch's CPU backward of depthwise convolutions)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "digits" in args.models:
            folder = ROOT / "models" / "digits"
            with np.load(folder / "digits_calib.npz") as z:
                train = Dataset({"input": z["input"]})  # the labels are dropped
            run("digits", folder / "resnet8_digits.onnx", train, folder / "digits_test.npz", True,
                args.digits_target, args, work)
        from ppocr_recovery import classifier_data, detector_data
        from thirdparty import PPOCR_CLS, PPOCR_DET, wheel_file

        for name, case, make, shape in (("ppocr_cls", PPOCR_CLS, classifier_data, (1, 3, 48, 192)),
                                        ("ppocr_det", PPOCR_DET, detector_data, (1, 3, 128, 128))):
            if name not in args.models:
                continue
            held_out = work / f"{name}_held_out.npz"
            np.savez(held_out, x=make("right"))
            run(name, wheel_file(*case), Dataset({"x": make("left")}), held_out, False, args.target, args, work,
                {"x": shape})
    return 0


if __name__ == "__main__":
    sys.exit(main())
