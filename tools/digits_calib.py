"""Write the digits model's calibration split: ``models/digits/digits_calib.npz``.

Calibration data must be apart from the data a result is verified on. The shipped
``digits_test.npz`` is the held-out 30% of ``sklearn.datasets.load_digits``; the calibration
split is taken from the *training* 70% (the same seeded split as ``tools/train_digits.py``),
without augmentation: the first ``--samples`` training images, normalised like the rest,
with their labels. Deterministic: the same command writes the same file.

Usage::

    python tools/digits_calib.py [--samples 500] [--out models/digits/digits_calib.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from train_digits import load_data  # noqa: E402


def calibration_split(samples: int = 500, seed: int = 0, test_size: float = 0.3) -> dict[str, np.ndarray]:
    data = load_data(seed, test_size)
    return {"input": data["x_train"][:samples], "labels": data["y_train"][:samples]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "digits" / "digits_calib.npz")
    args = parser.parse_args(argv)
    split = calibration_split(args.samples)
    np.savez_compressed(args.out, **split)
    print(f"{args.out}: {len(split['labels'])} training samples, {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
