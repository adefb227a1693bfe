"""Tests for onnxprune.runtime.bench: interleaved order, statistics, batch handling, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.runtime import bench as bench_mod
from onnxprune.runtime.bench import BenchReport, bench, interleaved_times
from onnxprune.errors import OnnxPruneError


def conv_model(channels=2, batch="N", hw=(8, 8)) -> onnx.ModelProto:
    """Conv 3->channels, 3x3: x [batch, 3, H, W] -> y."""
    w = np.random.default_rng(0).standard_normal((channels, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        f"conv{channels}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.fixture
def models(tmp_path):
    paths = []
    for c in (4, 2, 1):
        path = tmp_path / f"conv{c}.onnx"
        onnx.save(conv_model(c), path)
        paths.append(path)
    return paths


class FakeClock:
    def __init__(self):
        self.now = 0

    def __call__(self):
        return self.now


class Recorder:
    """Wrap a real session: log each run (label, input shapes) and advance a fake clock."""

    def __init__(self, session, label, log, clock=None, durations_ns=None):
        self._session, self._label, self._log = session, label, log
        self._clock, self._durations = clock, list(durations_ns or [])

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, names, feed):
        self._log.append((self._label, {k: v.shape for k, v in feed.items()}))
        if self._clock is not None:
            self._clock.now += self._durations.pop(0)
        return self._session.run(names, feed)


def _patch_sessions(monkeypatch, log, clock=None, durations=None):
    """Make bench's make_session return Recorders labelled 0, 1, 2, ... in creation order."""
    real = bench_mod.make_session
    created = []

    def fake(model, provider="cpu", threads=None, **kw):
        i = len(created)
        created.append(i)
        return Recorder(real(model, provider, threads, **kw), i, log, clock, durations and durations[i])

    monkeypatch.setattr(bench_mod, "make_session", fake)
    if clock is not None:
        monkeypatch.setattr(bench_mod, "perf_counter_ns", clock)


def test_rounds_are_interleaved_with_rotating_start(models, monkeypatch):
    log = []
    _patch_sessions(monkeypatch, log)
    bench(models, warmup=2, runs=4)
    order = [label for label, _ in log]
    assert len(order) == (2 + 4) * 3
    rotations = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    expected = rotations[0] + rotations[1] + [r for k in range(4) for r in rotations[k % 3]]
    assert order == expected


def test_statistics_from_a_fake_clock(models, monkeypatch):
    ms = 1_000_000
    durations = [
        [5 * ms, 1 * ms, 2 * ms, 4 * ms, 3 * ms],  # median 3, p90 4.6, mean 3
        [2 * ms, 1 * ms, 1 * ms, 1 * ms, 5 * ms],  # median 1, p90 3.8, mean 2
    ]
    log = []
    clock = FakeClock()
    _patch_sessions(monkeypatch, log, clock, durations)
    report = bench(models[:2], batch=4, warmup=0, runs=5, names=["big", "small"])
    big, small = report.models
    assert (big.name, small.name) == ("big", "small")
    assert (big.median_ms, big.p90_ms, big.mean_ms, big.min_ms) == pytest.approx((3, 4.6, 3, 1))
    assert (small.median_ms, small.p90_ms, small.mean_ms, small.min_ms) == pytest.approx((1, 3.8, 2, 1))
    assert big.speedup_vs_first == 1.0
    assert small.speedup_vs_first == pytest.approx(3.0)
    assert big.throughput == pytest.approx(4 / 0.003)
    assert small.throughput == pytest.approx(4 / 0.001)
    assert all(shapes == {"x": (4, 3, 8, 8)} for _, shapes in log)


def test_report_structure_real_timing(models):
    report = bench(models, batch=2, warmup=1, runs=5, threads=1)
    assert isinstance(report, BenchReport)
    assert [m.name for m in report.models] == [str(p) for p in models]
    assert report.models[0].speedup_vs_first == 1.0
    for m in report.models:
        assert m.p90_ms >= m.median_ms >= m.min_ms > 0
        assert m.throughput == pytest.approx(2 / (m.median_ms / 1000), rel=1e-12)
        assert m.speedup_vs_first == pytest.approx(report.models[0].median_ms / m.median_ms, rel=1e-12)
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert (d["provider"], d["threads"], d["batch"], d["runs"], d["warmup"]) == ("cpu", 1, 2, 5, 1)
    assert d["intra_op_spinning"] is False and len(d["models"]) == 3


def test_bench_accepts_protos_and_bytes():
    proto = conv_model(2)
    report = bench([proto, proto.SerializeToString()], warmup=0, runs=2)
    assert [m.name for m in report.models] == ["<ModelProto conv2>", "<bytes>"]


def test_dynamic_spatial_dims_via_shapes(monkeypatch):
    log = []
    _patch_sessions(monkeypatch, log)
    model = conv_model(2, hw=("H", "W"))
    with pytest.raises(OnnxPruneError, match="input_shapes x:1x3x<d2>x<d3>"):
        bench([model], warmup=0, runs=1)
    bench([model], batch=2, warmup=0, runs=1, shapes={"x": (2, 3, 6, 7)})
    assert log[-1][1] == {"x": (2, 3, 6, 7)}


def test_static_batch_mismatch(models):
    fixed = conv_model(2, batch=1)
    with pytest.raises(OnnxPruneError, match="fixed batch size of 1, not 4"):
        bench([models[0], fixed], batch=4, warmup=0, runs=1)
    assert len(bench([fixed], batch=1, warmup=0, runs=1).models) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"runs": 0}, "runs must be an integer >= 1"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"batch": 0}, "batch must be an integer >= 1"),
        ({"names": ["a"]}, "got 1 names for 3 models"),
        ({"shapes": {"y": (1, 3, 8, 8)}}, r"unknown input\(s\) 'y'"),
        ({"shapes": {"x": (2, 3, 8, 8)}}, "has batch 2 on axis 0 but the batch size is 1"),
        ({"provider": "cuda-ish"}, "unknown provider"),
    ],
)
def test_bench_errors(models, kwargs, message):
    with pytest.raises(OnnxPruneError, match=message):
        bench(models, **{"warmup": 0, "runs": 1, **kwargs})


def test_no_models():
    with pytest.raises(OnnxPruneError, match="no models"):
        bench([])


def test_run_failure_is_a_clean_error(models):
    from onnxprune.runtime.evaluate import make_session

    session = make_session(models[0])
    with pytest.raises(OnnxPruneError, match="m0: onnxruntime failed"):
        interleaved_times([session], [{"x": np.zeros((1, 5, 8, 8), np.float32)}], 1, ["m0"])
