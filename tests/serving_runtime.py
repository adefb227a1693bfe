"""An MLServer runtime that serves a model folder written by ``onnxprune export-triton`` the way
Triton's ONNX Runtime backend does: ``<folder>/1/model.onnx`` in onnxruntime, behind the Open
Inference Protocol (KServe v2) over HTTP and gRPC.

Used by ``tests/test_serving.py``, which starts ``mlserver start`` in a subprocess (this module
must never be imported by the test process itself: MLServer registers its own copy of the
``inference.*`` protobuf messages, which clash with tritonclient's in one process).

``model-settings.json`` gives ``parameters.uri`` (the model folder) and the ``inputs`` and
``outputs`` metadata, built by the test from the exported configuration: full shapes, ``-1``
for a dynamic dim (the batch axis when ``max_batch_size > 0``). Like Triton, the runtime
refuses a request whose input names, datatypes or shapes do not match that metadata, so the
exported dims are what the server enforces.
"""

from __future__ import annotations

from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from onnxprune.runtime.session import make_session


class ExportedOnnxModel(MLModel):
    async def load(self) -> bool:
        folder = Path(self.settings.parameters.uri)
        self.session = make_session(folder / "1" / "model.onnx", threads=1)
        self._expected = {t.name: t for t in self.settings.inputs or []}
        self._output_names = [o.name for o in self.session.get_outputs()]
        return True

    def _check(self, payload: InferenceRequest) -> None:
        names = [i.name for i in payload.inputs]
        if sorted(names) != sorted(self._expected):
            raise MLServerError(f"expected inputs {sorted(self._expected)}, got {sorted(names)}")
        for given in payload.inputs:
            meta = self._expected[given.name]
            shape_ok = len(given.shape) == len(meta.shape) and all(
                want in (-1, got) for want, got in zip(meta.shape, given.shape))
            if given.datatype != meta.datatype or not shape_ok:
                raise MLServerError(f"input {given.name!r}: expected {meta.datatype} {list(meta.shape)}, got "
                                    f"{given.datatype} {list(given.shape)}")

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self._check(payload)
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self.session.run(self._output_names, feeds)
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._output_names, results)])
