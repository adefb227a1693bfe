"""Norm criteria are BN-aware: a BN-kept export scores like the exporter's BN-folded export.

Both the producer filters and the consumer columns count: a folded export stores a consumer's
weight as ``W2 * gamma2 / sigma2`` per output row, which changes its column norms too.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from models import ARCHITECTURES, build  # noqa: E402
from models.export import export_onnx  # noqa: E402
from onnxprune.decide.importance import group_importance  # noqa: E402
from onnxprune.pipeline import load_and_analyze  # noqa: E402

CRITERIA = ["l1", "l2", "fpgm"]


def assert_same_scores(module: nn.Module, input_shape, tmp_path, criterion: str) -> None:
    kept, folded = tmp_path / "kept.onnx", tmp_path / "folded.onnx"
    export_onnx(module, kept, input_shape, fold_bn=False)
    export_onnx(module, folded, input_shape, fold_bn=True)
    a, b = load_and_analyze(kept), load_and_analyze(folded)
    assert any(n.op == "BatchNormalization" for n in a.graph.nodes)
    assert not any(n.op == "BatchNormalization" for n in b.graph.nodes)
    assert [g.channels for g in a.groups] == [g.channels for g in b.groups]
    for ga, gb in zip(a.prunable_groups, b.prunable_groups):
        sa, sb = group_importance(a, ga, criterion), group_importance(b, gb, criterion)
        np.testing.assert_allclose(sa, sb, rtol=1e-5, err_msg=f"{criterion} {ga.id}")


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn"])
def test_scores_equal_with_bn_kept_or_folded(name, criterion, tmp_path):
    assert_same_scores(build(name), ARCHITECTURES[name].input_shape, tmp_path, criterion)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_consumer_columns_and_negative_gamma(criterion, tmp_path):
    """Conv → BN → ReLU → Conv → BN → ReLU → Conv with uneven, partly negative BN scales: the
    first group's consumer columns differ between the exports by the second BN's scale per row
    (4-5% before the fix), and negative gammas flip filters (fpgm distances)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        for bn, gamma in ((module[1], [0.5, 1, 2, 3, 0.25, 1.5, 4, 0.75]),
                          (module[4], [4, 0.25, -2, 1, 3, 0.5, 1.5, -0.75])):
            bn.weight.copy_(torch.tensor(gamma))
            bn.running_var.copy_(torch.rand(8) + 0.1)
            bn.running_mean.copy_(torch.randn(8))
    assert_same_scores(module, (1, 3, 8, 8), tmp_path, criterion)
