"""Float16 copies of float32 models, for ``onnxprune bench --fp16``.

The converter is onnxruntime's own, ``onnxruntime.transformers.float16.convert_float_to_float16``.
It ships in both onnxruntime wheels (``onnxprune[cpu]`` and ``onnxprune[gpu]``), so it adds no
dependency; it began as onnxconverter-common's ``float16`` module and is maintained with
onnxruntime (opset-aware handling of ``Resize`` scales, a block list for ops without fp16
kernels). ``models.export.to_fp16`` uses the same function.

What the copy is (converter arguments: ``keep_io_types=True``, everything else default):

- graph inputs and outputs stay float32, with a ``Cast`` after each input and before each
  output, so the same float32 feeds run the original and the copy, and their outputs compare
  directly (the two casts are part of what ``bench --fp16`` times);
- float32 weights, constants and activations become float16; in the weights and constants,
  values beyond the float16 range are clipped to ±65504 and nonzero values smaller than
  5.96e-8 in magnitude become ±5.96e-8 (activations that overflow at run time become inf);
- ops in the converter's ``DEFAULT_OP_BLOCK_LIST`` (``TopK``, ``NonMaxSuppression``,
  ``Range``, ``Upsample``, ``Min``, ``Max``, the classical-ML ops, ...) stay float32, with
  ``Cast`` nodes around them.

Float16 pays off on GPUs (tensor cores). On the CPU provider it runs, but onnxruntime's x86 CPU
kernels mostly compute in float32 and cast around the float16 nodes, so expect it slower than
float32 there; ``bench --provider cpu --fp16`` is allowed for checking accuracy and the code
path, not for speed.
"""

from __future__ import annotations

import logging
import os

import onnx

from ..errors import OnnxPruneError
from .session import ModelSource, ort_message, require_onnxruntime, source_label

PRECISIONS = ("fp32", "fp16")
"""The precisions that :func:`onnxprune.runtime.bench.bench` reports."""


def to_fp16(model: ModelSource, label: str | None = None) -> onnx.ModelProto:
    """A float16 copy of ``model`` with float32 inputs and outputs (see the module doc).

    ``model`` is a path (external data next to it is loaded), serialized bytes or a
    ``ModelProto`` (not modified). ``label`` names it in errors (default: its path). The result
    is in memory; :func:`onnxprune.runtime.session.make_session` serializes it, which protobuf
    limits to 2 GB of weights (half of a float32 model's 4 GB).

    Raises :class:`OnnxPruneError` for no onnxruntime installed, a missing file, a file that
    is not ONNX, or a model that the converter cannot convert (with its first message line).
    """
    require_onnxruntime()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    label = label or source_label(model)
    proto = _load(model, label)
    quiet = logging.getLogger("onnxruntime.transformers.float16")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # one info/debug line per clipped constant otherwise
    try:
        return convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:  # noqa: BLE001  (the converter raises assorted types, all one error here)
        raise OnnxPruneError(f"cannot convert {label} to float16: {ort_message(exc)}") from None
    finally:
        quiet.setLevel(level)


def _load(model: ModelSource, label: str) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise OnnxPruneError(f"{path}: no such file" if not os.path.isdir(path)
                                     else f"{path} is a directory, not an ONNX file")
            return onnx.load(path)
        if isinstance(model, (bytes, bytearray, memoryview)):
            return onnx.load_from_string(bytes(model))
    except OnnxPruneError:
        raise
    except Exception as exc:  # noqa: BLE001  (protobuf raises several types for garbage bytes)
        raise OnnxPruneError(f"{label}: not a valid ONNX file ({ort_message(exc)})") from None
    raise OnnxPruneError(f"a model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}")
