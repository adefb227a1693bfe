"""Run ONNX models in onnxruntime: sessions, data, verify, bench and plan scoring."""
