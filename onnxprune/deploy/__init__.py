"""Deployment: a Triton Inference Server model repository for a (pruned) ONNX model, with a
model card.

* :mod:`.triton`: the ``config.pbtxt`` derived from the graph's inputs and outputs (names, data
  types, dims, the batch axis), its validation against Triton's ``ModelConfig`` protobuf, and
  the model folder ``DIR/NAME/`` staged aside and moved into place at once;
* :mod:`.card`: ``model_card.json``: what was pruned, MACs and params, accuracy, latency and
  the plan, where known (``null`` where not).

:func:`export_triton` is the entry point (``onnxprune export-triton``).
"""

from .triton import (
    TensorConfig,
    TritonConfig,
    TritonExport,
    build_config,
    export_triton,
    validate_config,
)

__all__ = ["TensorConfig", "TritonConfig", "TritonExport", "build_config", "export_triton", "validate_config"]
