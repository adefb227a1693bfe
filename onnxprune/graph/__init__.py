"""Load, normalize, shape-infer, check and atomically save ONNX models.

Everything here works on ``onnx.ModelProto``; the analyzer views the normalized proto through
onnx-graphsurgeon, and the rewrite edits a copy of the same proto, so node ``i`` of the
graph-surgeon view is node ``i`` of the proto.

* :mod:`.load`: read a file and its external data, rejecting what is not a usable model;
* :mod:`.normalize`: constant weights become initializers, nodes get unique names;
* :mod:`.shapes`: shapes of every tensor at fixed input dims;
* :mod:`.inputs`: the shape each graph input is analyzed and run at;
* :mod:`.outputs`: the one helper that checks and publishes a command's outputs, all or none;
* :mod:`.save`: signals held back during renames, models written with external data;
* :mod:`.proto`: tensor sizes, weight-free copies, the full checker.
"""

from .inputs import check_allocatable, resolve_input_shape
from .load import external_data_files, file_sha256, load_model, read_model, toposort
from .normalize import FOLDABLE_OPS, normalize, opset_of
from .outputs import OutputSet, save_model_atomic, write_atomic
from .proto import PROTOBUF_LIMIT, check_model, copy_without_initializers, model_nbytes
from .save import EXTERNAL_SIZE_THRESHOLD, external_data_name, same_file, signals_deferred, sigint_deferred
from .shapes import Shape, infer_shapes, infer_value_info

__all__ = [
    "EXTERNAL_SIZE_THRESHOLD", "FOLDABLE_OPS", "PROTOBUF_LIMIT", "OutputSet", "Shape", "check_allocatable",
    "check_model", "copy_without_initializers", "external_data_files", "external_data_name", "file_sha256", "infer_shapes", "infer_value_info",
    "load_model", "model_nbytes", "normalize", "opset_of", "read_model", "resolve_input_shape", "same_file",
    "save_model_atomic", "signals_deferred", "sigint_deferred", "toposort", "write_atomic",
]
