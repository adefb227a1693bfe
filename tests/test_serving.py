"""End to end: prune a model, export it with ``onnxprune export-triton``, serve the exported
model folder from a real inference server on localhost, and query it with Triton's own clients
over both protocols of the Open Inference Protocol (KServe v2): ``tritonclient.http`` and
``tritonclient.grpc``. The answers must equal onnxruntime's on the same inputs.

The server is MLServer (PyPI ``mlserver``, in the ``test`` extra) with the runtime of
``tests/serving_runtime.py``: it loads ``<repo>/<name>/1/model.onnx`` in onnxruntime and checks
every request against the exported configuration's inputs (names, datatypes, ``[-1] + dims``),
as Triton does. Triton itself is not installable from PyPI here (the ``tritonserver`` wheels
need Python 3.12 and glibc 2.39; ``nvidia-pytriton`` bundles only Triton's Python backend and
pins numpy < 2), so this checks the exported model and its I/O contract through the standard
protocol and clients, not Triton's ONNX Runtime backend.

MLServer is run as a subprocess and never imported here: its generated ``inference.*``
protobuf messages clash with tritonclient's in one process. The server binds 127.0.0.1 on free
ports, is waited for with a bounded timeout, and is always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clirun import cli, ok

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "digits" / "resnet8_digits.onnx"
DATA = REPO / "models" / "digits" / "digits_test.npz"
START_TIMEOUT_S = 45
STOP_TIMEOUT_S = 10

pytestmark = pytest.mark.timeout(90) if importlib.util.find_spec("pytest_timeout") else []

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException
if importlib.util.find_spec("mlserver") is None:  # not importorskip: importing it here breaks tritonclient.grpc
    pytest.skip("mlserver is not installed (pip install -e '.[test]')", allow_module_level=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_settings(export: dict) -> dict:
    """MLServer's ``model-settings.json`` for an exported model folder: the tensors' full shapes
    as the configuration declares them (``[-1] + dims`` when Triton batches)."""

    def tensors(entries):
        batch = [-1] if export["max_batch_size"] > 0 else []
        return [{"name": t["name"], "datatype": t["datatype"],
                 "shape": batch + (t["dims"] if t["reshape"] is None else [])} for t in entries]

    return {"name": export["model_name"], "implementation": "serving_runtime.ExportedOnnxModel",
            "parameters": {"uri": export["model_dir"]}, "inputs": tensors(export["inputs"]),
            "outputs": tensors(export["outputs"])}


class Server:
    """``mlserver start`` on 127.0.0.1, stopped on exit whatever happens."""

    def __init__(self, folder: Path, export: dict) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        settings = {"host": "127.0.0.1", "http_port": self.http_port, "grpc_port": self.grpc_port,
                    "metrics_endpoint": None, "parallel_workers": 0, "debug": False,
                    "metrics_dir": str(folder / ".metrics"), "environments_dir": str(folder / ".envs")}
        (folder / "settings.json").write_text(json.dumps(settings))
        model_folder = folder / export["model_name"]
        model_folder.mkdir()
        (model_folder / "model-settings.json").write_text(json.dumps(model_settings(export)))
        self.folder = folder
        self.log = folder / "server.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
        command = [sys.executable, "-c", "import sys; from mlserver.cli import main; sys.exit(main())",
                   "start", str(folder)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, name: str) -> float:
        start = time.perf_counter()
        client = httpclient.InferenceServerClient(f"127.0.0.1:{self.http_port}")
        while time.perf_counter() - start < START_TIMEOUT_S:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if client.is_server_ready() and client.is_model_ready(name):
                    return time.perf_counter() - start
            except (OSError, InferenceServerException):  # not listening yet
                time.sleep(0.1)
            time.sleep(0.1)
        pytest.fail(f"the server was not ready after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT_S)
        except ProcessLookupError:
            self.process.wait(STOP_TIMEOUT_S)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The digits ResNet-8 pruned by half, exported with ``--max-batch-size 8`` and a card."""
    from onnxprune import api

    folder = tmp_path_factory.mktemp("serving")
    pruned, plan = folder / "pruned.onnx", folder / "plan.json"
    api.prune(MODEL, pruned, ratio=0.5, plan_out=plan)
    ok(cli("export-triton", pruned, "--repo", folder / "repo", "--name", "digits_pruned", "--max-batch-size", 8,
           "--dynamic-batching", "--plan", plan, "--json", folder / "export.json", "-q"))
    return json.loads((folder / "export.json").read_text())


def test_served_answers_equal_onnxruntime(exported, tmp_path):
    from onnxprune.runtime.session import make_session

    name = exported["model_name"]
    [input_meta], [output_meta] = exported["inputs"], exported["outputs"]
    with np.load(DATA) as data:
        x = data["input"][:5].astype(np.float32)
    expected = make_session(exported["model_path"]).run([output_meta["name"]], {input_meta["name"]: x})[0]
    assert x.shape[1:] == tuple(input_meta["dims"]) and expected.shape[1:] == tuple(output_meta["dims"])

    with Server(tmp_path, exported) as server:
        seconds = server.wait_ready(name)
        print(f"server ready in {seconds:.2f} s")
        http = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            # HTTP: MLServer takes JSON tensors (not the binary-data extension)
            request = httpclient.InferInput(input_meta["name"], list(x.shape), input_meta["datatype"])
            request.set_data_from_numpy(x, binary_data=False)
            wanted = [httpclient.InferRequestedOutput(output_meta["name"], binary_data=False)]
            by_http = http.infer(name, [request], outputs=wanted).as_numpy(output_meta["name"])

            request = grpcclient.InferInput(input_meta["name"], list(x.shape), input_meta["datatype"])
            request.set_data_from_numpy(x)
            by_grpc = grpc.infer(name, [request]).as_numpy(output_meta["name"])

            for answer in (by_http, by_grpc):
                assert answer.dtype == np.float32 and answer.shape == expected.shape
                np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-5)
            assert (by_grpc.argmax(1) == expected.argmax(1)).all()

            # the served metadata is the exported configuration: [-1] + dims, protocol datatypes
            metadata = http.get_model_metadata(name)
            assert metadata["inputs"] == [{"name": input_meta["name"], "datatype": "FP32",
                                           "shape": [-1] + input_meta["dims"]}]
            assert [list(o.shape) for o in grpc.get_model_metadata(name).outputs] == [[-1] + output_meta["dims"]]

            # a request that does not fit the configured dims is refused, over both protocols
            bad = np.zeros((2, 3, 32, 32), np.float32)
            request = httpclient.InferInput(input_meta["name"], list(bad.shape), "FP32")
            request.set_data_from_numpy(bad, binary_data=False)
            with pytest.raises(Exception, match="expected FP32"):
                http.infer(name, [request])
            request = grpcclient.InferInput(input_meta["name"], list(bad.shape), "FP32")
            request.set_data_from_numpy(bad)
            with pytest.raises(Exception, match="expected FP32"):
                grpc.infer(name, [request])
        finally:
            http.close()
            grpc.close()
    assert server.process.returncode is not None  # stopped


def test_export_for_serving_is_complete(exported):
    """What the server relies on: the folder layout, a validated config and the card."""
    model_dir = Path(exported["model_dir"])
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == \
        ["1", "1/model.onnx", "config.pbtxt", "model_card.json"]
    assert exported["validated"] is True and exported["max_batch_size"] == 8 and exported["dynamic_batching"]
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["pruning"]["by_onnxprune"] and card["pruning"]["macs_after"] < card["pruning"]["macs_before"]
    assert card["plan"]["format"] == "onnxprune.plan/1"
