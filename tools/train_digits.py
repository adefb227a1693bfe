"""Train the embedded default model (ResNet-8 on sklearn's digits) and export it to ONNX.

Usage::

    python tools/train_digits.py [--out-dir models/digits] [--epochs 30] [--seed 0]

Data: ``sklearn.datasets.load_digits`` (1797 8x8 images, bundled with sklearn, no
download). Pixels 0..16 are scaled to 0..1, upsampled bilinearly to 32x32, and
normalised with the mean and std of the training split. A seeded stratified
70/30 split gives the train and test sets.

Writes into ``--out-dir``:

* ``resnet8_digits.onnx``: opset 17, legacy exporter, no constant folding, so
  every BatchNormalization stays a separate node. Input ``input``
  ``[batch, 1, 32, 32]``, output ``logits`` ``[batch, 10]``. The normalisation
  constants are stored in the model's metadata (``input_mean``, ``input_std``).
* ``digits_test.npz``: the held-out test split, ``input`` (float32,
  ``[N, 1, 32, 32]``, already normalised) and ``labels`` (int64, ``[N]``).

Prints one JSON line: split sizes, test accuracy from torch and from
onnxruntime, parameter count, file sizes and training time. Exits with status 1
if onnxruntime's accuracy differs from torch's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from models.digits_net import digits_resnet8  # noqa: E402

ONNX_NAME = "resnet8_digits.onnx"
NPZ_NAME = "digits_test.npz"
SIZE = 32
SHIFT = 2  # random translation in pixels of the 32x32 image, for augmentation


def load_data(seed: int, test_size: float) -> dict[str, np.ndarray | float]:
    """Digits as normalised float32 ``[N, 1, 32, 32]`` arrays, split train/test."""
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).numpy()
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    mean = float(x_train.mean())
    std = float(x_train.std())
    return {
        "x_train": ((x_train - mean) / std).astype(np.float32),
        "x_test": ((x_test - mean) / std).astype(np.float32),
        "y_train": y_train,
        "y_test": y_test,
        "mean": mean,
        "std": std,
    }


def random_shift(x: torch.Tensor, gen: torch.Generator, fill: float) -> torch.Tensor:
    """Translate each image by up to ``SHIFT`` pixels in each direction, padding with ``fill``."""
    n = x.shape[0]
    padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT), value=fill)
    dx = torch.randint(0, 2 * SHIFT + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * SHIFT + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i] : dy[i] + SIZE, dx[i] : dx[i] + SIZE]
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    model.eval()
    parts = [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(parts)


def train(
    data: dict, epochs: int, seed: int, batch_size: int, lr: float
) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = digits_resnet8(seed=seed)
    x = torch.from_numpy(data["x_train"])
    y = torch.from_numpy(data["y_train"])
    fill = -data["mean"] / data["std"]  # a normalised black pixel
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.2
    )
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = random_shift(x[idx], gen, fill)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def export_onnx(model: torch.nn.Module, path: Path, mean: float, std: float) -> None:
    import onnx

    x = torch.zeros(1, 1, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (x,),
            str(path),
            dynamo=False,
            opset_version=17,
            do_constant_folding=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    proto = onnx.load(str(path))
    for key, value in (
        ("input_mean", f"{mean!r}"),
        ("input_std", f"{std!r}"),
        ("source", "tools/train_digits.py: ResNet-8 on sklearn load_digits, 8x8 -> 32x32 bilinear"),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("models/digits"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-size", type=float, default=0.3)
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    data = load_data(args.seed, args.test_size)

    t0 = time.perf_counter()
    model = train(data, args.epochs, args.seed, args.batch_size, args.lr)
    train_seconds = time.perf_counter() - t0

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / ONNX_NAME
    npz_path = args.out_dir / NPZ_NAME
    np.savez_compressed(npz_path, input=data["x_test"], labels=data["y_test"])
    export_onnx(model, onnx_path, data["mean"], data["std"])

    # Check from the files on disk: the npz as shipped, through onnxruntime.
    with np.load(npz_path) as z:
        x_test, y_test = z["input"], z["labels"]
    torch_logits = predict(model, x_test)
    onnx_logits = ort_logits(onnx_path, x_test)
    acc_torch = float((torch_logits.argmax(1) == y_test).mean())
    acc_ort = float((onnx_logits.argmax(1) == y_test).mean())

    report = {
        "train_size": int(len(data["y_train"])),
        "test_size": int(len(y_test)),
        "epochs": args.epochs,
        "seed": args.seed,
        "test_accuracy_torch": round(acc_torch, 4),
        "test_accuracy_onnxruntime": round(acc_ort, 4),
        "max_abs_logit_diff": float(np.abs(torch_logits - onnx_logits).max()),
        "params": int(sum(p.numel() for p in model.parameters())),
        "onnx_bytes": onnx_path.stat().st_size,
        "npz_bytes": npz_path.stat().st_size,
        "input_mean": round(data["mean"], 6),
        "input_std": round(data["std"], 6),
        "train_seconds": round(train_seconds, 1),
    }
    print(json.dumps(report))
    if acc_torch != acc_ort:
        print(f"error: onnxruntime accuracy {acc_ort} != torch accuracy {acc_torch}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
