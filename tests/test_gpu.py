"""GPU providers, IO binding and float16: the logic on the CPU, the real thing where CUDA is.

Tests marked ``cuda`` / ``tensorrt`` skip cleanly on machines without that provider; the rest
run anywhere: provider validation (one clear error, exit 2 through the CLI), the IO-binding
timing path bound to host memory, float16 copies against float32, and the no-GPU path of
``tools/bench_gpu.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from clirun import assert_bad_input, cli, ok
from onnx import TensorProto, helper, numpy_helper

from onnxprune.errors import OnnxPruneError
from onnxprune.runtime import bench as bench_mod
from onnxprune.runtime import session as session_mod
from onnxprune.runtime.bench import bench, bind_feed, interleaved_times
from onnxprune.runtime.evaluate import verify
from onnxprune.runtime.precision import to_fp16
from onnxprune.runtime.session import make_session, provider_chain

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits" / "resnet8_digits.onnx"
AVAILABLE = onnxruntime.get_available_providers()
HAS_CUDA = "CUDAExecutionProvider" in AVAILABLE
HAS_TRT = "TensorrtExecutionProvider" in AVAILABLE

cuda = pytest.mark.skipif(not HAS_CUDA, reason="CUDAExecutionProvider is not available")
tensorrt = pytest.mark.skipif(not (HAS_CUDA and HAS_TRT), reason="TensorrtExecutionProvider is not available")
no_trt = pytest.mark.skipif(HAS_TRT, reason="a TensorRT provider is present; 'unavailable' cannot be shown")
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="a CUDA provider is present; a fallback cannot be forced")


def conv_net(batch="N") -> onnx.ModelProto:
    """x [batch, 3, 8, 8] → Conv(8, 3x3, pad 1) → Relu → Conv(4, 1x1) → y [batch, 4, 8, 8]."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"])],
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "convnet.onnx"
    onnx.save(conv_net(), path)
    return path


def only_cpu(monkeypatch, *extra):
    """Make onnxruntime report ``extra`` providers plus the CPU one (the real list is unchanged)."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [*extra, "CPUExecutionProvider"])


# ================================================================ providers


def test_provider_chain_mirrors_onnxruntime_fallback_order():
    assert provider_chain("cpu") == ["CPUExecutionProvider"]
    assert provider_chain("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("TensorRT") == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("tensorrt", {"trt_fp16_enable": "True"})[0] == (
        "TensorrtExecutionProvider", {"trt_fp16_enable": "True"})
    with pytest.raises(OnnxPruneError, match="unknown provider 'rocm'; choose one of: cpu, cuda, tensorrt"):
        provider_chain("rocm")


def test_tensorrt_unavailable_is_one_clear_error(model_path, monkeypatch):
    only_cpu(monkeypatch, "CUDAExecutionProvider")
    with pytest.raises(OnnxPruneError) as info:
        make_session(model_path, provider="tensorrt")
    message = str(info.value)
    assert message.startswith("TensorRT execution provider is not available (installed onnxruntime has: "
                              "CUDAExecutionProvider, CPUExecutionProvider)")
    assert "onnxruntime-gpu" in message and "TensorRT" in message and "\n" not in message


def test_tensorrt_without_cuda_names_the_missing_fallback(model_path, monkeypatch):
    only_cpu(monkeypatch, "TensorrtExecutionProvider")
    with pytest.raises(OnnxPruneError, match="needs the CUDA execution provider, which is not available"):
        make_session(model_path, provider="tensorrt")


def test_both_wheels_installed_says_how_to_fix(model_path, monkeypatch):
    only_cpu(monkeypatch)
    monkeypatch.setattr(session_mod, "_installed_flavours", lambda: ["onnxruntime", "onnxruntime-gpu"])
    with pytest.raises(OnnxPruneError, match=r"both onnxruntime and onnxruntime-gpu are installed.*pip uninstall"):
        make_session(model_path, provider="cuda")


@no_cuda
@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_tensorrt_listed_but_not_used_is_an_error(model_path, monkeypatch, capsys):
    """onnxruntime drops providers it cannot use and runs on the next; that must not pass."""
    only_cpu(monkeypatch, "TensorrtExecutionProvider", "CUDAExecutionProvider")
    with pytest.raises(OnnxPruneError, match="could not initialise TensorRT for .*fell back to CPUExecutionProvider.*"
                                             "check the TensorRT installation"):
        make_session(model_path, provider="tensorrt")
    assert capsys.readouterr().out == ""  # onnxruntime's 'EP Error' banner never reaches stdout


def test_bench_checks_the_provider_before_loading_anything(tmp_path, monkeypatch):
    only_cpu(monkeypatch)
    with pytest.raises(OnnxPruneError, match="TensorRT execution provider is not available"):
        bench([tmp_path / "missing.onnx"], provider="tensorrt", fp16=True)


@no_trt
@pytest.mark.parametrize("command", ["bench", "verify"])
def test_cli_tensorrt_unavailable_exit_2(command, model_path):
    args = [model_path, "--runs", "1", "--warmup", "0"] if command == "bench" else [model_path, model_path]
    assert_bad_input(cli(command, *args, "--provider", "tensorrt"), "TensorRT execution provider is not available",
                     "onnxruntime-gpu")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is present")
def test_cli_cuda_unavailable_exit_2(model_path):
    assert_bad_input(cli("bench", model_path, "--provider", "cuda", "--fp16"),
                     "CUDA execution provider is not available")


def test_verify_api_checks_the_provider(model_path, monkeypatch):
    only_cpu(monkeypatch)
    with pytest.raises(OnnxPruneError, match="TensorRT execution provider is not available"):
        verify(model_path, model_path, provider="tensorrt")


# ================================================================ IO binding on the CPU


class RunLog:
    """Wrap a real session; log which run method each call used."""

    def __init__(self, session, index, log):
        self._session, self._index, self._log = session, index, log

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, names, feed):
        self._log.append((self._index, "run"))
        return self._session.run(names, feed)

    def run_with_iobinding(self, binding, run_options=None):
        self._log.append((self._index, "iobinding"))
        return self._session.run_with_iobinding(binding)


def _log_sessions(monkeypatch, log):
    real = bench_mod.make_session
    count = []

    def fake(model, provider="cpu", threads=None, **kw):
        count.append(1)
        return RunLog(real(model, provider, threads, **kw), len(count) - 1, log)

    monkeypatch.setattr(bench_mod, "make_session", fake)


def test_io_binding_path_on_cpu_keeps_the_rotating_rounds(model_path, monkeypatch):
    log = []
    _log_sessions(monkeypatch, log)
    report = bench([model_path, model_path, model_path], io_binding=True, warmup=0, runs=3, batch=2)
    assert report.io_binding and report.to_dict()["io_binding"] is True
    assert [i for i, _ in log] == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert {how for _, how in log} == {"iobinding"}
    assert all(m.median_ms > 0 for m in report.models)


def test_cpu_default_is_unchanged_session_run(model_path, monkeypatch):
    log = []
    _log_sessions(monkeypatch, log)
    report = bench([model_path, model_path], warmup=1, runs=2)
    assert {how for _, how in log} == {"run"} and len(log) == 6
    d = report.to_dict()
    assert (d["precision"], d["io_binding"], d["provider"]) == ("fp32", False, "cpu")


def test_bound_outputs_equal_session_run(model_path):
    session = make_session(model_path)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    bound = bind_feed(session, {"x": x}, "cpu")
    interleaved_times([session], [{"x": x}], 2, bindings=[bound])
    (y,) = bound.outputs()
    np.testing.assert_array_equal(y, session.run(None, {"x": x})[0])


def test_bindings_must_match_sessions(model_path):
    session = make_session(model_path)
    with pytest.raises(OnnxPruneError, match="got 0 bindings for 1 sessions"):
        interleaved_times([session], [{}], 1, bindings=[])


def test_binding_on_a_missing_device_is_a_clean_error(model_path):
    if HAS_CUDA:
        pytest.skip("CUDA is present")
    session = make_session(model_path)
    with pytest.raises(OnnxPruneError, match="m: cannot bind the inputs on cuda"):
        bind_feed(session, {"x": np.zeros((1, 3, 8, 8), np.float32)}, "cuda", label="m")


# ================================================================ float16


def test_fp16_copy_is_close_to_fp32_on_cpu():
    model = conv_net()
    before = model.SerializeToString()
    half = to_fp16(model)
    assert model.SerializeToString() == before  # the input model is left alone
    assert {t.data_type for t in half.graph.initializer} == {TensorProto.FLOAT16}
    assert [vi.type.tensor_type.elem_type for vi in (*half.graph.input, *half.graph.output)] == [TensorProto.FLOAT] * 2
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref = make_session(model).run(None, {"x": x})[0]
    got = make_session(half).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-3 * np.abs(ref).max())


def test_fp16_real_model_keeps_its_predictions():
    """The trained digits ResNet-8 on 128 test images: float16 keeps the logits and the answers."""
    x = np.load(REPO / "models" / "digits" / "digits_test.npz")["input"][:128]
    ref = make_session(DIGITS).run(None, {"input": x})[0]
    got = make_session(to_fp16(DIGITS)).run(None, {"input": x})[0]
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.9999
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 127 / 128


def test_fp16_errors(tmp_path):
    with pytest.raises(OnnxPruneError, match="gone.onnx: no such file"):
        to_fp16(tmp_path / "gone.onnx")
    with pytest.raises(OnnxPruneError, match="<bytes>: not a valid ONNX file"):
        to_fp16(b"\x00garbage")


def test_bench_fp16_on_cpu(model_path):
    report = bench([model_path, conv_net()], names=["a", "b"], fp16=True, warmup=1, runs=2)
    assert report.precision == "fp16" and [m.name for m in report.models] == ["a", "b"]


def test_cli_bench_fp16_json(model_path, tmp_path):
    result = ok(cli("bench", model_path, "--fp16", "--runs", "2", "--warmup", "0", "--json", tmp_path / "b.json"))
    data = json.loads((tmp_path / "b.json").read_text())
    assert (data["precision"], data["io_binding"]) == ("fp16", False)
    assert "cpu fp16" in result.stdout


# ================================================================ real GPUs


@cuda
def test_cuda_bench_binds_inputs_on_the_device(model_path):
    report = bench([model_path, conv_net()], provider="cuda", batch=4, warmup=2, runs=5)
    assert report.io_binding and report.provider == "cuda"
    assert all(m.median_ms > 0 for m in report.models)


@cuda
def test_cuda_bound_outputs_match_cpu(model_path):
    session = make_session(model_path, "cuda")
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    bound = bind_feed(session, {"x": x}, "cuda")
    interleaved_times([session], [{"x": x}], 1, bindings=[bound])
    np.testing.assert_allclose(bound.outputs()[0], make_session(model_path).run(None, {"x": x})[0], atol=1e-3)


@cuda
def test_cuda_fp16_bench_and_verify(model_path, tmp_path):
    report = bench([model_path], provider="cuda", fp16=True, batch=2, warmup=2, runs=3)
    assert report.precision == "fp16" and report.io_binding
    ok(cli("verify", model_path, model_path, "--provider", "cuda"))


@tensorrt
def test_tensorrt_session_and_bench(model_path):
    try:
        session = make_session(model_path, "tensorrt")
    except OnnxPruneError as exc:  # listed but not installed (libnvinfer missing): the clean error
        assert "TensorRT" in str(exc)
        pytest.skip(f"TensorRT is listed but unusable here: {exc}")
    assert session.get_providers()[:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    for fp16 in (False, True):
        report = bench([model_path], provider="tensorrt", fp16=fp16, batch=2, warmup=2, runs=3)
        assert report.io_binding and report.models[0].median_ms > 0


# ================================================================ tools/bench_gpu.py


def test_bench_gpu_without_gpu_prints_one_skip_line():
    if HAS_CUDA:
        pytest.skip("CUDA is present: the script would run the full benchmark")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench_gpu.py")], check=False,
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    line = json.loads(lines[0])
    assert line["kind"] == "skip" and "CUDA" in line["reason"]
    assert "resnet50" in line["what"] and "yolov8_c2f" in line["what"] and "TensorRT" in line["what"]
    assert line["providers"] == AVAILABLE


@pytest.mark.slow
def test_bench_gpu_cpu_dry_run_rows(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench_gpu.py"), "--cpu-dry-run", "--models", "yolo",
                           "--yolo-size", "64", "--targets", "0.5", "--batches", "1", "2", "--runs", "2", "--warmup",
                           "1", "--out-dir", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    rows = [r for r in lines if r["kind"] == "row"]
    assert len(rows) == 2 * 2 * 2  # (original, pruned) x (fp32, fp16) x batches (1, 2)
    assert lines[-1]["kind"] == "summary" and lines[-1]["rows"] == 8
    fields = {"model", "target_macs", "macs_kept", "provider", "precision", "batch", "median_ms", "p90_ms",
              "speedup_vs_original", "ideal_speedup", "ratio_of_ideal"}
    for row in rows:
        assert fields <= set(row)
        assert row["ratio_of_ideal"] == pytest.approx(row["speedup_vs_original"] / row["ideal_speedup"], rel=1e-3)
        assert row["input_shape"] == [row["batch"], 3, 64, 64]
    pruned = [r for r in rows if r["variant"] == "pruned"]
    assert all(abs(r["macs_kept"] - 0.5) < 0.05 and r["ideal_speedup"] == pytest.approx(1 / r["macs_kept"], rel=1e-3)
               for r in pruned)
    assert {r["precision"] for r in rows} == {"fp32", "fp16"}
