"""Norm criteria are BN-aware: a BN-kept export ranks like the exporter's BN-folded export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models import ARCHITECTURES, build  # noqa: E402
from models.export import export_onnx  # noqa: E402
from onnxprune.decide.importance import group_importance  # noqa: E402
from onnxprune.pipeline import load_and_analyze  # noqa: E402


@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn"])
def test_fpgm_scores_equal_with_bn_kept_or_folded(name, tmp_path):
    model = build(name)
    kept, folded = tmp_path / "kept.onnx", tmp_path / "folded.onnx"
    export_onnx(model, kept, ARCHITECTURES[name].input_shape, fold_bn=False)
    export_onnx(model, folded, ARCHITECTURES[name].input_shape, fold_bn=True)
    a, b = load_and_analyze(kept), load_and_analyze(folded)
    assert [g.channels for g in a.groups] == [g.channels for g in b.groups]
    for ga, gb in zip(a.prunable_groups, b.prunable_groups):
        sa, sb = group_importance(a, ga, "fpgm"), group_importance(b, gb, "fpgm")
        np.testing.assert_allclose(sa, sb, rtol=1e-4)
