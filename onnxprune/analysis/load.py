"""The analysis stage's entry point from a file: load, normalize, analyze."""

from __future__ import annotations

from pathlib import Path

from ..graph import normalize, read_model
from .groups import Analysis, analyze


def load_and_analyze(path: str | Path, input_shapes: dict | None = None, outputs=None) -> Analysis:
    """Load, normalize and analyze an ONNX file (one copy of the weights in memory). The
    external data files it reads are registered with ``outputs`` (an
    :class:`~onnxprune.graph.outputs.OutputSet`), when given, so that no output overwrites them."""
    model, data_files = read_model(path)
    if outputs is not None:
        outputs.add_reads({"the external data of the input model": data_files})
    return analyze(normalize(model, inplace=True), input_shapes)
