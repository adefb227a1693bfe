"""Calibration data that can be trusted (:mod:`onnxprune.runtime.calibration`): data that cannot
be real is refused, recovery is checked on samples it did not fit, and a fit with fewer
least-squares rows than unknowns is not made but reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clirun import assert_bad_input, cli, ok
from onnxprune.errors import OnnxPruneError
from onnxprune.runtime.calibration import HOLDOUT, MIN_FOR_HOLDOUT, check_real, split
from onnxprune.runtime.evaluate import Dataset

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits" / "resnet8_digits.onnx"
CALIB = REPO / "models" / "digits" / "digits_calib.npz"


def digits(n: int) -> dict:
    data = np.load(CALIB)
    return {k: data[k][:n] for k in data.files}


@pytest.mark.parametrize("make, needle", [
    (lambda x: np.zeros_like(x), "is one constant value (0 everywhere; 4 of 4 samples are)"),
    (lambda x: np.where(np.arange(len(x))[:, None, None, None] == 2, np.nan, x), "holds NaN or infinity (sample 2)"),
    (lambda x: np.repeat(x[:1], len(x), axis=0), "every sample of input 'input' is the same"),
])
def test_data_that_cannot_be_real_is_refused(make, needle, tmp_path):
    """The case that 'fixed' every layer before: four all-zero samples."""
    data = digits(4)
    data["input"] = make(data["input"].astype(np.float32)).astype(np.float32)
    np.savez(tmp_path / "bad.npz", **data)
    assert_bad_input(cli("prune", DIGITS, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--recover", "reconstruct",
                         "--data", tmp_path / "bad.npz"), needle)
    assert not (tmp_path / "p.onnx").exists()


def test_split_holds_out_a_fifth_once_there_are_enough_samples():
    small = Dataset({"x": np.arange(MIN_FOR_HOLDOUT - 1, dtype=np.float32)[:, None]})
    assert split(small) == (small, None)
    data = Dataset({"x": np.arange(50, dtype=np.float32)[:, None]}, np.arange(50))
    fit, check = split(data, seed=3)
    assert len(check) == round(HOLDOUT * 50) and len(fit) == 40
    assert sorted(fit.inputs["x"][:, 0].tolist() + check.inputs["x"][:, 0].tolist()) == list(range(50))
    assert (fit.labels == fit.inputs["x"][:, 0]).all()  # labels follow their samples
    assert split(data, seed=3)[1].inputs["x"].tolist() == check.inputs["x"].tolist()  # seeded


def test_check_real_accepts_real_data():
    data = Dataset({k: v for k, v in digits(8).items() if k != "labels"})
    assert check_real(data) is data
    with pytest.raises(OnnxPruneError, match="one constant value"):
        check_real(Dataset({"x": np.ones((3, 4), np.float32)}))


def test_too_few_samples_for_a_layer_is_reported_with_the_count_needed(tmp_path):
    """Eight digits (below 10, none is held out): the classifier's Gemm, left with 32 of its 64
    inputs (33 unknowns with its bias), has one least-squares row per sample, 8: it is not
    refit, and the warning says how many samples it would need."""
    np.savez(tmp_path / "few.npz", **digits(8))
    result = ok(cli("prune", DIGITS, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--recover", "reconstruct",
                    "--data", tmp_path / "few.npz", "--json", "-"))
    summary = json.loads(result.stdout)
    (warning,) = [w for w in summary["warnings"] if "fewer least-squares rows than unknowns" in w]
    assert "8 rows for 33" in warning and "about 33 calibration samples would fill every fit" in warning
    assert f"warning: {warning}" in result.stderr
    fixes = {f["node"]: f for f in summary["recovery"]["layers"]}
    gemm = next(f for f in fixes.values() if f["op"] == "Gemm")
    assert gemm["rows"] == 8 and gemm["unknowns"] == 33 and not gemm["applied"]
    assert any("checked on the same samples (fewer than 10: none held out)" in n for n in summary["notes"])


def test_recovery_is_checked_on_held_out_samples(tmp_path):
    result = ok(cli("prune", DIGITS, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--recover", "reconstruct",
                    "--data", CALIB, "--json", "-"))
    summary = json.loads(result.stdout)
    assert summary["recovery"]["samples"] == 400 and summary["recovery"]["checked_on"] == 100
    assert any("checked on 100 held-out samples" in n for n in summary["notes"])
