"""onnxprune: structured channel pruning of ONNX models."""

__version__ = "0.1.0"
