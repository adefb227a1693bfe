"""``onnxprune export-triton``: the model repository entry, its ``config.pbtxt`` against Triton's
``ModelConfig`` protobuf, the batch axis, the model card, and bad input.

Oracles: the expected dims are written out by hand from the graphs' declared shapes and
Triton's rules (model configuration guide: with ``max_batch_size > 0`` the full shape is
``[-1] + dims``; dynamic dims are ``-1``; rank 0 needs ``dims: [1]`` + ``reshape: {shape: []}``);
the written text is parsed here again with ``google.protobuf.text_format`` into
``tritonclient.grpc.model_config_pb2.ModelConfig``. Bad input must exit 2 with one ``error:``
line and leave the folder it was pointed at exactly as it was (no temporary left either).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from clirun import assert_bad_input, cli, ok, sha256
from graphs import CASES, Builder, conv_bn_relu_conv
from onnx import TensorProto, helper

from onnxprune.deploy.triton import (
    DEFAULT_MAX_BATCH_SIZE,
    build_config,
    default_name,
    export_triton,
    validate_config,
)
from onnxprune.errors import OnnxPruneError

REPO_ROOT = Path(__file__).resolve().parent.parent
DIGITS = REPO_ROOT / "models" / "digits" / "resnet8_digits.onnx"
DATA = REPO_ROOT / "models" / "digits" / "digits_test.npz"
CALIB = REPO_ROOT / "models" / "digits" / "digits_calib.npz"

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


# ---------------------------------------------------------------- helpers
def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def identity_model(inputs, outputs=None, opset: int = 17, nodes=None) -> onnx.ModelProto:
    """Each input passed through an Identity to an output of the same type (``<name>_out``)."""
    outputs = outputs or [helper.make_tensor_value_info(f"{vi.name}_out", vi.type.tensor_type.elem_type,
                                                        _dims(vi)) for vi in inputs]
    nodes = nodes or [helper.make_node("Identity", [i.name], [o.name]) for i, o in zip(inputs, outputs)]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def tensor(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def io(config) -> dict:
    """{name: (data type, dims, reshape)} of a parsed ModelConfig."""
    name = model_config_pb2.DataType.Name
    return {t.name: (name(t.data_type), list(t.dims), list(t.reshape.shape) if t.HasField("reshape") else None)
            for t in list(config.input) + list(config.output)}


def tree(folder: Path) -> dict:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> dict:
    """The digits ResNet-8 pruned by half through the API and reconstructed on its calibration
    split, with its plan, verify and bench reports."""
    from onnxprune import api

    folder = tmp_path_factory.mktemp("pruned")
    paths = {"model": folder / "pruned.onnx", "plan": folder / "plan.json", "verify": folder / "verify.json",
             "bench": folder / "bench.json"}
    result = api.prune(DIGITS, paths["model"], ratio=0.5, plan_out=paths["plan"], recover="reconstruct", data=CALIB)
    ok(cli("verify", DIGITS, paths["model"], "--data", DATA, "--json", paths["verify"], "-q"))
    ok(cli("bench", DIGITS, paths["model"], "--runs", 2, "--warmup", 0, "--json", paths["bench"], "-q"))
    return {**paths, "result": result}


# ---------------------------------------------------------------- configurations of real models
def test_digits_symbolic_batch(tmp_path):
    """[batch, 1, 32, 32] → [batch, 10]: batching on, the batch axis left out of dims."""
    result = ok(cli("export-triton", DIGITS, "--repo", tmp_path / "repo", "--json", tmp_path / "e.json"))
    data = json.loads((tmp_path / "e.json").read_text())
    folder = tmp_path / "repo" / "resnet8_digits"
    assert data["model_name"] == "resnet8_digits" and data["model_dir"] == str(folder)
    assert sorted(tree(folder)) == ["1", "1/model.onnx", "config.pbtxt", "model_card.json"]
    assert (folder / "1" / "model.onnx").read_bytes() == DIGITS.read_bytes()
    config = parse((folder / "config.pbtxt").read_text())
    assert config.name == "resnet8_digits" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE and not config.HasField("dynamic_batching")
    assert io(config) == {"input": ("TYPE_FP32", [1, 32, 32], None), "logits": ("TYPE_FP32", [10], None)}
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == \
        [(1, "KIND_CPU")]
    assert data["validated"] is True and "ModelConfig" in data["validation"]
    assert data["config"] == (folder / "config.pbtxt").read_text()
    assert "config validated" in result.stdout and "TYPE_FP32" in result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_catalogue_models(case, tmp_path):
    """Every small test architecture: with its fixed batch of 1 the dims are the declared full
    shapes and max_batch_size is 0; with the first dim of every input and output made dynamic
    ("N") Triton batches and the dims are the rest of each shape."""
    model = CASES[case]()
    declared = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                for vi in list(model.graph.input) + list(model.graph.output)}
    fixed = export_triton(save(model, tmp_path / "fixed.onnx"), tmp_path / "repo")
    config = parse(fixed.config_path.read_text())
    assert config.max_batch_size == 0 and fixed.validated
    assert io(config) == {name: ("TYPE_FP32", dims, None) for name, dims in declared.items()}
    assert fixed.card["cost"]["macs"] > 0 and fixed.card["cost"]["params"] > 0
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    batched = export_triton(save(model, tmp_path / "batched.onnx"), tmp_path / "repo")
    config = parse(batched.config_path.read_text())
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert io(config) == {name: ("TYPE_FP32", dims[1:], None) for name, dims in declared.items()}
    assert batched.card["cost"] == fixed.card["cost"]  # counted at batch 1 both times


def test_fixed_batch_one_gets_max_batch_size_zero(tmp_path):
    model = save(conv_bn_relu_conv(), tmp_path / "fixed.onnx")
    result = ok(cli("export-triton", model, "--repo", tmp_path / "repo", "--instances", 3, "--kind", "gpu"))
    config = parse((tmp_path / "repo" / "fixed" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0
    assert io(config) == {"x": ("TYPE_FP32", [1, 3, 8, 8], None), "conv1_y": ("TYPE_FP32", [1, 4, 8, 8], None)}
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    assert "max_batch_size 0" in result.stdout and "fixed first dim of 1" in result.stdout


def test_fixed_batch_refuses_a_max_batch_size(tmp_path):
    model = save(conv_bn_relu_conv(), tmp_path / "fixed.onnx")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", model, "--repo", tmp_path / "repo", "--max-batch-size", 4),
                     "--max-batch-size 4 needs a batch axis", "input 'x' has a fixed first dim of 1", "--max-batch-size 0")
    assert tree(tmp_path) == before


def test_max_batch_size_zero_keeps_full_dims_with_minus_one(tmp_path):
    ok(cli("export-triton", DIGITS, "--repo", tmp_path, "--name", "full", "--max-batch-size", 0))
    config = parse((tmp_path / "full" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0
    assert io(config) == {"input": ("TYPE_FP32", [-1, 1, 32, 32], None), "logits": ("TYPE_FP32", [-1, 10], None)}


def test_other_symbolic_dims_become_minus_one(tmp_path):
    g = Builder(17)
    y = g.conv(g.relu(g.conv(g.input(["N", 3, "H", "W"]), 4)), 2)
    model = save(g.output(y).model(), tmp_path / "any_size.onnx")
    ok(cli("export-triton", model, "--repo", tmp_path / "repo", "--dynamic-batching", "--max-batch-size", 16,
           "--input-shape", "x:1x3x16x16", "--json", tmp_path / "e.json"))
    config = parse((tmp_path / "repo" / "any_size" / "config.pbtxt").read_text())
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert io(config)["x"] == ("TYPE_FP32", [3, -1, -1], None)
    assert io(config)[y][1][0] == 2 and all(d == -1 for d in io(config)[y][1][1:])
    card = json.loads((tmp_path / "repo" / "any_size" / "model_card.json").read_text())
    # conv0: 16*16 pixels * 4 out * 3*3*3; conv1: 16*16 * 2 * 4*3*3 (both 3x3, pad 1)
    assert card["cost"]["macs"] == 256 * 4 * 27 + 256 * 2 * 36
    assert card["cost"]["input_shapes"] == {"x": [1, 3, 16, 16]}


def test_dynamic_spatial_dims_without_input_shape_leave_the_cost_null(tmp_path):
    g = Builder(17)
    model = save(g.output(g.conv(g.input(["N", 3, "H", "W"]), 4)).model(), tmp_path / "m.onnx")
    export = export_triton(model, tmp_path / "repo")
    assert export.card["cost"]["macs"] is None
    assert export.card["cost"]["params"] == 4 * 3 * 3 * 3 + 4  # params need no shapes
    assert export.card["cost"]["note"].startswith("MACs not counted: model input 'x'")
    assert "pass input_shapes x:1x3x<d2>x<d3>" in export.card["cost"]["note"]  # the API's spelling here


def test_card_notes_spell_the_cli_options(tmp_path):
    g = Builder(17)
    model = save(g.output(g.conv(g.input(["N", 3, "H", "W"]), 4)).model(), tmp_path / "m.onnx")
    result = ok(cli("export-triton", model, "--repo", tmp_path / "repo"))
    card = json.loads((tmp_path / "repo" / "m" / "model_card.json").read_text())
    assert "pass --input-shape x:1x3x<d2>x<d3>" in card["cost"]["note"]
    assert "input_shapes" not in result.stdout + result.stderr


def test_batch_only_and_scalar_tensors_use_reshape(tmp_path):
    """[N] with batching, and a scalar without: dims [1] with an empty reshape (rank >= 1 rule)."""
    batch_only = identity_model([tensor("scores", ["N"])])
    assert io(parse(build_config(batch_only, "b").text())) == {
        "scores": ("TYPE_FP32", [1], []), "scores_out": ("TYPE_FP32", [1], [])}
    scalar = identity_model([tensor("t", [])])
    config = build_config(scalar, "s")
    assert config.max_batch_size == 0 and "is a scalar" in config.notes[0]
    assert io(parse(config.text())) == {"t": ("TYPE_FP32", [1], []), "t_out": ("TYPE_FP32", [1], [])}


def test_data_types_follow_tritons_table():
    types = {TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16", TensorProto.DOUBLE: "TYPE_FP64",
             TensorProto.INT64: "TYPE_INT64", TensorProto.INT32: "TYPE_INT32", TensorProto.INT8: "TYPE_INT8",
             TensorProto.UINT8: "TYPE_UINT8", TensorProto.BOOL: "TYPE_BOOL", TensorProto.STRING: "TYPE_STRING"}
    model = identity_model([tensor(f"in{k}", ["N", 2], elem) for k, elem in enumerate(types)])
    config = build_config(model, "types")
    assert [t.data_type for t in config.inputs] == list(types.values())
    assert config.inputs[-1].datatype == "BYTES" and config.inputs[0].datatype == "FP32"
    assert validate_config(config.text(), config)[0]


def test_inconsistent_batch_dims(tmp_path):
    two = identity_model([tensor("a", ["N", 4]), tensor("b", ["M", 4])])
    config = build_config(two, "two")  # automatic: no batching, and the note says why
    assert config.max_batch_size == 0 and "different symbols" in config.notes[0]
    with pytest.raises(OnnxPruneError, match=r"max_batch_size 2 needs a batch axis.*different symbols"):
        build_config(two, "two", max_batch_size=2)
    # an output whose first axis is the inputs' second one is not batched along the batch
    swapped = identity_model([tensor("x", ["N", "T"])], [tensor("y", ["T", "N"])],
                             nodes=[helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])])
    with pytest.raises(OnnxPruneError, match="output 'y' has the first dim 'T', which the inputs use for another"):
        build_config(swapped, "swapped", max_batch_size=4)
    path = save(two, tmp_path / "two.onnx")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", path, "--repo", tmp_path, "--max-batch-size", 8), "different symbols")
    assert tree(tmp_path) == before


def test_dynamic_batching_needs_a_batch(tmp_path):
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--max-batch-size", 0, "--dynamic-batching"),
                     "--dynamic-batching needs --max-batch-size > 0")
    model = save(conv_bn_relu_conv(), tmp_path / "fixed.onnx")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", model, "--repo", tmp_path, "--dynamic-batching"),
                     "--dynamic-batching needs", "fixed first dim")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- validation
def test_validation_catches_a_config_that_says_something_else():
    model = onnx.load(str(DIGITS))
    config = build_config(model, "digits")
    assert validate_config(config.text(), config)[0]
    with pytest.raises(OnnxPruneError, match="parses with inputs"):
        validate_config(config.text().replace("dims: [ 1, 32, 32 ]", "dims: [ 1, 32, 33 ]"), config)
    with pytest.raises(OnnxPruneError, match="does not parse as Triton's ModelConfig"):
        validate_config(config.text().replace("max_batch_size", "max_batch"), config)


def test_names_are_escaped_in_the_text():
    model = identity_model([tensor('in "quoted" \\ é', ["N", 2])])
    config = build_config(model, "escaped")
    assert io(parse(config.text()))['in "quoted" \\ é'] == ("TYPE_FP32", [2], None)
    assert validate_config(config.text(), config)[0]


def test_without_tritonclient_the_config_is_written_unvalidated(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    result = cli("export-triton", DIGITS, "--repo", tmp_path, "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["validated"] is False and "tritonclient is not installed" in data["validation"]
    assert "warning: config not validated" in result.stderr
    assert (tmp_path / "resnet8_digits" / "config.pbtxt").is_file()
    card = json.loads((tmp_path / "resnet8_digits" / "model_card.json").read_text())
    assert card["serving"]["validated"] is False


# ---------------------------------------------------------------- the card
def test_card_of_a_pruned_model(pruned, tmp_path):
    result = ok(cli("export-triton", pruned["model"], "--repo", tmp_path, "--name", "digits_half",
                    "--plan", pruned["plan"], "--accuracy-from", pruned["verify"], "--latency-from", pruned["bench"]))
    card = json.loads((tmp_path / "digits_half" / "model_card.json").read_text())
    before, after = pruned["result"].before, pruned["result"].after
    p = card["pruning"]
    assert p["by_onnxprune"] and p["amount"] == "ratio=0.5" and p["criterion"]
    assert (p["macs_before"], p["macs_after"], p["params_before"], p["params_after"]) == \
        (before.macs, after.macs, before.params, after.params)
    assert p["macs_kept"] == pytest.approx(after.macs / before.macs, abs=1e-6)
    # counted again now, at batch 1: the same as what prune recorded
    assert (card["cost"]["macs"], card["cost"]["params"]) == (after.macs, after.params)
    assert card["plan"]["format"] == "onnxprune.plan/1"
    assert card["plan"]["source"] == {"file": "plan.json", "sha256": sha256(pruned["plan"])}
    assert (p["schedule"], p["recovery"]) == ("uniform", "reconstruct")
    assert p["calibration"] == {"file": CALIB.name, "sha256": sha256(CALIB), "samples": 500, "fit": 400, "check": 100}
    assert card["accuracy"]["original"] == {"file": DIGITS.name, "sha256": sha256(DIGITS)}
    assert card["accuracy"]["data"] == {"npz": {"file": DATA.name, "sha256": sha256(DATA)}}
    text = json.dumps(card)
    assert str(tmp_path) not in text and str(DIGITS.parent) not in text and str(pruned["plan"].parent) not in text
    verify = json.loads(pruned["verify"].read_text())
    assert card["accuracy"]["outputs"][0]["accuracy_pruned"] == verify["outputs"][0]["accuracy_pruned"]
    assert card["accuracy"]["samples"] == 540
    bench = json.loads(pruned["bench"].read_text())
    assert card["latency"]["median_ms"] == bench["models"][1]["median_ms"] > 0
    assert card["latency"]["baseline"]["model"] == {"file": DIGITS.name, "sha256": sha256(DIGITS)}
    assert card["latency"]["speedup_vs_baseline"] == bench["models"][1]["speedup_vs_first"]
    assert card["metadata"]["source"].startswith("tools/train_digits.py")  # the model's own metadata, kept
    assert card["model"]["sha256"] and card["model"]["bytes"] == pruned["model"].stat().st_size
    assert card["serving"]["max_batch_size"] == DEFAULT_MAX_BATCH_SIZE and card["serving"]["validated"]
    assert "pruned by onnxprune (ratio=0.5" in result.stdout


def test_card_of_an_unpruned_model_says_unknown(tmp_path):
    export = export_triton(DIGITS, tmp_path)
    card = export.card
    assert card["pruning"]["by_onnxprune"] is False
    assert all(card["pruning"][k] is None for k in ("criterion", "amount", "macs_before", "macs_after", "macs_kept"))
    assert card["accuracy"] is None and card["latency"] is None and card["plan"] is None
    assert card["cost"]["macs"] > 0 and card["cost"]["input_shapes"] == {"input": [1, 1, 32, 32]}


def test_reports_of_another_model_are_refused(pruned, tmp_path):
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--accuracy-from", pruned["verify"]),
                     "--accuracy-from", f"verifies {pruned['model']}")
    assert_bad_input(cli("export-triton", pruned["plan"], "--repo", tmp_path), "not a valid ONNX file")
    (tmp_path / "bench.json").write_text(json.dumps({"models": [{"name": "other.onnx", "median_ms": 1.0}]}))
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--latency-from", tmp_path / "bench.json"),
                     "--latency-from", "times other.onnx, not")
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--latency-from", pruned["plan"]),
                     "is not the JSON of onnxprune bench")
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--plan", pruned["verify"]),
                     "--plan", "not an onnxprune plan")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- the repository folder
def test_external_data_is_copied(tmp_path):
    model = onnx.load(str(DIGITS))
    source = tmp_path / "src"
    (source / "weights").mkdir(parents=True)
    onnx.save_model(model, str(source / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights/ext.bin", size_threshold=0)
    export = export_triton(source / "ext.onnx", tmp_path / "repo")
    version = tmp_path / "repo" / "ext" / "1"
    assert export.external_data == ["weights/ext.bin"]
    assert (version / "weights" / "ext.bin").read_bytes() == (source / "weights" / "ext.bin").read_bytes()
    from onnxprune.runtime.session import make_session

    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    expected = make_session(DIGITS).run(None, {"input": x})[0]
    np.testing.assert_array_equal(make_session(version / "model.onnx").run(None, {"input": x})[0], expected)


def test_new_repository_and_empty_model_folder(tmp_path):
    export_triton(DIGITS, tmp_path / "new")  # the repository itself is created
    assert (tmp_path / "new" / "resnet8_digits" / "1" / "model.onnx").is_file()
    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)  # empty folders are no model: replaced
    export_triton(DIGITS, tmp_path / "repo", name="m")
    assert sorted(tree(tmp_path / "repo")) == ["m", "m/1", "m/1/model.onnx", "m/config.pbtxt", "m/model_card.json"]
    assert not [p for p in tmp_path.rglob(".onnxprune-*")]


def test_default_name_is_the_stem_made_safe(tmp_path):
    assert default_name("dir/my model.v2.onnx") == "my_model.v2"
    assert default_name(".hidden.onnx") == "hidden" and default_name("---.onnx") == "model"
    assert default_name("a..b.onnx") == "a.b" and default_name("x" * 300 + ".onnx") == "x" * 100
    model = save(onnx.load(str(DIGITS)), tmp_path / "res net+8.onnx")
    ok(cli("export-triton", model, "--repo", tmp_path / "repo"))
    assert (tmp_path / "repo" / "res_net_8" / "config.pbtxt").read_text().count('name: "res_net_8"') == 1


def test_json_to_stdout_and_quiet(tmp_path):
    result = ok(cli("export-triton", DIGITS, "--repo", tmp_path, "--json", "-", "-q"))
    data = json.loads(result.stdout)
    assert result.stderr == ""
    assert set(data) >= {"repository", "model_name", "config", "config_path", "card_path", "inputs", "outputs",
                         "validated", "max_batch_size"}
    assert data["inputs"] == [{"name": "input", "data_type": "TYPE_FP32", "datatype": "FP32", "dims": [1, 32, 32],
                               "reshape": None, "model_shape": ["batch", 1, 32, 32]}]
    assert data["card_path"] == str(tmp_path / "resnet8_digits" / "model_card.json")
    assert "--max-batch-size sets another" in data["notes"][0]


def test_python_api(tmp_path):
    from onnxprune import api

    export = api.export_triton(DIGITS, tmp_path, name="api", max_batch_size=2, kind="gpu", instances=2,
                               input_shapes="input:3x1x32x32")
    assert export.config.max_batch_size == 2 and export.config.kind == "KIND_GPU"
    assert export.card["cost"]["input_shapes"] == {"input": [3, 1, 32, 32]}
    assert export.to_dict()["model_path"] == str(tmp_path / "api" / "1" / "model.onnx")
    with pytest.raises(OnnxPruneError, match="^max_batch_size 2 needs a batch axis"):
        api.export_triton(save(conv_bn_relu_conv(), tmp_path / "f.onnx"), tmp_path, max_batch_size=2)


# ---------------------------------------------------------------- bad input: exit 2, nothing written
def _bfloat16_model():
    inputs = [tensor("x", ["N", 4], TensorProto.BFLOAT16)]
    outputs = [tensor("y", ["N", 4])]
    return identity_model(inputs, outputs, nodes=[helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)])


def _sequence_model():
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, ["N", 4])
    return identity_model([seq], [tensor("y", [None, 4])],
                          nodes=[helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)])


def _complex_output_model():
    return identity_model([tensor("c", ["N", 2], TensorProto.COMPLEX64)])


def _control_char_name_model():
    return identity_model([tensor("x\n", ["N", 2])])


@pytest.mark.parametrize("build, needles", [
    (_bfloat16_model, ["input 'x' has element type BFLOAT16", "does not take"]),
    (_complex_output_model, ["input 'c' has element type COMPLEX64"]),
    (_sequence_model, ["input 's' is a sequence, not a tensor"]),
    (_control_char_name_model, ["control character"]),
])
def test_unsupported_io(build, needles, tmp_path):
    model = save(build(), tmp_path / "m.onnx")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", model, "--repo", tmp_path), *needles)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name, needle", [
    ("a/b", "contains a path separator"),
    ("..", "contains '..'"),
    ("x..y", "contains '..'"),
    (".hidden", "not a plain folder name"),
    ("sp ace", "not a plain folder name"),
    ("", "--name is empty"),
])
def test_bad_names(name, needle, tmp_path):
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--name", name), needle)
    assert tree(tmp_path) == before


def test_existing_version_folder_is_never_overwritten(tmp_path):
    (tmp_path / "repo" / "resnet8_digits" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "resnet8_digits" / "1" / "model.onnx").write_bytes(b"older model")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path / "repo", "--json", tmp_path / "e.json"),
                     "version folder", "resnet8_digits/1 is not empty")
    assert tree(tmp_path) == before
    (tmp_path / "repo" / "other").mkdir()
    (tmp_path / "repo" / "other" / "config.pbtxt").write_text("name: 'other'")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path / "repo", "--name", "other"),
                     "already holds config.pbtxt")
    assert tree(tmp_path) == before


def test_bad_repository_and_model_paths(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    before = tree(tmp_path)
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path / "file"), "is a file, not a folder")
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path / "no" / "repo"), "does not exist")
    assert_bad_input(cli("export-triton", tmp_path / "missing.onnx", "--repo", tmp_path), "no such file")
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--json", DIGITS), "refusing to overwrite")
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--input-shape", "nope:1x2"), "nope")
    assert_bad_input(cli("export-triton", DIGITS, "--repo", tmp_path, "--instances", 0), "--instances")
    assert tree(tmp_path) == before
