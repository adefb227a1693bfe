"""Export a torch model to ONNX with the legacy TorchScript exporter.

``torch.onnx.export(..., dynamo=False)`` is used because the dynamo exporter needs
``onnxscript``, which is not a dependency. With the model in eval mode,
``do_constant_folding=False`` keeps every BatchNormalization as its own node, while
``do_constant_folding=True`` folds a BN that directly follows a Conv into that Conv
(BN on other producers, e.g. after a Concat, stays a node either way). Folded weights
get anonymous names (``onnx::Conv_670``), so initializer names differ between the two.
Every registered model exports and matches torch at opsets 11-20 (checked by hand; the
tests cover 11 and 17 for every model, 13 for yolo_c2f). Above 20 the TorchScript
exporter warns that the opset is unsupported.

Command line::

    python -m models.export NAME OUT.onnx [--opset N] [--fold-bn] [--dynamic-batch]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings
from collections.abc import Sequence

import torch
from torch import nn


def export_onnx(
    model: nn.Module,
    path: str | pathlib.Path,
    input_shape: Sequence[int],
    *,
    opset: int = 17,
    fold_bn: bool = False,
    dynamic_batch: bool = False,
    input_name: str = "input",
    output_name: str = "output",
) -> pathlib.Path:
    """Write ``model`` (one NCHW float32 input, one output) to ``path`` as ONNX and return the path.

    ``input_shape`` is the traced input shape, e.g. ``(1, 3, 32, 32)``; the dummy input is
    zeros, which is fine because no model here has data-dependent control flow.
    ``fold_bn`` turns on constant folding (BN merged into the preceding Conv);
    ``dynamic_batch`` names axis 0 of the input and the output ``"batch"``.
    The model is traced in eval mode (``TrainingMode.EVAL``) whatever its current mode.
    The parent directory is created if needed.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(tuple(input_shape), dtype=torch.float32)
    dynamic_axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is deprecated; silence it here only.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=fold_bn,
            training=torch.onnx.TrainingMode.EVAL,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
        )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Build a registered architecture (seeded) and export it; print the output path."""
    from models import ARCHITECTURES, build

    parser = argparse.ArgumentParser(prog="python -m models.export", description=main.__doc__)
    parser.add_argument("name", choices=sorted(ARCHITECTURES), help="registered architecture")
    parser.add_argument("out", type=pathlib.Path, help="output .onnx path")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into Conv")
    parser.add_argument("--dynamic-batch", action="store_true", help="make axis 0 dynamic")
    args = parser.parse_args(argv)
    arch = ARCHITECTURES[args.name]
    path = export_onnx(
        build(args.name, seed=args.seed),
        args.out,
        arch.input_shape,
        opset=args.opset,
        fold_bn=args.fold_bn,
        dynamic_batch=args.dynamic_batch,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
