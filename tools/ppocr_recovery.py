"""Sensitivity and recovery on real unlabeled data: the PP-OCR text-direction classifier and the
PP-OCRv4 text detector (paddle2onnx files inside RapidOCR's PyPI wheel, fetched with
``pip download`` like the tests do), on text images bundled with scikit-image.

Images: ``skimage.data.page()`` (a scanned page) and ``skimage.data.text()``, cut into crops:
crops from the left half of each image calibrate, crops from the right half are held out, so the
two sets never share pixels. Classifier crops are 48×192 text-line patches from the two text
images; detector crops are 128×128, from those and the camera, coins and moon images (RGB,
PP-OCR's normalisations). No labels: the metric is top-1 agreement with the
original for the classifier (``[N, 2]`` output) and cosine similarity for the detector map.

For each model: ``analyze --sensitivity`` on the calibration crops, then a ``sensitivity``
schedule at the MACs target from those curves, written with ``--recover none`` and with
``reconstruct`` (the same plan before and after recovery), each verified on the held-out
crops. Prints one JSON line per run (seconds: since the curves were started). Usage::

    python tools/ppocr_recovery.py [--target 0.5] [--jobs 2]
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from onnxprune.decide.sensitivity import measure  # noqa: E402
from onnxprune.pipeline import PruneOptions, prune_file  # noqa: E402
from onnxprune.runtime.evaluate import verify  # noqa: E402
from onnxprune.runtime.scoring import EvaluatorSpec  # noqa: E402
from thirdparty import PPOCR_CLS, PPOCR_DET, wheel_file  # noqa: E402


def crops(height: int, width: int, side: str, stride: int, images=("page", "text")) -> np.ndarray:
    """RGB float crops in [0, 1] from one half of scikit-image's grey ``images``."""
    from skimage import data

    out = []
    for image in (getattr(data, name)() for name in images):
        grey = image.astype(np.float32) / 255.0
        half = grey.shape[1] // 2
        part = grey[:, :half] if side == "left" else grey[:, half:]
        for top in range(0, part.shape[0] - height + 1, stride):
            for left in range(0, part.shape[1] - width + 1, stride):
                out.append(part[top:top + height, left:left + width])
    patches = np.stack(out)
    return np.repeat(patches[:, None], 3, axis=1)


def classifier_data(side: str) -> np.ndarray:
    x = crops(48, 192, side, 8)
    return ((x - 0.5) / 0.5).astype(np.float32)


def detector_data(side: str) -> np.ndarray:
    x = crops(128, 128, side, 24, images=("page", "text", "camera", "coins", "moon"))
    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    cases = [("ppocr_cls", wheel_file(*PPOCR_CLS), classifier_data, {"x": (1, 3, 48, 192)}),
             ("ppocr_det", wheel_file(*PPOCR_DET), detector_data, {"x": (1, 3, 128, 128)})]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, model, make, shapes in cases:
            calib, test = folder / f"{name}_calib.npz", folder / f"{name}_test.npz"
            np.savez(calib, x=make("left"))
            np.savez(test, x=make("right"))
            start = time.perf_counter()
            report = measure(EvaluatorSpec(str(model), shapes, str(calib)), jobs=args.jobs)
            for recover in ("none", "reconstruct"):  # the same curves, so the same plan: before and after recovery
                out = folder / f"{name}_{recover}.onnx"
                result = prune_file(model, out, PruneOptions(target_macs=args.target, schedule="sensitivity",
                                                             sensitivity=report, recover=recover, data=str(calib),
                                                             round_to=1),
                                    input_shapes=shapes)
                check = verify(model, out, data_path=test, batch_size=16).outputs[0]
                print(json.dumps({"model": name, "recover": recover, "metric": report.metric,
                                  "calib": int(np.load(calib)["x"].shape[0]), "test": int(np.load(test)["x"].shape[0]),
                                  "macs_kept": round(result.after.macs / result.before.macs, 4),
                                  "agreement": check.top1_agreement, "cosine": round(check.cosine_similarity, 4),
                                  "recovery_kept": None if result.recovery is None else result.recovery.kept,
                                  "calibration_loss": None if result.recovery is None else
                                  [result.recovery.loss_without, result.recovery.loss_with],
                                  "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
