"""The samples layer (:mod:`onnxprune.runtime.samples`): which tensors carry the sample axis,
fixed batches, and capture run by run.

The oracle: capturing every tensor of a model in runs of 1, 2 and 7 samples gives, for every
tensor with a sample axis, the same rows as running each sample alone; a tensor without one
holds, for each run, what that run computes (a shape holds the run's sample count). On every architecture in ``models/`` and every third-party file of the
suite (silero's VAD excepted: its inputs are a sequence and an LSTM state, not samples).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.pipeline import load_and_analyze
from onnxprune.runtime.activations import capture
from onnxprune.runtime.evaluate import Dataset, run_model
from onnxprune.runtime.exactness import with_outputs
from onnxprune.runtime.samples import Batches, batches, fixed_batch, sample_axis, trace_axes
from onnxprune.runtime.session import graph_input_specs, make_session

from test_thirdparty import CASES, feeds, fetch

SAMPLES = 7


def data_for(model: onnx.ModelProto, shapes: dict) -> Dataset:
    """``SAMPLES`` seeded samples of every graph input at ``shapes`` (batch axis 0)."""
    parts = [feeds(model, shapes, seed) for seed in range(SAMPLES)]
    return Dataset({name: np.concatenate([p[name] for p in parts]) for name in parts[0]})


def alone(model: onnx.ModelProto, data: Dataset, names: list[str]) -> list[dict]:
    """Every tensor of ``names`` for each sample run alone."""
    session = make_session(with_outputs(model, names).SerializeToString(), optimize=False)
    return [dict(zip(names, session.run(names, {k: v[i:i + 1] for k, v in data.inputs.items()})))
            for i in range(len(data))]


def check_capture_matches_one_at_a_time(model: onnx.ModelProto, data: Dataset) -> int:
    every = [o for n in model.graph.node for o in n.output if o]
    outputs = [o.name for o in model.graph.output]
    names = list(dict.fromkeys(every[::max(1, len(every) // 48)] + outputs))  # ~50 tensors along the graph
    axes = trace_axes(model, data)
    one = alone(model, data, names)
    session = make_session(with_outputs(model, names).SerializeToString(), optimize=False)
    checked = 0
    for batch_size in (1, 2, 7):
        captured = capture(model, data, names, batch_size, axes=axes)
        constants = [n for n in names if axes.get(n) is None]
        for k in range(captured.plan.runs):  # no sample axis: what that run computed (a shape holds its size)
            fed = {f: captured.plan.feed(v, k) for f, v in data.inputs.items()}
            for name, value in zip(constants, session.run(constants, fed)):
                np.testing.assert_array_equal(captured.runs[name][k], value, err_msg=name)
        for name in names:
            axis = axes.get(name)
            if axis is None:
                continue
            want = np.concatenate([o[name] for o in one], axis=axis)
            got = captured.joined(name)
            assert got.shape == want.shape, (name, batch_size)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                       err_msg=f"{name} at batch {batch_size}")
            checked += 1
    return checked


def _architectures():
    try:
        from models import ALL
    except ImportError:  # the torch-free install: these are skipped
        return []
    return [pytest.param(n, marks=pytest.mark.slow) if n == "resnet50" else n for n in ALL]


@pytest.mark.parametrize("name", _architectures())
def test_capture_equals_one_sample_at_a_time_on_architectures(exported, name):
    from models import ALL

    analysis = load_and_analyze(exported(name, False))
    model = analysis.model
    data = data_for(model, {model.graph.input[0].name: ALL[name].input_shape})
    assert check_capture_matches_one_at_a_time(model, data) > 10


THIRD_PARTY = [pytest.param(c, id=c.id, marks=c.marks) for c in CASES if not c.id.startswith("silero")]
SMALL = {"ppocr_det": {"x": (1, 3, 96, 96)}, "ppocr_rec": {"x": (1, 3, 48, 96)}}
"""Smaller inputs than the other tests' for the files with dynamic spatial dims."""


@pytest.mark.parametrize("case", THIRD_PARTY)
def test_capture_equals_one_sample_at_a_time_on_third_party_files(case):
    shapes = SMALL.get(case.id, case.shapes)
    model = load_and_analyze(fetch(case), shapes).model
    data = data_for(model, shapes)
    assert check_capture_matches_one_at_a_time(model, data) > 10


def test_the_crnn_holds_its_samples_on_axis_1():
    """captcha-whisperer's CRNN runs time-major: its logits are ``[T, N, K]``. The traced axis
    is 1, and ``run_model`` returns them samples first, ``[N, T, K]``."""
    case = next(c for c in CASES if c.id == "captcha_crnn")
    model = load_and_analyze(fetch(case), case.shapes).model
    data = data_for(model, case.shapes)
    assert trace_axes(model, data, ["logits"]) == {"logits": 1}
    session = make_session(model.SerializeToString())
    out = run_model(session, data, batch_size=3)["logits"]
    assert out.shape[0] == SAMPLES and out.shape[1] == 20
    one = run_model(session, data, batch_size=1)["logits"]  # runs of one sample: [T, 1, K] each
    np.testing.assert_allclose(one, out, rtol=1e-4, atol=1e-4)
    single = run_model(session, Dataset({k: v[:1] for k, v in data.inputs.items()}), batch_size=1)["logits"]
    assert single.shape == (1, 20, 37)
    assert trace_axes(model, Dataset({k: v[:1] for k, v in data.inputs.items()}), ["logits"]) == {"logits": 1}


def test_a_fixed_batch_of_one_runs_sample_by_sample():
    """trueocr's detector fixes its batch to 1: every run holds one sample, and the layer's
    note says so once."""
    case = next(c for c in CASES if c.id == "trueocr_det")
    model = load_and_analyze(fetch(case), case.shapes).model
    specs = graph_input_specs(model)
    assert fixed_batch(specs) == ("x", 1)
    plan = batches(specs, SAMPLES, 64)
    assert (plan.size, plan.fixed, plan.runs) == (1, True, SAMPLES)
    assert plan.note("x") == "model input 'x' has a fixed batch of 1: the data runs one sample at a time"
    out = run_model(make_session(model.SerializeToString()), data_for(model, case.shapes), batch_size=4)
    assert next(iter(out.values())).shape[0] == SAMPLES


def test_padding_of_a_fixed_batch():
    plan = Batches(5, 2, fixed=True)
    x = np.arange(5)[:, None]
    assert [plan.feed(x, k).ravel().tolist() for k in range(plan.runs)] == [[0, 1], [2, 3], [4, 4]]
    assert plan.real(2) == slice(4, 5)


@pytest.mark.parametrize("one, many, k, axis", [((1, 8), (4, 8), 4, 0), ((20, 1, 37), (20, 3, 37), 3, 1),
                                                ((2, 3), (2, 3), 3, None), ((1, 8), (3, 9), 3, None),
                                                ((5, 8), (15, 8), 3, 0)])
def test_sample_axis_by_hand(one, many, k, axis):
    assert sample_axis(one, many, k) == axis
