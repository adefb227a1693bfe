"""Channel groups map onto PyTorch parameter names and dims."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models import ARCHITECTURES, build  # noqa: E402
from models.export import export_onnx  # noqa: E402
from onnxprune.analysis.groups import OUT  # noqa: E402
from onnxprune.torch.mapping import group_parameters  # noqa: E402
from onnxprune.pipeline import load_and_analyze  # noqa: E402


@pytest.mark.parametrize("name", ["resnet20", "se_resnet", "yolo_c2f"])
def test_every_prunable_group_maps_to_torch_parameters(name, tmp_path):
    model = build(name)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, ARCHITECTURES[name].input_shape, fold_bn=False)
    analysis = load_and_analyze(path)
    state = model.state_dict()
    mapping = group_parameters(analysis, state.keys())
    for group in analysis.prunable_groups:
        slots = mapping[group.id]
        producers = [s for s in slots if s.role == OUT]
        assert producers, f"{group.id} ({group.anchor}) maps to no producing torch parameter"
        for s in slots:
            assert state[s.name].shape[s.dim] == len(s.channels)
            inside = [c for c in s.channels if c >= 0]
            assert inside and max(inside) < group.channels
        # Every channel of the group is produced by some mapped torch parameter.
        produced = {c for s in producers for c in s.channels if c >= 0}
        assert produced == set(range(group.channels))


def test_mapping_reads_the_same_numbers_as_torch(tmp_path):
    model = build("resnet20")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, ARCHITECTURES["resnet20"].input_shape, fold_bn=False)
    analysis = load_and_analyze(path)
    state = model.state_dict()
    mapping = group_parameters(analysis, state.keys())
    group = analysis.prunable_groups[0]
    slot = next(s for s in mapping[group.id] if s.role == OUT)
    values = np.moveaxis(state[slot.name].numpy(), slot.dim, 0)
    for i, c in enumerate(slot.channels):
        onnx_values = np.moveaxis(analysis.graph.tensors()[slot.name].values, slot.dim, 0)[i]
        np.testing.assert_array_equal(values[i], onnx_values)
        assert c >= 0
