"""Load, normalize, shape-infer, check and atomically save ONNX models.

Everything here works on ``onnx.ModelProto``; the analyzer views the normalized proto through
onnx-graphsurgeon, and the rewrite edits a copy of the same proto, so node ``i`` of the
graph-surgeon view is node ``i`` of the proto.

* :mod:`.load`: read a file and its external data, rejecting what is not a usable model;
* :mod:`.normalize`: constant weights become initializers, nodes get unique names;
* :mod:`.shapes`: shapes of every tensor at fixed input dims;
* :mod:`.save`: atomic saves, with external data above the 2 GB protobuf limit;
* :mod:`.proto`: tensor sizes, weight-free copies, the full checker.
"""

from .load import load_model, read_model, toposort
from .normalize import FOLDABLE_OPS, normalize, opset_of
from .proto import PROTOBUF_LIMIT, check_model, copy_without_initializers, model_nbytes
from .save import (
    EXTERNAL_SIZE_THRESHOLD,
    Interrupted,
    StagedModel,
    check_output,
    external_data_name,
    same_file,
    save_model_atomic,
    sigint_deferred,
    write_atomic,
)
from .shapes import Shape, infer_shapes, infer_value_info

__all__ = [
    "EXTERNAL_SIZE_THRESHOLD", "FOLDABLE_OPS", "PROTOBUF_LIMIT", "Interrupted", "Shape", "StagedModel",
    "check_model", "check_output", "copy_without_initializers", "external_data_name", "infer_shapes",
    "infer_value_info", "load_model", "model_nbytes", "normalize", "opset_of", "read_model", "same_file",
    "save_model_atomic", "sigint_deferred", "toposort", "write_atomic",
]
