"""``onnxprune verify``'s task metrics and its ``--max-drop`` gate, on the digits classifier,
a real YOLOv8n export (NudeNet, photos from ``skimage.data``), a CTC recognizer and a model
with a fixed batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from clirun import assert_bad_input, cli, ok
from onnxprune.pipeline import PruneOptions, prune_file

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits" / "resnet8_digits.onnx"
TEST = REPO / "models" / "digits" / "digits_test.npz"


@pytest.fixture(scope="module")
def half_digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("v") / "half.onnx"
    prune_file(DIGITS, out, PruneOptions(ratio=0.5))
    return out


def test_classifier_rows_and_the_gate(half_digits, tmp_path):
    """Accuracy against the labels; the pruned model (no recovery) drops far more than 0.01, so
    ``--max-drop 0.01`` exits 1 with one line saying which output and by how much; 1.0 passes."""
    result = cli("verify", DIGITS, half_digits, "--data", TEST, "--max-drop", "0.01", "--json", tmp_path / "v.json")
    assert result.exit_code == 1, result.output
    data = json.loads((tmp_path / "v.json").read_text())
    (m,) = data["metrics"]
    assert m["metric"] == "accuracy" and m["labels"] and m["original"] > 0.98 and m["drop"] > 0.01
    assert data["passed"] is False and data["max_drop"] == 0.01
    assert result.stderr.strip().splitlines()[-1].startswith("verify failed: 1 output dropped more than --max-drop 0.01 "
                                                             "(logits: accuracy")
    passed = ok(cli("verify", DIGITS, half_digits, "--data", TEST, "--max-drop", "1"))
    assert "passed: no task metric dropped more than 1" in passed.stdout


def test_metric_per_output_and_bad_names(half_digits):
    result = ok(cli("verify", DIGITS, half_digits, "--data", TEST, "--metric", "logits=cosine", "--json", "-"))
    assert json.loads(result.stdout)["metrics"][0]["metric"] == "cosine"
    assert_bad_input(cli("verify", DIGITS, half_digits, "--metric", "bleu"), "unknown metric 'bleu'")


def test_labels_outside_the_classes_are_refused(tmp_path, half_digits):
    """Labels the model cannot have produced blanked the accuracy columns silently before."""
    data = np.load(TEST)
    np.savez(tmp_path / "d.npz", **{k: data[k] for k in data.files if k != "labels"}, labels=data["labels"] + 10)
    assert_bad_input(cli("verify", DIGITS, half_digits, "--data", tmp_path / "d.npz"),
                     "outside the model's 10 classes")


@pytest.fixture(scope="module")
def nudenet():
    from thirdparty import NUDENET_YOLO, wheel_file

    return wheel_file(*NUDENET_YOLO)


def test_a_dead_detector_scores_map_zero(nudenet, tmp_path):
    """YOLOv8n pruned to half its MACs without recovery: its output's cosine with the
    original's stays high, but it detects nothing above 0.25 on photos where the original finds
    faces, so mAP@0.5 against the original's detections is 0."""
    pytest.importorskip("skimage")
    from tools.tasks import photos

    np.savez(tmp_path / "photos.npz", images=photos(12, 320, seed=0))
    pruned = tmp_path / "dead.onnx"
    prune_file(nudenet, pruned, PruneOptions(target_macs=0.5), {"images": (1, 3, 320, 320)})
    data = json.loads(ok(cli("verify", nudenet, pruned, "--data", tmp_path / "photos.npz", "--json", "-")).stdout)
    (m,) = data["metrics"]
    assert m["metric"] == "map50:yolo" and m["extra"]["reference_detections"] > 0
    assert m["pruned"] < 0.05 and m["drop"] > 0.95
    assert data["outputs"][0]["cosine_similarity"] > 0.9  # what verify used to show


def test_a_fixed_batch_model_verifies_and_says_so(tmp_path):
    """A model whose input fixes the batch to 1 (as onnxsim writes it) runs sample by sample."""
    model = onnx.load(DIGITS)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, tmp_path / "fixed.onnx")
    result = ok(cli("verify", tmp_path / "fixed.onnx", tmp_path / "fixed.onnx", "--data", TEST, "--batch-size", "8",
                    "--json", "-"))
    data = json.loads(result.stdout)
    assert data["n_samples"] == 540 and data["metrics"][0]["pruned"] == data["metrics"][0]["original"]
    assert any("fixed batch of 1" in note for note in data["notes"])
