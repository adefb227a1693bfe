"""Data-aware criteria (activation, APoZ, structured Wanda) on a chain whose activations are
computed here in numpy from the same weights and data."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphs import Builder
from onnxprune.analysis.groups import analyze
from onnxprune.api import PruneOptions, prune_file
from onnxprune.decide.importance import all_importance, criterion_used, group_importance
from onnxprune.decide.data_importance import feature_statistics
from onnxprune.errors import OnnxPruneError
from onnxprune.graph import normalize
from onnxprune.runtime.evaluate import Dataset

FILTERS = np.array([[1.0, 0.5], [-2.0, 1.0], [0.2, 0.1], [-1.0, -1.0]], np.float32)  # 4 channels from 2
CONSUMER = np.array([[1, 2, 0.5, 3], [1, -1, 0.5, 1], [2, 0, 0.5, 1]], np.float32)  # [3 outputs, 4 channels]


def chain(batch=1):
    """x[batch,2,4,4] → conv0 1x1 (FILTERS) → relu → conv1 1x1 (CONSUMER) → y."""
    g = Builder()
    y = g.conv(g.input([batch, 2, 4, 4]), 4, k=1, bias=False, w=FILTERS.reshape(4, 2, 1, 1))
    y = g.conv(g.relu(y), 3, k=1, bias=False, w=CONSUMER.reshape(3, 4, 1, 1))
    model = normalize(g.output(y).model())
    return model, analyze(model)


def data(n=6, seed=0, positive=False):
    x = np.random.default_rng(seed).normal(size=(n, 2, 4, 4)).astype(np.float32)
    return Dataset({"x": np.abs(x) if positive else x})


def relu_activations(x):
    """``[4 channels, every sample and position]``: what conv1 reads, computed here."""
    a = np.maximum(np.einsum("cd,ndhw->cnhw", FILTERS.astype(np.float64), x.astype(np.float64)), 0)
    return a.reshape(4, -1)


@pytest.mark.parametrize("criterion", ["activation", "apoz", "wanda"])
def test_data_criteria_score_what_the_consumer_reads(criterion):
    model, a = chain()
    d = data()
    act = relu_activations(d.inputs["x"])
    if criterion == "activation":
        raw = np.abs(act).mean(1)
    elif criterion == "apoz":
        mean_abs = np.abs(act).mean(1)
        raw = (1 - (act == 0).mean(1)) + 1e-6 * mean_abs / mean_abs.mean()
    else:
        raw = np.linalg.norm(CONSUMER, axis=0) * np.sqrt(np.square(act).mean(1))
    scores = all_importance(a, criterion, data=d)["g0"]
    np.testing.assert_allclose(scores, raw / raw.mean(), rtol=1e-5)
    assert criterion_used(a.groups[0], criterion, a) == criterion


def test_statistics_do_not_depend_on_the_batch_size():
    """A fixed batch of 1 and a batch of 6 see the same activations."""
    d = data()
    one = feature_statistics(chain(1)[1], d)
    six = feature_statistics(chain("N")[1], d, batch_size=6)
    assert one.keys() == six.keys() and len(one) == 1
    for key in one:
        np.testing.assert_allclose(one[key].rms, six[key].rms, rtol=1e-6)


def test_a_data_criterion_without_data_is_refused():
    model, a = chain()
    with pytest.raises(OnnxPruneError, match="calibration data"):
        group_importance(a, a.groups[0], "wanda")
    with pytest.raises(OnnxPruneError, match="activations: give calibration data"):
        PruneOptions(criterion="activation", ratio=0.25).validate()


@pytest.mark.parametrize("criterion", ["activation", "apoz", "wanda", "greedy"])
def test_a_channel_that_never_fires_is_removed_first_and_the_outputs_stay_identical(criterion, tmp_path):
    """On positive inputs channel 3 (both weights negative) is 0 after ReLU on every sample:
    every data criterion ranks it last, and removing it changes no output."""
    import onnx

    model, _ = chain("N")
    path, out, calib = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "calib.npz"
    onnx.save(model, path)
    d = data(8, positive=True)
    np.savez(calib, **d.inputs)
    result = prune_file(path, out, PruneOptions(criterion=criterion, ratio=0.25, data=str(calib), round_to=1))
    assert result.groups_pruned == 1
    x = data(5, seed=1, positive=True).inputs["x"]
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)
    assert result.after.macs < result.before.macs


def test_greedy_keeps_what_the_others_cannot_explain():
    # Feature 2 = feature 0 + feature 1; feature 3 small but independent: greedy keeps 3 over 2.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 500))
    x = np.stack([base[0], base[1], base[0] + base[1], 0.1 * base[2]])
    from onnxprune.decide.data_importance import greedy_order_scores

    scores = greedy_order_scores(x @ x.T / 500, np.ones(4))
    assert int(np.argmin(scores)) in (0, 1, 2) and scores[3] > scores.min()
    dependent = sorted(np.argsort(scores)[:1].tolist())
    assert dependent[0] != 3  # the independent small feature is never the first to go
    assert sorted(scores) == [1, 2, 3, 4]


def test_greedy_finds_planted_duplicates_that_reconstruction_absorbs_exactly(tmp_path):
    """Two of six channels are exact copies of others (same filter): greedy removes them, and
    least-squares reconstruction of the next layer gives the original outputs back; mean
    activation ranks by size and removes two of the small, independent channels instead."""
    import onnx

    rng = np.random.default_rng(2)
    filters = rng.normal(size=(6, 3)).astype(np.float32)
    filters[1] *= 0.3
    filters[2] *= 0.3
    filters[4], filters[5] = filters[0], filters[3]  # the planted copies
    g = Builder()
    y = g.conv(g.input(["N", 3, 4, 4]), 6, k=1, bias=False, w=filters.reshape(6, 3, 1, 1))
    y = g.conv(g.relu(y), 2, k=1, bias=False, w=rng.normal(size=(2, 6, 1, 1)).astype(np.float32))
    path = tmp_path / "m.onnx"
    onnx.save(normalize(g.output(y).model()), path)
    calib = tmp_path / "c.npz"
    np.savez(calib, x=rng.normal(size=(64, 3, 4, 4)).astype(np.float32))
    x = rng.normal(size=(8, 3, 4, 4)).astype(np.float32)
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    errors, kept = {}, {}
    for criterion in ("greedy", "activation"):
        out = tmp_path / f"{criterion}.onnx"
        result = prune_file(path, out, PruneOptions(criterion=criterion, ratio=2 / 6, round_to=1, data=str(calib),
                                                    recover="reconstruct", fuse=False))
        kept[criterion] = set(result.plan.groups["g0"].keep)
        got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
        errors[criterion] = float(np.abs(got - want).max() / np.abs(want).max())
    assert len(kept["greedy"] & {0, 4}) == 1 and len(kept["greedy"] & {3, 5}) == 1  # one of each pair of copies
    assert {1, 2} <= kept["greedy"]
    assert {0, 4} <= kept["activation"] or {3, 5} <= kept["activation"]  # it keeps both copies of a pair
    assert errors["greedy"] < 0.01 < errors["activation"]  # only the ridge term of the fit is left
