"""Export a torch model to ONNX, and the post-export variants a pruner meets in the wild.

**TorchScript exporter** (the default, ``dynamo=False``). With the model in eval mode,
``do_constant_folding=False`` keeps every BatchNormalization as its own node, while
``do_constant_folding=True`` folds a BN that directly follows a Conv into that Conv
(BN on other producers, e.g. after a Concat, stays a node either way). Folded weights
get anonymous names (``onnx::Conv_670``), so initializer names differ between the two.
Every registered model exports and matches torch at opsets 11-20 (checked by hand; the
tests cover 11 and 17 for every model, 13 for yolo_c2f). Above 20 the TorchScript
exporter warns that the opset is unsupported. At opset 17 it writes ``nn.LayerNorm`` as
one ``LayerNormalization`` node (below 17 as ``ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/
Div/Mul/Add``), exact GELU as ``Div → Erf → Add → Mul → Mul``, and a ``Linear`` on a
3-D or 4-D input as ``MatMul`` + ``Add`` (with an explicit weight ``Transpose`` node
when constants are not folded).

**Dynamo exporter** (``dynamo=True``, needs ``onnxscript``): ``torch.export`` traces the
model and onnxscript's torchlib translates it; initializers keep the parameter names.
Its default opset is torch's (20 for torch 2.13); it cannot write below 18, so an
explicit ``opset < 18`` is refused. onnxscript's optimizer folds BatchNormalization
into the preceding Conv, so ``fold_bn=False`` runs the same clean-up passes without that
one rewrite. Dynamic dims are declared with ``torch.export.Dim`` and come out as
``dim_param`` names (``"batch"``; ``dynamic_hw`` gives torch's symbols such as ``"s53"``).
The traced dummy input has batch 2 when the batch is dynamic, because ``torch.export``
specialises a dimension of size 1.

**After export**: :func:`fuse_attention` runs onnxruntime's transformer optimizer to get
``com.microsoft`` ``Attention`` nodes; :func:`to_fp16` converts weights and I/O to
float16 with onnxruntime's own converter.

Command line::

    python -m models.export NAME OUT.onnx [--opset N] [--fold-bn] [--dynamic-batch]
        [--dynamic-hw] [--dynamic-seq] [--dynamo] [--fuse-attention] [--fp16]
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

LEGACY_DEFAULT_OPSET = 17
"""Opset written by the TorchScript exporter when none is given."""

DYNAMO_MIN_OPSET = 18
"""The dynamo exporter writes opset 18 or newer (its down-conversion is unsupported)."""

ATTENTION_OPS = ("Attention", "MultiHeadAttention")
"""``com.microsoft`` ops that onnxruntime's transformer optimizer fuses attention into."""


def export_onnx(
    model: nn.Module,
    path: str | pathlib.Path,
    input_shape: Sequence[int],
    *,
    opset: int | None = None,
    fold_bn: bool = False,
    dynamic_batch: bool = False,
    dynamic_hw: bool = False,
    dynamo: bool = False,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_seq: bool = False,
) -> pathlib.Path:
    """Write ``model`` (one float32 input, one output) to ``path`` as ONNX and return the path.

    ``input_shape`` is the traced input shape, e.g. ``(1, 3, 32, 32)``; the dummy input is
    zeros, which is fine because no model here has data-dependent control flow.
    ``opset`` defaults to 17 for the TorchScript exporter and to torch's default for the
    dynamo exporter. ``fold_bn`` folds BN into the preceding Conv (constant folding for the
    TorchScript exporter, onnxscript's BN fusion for dynamo). ``dynamic_batch`` names axis
    0 of the input and the output ``"batch"``; ``dynamic_hw`` (NCHW inputs only) also makes
    the input's H and W dynamic (``"height"``, ``"width"`` with the TorchScript exporter,
    and the output's too when it has the input's spatial size) and implies a dynamic batch.
    ``dynamic_seq`` (``[B, T, D]`` inputs only) makes the input's T dynamic (``"seq"``), and
    the output's axis 1 when it has T there; with the dynamo exporter, reshapes that keep B and
    T then get targets computed from ``Shape`` (with ``allowzero=1``). It implies a dynamic batch.
    The model is traced in eval mode whatever its current mode, which is left unchanged.
    The parent directory is created if needed.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_shape = tuple(input_shape)
    if dynamic_hw and len(input_shape) != 4:
        raise ValueError(f"dynamic_hw needs an NCHW input, not shape {input_shape}")
    if dynamic_seq and len(input_shape) != 3:
        raise ValueError(f"dynamic_seq needs a [B, T, D] input, not shape {input_shape}")
    dynamic_batch = dynamic_batch or dynamic_hw or dynamic_seq
    if dynamo:
        _export_dynamo(model, path, input_shape, opset, fold_bn, dynamic_batch, dynamic_hw, input_name, output_name,
                       dynamic_seq)
        return path
    dummy = torch.zeros(input_shape, dtype=torch.float32)
    dynamic_axes = None
    if dynamic_batch:
        input_axes = {0: "batch"}
        output_axes = {0: "batch"}
        if dynamic_hw:
            input_axes.update({2: "height", 3: "width"})
            with torch.no_grad(), _eval_mode(model):
                output_shape = tuple(model(dummy).shape)
            if len(output_shape) == 4 and output_shape[2:] == input_shape[2:]:
                output_axes.update({2: "height", 3: "width"})
        if dynamic_seq:
            input_axes[1] = "seq"
            with torch.no_grad(), _eval_mode(model):
                output_shape = tuple(model(dummy).shape)
            if len(output_shape) >= 2 and output_shape[1] == input_shape[1]:
                output_axes[1] = "seq"
        dynamic_axes = {input_name: input_axes, output_name: output_axes}
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is deprecated; silence it here only.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=LEGACY_DEFAULT_OPSET if opset is None else opset,
            do_constant_folding=fold_bn,
            training=torch.onnx.TrainingMode.EVAL,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
        )
    return path


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, restoring each submodule's own mode after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _export_dynamo(
    model: nn.Module,
    path: pathlib.Path,
    input_shape: tuple[int, ...],
    opset: int | None,
    fold_bn: bool,
    dynamic_batch: bool,
    dynamic_hw: bool,
    input_name: str,
    output_name: str,
    dynamic_seq: bool = False,
) -> None:
    """The ``dynamo=True`` branch of :func:`export_onnx`: one self-contained file."""
    if opset is not None and opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or newer, not {opset}")
    try:
        import onnxscript  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("export_onnx(dynamo=True) needs onnxscript: pip install onnxscript") from error
    import onnx

    shape = list(input_shape)
    dynamic_shapes = None
    if dynamic_batch:
        shape[0] = max(shape[0], 2)  # torch.export specialises a dimension of size 1
        axes: dict[int, object] = {0: torch.export.Dim("batch")}
        if dynamic_hw:
            axes.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
        if dynamic_seq:
            shape[1] = max(shape[1], 2)
            axes[1] = torch.export.Dim("seq")
        dynamic_shapes = (axes,)
    dummy = torch.zeros(shape, dtype=torch.float32)
    with warnings.catch_warnings(), _eval_mode(model):
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside torch.export
        program = torch.onnx.export(
            model,
            (dummy,),
            dynamo=True,
            opset_version=opset,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=dynamic_shapes,
            optimize=fold_bn,
            verbose=False,
        )
    if not fold_bn:
        _optimize_keeping_batchnorm(program.model)
    onnx.save(program.model_proto, str(path))


def _optimize_keeping_batchnorm(model) -> None:
    """onnxscript's default optimisation of a dynamo export (constant folding, the default
    rewrite rules, dead-code removal, constants lifted to initializers), in place, minus
    the rule that fuses BatchNormalization into Conv/ConvTranspose/Gemm.

    onnxscript has no public switch for that one rule, so this reads its private rule
    lists; if they move, the error says so rather than silently folding BN.
    """
    import onnx_ir.passes.common as common_passes
    from onnxscript import optimizer, rewriter

    try:
        from onnxscript.rewriter.rules.common import _fuse_batchnorm

        batchnorm_rules = set(_fuse_batchnorm.rules)
        rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if rule not in batchnorm_rules]
    except (ImportError, AttributeError) as error:  # pragma: no cover - onnxscript internals
        raise RuntimeError(
            "this onnxscript has no separable BatchNormalization fusion rule; "
            "export with fold_bn=True or the TorchScript exporter"
        ) from error
    common_passes.InlinePass()(model)
    for _ in range(2):
        optimizer.fold_constants(model)
        rewriter.rewrite(model, pattern_rewrite_rules=rules)
        optimizer.remove_unused_nodes(model)
    for step in (
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.RemoveUnusedOpsetsPass(),
    ):
        step(model)


def fuse_attention(
    path_in: str | pathlib.Path,
    path_out: str | pathlib.Path,
    num_heads: int,
    hidden_size: int,
    *,
    model_type: str = "bert",
) -> pathlib.Path:
    """Fuse multi-head attention into ``com.microsoft`` ``Attention`` with onnxruntime's
    transformer optimizer (``onnxruntime.transformers.optimizer.optimize_model``) and write
    the result to ``path_out``.

    Only the optimizer's Python fusions run (``opt_level=0``: no onnxruntime session
    optimisation), which also fuses LayerNorm + residual into ``SkipLayerNormalization``
    and bias + GELU into ``BiasGelu``. It recognises the Hugging Face BERT/ViT spelling
    (separate q/k/v ``MatMul`` + ``Add``, ``Reshape`` → ``Transpose``, ``Softmax`` of
    ``(q @ kᵀ) / sqrt(Dh)``, the residual branch as the ``Add``'s first input); see
    :mod:`models.transformer`. Raises ``RuntimeError`` if no attention was fused.
    """
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(path_in), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    fused = [
        node for node in optimized.model.graph.node
        if node.domain == "com.microsoft" and node.op_type in ATTENTION_OPS
    ]
    if not fused:
        raise RuntimeError(f"onnxruntime's optimizer fused no attention in {path_in}")
    path_out = pathlib.Path(path_out)
    path_out.parent.mkdir(parents=True, exist_ok=True)
    optimized.save_model_to_file(str(path_out))
    return path_out


def to_fp16(
    path_in: str | pathlib.Path, path_out: str | pathlib.Path, *, keep_io_types: bool = False
) -> pathlib.Path:
    """Convert a float32 ONNX file to float16 weights, activations and (unless
    ``keep_io_types``) graph inputs and outputs, with onnxruntime's converter
    (``onnxruntime.transformers.float16.convert_float_to_float16``), and write ``path_out``.

    Ops that the converter keeps in float32 get ``Cast`` nodes around them (e.g. the
    ``Resize`` of the U-Net). onnxruntime's CPU provider runs every registered model in
    float16 (checked by the tests for a CNN and a transformer).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path_in)), keep_io_types=keep_io_types)
    path_out = pathlib.Path(path_out)
    path_out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path_out))
    return path_out


def main(argv: Sequence[str] | None = None) -> int:
    """Build a registered architecture (seeded) and export it; print the output path."""
    from models import ARCHITECTURES, build

    parser = argparse.ArgumentParser(prog="python -m models.export", description=main.__doc__)
    parser.add_argument("name", choices=sorted(ARCHITECTURES), help="registered architecture")
    parser.add_argument("out", type=pathlib.Path, help="output .onnx path")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: 17; torch's default with --dynamo)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into Conv")
    parser.add_argument("--dynamic-batch", action="store_true", help="make axis 0 dynamic")
    parser.add_argument("--dynamic-hw", action="store_true", help="make the batch, H and W dynamic")
    parser.add_argument("--dynamic-seq", action="store_true", help="make the batch and T of a [B, T, D] input dynamic")
    parser.add_argument("--dynamo", action="store_true", help="use the dynamo exporter (needs onnxscript)")
    parser.add_argument("--fuse-attention", action="store_true",
                        help="then fuse attention with onnxruntime's optimizer (vit, bert)")
    parser.add_argument("--fp16", action="store_true", help="then convert to float16")
    args = parser.parse_args(argv)
    arch = ARCHITECTURES[args.name]
    model = build(args.name, seed=args.seed)
    path = export_onnx(
        model,
        args.out,
        arch.input_shape,
        opset=args.opset,
        fold_bn=args.fold_bn,
        dynamic_batch=args.dynamic_batch,
        dynamic_hw=args.dynamic_hw,
        dynamo=args.dynamo,
        dynamic_seq=args.dynamic_seq,
    )
    if args.fuse_attention:
        attention = next((m for m in model.modules() if hasattr(m, "num_heads")), None)
        if attention is None:
            parser.error(f"{args.name} has no attention to fuse")
        fuse_attention(path, path, attention.num_heads, attention.num_heads * attention.head_dim)
    if args.fp16:
        to_fp16(path, path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
