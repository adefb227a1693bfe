"""What real exports write, reproduced in small graphs and checked with the dead-channel oracle
(:func:`onnxprune.selfcheck.self_check`): the dynamo exporter's ``allowzero=1`` reshapes at every
opset, computed Resize sizes, DepthToSpace/SpaceToDepth, token-packing reshapes, and the opset
imports a pruned model keeps."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.groups import analyze
from onnxprune.graph import normalize
from onnxprune.pipeline import PruneOptions, prune_file
from onnxprune.rewrite import apply_removal
from onnxprune.selfcheck import dead_channel_plan, self_check

RNG = np.random.default_rng(0)


def const(name, shape=None, values=None):
    arr = RNG.standard_normal(shape).astype(np.float32) if values is None else np.asarray(values)
    return numpy_helper.from_array(arr, name)


def make(nodes, inits, x_shape, opset=17, extra_opsets=(), y_shape=None):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                             ir_version=7 if opset < 15 else 8)


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- Reshape with allowzero
def flatten_by_shape(opset: int, allowzero: int | None) -> onnx.ModelProto:
    """Conv(3→8) → Relu → Reshape(Concat(Shape(x)[0:1], [128])) → Gemm(128→5): the dynamo
    exporter's flatten, with ``allowzero`` (opset 14+) as it writes it."""
    attrs = {} if allowzero is None else {"allowzero": allowzero}
    return make([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="batch", axis=0),
        helper.make_node("Concat", ["n", "features"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["r", "target"], ["f"], name="flatten", **attrs),
        helper.make_node("Gemm", ["f", "fc", "b"], ["y"], name="fc", transB=1),
    ], [const("w", (8, 3, 3, 3)), const("zero", values=np.array([0], np.int64)),
        const("features", values=np.array([128], np.int64)), const("fc", (5, 128)), const("b", (5,))],
        ["N", 3, 4, 4], opset, y_shape=["N", 5])


@pytest.mark.parametrize("opset", range(7, 22))
def test_reshape_targets_keep_their_meaning_at_every_opset(opset):
    """The rewritten target copies the batch with 0; with ``allowzero=1`` a 0 would be a real
    zero, so the node must come out with ``allowzero=0``. The pruned model runs at batch 3 and
    at an empty batch, and the dead-channel oracle holds."""
    model = flatten_by_shape(opset, 1 if opset >= 14 else None)
    analysis = analyze(normalize(model))
    assert analysis.group("g0").prunable, analysis.group("g0").blocked
    assert self_check(analysis).passed
    pruned = apply_removal(analysis, dead_channel_plan(analysis).removed_units(analysis))
    onnx.checker.check_model(pruned, full_check=True)
    reshape = next(n for n in pruned.graph.node if n.op_type == "Reshape")
    assert all(a.i == 0 for a in reshape.attribute if a.name == "allowzero")
    for batch in (3, 0):
        (y,) = session(pruned).run(None, {"x": RNG.standard_normal((batch, 3, 4, 4)).astype(np.float32)})
        assert y.shape == (batch, 5)


def test_constant_allowzero_targets_keep_their_zeros():
    """A constant target with ``allowzero=1`` keeps the attribute: its other entries are
    literal, and only the channel entry changes."""
    model = make([
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Reshape", ["h", "heads"], ["r"], name="heads", allowzero=1),
        helper.make_node("ReduceSum", ["r", "last"], ["y"], name="sum", keepdims=0),
    ], [const("w", (6, 8)), const("heads", values=np.array([2, 4, 2], np.int64)),
        const("last", values=np.array([2], np.int64))], [2, 6], 18)
    analysis = analyze(normalize(model))
    assert self_check(analysis).passed
    pruned = apply_removal(analysis, dead_channel_plan(analysis).removed_units(analysis))
    reshape = next(n for n in pruned.graph.node if n.op_type == "Reshape")
    assert [a.i for a in reshape.attribute if a.name == "allowzero"] == [1]


# ---------------------------------------------------------------- Resize, DepthToSpace, packing
def resize_by_shape(opset: int = 13) -> onnx.ModelProto:
    """An OCR detector's upsampling: ``Resize(x, sizes=Concat(Shape(x)[0:2], [8, 8]))``."""
    return make([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Shape", ["c"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "s0", "s2"], ["nc"], name="nc"),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], name="sizes", axis=0),
        helper.make_node("Resize", ["c", "", "", "sizes"], ["u"], name="up", mode="nearest"),
        helper.make_node("Conv", ["u", "w2"], ["y"], name="conv2"),
    ], [const("w", (8, 3, 1, 1)), const("s0", values=np.array([0], np.int64)), const("s2", values=np.array([2], np.int64)),
        const("hw", values=np.array([8, 8], np.int64)), const("w2", (4, 8, 1, 1))], ["N", 3, 4, 4], opset)


def test_resize_with_sizes_read_from_its_input_passes_channels():
    analysis = analyze(normalize(resize_by_shape()))
    conv = next(g for g in analysis.groups if g.anchor == "conv")
    assert conv.prunable, conv.blocked
    assert self_check(analysis).passed


def test_resize_with_sizes_from_another_tensor_blocks():
    """Sizes whose channel entry is another tensor's dim (here the graph input's 3) are not
    followed: after pruning they would no longer match."""
    model = resize_by_shape()
    next(n for n in model.graph.node if n.name == "shape").input[:] = ["x"]
    analysis = analyze(normalize(model))
    conv = next(g for g in analysis.groups if g.anchor == "conv")
    assert any("computed sizes" in r for r in conv.blocked), conv.blocked


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_prunes_whole_output_channels(mode):
    model = make([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("DepthToSpace", ["c"], ["d"], name="d2s", blocksize=2, mode=mode),
        helper.make_node("Conv", ["d", "w2"], ["y"], name="conv2"),
    ], [const("w", (16, 3, 1, 1)), const("w2", (4, 4, 1, 1))], [1, 3, 4, 4])
    analysis = analyze(normalize(model))
    conv = next(g for g in analysis.groups if g.anchor == "conv")
    assert conv.prunable and conv.channels == 4  # four output channels, each four input channels
    assert self_check(analysis).passed


def test_space_to_depth_repeats_each_channel():
    model = make([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("SpaceToDepth", ["c"], ["d"], name="s2d", blocksize=2),
        helper.make_node("Conv", ["d", "w2"], ["y"], name="conv2"),
    ], [const("w", (6, 3, 1, 1)), const("w2", (4, 24, 1, 1))], [1, 3, 4, 4])
    analysis = analyze(normalize(model))
    conv = next(g for g in analysis.groups if g.anchor == "conv")
    assert conv.prunable and conv.channels == 6
    assert self_check(analysis).passed


def packing(target, x_shape=(1, 16, 8)) -> onnx.ModelProto:
    """magika: ``MatMul → Reshape([1, 16, 8] → [1, 4, 32])`` packs 4 tokens into one; the
    next MatMul reads channel ``8·t + c``."""
    return make([
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "target"], ["p"], name="pack"),
        helper.make_node("MatMul", ["p", "w2"], ["y"], name="head"),
    ], [const("w", (x_shape[-1], 8)), const("target", values=np.array(target, np.int64)),
        const("w2", (np.prod(target[2:], dtype=int) if len(target) > 2 else 32, 5))], list(x_shape))


def test_token_packing_reshape_is_mapped():
    analysis = analyze(normalize(packing([1, 4, 32])))
    proj = next(g for g in analysis.groups if g.anchor == "proj")
    assert proj.prunable, proj.blocked
    ids = analysis.axes["p"].ids
    assert np.array_equal(ids, np.tile(analysis.axes["r"].ids, 4))  # j = 8t + c
    assert self_check(analysis).passed


def test_token_mixing_reshape_is_refused_with_the_reason():
    """``[1, 16, 8] → [1, 8, 16]`` with 8 channels: channel c lands at 8t + c of 16, fine; but
    ``[1, 16, 8] → [1, 32, 4]`` splits each channel's 8 values across two rows: refused."""
    analysis = analyze(normalize(packing([1, 32, 4])))
    proj = next(g for g in analysis.groups if g.anchor == "proj")
    assert any("mixes the channel axis" in r for r in proj.blocked), proj.blocked


# ---------------------------------------------------------------- opset imports
def test_every_opset_import_is_kept(tmp_path):
    """tf2onnx declares ``ai.onnx.ml`` even when no node uses it: the pruned model declares it
    too, at the same version (fused or not)."""
    model = make([
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "bb", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
    ], [const("w", (8, 3, 3, 3)), const("g", values=RNG.uniform(0.5, 1.5, 8).astype(np.float32)), const("bb", (8,)),
        const("m", (8,)), const("v", values=RNG.uniform(0.5, 1.5, 8).astype(np.float32)), const("w2", (4, 8, 1, 1))],
        [1, 3, 6, 6], 17, [helper.make_opsetid("ai.onnx.ml", 3), helper.make_opsetid("com.example", 1)], [1, 4, 4, 4])
    onnx.save(model, tmp_path / "m.onnx")
    for fuse in (True, False):
        out = tmp_path / f"p{fuse}.onnx"
        prune_file(tmp_path / "m.onnx", out, PruneOptions(ratio=0.5, round_to=1, fuse=fuse))
        pruned = onnx.load(out)
        assert [(o.domain, o.version) for o in pruned.opset_import] == [(o.domain, o.version) for o in model.opset_import]


# ---------------------------------------------------------------- selections (NMS-free heads)
def topk_head(noise: float = 0.0, box_scale: float = 1.0) -> onnx.ModelProto:
    """``x [N, A, 5]`` (4 box coordinates and a score per anchor) → the 10 best anchors by score
    (``TopK``), their boxes gathered (``GatherElements``) → ``y [N, 10, 5]``. ``noise`` is added
    to ``x`` first (fp32 round-off of an exact rewrite, reordering near-ties); ``box_scale``
    scales the boxes (a genuine error)."""
    a = 64
    rng = np.random.default_rng(7)
    return make([
        helper.make_node("Add", ["x", "noise"], ["xn"], name="noise"),
        helper.make_node("Slice", ["xn", "b0", "b4", "ax2"], ["raw_boxes"], name="boxes"),
        helper.make_node("Mul", ["raw_boxes", "scale"], ["boxes"], name="scale"),
        helper.make_node("Gather", ["xn", "i4"], ["scores"], name="scores", axis=2),
        helper.make_node("TopK", ["scores", "k"], ["values", "index"], name="topk", axis=1),
        helper.make_node("Unsqueeze", ["index", "ax2"], ["index1"], name="index1"),
        helper.make_node("Expand", ["index1", "shape4"], ["index4"], name="index4"),
        helper.make_node("GatherElements", ["boxes", "index4"], ["chosen"], name="chosen", axis=1),
        helper.make_node("Unsqueeze", ["values", "ax2"], ["values1"], name="values1"),
        helper.make_node("Concat", ["chosen", "values1"], ["y"], name="rows", axis=2),
    ], [const("noise", values=(noise * rng.choice([-1.0, 1.0], (1, a, 5))).astype(np.float32)),
        const("b0", values=np.array([0], np.int64)), const("b4", values=np.array([4], np.int64)),
        const("ax2", values=np.array([2], np.int64)), const("scale", values=np.float32(box_scale)),
        const("i4", values=np.array(4, np.int64)), const("k", values=np.array([10], np.int64)),
        const("shape4", values=np.array([1, 10, 4], np.int64))], [1, a, 5], 17, y_shape=[1, 10, 5])


def near_ties() -> dict:
    """Scores 1e-7 apart (so 1e-6 of noise reorders them) and boxes far apart."""
    x = np.random.default_rng(3).uniform(0, 320, (1, 64, 5)).astype(np.float32)
    x[0, :, 4] = 0.5 + 1e-7 * np.random.default_rng(4).permutation(64)
    return {"x": x}


def test_selected_rows_are_compared_at_what_the_selection_reads():
    """Round-off reorders the TopK: row by row the outputs differ by whole box coordinates, yet
    the comparison (the tensors TopK and GatherElements read) sees only the round-off."""
    from onnxprune.runtime.exactness import comparison_points, compare

    reference, jittered = topk_head(), topk_head(noise=1e-6)
    feeds = near_ties()
    (y_ref,), (y_jit,) = session(reference).run(None, feeds), session(jittered).run(None, feeds)
    assert np.abs(y_ref - y_jit).max() > 1.0  # other rows were chosen
    points = comparison_points(normalize(reference))
    assert points.selected == {"y": ["boxes", "scores"]} and points.selections == ["TopK"]
    result = compare(normalize(reference), normalize(jittered), feeds)
    assert result.within(1e-4) and result.max_abs_error < 1e-5


def test_a_genuine_error_before_the_selection_still_fails():
    from onnxprune.runtime.exactness import compare

    result = compare(normalize(topk_head()), normalize(topk_head(box_scale=1.01)), near_ties())
    assert not result.within(1e-4) and result.errors["boxes"] > 0.1


def test_self_check_fails_on_a_broken_rewrite_of_an_end_to_end_detector(exported, monkeypatch):
    """The YOLO26-style head of ``models/`` passes the self-check, and a rewrite that keeps the
    wrong channels (each slice shifted by one) fails it."""
    from onnxprune import rewrite
    from onnxprune.pipeline import load_and_analyze

    analysis = load_and_analyze(exported("yolo_e2e", False))
    check = self_check(analysis)
    assert check.passed and "TopK" in check.selections, check
    sliced = rewrite._sliced

    def shifted(tensor, masks):
        return sliced(tensor, {axis: np.roll(mask, 1) for axis, mask in masks.items()})

    monkeypatch.setattr(rewrite, "_sliced", shifted)
    broken = self_check(load_and_analyze(exported("yolo_e2e", False)))
    assert not broken.passed and broken.max_abs_error > 1e-2


def test_verify_compares_selected_outputs_where_self_check_does(tmp_path):
    """``verify`` adds rows for the tensors a selection reads, marked as such in the JSON."""
    from clirun import cli, ok
    import json

    onnx.save(topk_head(), tmp_path / "a.onnx")
    onnx.save(topk_head(noise=1e-6), tmp_path / "b.onnx")
    np.savez(tmp_path / "d.npz", **near_ties())
    result = ok(cli("verify", tmp_path / "a.onnx", tmp_path / "b.onnx", "--data", tmp_path / "d.npz", "--json", "-"))
    data = json.loads(result.stdout)
    assert data["selected"] == {"y": ["boxes", "scores"]}
    errors = {o["name"]: o["max_abs_error"] for o in data["outputs"]}
    assert errors["y"] > 1.0 and errors["boxes"] < 1e-5 and errors["scores"] < 1e-5
    assert "boxes (selection input of y)" in result.stderr and "note: y is chosen by a selection" in result.stderr


# ---------------------------------------------------------------- Expand and shared shape literals
def broadcast_stats(share_with_other: bool = False) -> onnx.ModelProto:
    """magika's decomposed LayerNorm over tokens: ``x [1, 6, 5]`` → MatMul to ``h [1, 6, 8]``
    (channels last) → mean over the tokens ``[1, 1, 8]`` → ``Expand`` back to
    ``Concat(Shape(h)[0:1], [6], [8])`` and subtracted. With ``share_with_other``, the same
    target also broadcasts the mean of another group's ``p``, so its literal 8 cannot change."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("ReduceMean", ["h", "tokens"], ["mean"], name="mean", keepdims=1),
        helper.make_node("Shape", ["h"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "z0", "z1"], ["batch"], name="batch"),
        helper.make_node("Concat", ["batch", "t6", "c8"], ["target"], name="target", axis=0),
        helper.make_node("Expand", ["mean", "target"], ["m"], name="broadcast"),
        helper.make_node("Sub", ["h", "m"], ["d"], name="centre"),
        helper.make_node("MatMul", ["d", "w2"], ["y" if not share_with_other else "y0"], name="head"),
    ]
    inits = [const("w", (5, 8)), const("tokens", values=np.array([1], np.int64)),
             const("z0", values=np.array([0], np.int64)), const("z1", values=np.array([1], np.int64)),
             const("t6", values=np.array([6], np.int64)), const("c8", values=np.array([8], np.int64)),
             const("w2", (8, 3))]
    if share_with_other:
        nodes += [helper.make_node("MatMul", ["x", "wp"], ["p"], name="other"),
                  helper.make_node("ReduceMean", ["p", "tokens"], ["pm"], name="pmean", keepdims=1),
                  helper.make_node("Expand", ["pm", "target"], ["pe"], name="pbroadcast"),
                  helper.make_node("MatMul", ["pe", "wq"], ["y1"], name="phead"),
                  helper.make_node("Add", ["y0", "y1"], ["y"], name="join")]
        inits += [const("wp", (5, 8)), const("wq", (8, 3))]
    return make(nodes, inits, [1, 6, 5], 18)


def test_expand_of_statistics_passes_channels_and_rewrites_the_literal():
    analysis = analyze(normalize(broadcast_stats()))
    proj = next(g for g in analysis.groups if g.anchor == "proj")
    assert proj.prunable, proj.blocked
    assert self_check(analysis).passed


def test_a_shape_literal_shared_with_other_channels_freezes():
    analysis = analyze(normalize(broadcast_stats(share_with_other=True)))
    proj = next(g for g in analysis.groups if g.anchor == "proj")
    assert any("shares its computed shape" in r for r in proj.blocked), proj.blocked
    assert self_check(analysis).passed


@pytest.mark.parametrize("op, attrs, channels", [("DepthToSpace", {"mode": "DCR"}, 8), ("DepthToSpace", {"mode": "CRD"}, 8),
                                                  ("SpaceToDepth", {}, 2)])
def test_torch_bridge_rearranges_depth_as_onnxruntime_does(op, attrs, channels):
    torch = pytest.importorskip("torch")
    from onnxprune.torch.graph_module import GraphModule

    model = make([helper.make_node(op, ["x"], ["y"], name="d", blocksize=2, **attrs)], [], [1, channels, 4, 6])
    x = RNG.standard_normal((1, channels, 4, 6)).astype(np.float32)
    (expected,) = session(model).run(None, {"x": x})
    with torch.no_grad():
        (got,) = GraphModule(model)(torch.from_numpy(x))
    np.testing.assert_array_equal(got.numpy(), expected)
