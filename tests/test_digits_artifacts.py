"""The shipped default model (models/digits/) is valid, small and accurate.

The artifact tests need only onnx, onnxruntime and numpy. The slow test re-runs
tools/train_digits.py for one epoch to show the script still works end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DIGITS_DIR = REPO_ROOT / "models" / "digits"
ONNX_PATH = DIGITS_DIR / "resnet8_digits.onnx"
NPZ_PATH = DIGITS_DIR / "digits_test.npz"


@pytest.fixture(scope="module")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    with np.load(NPZ_PATH) as z:
        return z["input"], z["labels"]


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(ONNX_PATH))


def test_files_are_small() -> None:
    assert ONNX_PATH.stat().st_size < 1_000_000
    assert NPZ_PATH.stat().st_size < 2_000_000


def test_npz_layout(test_set: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = test_set
    assert x.dtype == np.float32
    assert x.ndim == 4 and x.shape[1:] == (1, 32, 32)
    assert np.issubdtype(y.dtype, np.integer)
    assert y.shape == (x.shape[0],)
    assert set(np.unique(y)) == set(range(10))
    # Normalised with the train statistics: roughly zero mean, unit std.
    assert abs(float(x.mean())) < 0.2
    assert 0.8 < float(x.std()) < 1.2


def test_model_is_valid(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, 32, 32]


def test_model_keeps_batchnorm(model: onnx.ModelProto) -> None:
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 9
    assert ops.count("Conv") == 9
    assert ops.count("Add") == 3


def test_onnxruntime_accuracy(test_set: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = test_set
    sess = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    assert logits.shape == (len(y), 10)
    accuracy = float((logits.argmax(1) == y).mean())
    assert accuracy >= 0.95


@pytest.mark.slow
def test_training_script_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    out = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "train_digits.py"),
            "--out-dir",
            str(tmp_path),
            "--epochs",
            "1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["test_accuracy_torch"] == report["test_accuracy_onnxruntime"]
    assert report["train_size"] + report["test_size"] == 1797
    assert "DeprecationWarning" not in out.stderr

    onnx_path = tmp_path / "resnet8_digits.onnx"
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    with np.load(tmp_path / "digits_test.npz") as z:
        assert z["input"].shape == (report["test_size"], 1, 32, 32)
        assert z["input"].dtype == np.float32
        assert z["labels"].dtype == np.int64
        # Same seed, same split: the test set matches the shipped one.
        with np.load(NPZ_PATH) as shipped:
            np.testing.assert_array_equal(z["labels"], shipped["labels"])
            np.testing.assert_array_equal(z["input"], shipped["input"])
