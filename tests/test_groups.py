"""The analyzer (``graph.normalize`` + ``groups.analyze``) on small hand-built graphs.

Every case asserts the exact group structure: how many groups, their channel counts, which are
blocked and why, which channel spaces (creating nodes) they hold, and which weight tensors and
axes are their parameter slots, with the channel ids each slot carries. Expected values are
written out from the graph's construction, never read back from the analyzer.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import graphs
from graphs import OPSETS, Builder
from onnxprune.graph import normalize
from onnxprune.analysis.groups import BIAS, CONST, IN, NORM, OUT, analyze

OUTPUT = "reaches graph output '{}'"


def analyzed(model: onnx.ModelProto):
    return analyze(normalize(model))


def structure(a) -> list[tuple]:
    """(channels, creating nodes, blocked reasons) per group, in group order."""
    return [(g.channels, [s.node for s in g.spaces], g.blocked) for g in a.groups]


def slot_keys(group) -> set[tuple]:
    return {(s.tensor, s.axis, s.role) for s in group.slots}


def find_slot(group, tensor: str, axis: int):
    (found,) = [s for s in group.slots if s.tensor == tensor and s.axis == axis]
    return found


def ids(a, tensor: str) -> np.ndarray:
    """Channel ids of an activation tensor."""
    return a.axes[tensor].ids


def units(a, tensor: str) -> np.ndarray:
    """Union-find units of an activation tensor's channels."""
    return a.root_of[a.axes[tensor].ids]


def bn_slots(name: str) -> set[tuple]:
    return {(f"{name}_scale", 0, NORM), (f"{name}_bias", 0, BIAS), (f"{name}_mean", 0, BIAS), (f"{name}_var", 0, BIAS)}


def conv_out_slots(name: str, bias: bool = True) -> set[tuple]:
    return {(f"{name}_w", 0, OUT)} | ({(f"{name}_b", 0, BIAS)} if bias else set())


# --------------------------------------------------------------------------- 1. a plain chain


@pytest.mark.parametrize("opset", OPSETS)
def test_conv_bn_relu_conv(opset):
    a = analyzed(graphs.conv_bn_relu_conv(opset))
    assert structure(a) == [(8, ["conv0"], []), (4, ["conv1"], [OUTPUT.format("conv1_y")])]
    g0, g1 = a.groups
    assert g0.prunable and not g1.prunable
    assert g0.anchor == "conv0" and g0.id == "g0"
    assert slot_keys(g0) == conv_out_slots("conv0") | bn_slots("bn0") | {("conv1_w", 1, IN)}
    assert slot_keys(g1) == conv_out_slots("conv1")
    assert g0.nodes == ["conv0", "bn0", "relu0", "conv1"]
    # The same 8 ids run through BN and Relu and index conv1's input axis, in order.
    c = ids(a, "conv0_y")
    assert len(set(a.root_of[c].tolist())) == 8
    for tensor in ("bn0_y", "relu0_y"):
        np.testing.assert_array_equal(ids(a, tensor), c)
    np.testing.assert_array_equal(find_slot(g0, "conv1_w", 1).ids, c)
    np.testing.assert_array_equal(find_slot(g0, "bn0_scale", 0).ids, c)
    np.testing.assert_array_equal(g0.units, a.root_of[c])


# --------------------------------------------------------------------------- 2. residual Add


@pytest.mark.parametrize("opset", OPSETS)
def test_residual_add_couples_both_convs(opset):
    a = analyzed(graphs.residual(opset))
    assert structure(a) == [(6, ["conv0", "conv1"], []), (4, ["conv2"], [OUTPUT.format("conv2_y")])]
    g0 = a.groups[0]
    assert slot_keys(g0) == conv_out_slots("conv0") | conv_out_slots("conv1") | {("conv1_w", 1, IN), ("conv2_w", 1, IN)}
    # Channel i of conv0 and channel i of conv1 are one unit; the six units are distinct.
    np.testing.assert_array_equal(units(a, "conv0_y"), units(a, "conv1_y"))
    assert len(set(units(a, "conv0_y").tolist())) == 6
    # conv1 reads conv0's channels and writes the same units: its in and out slots line up.
    conv1_in, conv1_out = find_slot(g0, "conv1_w", 1), find_slot(g0, "conv1_w", 0)
    np.testing.assert_array_equal(a.root_of[conv1_in.ids], a.root_of[conv1_out.ids])


# --------------------------------------------------------------------------- 3. Concat offsets


@pytest.mark.parametrize("opset", OPSETS)
def test_concat_keeps_groups_apart_and_offsets_consumer_columns(opset):
    a = analyzed(graphs.concat_channels(opset))
    assert structure(a) == [(4, ["conv0"], []), (6, ["conv1"], []), (5, ["conv2"], [OUTPUT.format("conv2_y")])]
    g0, g1, _ = a.groups
    assert slot_keys(g0) == conv_out_slots("conv0") | {("conv2_w", 1, IN)}
    assert slot_keys(g1) == conv_out_slots("conv1") | {("conv2_w", 1, IN)}
    # conv2's input axis: columns 0..3 are conv0's channels, columns 4..9 conv1's.
    column_ids = find_slot(g0, "conv2_w", 1).ids
    assert len(column_ids) == 10
    np.testing.assert_array_equal(column_ids[:4], ids(a, "conv0_y"))
    np.testing.assert_array_equal(column_ids[4:], ids(a, "conv1_y"))
    assert set(a.root_of[column_ids[:4]].tolist()) == set(g0.units.tolist())
    assert set(a.root_of[column_ids[4:]].tolist()) == set(g1.units.tolist())
    assert not set(g0.units.tolist()) & set(g1.units.tolist())


# --------------------------------------------------------------------------- 4. Split / Concat


@pytest.mark.parametrize("opset", OPSETS)
def test_split_then_concat_c2f(opset):
    a = analyzed(graphs.split_concat(opset))
    assert structure(a) == [(8, ["conv0"], []), (4, ["conv1"], []), (6, ["conv2"], [OUTPUT.format("conv2_y")])]
    g0, g1, _ = a.groups
    assert slot_keys(g0) == conv_out_slots("conv0") | {("conv1_w", 1, IN), ("conv2_w", 1, IN)}
    assert slot_keys(g1) == conv_out_slots("conv1") | {("conv2_w", 1, IN)}
    c = ids(a, "conv0_y")
    np.testing.assert_array_equal(ids(a, "split0_y0"), c[:4])
    np.testing.assert_array_equal(ids(a, "split0_y1"), c[4:])
    np.testing.assert_array_equal(find_slot(g0, "conv1_w", 1).ids, c[4:])
    # concat(y0, y1, conv1_y): conv2's 12 input columns are conv0's 8 channels then conv1's 4.
    columns = find_slot(g0, "conv2_w", 1).ids
    np.testing.assert_array_equal(columns, np.concatenate([c, ids(a, "conv1_y")]))


@pytest.mark.parametrize("opset", OPSETS)
def test_uneven_split(opset):
    g = Builder(opset)
    y0, y1 = g.split(g.conv(g.input([1, 3, 8, 8]), 8), [3, 5])
    a = analyzed(g.output(g.conv(y0, 2), g.conv(y1, 2)).model())
    assert [grp.channels for grp in a.groups] == [8, 2, 2]
    c = ids(a, "conv0_y")
    np.testing.assert_array_equal(find_slot(a.groups[0], "conv1_w", 1).ids, c[:3])
    np.testing.assert_array_equal(find_slot(a.groups[0], "conv2_w", 1).ids, c[3:])


@pytest.mark.parametrize("opset", OPSETS)
def test_slice_takes_channel_ranges(opset):
    a = analyzed(graphs.slice_chunk(opset))
    assert structure(a) == [(8, ["conv0"], []), (3, ["conv1"], []), (2, ["conv2"], [OUTPUT.format("conv2_y")])]
    c = ids(a, "conv0_y")
    np.testing.assert_array_equal(ids(a, "slice0_y"), c[:3])
    np.testing.assert_array_equal(ids(a, "slice1_y"), c[3:])
    np.testing.assert_array_equal(find_slot(a.groups[0], "conv2_w", 1).ids, np.concatenate([ids(a, "conv1_y"), c[3:]]))
    assert slot_keys(a.groups[0]) == conv_out_slots("conv0") | {("conv1_w", 1, IN), ("conv2_w", 1, IN)}


def test_split_halves_added_together_pair_channels():
    # add(y0, y1) of the two halves of conv0: channel i and channel i + 4 are one unit.
    g = Builder()
    y0, y1 = g.split(g.conv(g.input([1, 3, 4, 4]), 8), [4, 4])
    a = analyzed(g.output(g.conv(g.add(y0, y1), 2)).model())
    assert structure(a) == [(4, ["conv0"], []), (2, ["conv1"], [OUTPUT.format("conv1_y")])]
    u = units(a, "conv0_y")
    np.testing.assert_array_equal(u[:4], u[4:])
    assert len(set(u.tolist())) == 4


def test_concat_with_graph_input_blocks_only_that_part():
    g = Builder()
    x = g.input([1, 3, 4, 4])
    a = analyzed(g.output(g.conv(g.concat([g.conv(x, 4), x]), 2)).model())
    assert structure(a) == [
        (4, ["conv0"], []),
        (3, ["concat0"], ["concatenated with untraced tensor 'x' (node concat0)"]),
        (2, ["conv1"], [OUTPUT.format("conv1_y")]),
    ]


# --------------------------------------------------------------------------- 5. depthwise and grouped


@pytest.mark.parametrize("opset", OPSETS)
def test_depthwise_shares_the_producers_group(opset):
    a = analyzed(graphs.depthwise(opset))
    assert structure(a) == [(8, ["conv0", "conv1"], []), (6, ["conv2"], [OUTPUT.format("conv2_y")])]
    g0 = a.groups[0]
    # The depthwise weight W[8, 1, 3, 3] is sliced on axis 0 only; its axis 1 (size 1) is not a slot.
    assert slot_keys(g0) == (conv_out_slots("conv0") | bn_slots("bn0") | conv_out_slots("conv1") | bn_slots("bn1")
                             | {("conv2_w", 1, IN)})
    np.testing.assert_array_equal(units(a, "conv0_y"), units(a, "conv1_y"))
    assert len(set(units(a, "conv1_y").tolist())) == 8


def test_depthwise_with_channel_multiplier():
    a = analyzed(graphs.depthwise_multiplier())
    assert structure(a) == [(4, ["conv0", "conv1"], []), (3, ["conv2"], [OUTPUT.format("conv2_y")])]
    # group=4 with 8 outputs: input channel c drives outputs 2c and 2c+1, all one unit.
    np.testing.assert_array_equal(units(a, "conv1_y"), np.repeat(units(a, "conv0_y"), 2))
    np.testing.assert_array_equal(a.groups[0].units, units(a, "conv0_y"))


@pytest.mark.parametrize("opset", OPSETS)
def test_grouped_conv_units_are_whole_conv_groups(opset):
    a = analyzed(graphs.grouped(opset))
    # group=2, 4 in / 4 out per conv-group: the group's channels are its 2 conv-groups.
    assert structure(a) == [(2, ["conv0", "conv1"], []), (3, ["conv2"], [OUTPUT.format("conv2_y")])]
    g0 = a.groups[0]
    assert g0.channels == 2 == len(g0.units)
    u0, u1 = g0.units.tolist()
    assert u0 != u1
    np.testing.assert_array_equal(units(a, "conv0_y"), [u0] * 4 + [u1] * 4)
    np.testing.assert_array_equal(units(a, "conv1_y"), [u0] * 4 + [u1] * 4)
    # W[8, 4, 3, 3]: the full axis 0 is a slot; the per-group axis 1 is not.
    assert slot_keys(g0) == conv_out_slots("conv0") | conv_out_slots("conv1") | {("conv2_w", 1, IN)}


# --------------------------------------------------------------------------- 6. SE gate


@pytest.mark.parametrize("opset", OPSETS)
def test_se_gate(opset):
    a = analyzed(graphs.se_gate(opset))
    assert structure(a) == [(8, ["conv0", "conv2"], []), (2, ["conv1"], []), (4, ["conv3"], [OUTPUT.format("conv3_y")])]
    g0, g1, _ = a.groups
    # The excite conv's output (the gate) is tied to the trunk by the Mul.
    np.testing.assert_array_equal(units(a, "conv0_y"), units(a, "conv2_y"))
    assert slot_keys(g0) == conv_out_slots("conv0") | conv_out_slots("conv2") | {("conv1_w", 1, IN), ("conv3_w", 1, IN)}
    assert slot_keys(g1) == conv_out_slots("conv1") | {("conv2_w", 1, IN)}


# --------------------------------------------------------------------------- 7. Flatten / Reshape → Gemm

FLATTENS = ["flatten", "reshape", "reshape36", "computed", "computed36"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("how", FLATTENS)
def test_flatten_gemm_columns_repeat_each_channel(how, opset):
    a = analyzed(graphs.flatten_gemm(opset, how=how))
    assert structure(a) == [(4, ["conv0"], []), (5, ["gemm0"], [OUTPUT.format("gemm0_y")])]
    g0, g1 = a.groups
    assert slot_keys(g0) == conv_out_slots("conv0") | {("gemm0_w", 1, IN)}
    assert slot_keys(g1) == {("gemm0_w", 0, OUT), ("gemm0_b", 0, BIAS)}
    columns = find_slot(g0, "gemm0_w", 1).ids
    c = ids(a, "conv0_y")
    # 4 channels on a 3x3 map: 36 columns, channel k at columns 9k .. 9k+8.
    assert len(columns) == 36
    np.testing.assert_array_equal(columns, [c[k // 9] for k in range(36)])


# --------------------------------------------------------------------------- 8. MLP head


@pytest.mark.parametrize("trans_b", [True, False])
def test_mlp_hidden_dim_is_a_group(trans_b):
    g = Builder()
    model = g.output(g.gemm(g.relu(g.gemm(g.input([1, 16]), 32, trans_b=trans_b)), 10, trans_b=trans_b)).model()
    a = analyzed(model)
    assert structure(a) == [(32, ["gemm0"], []), (10, ["gemm1"], [OUTPUT.format("gemm1_y")])]
    out_axis, in_axis = (0, 1) if trans_b else (1, 0)
    assert slot_keys(a.groups[0]) == {("gemm0_w", out_axis, OUT), ("gemm0_b", 0, BIAS), ("gemm1_w", in_axis, IN)}
    np.testing.assert_array_equal(find_slot(a.groups[0], "gemm1_w", in_axis).ids, ids(a, "gemm0_y"))


def test_matmul_hidden_dim_on_last_axis():
    a = analyzed(graphs.matmul_tokens())
    assert structure(a) == [(32, ["matmul0"], []), (8, ["matmul1"], [OUTPUT.format("matmul1_y")])]
    assert a.axes["matmul0_y"].axis == 2
    # The bias [32] aligns with the last (channel) axis: a per-channel constant.
    assert slot_keys(a.groups[0]) == {("matmul0_w", 1, OUT), ("add0_c", 0, CONST), ("matmul1_w", 0, IN)}


def test_conv_transpose_slots():
    a = analyzed(graphs.conv_transpose())
    assert structure(a) == [(6, ["conv0"], []), (4, ["convt0"], []), (3, ["conv1"], [OUTPUT.format("conv1_y")])]
    # ConvTranspose W[C_in, C_out, k, k]: inputs on axis 0, outputs on axis 1.
    assert slot_keys(a.groups[0]) == conv_out_slots("conv0") | {("convt0_w", 0, IN)}
    assert slot_keys(a.groups[1]) == {("convt0_w", 1, OUT), ("convt0_b", 0, BIAS), ("conv1_w", 1, IN)}


# --------------------------------------------------------------------------- 9. Constant / Identity weights


def signature(a, rename=lambda name: name) -> list:
    """Everything about the groups that does not depend on how weights were stored.

    ``rename`` maps weight names to the reference's (an Identity's input may stand for it).
    """
    return [
        (g.id, g.channels, g.units.tolist(), [(s.node, s.tensor, s.ids.tolist()) for s in g.spaces], g.blocked, g.nodes,
         sorted((s.node_index, s.input_index, rename(s.tensor), s.axis, s.role, s.ids.tolist()) for s in g.slots))
        for g in a.groups
    ]


def raw_to_weight(name: str) -> str:
    """The builder stores Identity-hidden weight ``w`` as initializer ``w_raw`` → ``Identity`` → ``w``."""
    return name.removesuffix("_raw")


CATALOGUE = ["conv_bn_relu_conv", "residual", "split_concat", "grouped", "se_gate", "flatten_gemm", "mlp",
             "per_channel_consts", "conv_transpose"]


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("weights", ["constant", "identity"])
@pytest.mark.parametrize("case", CATALOGUE)
def test_weights_in_constant_or_identity_nodes_fold(case, weights, opset):
    reference = normalize(graphs.CASES[case](opset, "init"))
    model = graphs.CASES[case](opset, weights)
    assert any(n.op_type in ("Constant", "Identity") for n in model.graph.node)
    folded = normalize(model)
    # No Constant/Identity node is left; the other nodes are the reference's, in order.
    assert [n.op_type for n in folded.graph.node] == [n.op_type for n in reference.graph.node]
    assert [n.name for n in folded.graph.node] == [n.name for n in reference.graph.node]
    # Every weight is an initializer with the reference's values, and nothing else is stored.
    values = {raw_to_weight(t.name): onnx.numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert sorted(values) == sorted(t.name for t in reference.graph.initializer)
    for t in reference.graph.initializer:
        np.testing.assert_array_equal(values[t.name], onnx.numpy_helper.to_array(t))
    assert signature(analyze(folded), raw_to_weight) == signature(analyze(reference))


def test_normalize_leaves_no_unread_initializer():
    for weights in ("constant", "identity"):
        folded = normalize(graphs.mlp(17, weights))
        read = {name for node in folded.graph.node for name in node.input}
        assert sorted(t.name for t in folded.graph.initializer if t.name not in read) == []


# --------------------------------------------------------------------------- 10. blocking


def two_convs_around(op_type: str, opset: int = 17, **attrs):
    """x → conv0(8) → <op> → conv1(4) → relu → conv2(3) → out."""
    g = Builder(opset)
    y = g.conv(g.input([1, 3, 6, 6]), 8)
    y = g.op(op_type, [y], **attrs)
    return g.output(g.conv(g.relu(g.conv(y, 4, k=1)), 3, k=1)).model()


def test_op_without_rule_blocks_with_its_name():
    a = analyzed(two_convs_around("LRN", size=3))
    assert structure(a) == [
        (8, ["conv0"], ["op LRN has no pruning rule (node lrn0)"]),
        (4, ["conv1"], []),
        (3, ["conv2"], [OUTPUT.format("conv2_y")]),
    ]
    # conv1 reads an untraced tensor: no input slot.
    assert slot_keys(a.groups[1]) == conv_out_slots("conv1") | {("conv2_w", 1, IN)}
    assert slot_keys(a.groups[0]) == conv_out_slots("conv0")


def test_custom_domain_op_blocks_with_its_domain():
    g = Builder()
    y = g.conv(g.input([1, 3, 6, 6]), 8)
    y = g.op("Relu", [y], domain="com.example", shape=(1, 8, 6, 6), name="custom0")
    model = g.output(g.conv(g.relu(g.conv(y, 4, k=1)), 3, k=1)).model()
    a = analyzed(model)
    assert [(grp.channels, grp.blocked) for grp in a.groups] == [
        (8, ["op com.example::Relu has no pruning rule (node custom0)"]),
        (4, []),
        (3, [OUTPUT.format("conv2_y")]),
    ]


@pytest.mark.parametrize("opset", OPSETS)
def test_softmax_over_channels_blocks(opset):
    a = analyzed(two_convs_around("Softmax", opset, axis=1))
    assert a.groups[0].blocked == ["Softmax normalizes over the channel axis (node softmax0)"]
    assert [grp.prunable for grp in a.groups] == [False, True, False]


@pytest.mark.parametrize("opset", OPSETS)
def test_softmax_over_width_does_not_block(opset):
    # Opset < 13 flattens from `axis`: axis=3 of [N, C, H, W] normalizes over W only, as from 13.
    a = analyzed(two_convs_around("Softmax", opset, axis=3))
    assert [grp.prunable for grp in a.groups] == [True, True, False]
    assert ("conv1_w", 1, IN) in slot_keys(a.groups[0])


def test_softmax_over_height_blocks_only_before_opset_13():
    # Opset 11 flattens [N, C, H, W] at axis 2 into [N*C, H*W]: still per channel, so no block;
    # opset 11 at axis 1 mixes C, H and W.
    assert analyzed(two_convs_around("Softmax", 11, axis=2)).groups[0].prunable
    assert not analyzed(two_convs_around("Softmax", 11, axis=1)).groups[0].prunable
    assert not analyzed(two_convs_around("Softmax", 11, axis=0)).groups[0].prunable


def reduce_mean_between_convs(opset: int, axes):
    g = Builder(opset)
    y = g.reduce_mean(g.conv(g.input([1, 3, 6, 6]), 8), axes, keepdims=1)
    return g.output(g.conv(y, 4, k=1)).model()


@pytest.mark.parametrize("opset", OPSETS)
def test_reduce_mean_over_channels_blocks(opset):
    a = analyzed(reduce_mean_between_convs(opset, [1]))
    assert structure(a) == [
        (8, ["conv0"], ["ReduceMean reduces over the channel axis (node reducemean0)"]),
        (4, ["conv1"], [OUTPUT.format("conv1_y")]),
    ]


@pytest.mark.parametrize("opset", OPSETS)
def test_reduce_mean_over_space_passes_channels(opset):
    a = analyzed(reduce_mean_between_convs(opset, [2, 3]))
    assert [(grp.channels, grp.blocked) for grp in a.groups] == [(8, []), (4, [OUTPUT.format("conv1_y")])]
    assert ("conv1_w", 1, IN) in slot_keys(a.groups[0])


def test_graph_output_in_the_middle_blocks_that_group():
    g = Builder()
    r = g.relu(g.conv(g.input([1, 3, 6, 6]), 8))
    y = g.relu(g.conv(r, 6))
    a = analyzed(g.output(g.conv(y, 4), r).model())
    assert structure(a) == [
        (8, ["conv0"], [OUTPUT.format("relu0_y")]),
        (6, ["conv1"], []),
        (4, ["conv2"], [OUTPUT.format("conv2_y")]),
    ]


def test_tensor_read_inside_a_subgraph_blocks():
    from onnx import TensorProto, helper, numpy_helper

    def branch(op_type: str, out: str) -> onnx.GraphProto:
        """A one-node subgraph reading ``relu0_y`` from the enclosing graph."""
        node = helper.make_node(op_type, ["relu0_y"], [out])
        return helper.make_graph([node], out, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])

    g = Builder()
    r = g.relu(g.conv(g.input([1, 3, 4, 4]), 8))
    y = g.conv(r, 4)
    g.inits.append(numpy_helper.from_array(np.array(True), "cond"))
    z = g.op("If", ["cond"], name="if0", then_branch=branch("Identity", "then_y"), else_branch=branch("Neg", "else_y"),
             shape=(1, 8, 4, 4))
    a = analyzed(g.output(y, z).model())
    # relu0_y is read by the If's branches: conv0's channels must not be removed.
    assert not a.groups[0].prunable


# --------------------------------------------------------------------------- 11. per-channel constants


@pytest.mark.parametrize("opset", OPSETS)
def test_per_channel_constants_are_slots_and_scalars_are_not(opset):
    a = analyzed(graphs.per_channel_consts(opset))
    assert structure(a) == [(4, ["conv0"], []), (3, ["conv1"], [OUTPUT.format("conv1_y")])]
    g0 = a.groups[0]
    # add0_c is [1,4,1,1] (axis 1), mul0_c is [4,1,1] (axis 0), div0_c is a scalar: no slot.
    assert slot_keys(g0) == conv_out_slots("conv0") | {("add0_c", 1, CONST), ("mul0_c", 0, CONST), ("conv1_w", 1, IN)}
    np.testing.assert_array_equal(find_slot(g0, "mul0_c", 0).ids, ids(a, "conv0_y"))


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div", "Pow", "PRelu"])
@pytest.mark.parametrize("shape, axis", [
    ((1, 4, 1, 1), 1), ((4, 1, 1), 0), ((1, 4, 3, 3), 1),  # per-channel (or per-element): a slot
    ((), None), ((1,), None),                              # scalars broadcast: no slot
])
def test_constant_operand_shapes(op_type, shape, axis):
    g = Builder()
    y = g.binary(op_type, g.conv(g.input([1, 3, 3, 3]), 4), np.full(shape, 0.5, np.float32))
    a = analyzed(g.output(g.conv(y, 2)).model())
    name = f"{op_type.lower()}0_c"
    expected = set() if axis is None else {(name, axis, CONST)}
    assert slot_keys(a.groups[0]) == conv_out_slots("conv0") | {("conv1_w", 1, IN)} | expected
    assert a.groups[0].prunable


def test_constant_on_the_last_axis_is_not_a_channel_slot():
    # [C] broadcasts against [N, C, H, W] on W (here W == C == 4): it does not index channels.
    g = Builder()
    y = g.add(g.conv(g.input([1, 3, 4, 4]), 4), np.arange(4, dtype=np.float32))
    a = analyzed(g.output(g.conv(y, 2)).model())
    assert slot_keys(a.groups[0]) == conv_out_slots("conv0") | {("conv1_w", 1, IN)}
    assert a.groups[0].prunable


def test_untraced_per_channel_input_freezes():
    # Adding a second graph input of shape [1, C, 1, 1] couples channels to data we cannot slice.
    g = Builder()
    y = g.conv(g.input([1, 3, 4, 4]), 4)
    bias = g.input([1, 4, 1, 1], name="bias")
    a = analyzed(g.output(g.conv(g.add(y, bias), 2)).model())
    assert a.groups[0].blocked == ["Add couples channels with an untraced tensor 'bias' (node add0)"]
