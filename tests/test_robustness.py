"""Robustness: fp16 models, external data, bad input, SIGINT, determinism and awkward graphs.

Every model here is built with ``onnx.helper`` (no torch), so the oracles are independent of
onnxprune: widths are read off the written weights, outputs are computed with onnxruntime, and
files are compared byte for byte.

Bad input must give ``OnnxPruneError`` from the API and, from the CLI, exit code 2 with one
line ``error: ...`` on stderr and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import pipeline as prune_api

from clirun import assert_bad_input, cli, ok, sha256
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import load_model, normalize
from onnxprune.analysis.groups import analyze
from onnxprune.decide.importance import CRITERIA, DATA_CRITERIA, group_importance
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file
from onnxprune.selfcheck import self_check
from tools.bench_external_data import build_big_model

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers
def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(model, feeds: dict) -> list[np.ndarray]:
    return session(model).run(None, feeds)


def weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def conv_widths(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """(out, in) channels of every Conv and (out, in) of every Gemm (transB=1), by node name."""
    w = weights(model)
    return {n.name: tuple(w[n.input[1]].dims[:2]) for n in model.graph.node if n.op_type in ("Conv", "Gemm")}


class G:
    """A tiny onnx.helper graph builder: float (or float16) weights as seeded initializers."""

    def __init__(self, dtype=np.float32, seed: int = 0, opset: int = 17) -> None:
        self.dtype, self.opset = np.dtype(dtype), opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.n = 0

    @property
    def elem(self) -> int:
        return helper.np_dtype_to_tensor_dtype(self.dtype)

    def name(self, prefix: str) -> str:
        used = {n.name for n in self.nodes}
        self.n += 1
        while f"{prefix}{self.n}" in used:
            self.n += 1
        return f"{prefix}{self.n}"

    def init(self, name: str, values) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def input(self, shape, name: str = "x", elem: int | None = None) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem or self.elem, shape))
        return name

    def op(self, op: str, inputs, n_out: int = 1, name: str | None = None, domain: str = "", **attrs):
        name = name or self.name(op.lower())
        outs = [f"{name}_y{i}" if n_out > 1 else f"{name}_y" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs if n_out > 1 else outs[0]

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, name: str | None = None) -> str:
        name = name or self.name("conv")
        w = self.init(f"{name}_w", (self.rng.standard_normal((c_out, c_in, k, k)) * 0.3).astype(self.dtype))
        b = self.init(f"{name}_b", (self.rng.standard_normal(c_out) * 0.1).astype(self.dtype))
        return self.op("Conv", [x, w, b], name=name, pads=[k // 2] * 4)

    def bn(self, x: str, c: int) -> str:
        name = self.name("bn")
        args = [self.init(f"{name}_scale", self.rng.uniform(0.5, 1.5, c).astype(self.dtype)),
                self.init(f"{name}_bias", (self.rng.standard_normal(c) * 0.1).astype(self.dtype)),
                self.init(f"{name}_mean", (self.rng.standard_normal(c) * 0.1).astype(self.dtype)),
                self.init(f"{name}_var", self.rng.uniform(0.5, 1.5, c).astype(self.dtype))]
        return self.op("BatchNormalization", [x, *args], name=name)

    def gemm(self, x: str, k: int, n: int, name: str | None = None) -> str:
        name = name or self.name("fc")
        w = self.init(f"{name}_w", (self.rng.standard_normal((n, k)) * 0.3).astype(self.dtype))
        b = self.init(f"{name}_b", np.zeros(n, self.dtype))
        return self.op("Gemm", [x, w, b], name=name, transB=1)

    def output(self, name: str, shape=None, elem: int | None = None) -> G:
        self.outputs.append(helper.make_tensor_value_info(name, elem or self.elem, shape))
        return self

    def model(self, domains: dict[str, int] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        return model


def resnet_like(dtype=np.float32) -> onnx.ModelProto:
    """Conv-BN-Relu stem, one residual block (Add), a widening conv, GlobalAveragePool, Gemm."""
    g = G(dtype)
    x = g.input([1, 3, 16, 16])
    stem = g.op("Relu", [g.bn(g.conv(x, 3, 16), 16)])
    y = g.op("Relu", [g.bn(g.conv(stem, 16, 16), 16)])
    y = g.bn(g.conv(y, 16, 16), 16)
    y = g.op("Relu", [g.op("Add", [y, stem])])
    y = g.op("Relu", [g.bn(g.conv(y, 16, 24), 24)])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    return g.output(g.gemm(y, 24, 10, name="head"), [1, 10]).model()


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


# ================================================================ 1. fp16
@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory) -> Path:
    model = resnet_like(np.float16)
    onnx.checker.check_model(model, full_check=True)
    return save(model, tmp_path_factory.mktemp("fp16") / "fp16.onnx")


@pytest.mark.parametrize("criterion", CRITERIA)
def test_fp16_prunes_with_every_criterion(criterion, fp16_model, tmp_path):
    out = tmp_path / "p.onnx"
    data = None
    if criterion in DATA_CRITERIA:  # the activation criteria read float16 activations
        data = tmp_path / "calib.npz"
        np.savez(data, x=np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float16))
    result = prune_file(fp16_model, out, PruneOptions(criterion=criterion, ratio=0.5, data=data and str(data)))
    assert result.groups_pruned == 3 and result.after.macs < result.before.macs
    pruned = onnx.load(str(out))
    floats = [t for t in pruned.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)  # weights stay float16
    assert pruned.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert conv_widths(pruned)["head"] == (10, 12)
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float16)
    (y,) = run(out, {"x": x})
    assert y.dtype == np.float16 and y.shape == (1, 10) and np.isfinite(y).all()


def test_fp16_analysis_and_self_check(fp16_model):
    analysis = load_and_analyze(fp16_model)
    assert [g.prunable for g in analysis.groups] == [True, True, True, False]
    check = self_check(analysis)
    assert check.macs_planned == check.macs_measured
    assert check.max_abs_error < 0.05  # float16 round-off on O(1) outputs


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "fpgm"])
def test_fp16_importance_is_computed_in_float64(criterion):
    """Scores of the float16 model equal those of a float32 model holding exactly the same
    values (both computed in float64), also where float16 arithmetic would overflow."""
    big = resnet_like(np.float16)
    for t in big.graph.initializer:  # values near the float16 maximum: squares and sums overflow in float16
        if t.name.endswith("_w"):
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t).astype(np.float32) * 2e4).astype(np.float16), t.name))
    as32 = onnx.ModelProto()
    as32.CopyFrom(big)
    for t in as32.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for io in list(as32.graph.input) + list(as32.graph.output):
        io.type.tensor_type.elem_type = TensorProto.FLOAT
    a16, a32 = analyze(normalize(big)), analyze(normalize(as32))
    for g16, g32 in zip(a16.prunable_groups, a32.prunable_groups):
        s16, s32 = group_importance(a16, g16, criterion), group_importance(a32, g32, criterion)
        assert s16.dtype == np.float64 and np.isfinite(s16).all()
        np.testing.assert_array_equal(s16, s32)


def test_fp16_converted_with_cast_nodes(tmp_path):
    """onnxruntime's float16 converter keeps float32 I/O and inserts Cast nodes at the edges."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = resnet_like(np.float32)
    converted = convert_float_to_float16(fp32, keep_io_types=True)
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2  # after the input, before the output
    path = save(converted, tmp_path / "converted.onnx")

    analysis = load_and_analyze(path)
    assert [g.prunable for g in analysis.groups] == [True, True, True, False]
    out = tmp_path / "p.onnx"
    result = prune_file(path, out, PruneOptions(ratio=0.5))
    assert result.groups_pruned == 3
    pruned = onnx.load(str(out))
    assert sum(n.op_type == "Cast" for n in pruned.graph.node) == 2
    assert {t.data_type for t in pruned.graph.initializer if t.name.endswith("_w")} == {TensorProto.FLOAT16}
    assert pruned.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    (y,) = run(out, {"x": x})
    assert y.dtype == np.float32 and y.shape == (1, 10)

    # keep-all: the converted model's outputs, exactly
    ok(cli("prune", path, "-o", tmp_path / "keep.onnx", "--ratio", "0", "--allow-noop"))
    np.testing.assert_array_equal(run(tmp_path / "keep.onnx", {"x": x})[0], run(path, {"x": x})[0])


# ================================================================ 2. external data
def small_external_model(folder: Path) -> Path:
    """About 50 MB of float32 weights in ``big.onnx.data`` (the benchmark's builder, scaled down)."""
    return build_big_model(folder, 0.05, conv_width=256, gemm_width=1024)


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def external(tmp_path_factory) -> Path:
    return small_external_model(tmp_path_factory.mktemp("ext") / "in")


def test_external_data_round_trip(external, tmp_path):
    data = external.parent / "big.onnx.data"
    assert data.stat().st_size > 45e6
    digest = (sha256(external), sha256(data))
    out = tmp_path / "pruned.onnx"
    result = ok(cli("prune", external, "-o", out, "--ratio", "0.5", "--json", tmp_path / "s.json"))
    assert files_of(tmp_path) == ["pruned.onnx", "pruned.onnx.data", "s.json"]  # no temporary files left
    assert (sha256(external), sha256(data)) == digest  # input untouched
    assert files_of(external.parent) == ["big.onnx", "big.onnx.data"]

    proto = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"pruned.onnx.data"}
    assert out.stat().st_size < 100_000  # the tensors are in the data file
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 64, 4, 4)).astype(np.float32)
    (y,) = run(out, {"input": x})
    assert y.shape == (1, 1000) and np.isfinite(y).all()

    loaded = onnx.load(str(out))
    widths = conv_widths(loaded)
    assert widths["conv0"] == (128, 64) and widths["conv1"] == (128, 128) and widths["head"] == (1000, 512)
    import json
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["bytes_before"] == external.stat().st_size + data.stat().st_size
    assert summary["bytes_after"] == out.stat().st_size + (tmp_path / "pruned.onnx.data").stat().st_size
    assert "pruned.onnx" in result.stdout


def test_external_data_keep_all_is_exact(external, tmp_path):
    out = tmp_path / "keep.onnx"
    ok(cli("prune", external, "-o", out, "--ratio", "0", "--allow-noop"))
    x = np.random.default_rng(0).standard_normal((1, 64, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"input": x})[0], run(external, {"input": x})[0])
    before, after = weights(onnx.load(str(external))), weights(onnx.load(str(out)))
    assert before.keys() == after.keys()
    for name, t in before.items():
        assert numpy_helper.to_array(after[name]).tobytes() == numpy_helper.to_array(t).tobytes(), name


def test_external_output_replaces_an_older_one(external, tmp_path):
    out = tmp_path / "p.onnx"
    ok(cli("prune", external, "-o", out, "--ratio", "0.5"))
    ok(cli("prune", external, "-o", out, "--ratio", "0.25"))
    assert files_of(tmp_path) == ["p.onnx", "p.onnx.data"]
    assert conv_widths(onnx.load(str(out)))["conv0"] == (192, 64)
    run(out, {"input": np.zeros((1, 64, 4, 4), np.float32)})


def test_large_output_is_written_with_external_data(monkeypatch, tmp_path):
    """A model above the protobuf limit is saved with external data (the limit is lowered here)."""
    path = save(resnet_like(), tmp_path / "m.onnx")
    monkeypatch.setattr(prune_api, "PROTOBUF_LIMIT", 1000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = prune_file(path, out_dir / "p.onnx", PruneOptions(ratio=0.5))
    assert files_of(out_dir) == ["p.onnx", "p.onnx.data"]
    assert any(t.external_data for t in result.model.graph.initializer)  # the written proto
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    (y,) = run(out_dir / "p.onnx", {"x": x})
    assert y.shape == (1, 10)


def test_output_data_file_never_overwrites_the_inputs(tmp_path):
    """The input reads ``p.onnx.data``; writing ``p.onnx`` would replace it with the output's data."""
    model = resnet_like()
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="p.onnx.data",
                    size_threshold=0)
    before = {name: sha256(tmp_path / name) for name in files_of(tmp_path)}
    assert_bad_input(cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.5"),
                     "refusing to overwrite", "p.onnx.data")
    assert {name: sha256(tmp_path / name) for name in files_of(tmp_path)} == before
    with pytest.raises(OnnxPruneError, match="refusing to overwrite"):
        prune_file(tmp_path / "m.onnx", tmp_path / "p.onnx", PruneOptions(ratio=0.5))
    # the input's data file as the output's model file
    assert_bad_input(cli("prune", tmp_path / "m.onnx", "-o", tmp_path / "p.onnx.data", "--ratio", "0.5"),
                     "refusing to overwrite")
    assert {name: sha256(tmp_path / name) for name in files_of(tmp_path)} == before


@pytest.mark.parametrize("location, needle", [
    ("../evil.bin", "points outside the model's folder"),
    ("/etc/passwd", "points outside the model's folder"),
    ("sub/../../evil.bin", "points outside the model's folder"),
    ("missing.bin", "external data file missing"),
    ("short.bin", "past the end"),
])
def test_bad_external_data_location(location, needle, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "evil.bin").write_bytes(b"\0" * 4096)
    (folder / "short.bin").write_bytes(b"\0" * 10)
    model = resnet_like()
    tensor = next(t for t in model.graph.initializer if t.name == "head_w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(10 * 24 * 4))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxPruneError, match=needle):
        load_model(path)
    assert_bad_input(cli("analyze", path), needle)
    assert_bad_input(cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.5"), needle)
    assert not (tmp_path / "o.onnx").exists()


# ================================================================ 3. bad models
def no_weights_model() -> onnx.ModelProto:
    g = G()
    x = g.input([1, 4, 8, 8])
    return g.output(g.op("Add", [g.op("Relu", [x]), x]), [1, 4, 8, 8]).model()


def custom_everywhere_model() -> onnx.ModelProto:
    """Every conv's output goes through a custom-domain op that onnxprune has no rule for."""
    g = G()
    y = g.input([1, 3, 8, 8])
    for c_in, c_out in ((3, 8), (8, 8), (8, 4)):
        y = g.op("Foo", [g.conv(y, c_in, c_out)], domain="com.example")
    return g.output(y, [1, 4, 8, 8]).model({"com.example": 1})


def test_empty_graph(tmp_path):
    graph = helper.make_graph([], "empty", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "empty.onnx")
    with pytest.raises(OnnxPruneError, match="no nodes"):
        load_model(path)
    assert_bad_input(cli("analyze", path), "the graph has no nodes")
    assert_bad_input(cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.5"), "the graph has no nodes")


@pytest.mark.parametrize("content", [b"", b"\0" * 64, b"\x08\x07"], ids=["empty-file", "zeros", "ir-version-only"])
def test_not_a_model(content, tmp_path):
    """Bytes that parse as a protobuf but are no model (test_cli covers prose and truncation)."""
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxPruneError):
        load_model(path)
    assert_bad_input(cli("analyze", path), str(path))
    assert_bad_input(cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.5"), str(path))


def test_model_failing_the_checker(tmp_path):
    model = resnet_like()
    model.graph.node[0].input[1] = "no_such_weight"
    path = save(model, tmp_path / "bad.onnx")
    assert_bad_input(cli("analyze", path), "fails onnx.checker")
    with pytest.raises(OnnxPruneError, match="fails onnx.checker"):
        load_model(path)


def test_model_without_float_weights(tmp_path):
    """Nothing to prune: analysis reports no groups; prune refuses with a clear error rather than
    writing an unchanged copy labelled as pruned."""
    path = save(no_weights_model(), tmp_path / "relu_add.onnx")
    analysis = load_and_analyze(path)
    assert analysis.groups == []
    ok(cli("analyze", path))
    with pytest.raises(OnnxPruneError, match="nothing to prune: the model has no channel groups"):
        prune_file(path, tmp_path / "o.onnx", PruneOptions(ratio=0.5))
    assert_bad_input(cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.5"), "nothing to prune")
    assert_bad_input(cli("prune", path, "-o", tmp_path / "o.onnx", "--target-macs", "0.5"), "nothing to prune")
    assert not (tmp_path / "o.onnx").exists()


def test_custom_domain_op_everywhere(tmp_path):
    """Analysis works and blocks every group with its reason; prune refuses (nothing to prune)
    with a clear error. (onnxruntime could not run the custom op for the smoke run anyway.)"""
    path = save(custom_everywhere_model(), tmp_path / "foo.onnx")
    analysis = load_and_analyze(path)
    assert len(analysis.groups) == 3 and not analysis.prunable_groups
    for group in analysis.groups:
        assert any("com.example::Foo has no pruning rule" in reason for reason in group.blocked), group.blocked
    report = ok(cli("analyze", path))
    assert "0 prunable, 3 blocked" in " ".join(report.stdout.split())
    with pytest.raises(OnnxPruneError, match="nothing to prune: all 3 channel groups are blocked"):
        prune_file(path, tmp_path / "o.onnx", PruneOptions(ratio=0.5))
    assert_bad_input(cli("prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.5"), "nothing to prune",
                     "com.example::Foo")
    assert not (tmp_path / "o.onnx").exists()


def if_model() -> onnx.ModelProto:
    """conv1 → relu → conv2 → If(flag) whose branches read conv2's output → conv3 → output.

    conv2's channels are read inside the subgraphs: blocked. conv1's group is prunable."""
    g = G()
    x = g.input([1, 3, 8, 8])
    flag = g.input([], name="flag", elem=TensorProto.BOOL)
    c2 = g.conv(g.op("Relu", [g.conv(x, 3, 8, name="conv1")]), 8, 8, name="conv2")
    branch_out = helper.make_tensor_value_info("branch", TensorProto.FLOAT, [1, 8, 8, 8])
    then_g = helper.make_graph([helper.make_node("Relu", [c2], ["branch"], name="then_relu")], "then", [], [branch_out])
    else_g = helper.make_graph([helper.make_node("Neg", [c2], ["branch"], name="else_neg")], "else", [], [branch_out])
    y = g.op("If", [flag], name="if", then_branch=then_g, else_branch=else_g)
    return g.output(g.conv(y, 8, 4, name="conv3"), [1, 4, 8, 8]).model()


def test_if_node(tmp_path):
    path = save(if_model(), tmp_path / "if.onnx")
    analysis = load_and_analyze(path)
    by_anchor = {g.anchor: g for g in analysis.groups}
    assert by_anchor["conv1"].prunable
    assert any("subgraph of node if" in reason for reason in by_anchor["conv2"].blocked)
    out = tmp_path / "p.onnx"
    result = prune_file(path, out, PruneOptions(ratio=0.5))
    assert result.groups_pruned == 1
    pruned = onnx.load(str(out))
    assert conv_widths(pruned) == {"conv1": (4, 3), "conv2": (8, 4), "conv3": (4, 8)}
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for flag in (True, False):
        (y,) = run(out, {"x": x, "flag": np.array(flag)})
        assert y.shape == (1, 4, 8, 8)


# ================================================================ 4. SIGINT
# Signals at chosen moments of a real run (sent by the child to itself, so that no timing is
# involved) are in tests/test_hostile.py; here, interrupts raised inside the save.


def test_sigint_during_save_of_inline_model(tmp_path, monkeypatch):
    """KeyboardInterrupt in the middle of writing leaves neither the output nor a temporary file."""

    path = save(resnet_like(), tmp_path / "m.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    result = cli("prune", path, "-o", out_dir / "p.onnx", "--ratio", "0.5")
    assert result.exit_code == 130 and "interrupted; nothing was written" in result.stderr
    assert files_of(out_dir) == []
    monkeypatch.setattr(prune_api, "PROTOBUF_LIMIT", 1000)  # the external-data path
    result = cli("prune", path, "-o", out_dir / "p.onnx", "--ratio", "0.5")
    assert result.exit_code == 130 and files_of(out_dir) == []


# ================================================================ 5. determinism
def concat_split_model() -> onnx.ModelProto:
    """Channels cut by Split, regrouped by Concat (in a new order), a residual Add, a Gemm head."""
    g = G()
    x = g.input([1, 3, 12, 12])
    c0 = g.op("Relu", [g.conv(x, 3, 16)])
    s1, s2 = g.op("Split", [c0, g.init("split_a", np.array([6, 10], np.int64))], n_out=2, axis=1)
    a, b = g.conv(s1, 6, 8), g.conv(s2, 10, 12)
    cat = g.op("Concat", [a, b, c0], axis=1)  # 8 + 12 + 16
    d = g.op("Relu", [g.conv(cat, 36, 24)])
    s3, s4, s5 = g.op("Split", [d, g.init("split_b", np.array([8, 8, 8], np.int64))], n_out=3, axis=1)
    cat2 = g.op("Concat", [s5, s3], axis=1)
    e = g.op("Add", [g.conv(cat2, 16, 16), g.conv(s4, 8, 16)])
    f = g.op("Concat", [g.op("Relu", [e]), s4], axis=1)
    y = g.op("Flatten", [g.op("GlobalAveragePool", [f])])
    return g.output(g.gemm(y, 24, 10, name="head"), [1, 10]).model()


@pytest.mark.parametrize("args", [
    ["--ratio", "0.4"],
    ["--global", "--ratio", "0.3"],
    ["--target-macs", "0.6"],
    ["--global", "--target-macs", "0.5", "--criterion", "fpgm"],
], ids=["ratio", "global", "target-macs", "global-target-macs"])
def test_concat_split_model_is_deterministic_across_processes(args, tmp_path):
    path = save(concat_split_model(), tmp_path / "cs.onnx")
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(path), "-o", str(out), *args,
                               "--plan", str(tmp_path / f"plan{seed}.json")],
                              capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert (tmp_path / "plan1.json").read_bytes() == (tmp_path / "plan2.json").read_bytes()
    pruned = onnx.load(str(tmp_path / "out1.onnx"))
    assert sum(int(np.prod(t.dims)) for t in pruned.graph.initializer) < sum(
        int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    (y,) = run(tmp_path / "out1.onnx", {"x": np.ones((1, 3, 12, 12), np.float32)})
    assert y.shape == (1, 10)


def test_concat_split_model_is_exact_on_dead_channels(tmp_path):
    check = self_check(load_and_analyze(save(concat_split_model(), tmp_path / "cs.onnx")))
    assert check.passed, check


# ================================================================ 6. consumers, mid-graph outputs, unused initializers
def fan_out_model() -> onnx.ModelProto:
    """conv1's output is read by convA, convB and a Relu (→ convC); their outputs are concatenated."""
    g = G()
    x = g.input([1, 3, 8, 8])
    c1 = g.conv(x, 3, 12, name="conv1")
    a, b = g.conv(c1, 12, 4, name="convA"), g.conv(c1, 12, 6, k=1, name="convB")
    c = g.conv(g.op("Relu", [c1]), 12, 5, name="convC")
    y = g.conv(g.op("Concat", [a, b, c], axis=1), 15, 4, name="out")
    return g.output(y, [1, 4, 8, 8]).model()


def test_tensor_read_by_several_consumers(tmp_path):
    path = save(fan_out_model(), tmp_path / "fan.onnx")
    analysis = load_and_analyze(path)
    conv1 = next(g for g in analysis.groups if g.anchor == "conv1")
    assert conv1.prunable and {"convA", "convB", "convC"} <= set(conv1.nodes)
    assert self_check(analysis).passed
    prune_file(path, tmp_path / "p.onnx", PruneOptions(ratio=0.5))
    widths = conv_widths(onnx.load(str(tmp_path / "p.onnx")))
    assert widths["conv1"][0] == 6
    assert widths["convA"][1] == widths["convB"][1] == widths["convC"][1] == 6
    run(tmp_path / "p.onnx", {"x": np.ones((1, 3, 8, 8), np.float32)})


def mid_output_model() -> onnx.ModelProto:
    """conv1 → relu1, which is also the graph output 'feat' → conv2 → relu → conv3 → 'y'."""
    g = G()
    x = g.input([1, 3, 8, 8])
    feat = g.op("Relu", [g.conv(x, 3, 8, name="conv1")], name="relu1")
    y = g.conv(g.op("Relu", [g.conv(feat, 8, 8, name="conv2")]), 8, 4, name="conv3")
    g.output(feat, [1, 8, 8, 8])
    return g.output(y, [1, 4, 8, 8]).model()


def test_mid_graph_output_blocks_only_its_group(tmp_path):
    path = save(mid_output_model(), tmp_path / "mid.onnx")
    analysis = load_and_analyze(path)
    by_anchor = {g.anchor: g for g in analysis.groups}
    assert any("graph output 'relu1_y'" in reason for reason in by_anchor["conv1"].blocked)
    assert by_anchor["conv2"].prunable
    out = tmp_path / "p.onnx"
    result = prune_file(path, out, PruneOptions(ratio=0.5))
    assert result.groups_pruned == 1
    assert conv_widths(onnx.load(str(out))) == {"conv1": (8, 3), "conv2": (4, 8), "conv3": (4, 4)}
    feat, y = run(out, {"x": np.ones((1, 3, 8, 8), np.float32)})
    assert feat.shape == (1, 8, 8, 8) and y.shape == (1, 4, 8, 8)
    np.testing.assert_array_equal(feat, run(path, {"x": np.ones((1, 3, 8, 8), np.float32)})[0])


def test_a_weight_that_only_fed_a_folded_transpose_is_not_written(tmp_path):
    """TorchScript without constant folding writes ``W -> Transpose -> MatMul``: normalization
    folds the Transpose, and the original W (read in the input, by the Transpose alone) must
    not stay in the file as dead weight. An initializer the input never read still stays."""
    from onnx import helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "fc.weight")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "head.weight")
    spare = numpy_helper.from_array(np.ones(3, np.float32), "spare")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["fc.weight"], ["wt"], perm=[1, 0], name="t"),
         helper.make_node("MatMul", ["x", "wt"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Transpose", ["head.weight"], ["w2t"], perm=[1, 0], name="t2"),
         helper.make_node("MatMul", ["r", "w2t"], ["y"], name="mm2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, w2, spare])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = prune_file(path, tmp_path / "p.onnx", PruneOptions(ratio=0.5))
    names = [t.name for t in onnx.load(str(tmp_path / "p.onnx")).graph.initializer]
    assert "fc.weight" not in names and "head.weight" not in names and "spare" in names
    assert result.after.params == 16 * 4 + 4 * 4  # the transposed weights, pruned to 4 hidden units


@pytest.mark.parametrize("external_data", [False, True], ids=["inline", "external"])
def test_unused_initializer_survives_unchanged(external_data, tmp_path):
    model = resnet_like()
    rng = np.random.default_rng(5)
    unused = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "unused_w")
    model.graph.initializer.insert(3, unused)  # among the weights, same shape as a prunable conv weight
    path = tmp_path / "m.onnx"
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    else:
        save(model, path)
    out = tmp_path / "p.onnx"
    prune_file(path, out, PruneOptions(ratio=0.5))
    after = weights(onnx.load(str(out)))
    if external_data:  # onnx.load marks tensors read from a data file with data_location=DEFAULT
        assert after["unused_w"].data_location == TensorProto.DEFAULT
        after["unused_w"].ClearField("data_location")
    assert after["unused_w"].SerializeToString() == unused.SerializeToString()
    names = [t.name for t in onnx.load(str(out)).graph.initializer]
    assert names[names.index("unused_w") - 1] == "conv1_b"  # kept in its place (the BN after it was folded)
    (y,) = run(out, {"x": np.ones((1, 3, 16, 16), np.float32)})
    assert y.shape == (1, 10)
