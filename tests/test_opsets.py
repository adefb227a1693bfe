"""Opsets 11 to 21: the same architectures exported at each opset analyze and prune exactly.

torch exports up to opset 20; opset 21 comes from ``onnx.version_converter`` on the opset-20
export. Split sizes (attribute before 13, input after), Reduce axes (input from 18), Resize and
Pad inputs change across these opsets.
"""

from __future__ import annotations

import warnings

import onnx
import pytest

torch = pytest.importorskip("torch")

from onnx import version_converter  # noqa: E402

from models import ARCHITECTURES, build  # noqa: E402
from models.export import export_onnx  # noqa: E402
from onnxprune.pipeline import load_and_analyze  # noqa: E402
from onnxprune.selfcheck import self_check  # noqa: E402

OPSETS = (11, 13, 16, 18, 20, 21)
CASES = [pytest.param(n, o, id=f"{n}-opset{o}", marks=() if n in ("resnet20", "yolo_c2f") else pytest.mark.slow)
         for n in ("resnet20", "yolo_c2f", "densenet", "mobilenetv2") for o in OPSETS]


@pytest.mark.parametrize("name, opset", CASES)
def test_exact_at_every_opset(name, opset, tmp_path):
    path = tmp_path / "m.onnx"
    shape = ARCHITECTURES[name].input_shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(build(name), path, shape, opset=min(opset, 20), fold_bn=False)
    if opset > 20:
        onnx.save(version_converter.convert_version(onnx.load(path), opset), path)
    model = onnx.load(path)
    assert next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx")) == opset
    analysis = load_and_analyze(path)
    check = self_check(analysis)
    assert check.passed, check
    assert check.groups_checked == len(analysis.prunable_groups) >= 10
