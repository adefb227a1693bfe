"""``--granularity weight``: unstructured magnitude sparsity per layer, the graph unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from clirun import assert_bad_input, cli, ok
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import normalize
from onnxprune.pipeline import PruneOptions, prune_file
from onnxprune.transform.sparsify import sparse_layers, sparsify, sparsity_of

from oracle import run

MODEL = "models/digits/resnet8_digits.onnx"
CALIB = "models/digits/digits_calib.npz"


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("schedule", ["uniform", "global", "evolution"])
def test_budget_met_smallest_weights_zeroed_graph_unchanged(schedule, tmp_path):
    result = prune_file(MODEL, tmp_path / "s.onnx", PruneOptions(granularity="weight", target_params=0.4,
                                                                  schedule=schedule, data=CALIB, evaluations=40))
    original, sparse = normalize(onnx.load(MODEL)), onnx.load(str(tmp_path / "s.onnx"))  # constants folded, as read
    assert abs(sparsity_of(sparse) - 0.6) <= 0.02
    assert [(n.op_type, list(n.input)) for n in original.graph.node] == [(n.op_type, list(n.input)) for n in sparse.graph.node]
    before, after = weights(original), weights(sparse)
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    for _, name, _ in sparse_layers(original):
        zeroed = (after[name] == 0) & (before[name] != 0)
        kept = after[name] != 0
        assert np.array_equal(after[name][kept], before[name][kept])  # kept weights are untouched
        if zeroed.any() and kept.any():
            assert np.abs(before[name][zeroed]).max() <= np.abs(before[name][kept]).min()
    assert result.plan.meta["granularity"] == "weight"
    assert any("gzip-compressed file" in note and "no faster" in note for note in result.notes_text())


def test_zeroing_weights_that_are_already_zero_changes_nothing():
    """The oracle for sparsity: zero a quarter of every layer's weights first; sparsifying to
    that quarter again finds exactly those and leaves the outputs identical."""
    model = onnx.load(MODEL)
    layers = {node: 0.25 for node, _, _ in sparse_layers(model)}
    dead = sparsify(model, layers)
    again = sparsify(dead, layers)
    x = {"input": np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)}
    assert all(np.array_equal(a, b) for a, b in zip(run(dead, x), run(again, x)))
    assert all(np.array_equal(weights(dead)[k], weights(again)[k]) for k in weights(dead))


@pytest.mark.parametrize("kw, needle", [
    ({"target_macs": 0.5}, "keeps every MAC"),
    ({"target_params": 0.5, "schedule": "sensitivity", "data": CALIB}, "uniform, global or evolution"),
    ({"target_params": 0.5, "recover": "bn", "data": CALIB}, "without recovery"),
])
def test_weight_granularity_option_errors(kw, needle):
    with pytest.raises(OnnxPruneError, match=needle):
        PruneOptions(granularity="weight", **kw).validate()


def test_cli_weight_granularity(tmp_path):
    result = ok(cli("prune", MODEL, "-o", tmp_path / "s.onnx", "--granularity", "weight", "--target-params", "0.5"))
    assert "nonzero params" in result.stdout and "no faster" in result.stdout
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "t.onnx", "--granularity", "weight", "--target-macs", "0.5"),
                     "--granularity weight zeroes weights")
