"""Fine-tuning any ONNX model without its source: the ONNX-to-torch bridge, the write-back by
initializer name, and ``onnxprune finetune`` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

torch = pytest.importorskip("torch")

from clirun import assert_bad_input, cli, ok, sha256

from models import ARCHITECTURES
from onnxprune.errors import OnnxPruneError
from onnxprune.torch.graph_module import GraphModule, write_back

DIGITS = Path(__file__).resolve().parent.parent / "models" / "digits"


FOLDED = ("resnet20", "mobilenetv2", "yolo_c2f")  # BN folded adds only Conv biases: a few suffice


@pytest.mark.parametrize(("name", "fold"), [(n, False) for n in sorted(ARCHITECTURES)] + [(n, True) for n in FOLDED])
def test_bridge_computes_what_onnxruntime_computes(name, fold, exported):
    path = exported(name, fold)
    model = onnx.load(path)
    x = np.random.default_rng(0).standard_normal((2, *ARCHITECTURES[name].input_shape[1:])).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        got = GraphModule(model)(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())), rtol=1e-4)


def test_bridge_trains_weights_but_not_statistics(exported):
    module = GraphModule(onnx.load(exported("resnet20", False)))
    names = set(module.parameter_names.values())
    assert "stem.conv.weight" in names and "stem.bn.weight" in names
    assert not any("running" in n for n in names)  # BN statistics are buffers


def test_bridge_refuses_an_unsupported_op():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(OnnxPruneError, match="does not support op Hardmax"):
        GraphModule(helper.make_model(graph))


def test_write_back_changes_values_only(exported):
    model = onnx.load(exported("mobilenetv2", True))
    module = GraphModule(model)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    out = write_back(module, model)
    assert [n.SerializeToString() for n in out.graph.node] == [n.SerializeToString() for n in model.graph.node]
    assert out.graph.input == model.graph.input and out.graph.output == model.graph.output
    assert out.metadata_props == model.metadata_props and out.opset_import == model.opset_import
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert list(before) == list(after)  # every name, in order
    for name, value in before.items():
        assert after[name].shape == value.shape and after[name].dtype == value.dtype
        if value.dtype.kind == "f":
            np.testing.assert_allclose(after[name], value + 1.0, rtol=1e-6)
        else:
            np.testing.assert_array_equal(after[name], value)


@pytest.fixture(scope="module")
def broken_digits(tmp_path_factory):
    """The shipped digits model pruned to 30% of its MACs with no recovery (near chance)."""
    folder = tmp_path_factory.mktemp("ft")
    ok(cli("prune", DIGITS / "resnet8_digits.onnx", "-o", folder / "p.onnx", "--target-macs", "0.3", "-q"))
    return folder / "p.onnx"


def test_finetune_by_distillation_alone_recovers_accuracy(broken_digits, tmp_path):
    # Training data without labels: distillation only.
    with np.load(DIGITS / "digits_calib.npz") as z:
        np.savez(tmp_path / "unlabeled.npz", input=z["input"])
    teacher = DIGITS / "resnet8_digits.onnx"
    before = sha256(broken_digits), sha256(teacher)
    result = ok(cli("finetune", broken_digits, "--teacher", teacher, "--data", tmp_path / "unlabeled.npz",
                    "-o", tmp_path / "tuned.onnx", "--epochs", "6", "--batch-size", "32", "--lr", "1e-3",
                    "--val", DIGITS / "digits_test.npz", "--json", tmp_path / "ft.json"))
    import json

    report = json.loads((tmp_path / "ft.json").read_text())
    assert report["labels"] is False and report["metric"] == "accuracy"
    assert report["val_before"] < 0.3 and report["val_after"] > report["val_before"] + 0.3
    assert report["best_epoch"] >= 1 and len(report["history"]) == 6
    assert "accuracy:" in result.stdout
    assert (sha256(broken_digits), sha256(teacher)) == before  # inputs untouched
    tuned, pruned = onnx.load(tmp_path / "tuned.onnx"), onnx.load(broken_digits)
    assert [n.name for n in tuned.graph.node] == [n.name for n in pruned.graph.node]
    assert [i.name for i in tuned.graph.initializer] == [i.name for i in pruned.graph.initializer]
    assert tuned.metadata_props == pruned.metadata_props
    with np.load(DIGITS / "digits_test.npz") as z:
        logits = ort.InferenceSession(str(tmp_path / "tuned.onnx")).run(None, {"input": z["input"]})[0]
        assert float((logits.argmax(1) == z["labels"]).mean()) == pytest.approx(report["val_after"], abs=1e-6)


def test_finetune_keeps_the_starting_weights_when_training_only_hurts(broken_digits, tmp_path):
    # An absurd learning rate makes every epoch worse: the kept model is the input, unchanged.
    with np.load(DIGITS / "digits_calib.npz") as z:
        np.savez(tmp_path / "small.npz", input=z["input"][:64], labels=z["labels"][:64])
    ok(cli("finetune", broken_digits, "--teacher", DIGITS / "resnet8_digits.onnx", "--data", tmp_path / "small.npz",
           "-o", tmp_path / "t.onnx", "--epochs", "1", "--lr", "1000", "--val", DIGITS / "digits_test.npz",
           "--json", tmp_path / "r.json"))
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    if report["best_epoch"] == 0:
        a, b = onnx.load(broken_digits), onnx.load(tmp_path / "t.onnx")
        for x, y in zip(a.graph.initializer, b.graph.initializer):
            np.testing.assert_array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y))
    assert report["val_after"] >= report["val_before"]


def test_finetune_bad_input_is_one_error_line(broken_digits, tmp_path):
    teacher = DIGITS / "resnet8_digits.onnx"
    data = DIGITS / "digits_calib.npz"
    assert_bad_input(cli("finetune", broken_digits, "--teacher", tmp_path / "none.onnx", "--data", data,
                         "-o", tmp_path / "o.onnx"), "none.onnx")
    assert_bad_input(cli("finetune", broken_digits, "--teacher", teacher, "--data", data, "-o", broken_digits),
                     "pruned model")
    np.savez(tmp_path / "wrong.npz", other=np.zeros((4, 1, 32, 32), np.float32))
    assert_bad_input(cli("finetune", broken_digits, "--teacher", teacher, "--data", tmp_path / "wrong.npz",
                         "-o", tmp_path / "o.onnx"), "input")
    assert not (tmp_path / "o.onnx").exists()


def test_python_api_finetune_writes_the_same_graph(broken_digits, tmp_path):
    import onnxprune

    result = onnxprune.finetune(broken_digits, tmp_path / "api.onnx", teacher=DIGITS / "resnet8_digits.onnx",
                                data=DIGITS / "digits_calib.npz", epochs=1, batch_size=128)
    assert result.labels and len(result.history) == 1 and result.metric is None
    assert [n.name for n in onnx.load(tmp_path / "api.onnx").graph.node] == [n.name for n in onnx.load(broken_digits).graph.node]
    with pytest.raises(OnnxPruneError):
        onnxprune.finetune(broken_digits, broken_digits, teacher=DIGITS / "resnet8_digits.onnx",
                           data=DIGITS / "digits_calib.npz", epochs=1)
