"""Tests for onnxprune.runtime.evaluate: sessions, data loading, running, comparing, verify."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.runtime import evaluate
from onnxprune.errors import OnnxPruneError
from onnxprune.runtime.evaluate import (
    Dataset,
    InputSpec,
    compare_outputs,
    input_specs,
    load_data,
    make_session,
    parse_input_shapes,
    random_data,
    run_model,
    verify,
)

F32 = np.dtype(np.float32)


# --------------------------------------------------------------------------- model builders


def _model(nodes, inputs, outputs, inits, name="g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def classifier(w: np.ndarray, b: np.ndarray, batch="N") -> onnx.ModelProto:
    """y = x @ w + b, x [batch, 4] -> y [batch, 3]."""
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, w.shape[1]])],
        [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")],
    )


def conv_model(hw=(8, 8)) -> onnx.ModelProto:
    """Conv 3->2 channels, 3x3, no padding: x [N, 3, H, W] -> y [N, 2, H-2, W-2]."""
    w = np.random.default_rng(1).standard_normal((2, 3, 3, 3)).astype(np.float32)
    return _model(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H2", "W2"])],
        [numpy_helper.from_array(w, "w")],
    )


def two_input_model() -> onnx.ModelProto:
    """z = a + b, both [N, 2]."""
    return _model(
        [helper.make_node("Add", ["a", "b"], ["z"])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2])],
        [],
    )


# Identity on the first 3 features; the swapped copy exchanges classes 0 and 1.
W_ID = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
W_SWAP = W_ID[:, [1, 0, 2]]
ZERO_B = np.zeros(3, dtype=np.float32)
X_HAND = np.array([[3, 1, 0, 0], [0, 0, 5, 0], [1, 2, 0, 0], [0, 1, 9, 0]], dtype=np.float32)
# original argmax: [0, 2, 1, 2]; swapped argmax: [1, 2, 0, 2]
LABELS_HAND = np.array([0, 2, 1, 1])


@pytest.fixture
def paths(tmp_path):
    """Write the standard test models to disk and return their paths."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    dw = (0.01 * rng.standard_normal((4, 3))).astype(np.float32)
    db = (0.01 * rng.standard_normal(3)).astype(np.float32)
    out = {
        "w": w, "b": b, "w2": w + dw, "b2": b + db,
        "orig": tmp_path / "orig.onnx", "pert": tmp_path / "pert.onnx",
        "id": tmp_path / "id.onnx", "swap": tmp_path / "swap.onnx",
        "conv": tmp_path / "conv.onnx",
    }
    onnx.save(classifier(w, b), out["orig"])
    onnx.save(classifier(w + dw, b + db), out["pert"])
    onnx.save(classifier(W_ID, ZERO_B), out["id"])
    onnx.save(classifier(W_SWAP, ZERO_B), out["swap"])
    onnx.save(conv_model(), out["conv"])
    return out


# --------------------------------------------------------------------------- sessions


def test_make_session_accepts_path_bytes_and_proto(paths):
    proto = onnx.load(paths["orig"])
    x = np.ones((2, 4), np.float32)
    expected = x @ paths["w"] + paths["b"]
    for source in (paths["orig"], str(paths["orig"]), proto.SerializeToString(), proto):
        (y,) = make_session(source).run(None, {"x": x})
        np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_make_session_missing_file(tmp_path):
    with pytest.raises(OnnxPruneError, match="no such file"):
        make_session(tmp_path / "nope.onnx")


def test_make_session_garbage_bytes_gives_one_line_error():
    with pytest.raises(OnnxPruneError, match="onnxruntime cannot load <bytes>") as info:
        make_session(b"not a model")
    assert "\n" not in str(info.value)


def test_make_session_invalid_graph(paths):
    model = onnx.load(paths["orig"])
    model.graph.node[0].input[1] = "does_not_exist"
    with pytest.raises(OnnxPruneError, match="onnxruntime cannot load") as info:
        make_session(model)
    assert "\n" not in str(info.value)


def test_make_session_rejects_bad_provider_and_threads(paths):
    with pytest.raises(OnnxPruneError, match="unknown provider 'tpu'"):
        make_session(paths["orig"], provider="tpu")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(OnnxPruneError, match="threads must be a positive integer"):
            make_session(paths["orig"], threads=bad)


def test_make_session_threads_and_spinning_are_set(paths):
    session = make_session(paths["orig"], threads=1, allow_spinning=False)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_cuda_not_installed(paths, monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(OnnxPruneError, match=r"CUDA execution provider is not available") as info:
        make_session(paths["orig"], provider="cuda")
    assert "CPUExecutionProvider" in str(info.value)
    assert "onnxruntime-gpu" in str(info.value)


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_cuda_listed_but_fell_back_to_cpu(paths, monkeypatch):
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a real CUDA provider is present; the fallback branch cannot be forced")
    real = onnxruntime.get_available_providers()
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", *real]
    )
    with pytest.raises(OnnxPruneError, match="fell back to CPUExecutionProvider"):
        make_session(paths["orig"], provider="CUDA")


def test_cuda_session_on_real_gpu(paths):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("CUDAExecutionProvider is not available on this machine")
    session = make_session(paths["orig"], provider="cuda")
    assert session.get_providers()[0] == "CUDAExecutionProvider"


def test_input_specs(paths):
    assert input_specs(make_session(paths["conv"])) == [InputSpec("x", F32, (None, 3, 8, 8))]
    assert input_specs(make_session(classifier(W_ID, ZERO_B, batch=1))) == [InputSpec("x", F32, (1, 4))]


# --------------------------------------------------------------------------- shapes option


def test_parse_input_shapes_good():
    assert parse_input_shapes(["x:1x3x224x224", " y:5 ", "input:0:2x3"]) == {
        "x": (1, 3, 224, 224),
        "y": (5,),
        "input:0": (2, 3),
    }
    assert parse_input_shapes("x:2x2") == {"x": (2, 2)}
    assert parse_input_shapes([]) == {}


@pytest.mark.parametrize(
    "text", ["x", "x:", ":1x3", "x:1xx3", "x:1x3x", "x:ax3", "x:1.5", "x:-1x3", "x:+1", "x:1,3"]
)
def test_parse_input_shapes_malformed(text):
    with pytest.raises(OnnxPruneError, match="bad input_shapes"):
        parse_input_shapes([text])


def test_parse_input_shapes_zero_and_duplicate():
    with pytest.raises(OnnxPruneError, match="dims must be positive"):
        parse_input_shapes(["x:0x3"])
    with pytest.raises(OnnxPruneError, match="given twice for 'x'"):
        parse_input_shapes(["x:1x3", "x:2x3"])


# --------------------------------------------------------------------------- data

SPEC_CLS = [InputSpec("x", F32, (None, 4))]


def test_dataset_batches_and_len():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    data = Dataset({"x": x})
    assert len(data) == 5
    batches = list(data.batches(2))
    assert [b["x"].shape[0] for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    assert data.num_batches(2) == 3
    with pytest.raises(OnnxPruneError, match="batch_size must be an integer >= 1"):
        list(data.batches(0))


def test_dataset_validation():
    with pytest.raises(OnnxPruneError, match="no input arrays"):
        Dataset({})
    with pytest.raises(OnnxPruneError, match="inconsistent sample counts.*'a' has 3.*'b' has 2"):
        Dataset({"a": np.zeros((3, 2)), "b": np.zeros((2, 2))})
    with pytest.raises(OnnxPruneError, match="no samples"):
        Dataset({"a": np.zeros((0, 2))})
    with pytest.raises(OnnxPruneError, match="scalar"):
        Dataset({"a": np.float32(1)})


def test_load_data_roundtrip_casts_float64(tmp_path):
    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).standard_normal((6, 4))
    np.savez(path, x=x, labels=np.arange(6) % 3, extra=np.zeros(1))
    data = load_data(path, SPEC_CLS)
    assert data.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(data.inputs["x"], x.astype(np.float32))
    np.testing.assert_array_equal(data.labels, np.arange(6) % 3)
    assert set(data.inputs) == {"x"}


def test_load_data_float16_input(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((2, 4), np.float32))
    data = load_data(path, [InputSpec("x", np.dtype(np.float16), (None, 4))])
    assert data.inputs["x"].dtype == np.float16


def test_load_data_missing_file(tmp_path):
    with pytest.raises(OnnxPruneError, match="data file not found"):
        load_data(tmp_path / "missing.npz", SPEC_CLS)


def test_load_data_not_npz(tmp_path):
    text = tmp_path / "d.npz"
    text.write_text("hello, not numpy")
    with pytest.raises(OnnxPruneError, match="is not a NumPy .npz file"):
        load_data(text, SPEC_CLS)
    npy = tmp_path / "d.npy"
    np.save(npy, np.zeros((2, 4), np.float32))
    with pytest.raises(OnnxPruneError, match="single array, not an .npz"):
        load_data(npy, SPEC_CLS)
    with pytest.raises(OnnxPruneError, match="is a directory"):
        load_data(tmp_path, SPEC_CLS)


def test_load_data_missing_input_lists_file_contents(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.zeros((2, 4), np.float32), labels=np.zeros(2, int))
    with pytest.raises(OnnxPruneError, match=r"no array for model input 'x' \(file has: 'input', 'labels'\)"):
        load_data(path, SPEC_CLS)


def test_load_data_rank_and_dim_mismatch(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 4, 1), np.float32))
    with pytest.raises(OnnxPruneError, match=r"'x' has rank 3 .* expects rank 2 \[\?, 4\]"):
        load_data(path, SPEC_CLS)
    np.savez(path, x=np.zeros((2, 5), np.float32))
    with pytest.raises(OnnxPruneError, match="'x' has 5 on axis 1, model input expects 4"):
        load_data(path, SPEC_CLS)


def test_load_data_sample_axis_not_checked_against_static_batch(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((7, 4), np.float32))
    assert len(load_data(path, [InputSpec("x", F32, (1, 4))])) == 7


def test_load_data_inconsistent_counts(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((3, 2), np.float32), b=np.zeros((4, 2), np.float32))
    specs = input_specs(make_session(two_input_model()))
    with pytest.raises(OnnxPruneError, match="inconsistent sample counts"):
        load_data(path, specs)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.zeros(4, np.float32), "labels must be int class indices"),
        (np.array(["a", "b", "c", "d"]), "labels must be int class indices"),
        (np.zeros(3, int), "labels has 3 entries but the inputs have 4 samples"),
    ],
)
def test_load_data_bad_labels(tmp_path, labels, message):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 4), np.float32), labels=labels)
    with pytest.raises(OnnxPruneError, match=message):
        load_data(path, SPEC_CLS)


def test_sequence_labels_load_for_the_ctc_metric(tmp_path):
    """[N, L] token ids (CTC) load; a classifier metric refuses them when it reads them."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 4), np.float32), labels=np.array([[1, 2, -1]] * 4))
    assert load_data(path, SPEC_CLS).labels.shape == (4, 3)


def test_load_data_dtype_kind_mismatch(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 4), np.uint8))
    with pytest.raises(OnnxPruneError, match="dtype uint8, model input expects float32"):
        load_data(path, SPEC_CLS)
    np.savez(path, x=np.full((2, 4), 300, np.int64))
    with pytest.raises(OnnxPruneError, match="outside the range of int8"):
        load_data(path, [InputSpec("x", np.dtype(np.int8), (None, 4))])


def test_load_data_input_named_labels_is_an_input(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, labels=np.zeros((3, 4), np.float32))
    data = load_data(path, [InputSpec("labels", F32, (None, 4))])
    assert data.labels is None and data.inputs["labels"].shape == (3, 4)


def test_random_data_is_seeded_and_shaped(paths):
    specs = input_specs(make_session(paths["conv"]))
    a = random_data(specs, 5, seed=3)
    b = random_data(specs, 5, seed=3)
    c = random_data(specs, 5, seed=4)
    assert a.inputs["x"].shape == (5, 3, 8, 8) and a.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(a.inputs["x"], b.inputs["x"])
    assert not np.array_equal(a.inputs["x"], c.inputs["x"])
    expected = np.random.default_rng(3).standard_normal((5, 3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(a.inputs["x"], expected)
    assert a.labels is None


def test_random_data_int_inputs_are_zeros():
    data = random_data([InputSpec("ids", np.dtype(np.int64), (None, 7))], 2)
    assert data.inputs["ids"].dtype == np.int64
    np.testing.assert_array_equal(data.inputs["ids"], np.zeros((2, 7)))


def test_random_data_dynamic_dims_need_shapes(tmp_path):
    specs = input_specs(make_session(conv_model(hw=("H", "W"))))
    assert specs[0].shape == (None, 3, None, None)
    with pytest.raises(OnnxPruneError, match=r"dynamic dims on axes 2, 3; pass input_shapes x:1x3x<d2>x<d3>"):
        random_data(specs, 2)
    data = random_data(specs, 2, shapes={"x": (1, 3, 5, 6)})
    assert data.inputs["x"].shape == (2, 3, 5, 6)


def test_random_data_bad_shapes(paths):
    specs = input_specs(make_session(paths["conv"]))
    with pytest.raises(OnnxPruneError, match=r"unknown input\(s\) 'y' \(model inputs: 'x'\)"):
        random_data(specs, 1, shapes={"y": (1, 3, 8, 8)})
    with pytest.raises(OnnxPruneError, match="has rank 3"):
        random_data(specs, 1, shapes={"x": (1, 3, 8)})
    with pytest.raises(OnnxPruneError, match="axis 2 is fixed to 8 in the model, 9 given"):
        random_data(specs, 1, shapes={"x": (1, 3, 9, 8)})
    with pytest.raises(OnnxPruneError, match="number of samples"):
        random_data(specs, 0)


# --------------------------------------------------------------------------- running


def test_run_model_matches_numpy_for_any_batch_size(paths):
    session = make_session(paths["orig"])
    x = np.random.default_rng(5).standard_normal((7, 4)).astype(np.float32)
    expected = x @ paths["w"] + paths["b"]
    for batch_size in (1, 3, 7, 10):
        out = run_model(session, Dataset({"x": x}), batch_size=batch_size)
        assert list(out) == ["y"]
        np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-6)


def test_run_model_progress_bar_does_not_break(paths):
    out = run_model(make_session(paths["orig"]), Dataset({"x": np.ones((3, 4), np.float32)}), progress=True)
    assert out["y"].shape == (3, 3)


def test_run_model_errors(paths):
    session = make_session(paths["orig"])
    with pytest.raises(OnnxPruneError, match="no array for model input"):
        run_model(session, Dataset({"z": np.ones((2, 4), np.float32)}))
    with pytest.raises(OnnxPruneError, match="onnxruntime failed to run the model"):
        run_model(session, Dataset({"x": np.ones((2, 5), np.float32)}))



def test_a_fixed_batch_runs_in_runs_of_its_size(paths):
    """A model whose input fixes the batch (to 1 here, or 2) takes its samples that many at a
    time, whatever batch size is asked, the last run padded and the padding dropped."""
    x = np.random.default_rng(6).standard_normal((5, 4)).astype(np.float32)
    for batch in (1, 2):
        fixed = make_session(classifier(paths["w"], paths["b"], batch=batch))
        for batch_size in (1, 2, 4):
            out = run_model(fixed, Dataset({"x": x}), batch_size=batch_size)
            np.testing.assert_allclose(out["y"], x @ paths["w"] + paths["b"], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- comparing


def test_compare_identical():
    y = np.random.default_rng(0).standard_normal((6, 5))
    (c,) = compare_outputs({"y": y}, {"y": y.copy()})
    assert c.max_abs_error == 0.0 and c.mean_abs_error == 0.0
    assert c.cosine_similarity == pytest.approx(1.0, abs=1e-12)
    assert c.cosine_similarity_min == pytest.approx(1.0, abs=1e-12)
    assert c.top1_agreement == 1.0
    assert c.accuracy_original is None and c.accuracy_pruned is None


def test_compare_hand_computed_swap():
    ref = X_HAND[:, :3]
    cand = X_HAND[:, [1, 0, 2]]
    (c,) = compare_outputs({"y": ref}, {"y": cand}, labels=LABELS_HAND)
    assert c.max_abs_error == 2.0
    assert c.mean_abs_error == pytest.approx(8 / 12)
    assert c.top1_agreement == 0.5
    assert c.accuracy_original == 0.75
    assert c.accuracy_pruned == 0.25
    # cosines by hand: [3,1,0]·[1,3,0] = 6/10; identical = 1; 4/5; [0,1,9]·[1,0,9] = 81/82
    assert c.cosine_similarity == pytest.approx((0.6 + 1 + 0.8 + 81 / 82) / 4)
    assert c.cosine_similarity_min == pytest.approx(0.6)


def test_compare_zero_vectors_and_nan():
    ref = np.array([[0.0, 0.0], [1.0, 0.0]])
    cand = np.array([[0.0, 0.0], [0.0, 0.0]])
    (c,) = compare_outputs({"y": ref}, {"y": cand})
    assert c.cosine_similarity_min == 0.0 and c.cosine_similarity == 0.5
    (c,) = compare_outputs({"y": np.array([1.0, np.nan])}, {"y": np.array([1.0, 2.0])})
    assert np.isnan(c.max_abs_error)
    assert c.to_dict()["max_abs_error"] is None
    json.dumps(c.to_dict(), allow_nan=False)


def test_compare_non_classifier_outputs_have_no_top1():
    outs = {"feat": np.ones((2, 3, 4)), "score": np.ones((2, 1)), "vec": np.ones(2)}
    results = compare_outputs(outs, dict(outs), labels=np.array([0, 0]))
    assert [r.name for r in results] == ["feat", "score", "vec"]
    assert all(r.top1_agreement is None and r.accuracy_original is None for r in results)


def test_compare_labels_out_of_range_give_no_accuracy():
    y = np.eye(3)
    (c,) = compare_outputs({"y": y}, {"y": y}, labels=np.array([0, 1, 3]))
    assert c.top1_agreement == 1.0 and c.accuracy_original is None


def test_compare_errors():
    y = np.zeros((2, 3))
    with pytest.raises(OnnxPruneError, match="only in original: 'a'; only in pruned: 'b'"):
        compare_outputs({"a": y}, {"b": y})
    with pytest.raises(OnnxPruneError, match=r"shape \[2, 3\] in the original but \[2, 2\]"):
        compare_outputs({"a": y}, {"a": np.zeros((2, 2))})
    with pytest.raises(OnnxPruneError, match="labels has 3 entries but output 'a' has 2"):
        compare_outputs({"a": y}, {"a": y}, labels=np.zeros(3, int))
    (c,) = compare_outputs({"a": y}, {"a": y}, labels=np.zeros((2, 4)))  # not class labels: no accuracy columns
    assert c.accuracy_original is None and c.accuracy_pruned is None


# --------------------------------------------------------------------------- verify


def test_verify_identical_random(paths):
    report = verify(paths["orig"], onnx.load(paths["orig"]), n_random=5, seed=2, batch_size=2)
    assert report.n_samples == 5
    assert report.data_source == "random(seed=2)"
    assert report.original == str(paths["orig"]) and report.pruned == "<ModelProto g>"
    (c,) = report.outputs
    assert c.name == "y" and c.shape == (5, 3)
    assert c.max_abs_error == 0.0 and c.top1_agreement == 1.0
    assert c.cosine_similarity == pytest.approx(1.0, abs=1e-12)
    json.dumps(report.to_dict(), allow_nan=False)


def test_verify_perturbed_matches_numpy(paths, tmp_path):
    x = np.random.default_rng(9).standard_normal((20, 4)).astype(np.float32)
    data = tmp_path / "data.npz"
    np.savez(data, x=x)
    report = verify(paths["orig"], paths["pert"], data_path=data, batch_size=4)
    ref = x.astype(np.float64) @ paths["w"] + paths["b"]
    cand = x.astype(np.float64) @ paths["w2"] + paths["b2"]
    err = np.abs(ref - cand)
    (c,) = report.outputs
    assert report.data_source == f"npz:{data}"
    assert c.max_abs_error > 0.005
    assert c.max_abs_error == pytest.approx(err.max(), rel=1e-4, abs=1e-6)
    assert c.mean_abs_error == pytest.approx(err.mean(), rel=1e-4, abs=1e-6)
    cos = (ref * cand).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(cand, axis=1)
    assert c.cosine_similarity == pytest.approx(cos.mean(), abs=1e-6)
    assert c.cosine_similarity_min == pytest.approx(cos.min(), abs=1e-6)
    assert c.top1_agreement == pytest.approx(np.mean(ref.argmax(1) == cand.argmax(1)))


def test_verify_disagreement_and_accuracy(paths, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, x=X_HAND, labels=LABELS_HAND)
    (c,) = verify(paths["id"], paths["swap"], data_path=data).outputs
    assert c.top1_agreement == 0.5
    assert (c.accuracy_original, c.accuracy_pruned) == (0.75, 0.25)
    assert c.max_abs_error == 2.0


def test_verify_conv_dynamic_batch(paths):
    report = verify(paths["conv"], paths["conv"], n_random=3, batch_size=2, shapes={"x": (2, 3, 8, 8)})
    (c,) = report.outputs
    assert c.shape == (3, 2, 6, 6) and c.max_abs_error == 0.0 and c.top1_agreement is None


def test_verify_errors(paths, tmp_path):
    other = _model(
        [helper.make_node("Identity", ["input"], ["y"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [],
    )
    with pytest.raises(OnnxPruneError, match="different inputs: original has 'x'; pruned has 'input'"):
        verify(paths["orig"], other)
    renamed_out = onnx.load(paths["orig"])
    renamed_out.graph.node[1].output[0] = "logits"
    renamed_out.graph.output[0].name = "logits"
    with pytest.raises(OnnxPruneError, match="different outputs"):
        verify(paths["orig"], renamed_out)
    with pytest.raises(OnnxPruneError, match=r"shape \[\?, 4\] in the original but \[\?, 5\]"):
        verify(paths["orig"], classifier(np.zeros((5, 3)), ZERO_B))
    data = tmp_path / "d.npz"
    np.savez(data, x=X_HAND)
    with pytest.raises(OnnxPruneError, match="only applies to random data"):
        verify(paths["orig"], paths["orig"], data_path=data, shapes={"x": (1, 4)})
    with pytest.raises(OnnxPruneError, match="has batch 4 on axis 0 but the batch size is 1"):
        verify(paths["conv"], paths["conv"], shapes={"x": (4, 3, 8, 8)})
    with pytest.raises(OnnxPruneError, match="data file not found"):
        verify(paths["orig"], paths["orig"], data_path=tmp_path / "none.npz")


def test_module_exports_model_source_alias():
    assert evaluate.ModelSource is not None
