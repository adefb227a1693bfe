"""Reference architectures (models/) and their ONNX export (models/export.py).

Every registered model is built, exported with and without BN folding, checked by the
ONNX checker, run in onnxruntime and compared with torch. The structure tests assert the
ops that make each architecture interesting to a pruner (Split/Concat, depthwise and
grouped convs, SE gates, Flatten→Gemm, option-B shortcuts, hard-swish, SiLU, LayerNorm
over channels, ConvTranspose/Resize up paths, attention between activations); each is
also run on ResNet-20 and on a near miss (an export with similar but not the same
structure), where it must fail. The export variants (dynamo exporter, dynamic H/W,
onnxruntime's attention fusion, float16) are tested at the end.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from models import ARCHITECTURES, Architecture, build  # noqa: E402
from models.common import randomize_bn  # noqa: E402
from models.export import ATTENTION_OPS, export_onnx, fuse_attention, main, to_fp16  # noqa: E402
from models.transformer import vit  # noqa: E402

FAST = [name for name in ARCHITECTURES if name != "resnet50"]
ALL = [*FAST, pytest.param("resnet50", marks=pytest.mark.slow)]
TOLERANCE = 1e-4  # max abs error between torch and onnxruntime, fp32


# ---------------------------------------------------------------- helpers and fixtures


@pytest.fixture(scope="module")
def model_of() -> Callable[[str], torch.nn.Module]:
    """Build each architecture once per module (seed 0)."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            cache[name] = build(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def export_of(tmp_path_factory, model_of) -> Callable[..., onnx.ModelProto]:
    """Export each (architecture, fold_bn) once per module, at the default opset 17.

    To halve the number of exports, the BN-folded one also has a dynamic batch axis
    (test_dynamic_batch uses it); the BN-kept one is fully static.
    """
    cache: dict[tuple[str, bool], onnx.ModelProto] = {}

    def get(name: str, fold_bn: bool = False) -> onnx.ModelProto:
        key = (name, fold_bn)
        if key not in cache:
            path = tmp_path_factory.mktemp(name) / f"{name}_fold{int(fold_bn)}.onnx"
            export_onnx(
                model_of(name), path, ARCHITECTURES[name].input_shape,
                fold_bn=fold_bn, dynamic_batch=fold_bn,
            )
            cache[key] = onnx.load(path)
        return cache[key]

    return get


def sample(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_ort(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    # One thread, no spin-waiting: idle onnxruntime workers would otherwise busy-wait
    # and starve torch's threads in the same process (a 5x slowdown on 2 cores).
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (y,) = session.run(None, {"input": x.numpy()})
    return y


def assert_matches_torch(model: torch.nn.Module, exported: onnx.ModelProto, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(x).numpy()
    actual = run_ort(exported, x)
    assert actual.shape == expected.shape
    error = float(np.abs(actual - expected).max())
    assert error < TOLERANCE, f"max abs error {error:.3g}"


class Graph:
    """Producer/consumer look-up over an ONNX graph, with initializer shapes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = collections.defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        self.weights = {init.name: tuple(init.dims) for init in model.graph.initializer}

    def of_type(self, *op_types: str) -> list:
        return [node for node in self.nodes if node.op_type in op_types]

    def parent(self, node, index: int = 0):
        return self.producer.get(node.input[index])

    def op_types(self) -> set[str]:
        return {node.op_type for node in self.nodes}

    def is_constant(self, name: str) -> bool:
        """True for an initializer, a Constant, or an op computed from constants only
        (e.g. the weight ``Transpose`` of a ``Linear`` exported without constant folding)."""
        if name in self.weights:
            return True
        node = self.producer.get(name)
        if node is None:
            return False
        return node.op_type == "Constant" or all(self.is_constant(i) for i in node.input if i)

    def skip(self, name: str, *op_types: str):
        """The producer of ``name``, looking through ``op_types`` (first input each time)."""
        node = self.producer.get(name)
        while node is not None and node.op_type in op_types:
            node = self.producer.get(node.input[0])
        return node


def attr(node, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {
        v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in values
    }


# ------------------------------------------------------------------ structure checks
# Each takes the BN-kept export and raises AssertionError when the structure is absent.


def check_c2f_split_concat(model: onnx.ModelProto) -> None:
    """YOLO C2f: a channel Split into two, and a channel Concat of ≥ 3 tensors fed by it."""
    g = Graph(model)
    splits = [n for n in g.of_type("Split") if attr(n, "axis", 0) == 1 and len(n.output) == 2]
    assert splits, "no 2-way channel Split"
    split_outputs = {out for n in splits for out in n.output}
    c2f_concats = [
        n for n in g.of_type("Concat")
        if attr(n, "axis") == 1 and len(n.input) >= 3 and split_outputs & set(n.input)
    ]
    assert c2f_concats, "no channel Concat consuming Split outputs"
    pooled = [n for n in g.of_type("Concat") if any(
        g.producer.get(i) is not None and g.producer[i].op_type == "MaxPool" for i in n.input)]
    assert pooled, "no SPPF Concat of MaxPool outputs"
    assert g.of_type("Resize"), "no upsample"


def check_dense_concat(model: onnx.ModelProto) -> None:
    """DenseNet: channel Concats of ≥ 3 tensors, one per layer beyond the second."""
    g = Graph(model)
    dense = [n for n in g.of_type("Concat") if attr(n, "axis") == 1 and len(n.input) >= 3]
    assert len(dense) >= 3, f"only {len(dense)} channel Concats with ≥ 3 inputs"
    assert any(
        g.consumers[n.output[0]] and g.consumers[n.output[0]][0].op_type == "BatchNormalization"
        for n in dense
    ), "no pre-activation BN on a Concat"


def depthwise_convs(g: Graph) -> list:
    """Convs with group == in channels == out channels > 1."""
    return [
        n for n in g.of_type("Conv")
        if attr(n, "group", 1) > 1
        and g.weights[n.input[1]][1] == 1
        and g.weights[n.input[1]][0] == attr(n, "group")
    ]


def check_depthwise(model: onnx.ModelProto) -> None:
    """MobileNetV2: a Conv with group == in channels == out channels > 1, and Clip (ReLU6)."""
    g = Graph(model)
    assert depthwise_convs(g), "no depthwise Conv"
    assert g.of_type("Clip"), "no ReLU6 (Clip)"


def check_se_gate(model: onnx.ModelProto) -> None:
    """SE: Mul(trunk, Sigmoid|HardSigmoid(Conv(Relu(Conv(GlobalAveragePool(trunk))))))."""
    g = Graph(model)
    for mul in g.of_type("Mul"):
        for index in (0, 1):
            chain = [g.parent(mul, index)]
            while chain[-1] is not None and len(chain) < 5:
                chain.append(g.parent(chain[-1]))
            if None in chain:
                continue
            if [n.op_type for n in chain] in (
                ["Sigmoid", "Conv", "Relu", "Conv", "GlobalAveragePool"],
                ["HardSigmoid", "Conv", "Relu", "Conv", "GlobalAveragePool"],
            ) and chain[-1].input[0] == mul.input[1 - index]:
                return
    raise AssertionError("no squeeze-excitation Mul gate")


def check_flatten_mlp(model: onnx.ModelProto) -> None:
    """VGG: Flatten|Reshape of a map with H·W > 1 → Gemm|MatMul → Relu → Gemm|MatMul."""
    g = Graph(model)
    shapes = static_shapes(model)
    for flat in g.of_type("Flatten", "Reshape"):
        (first, *_) = g.consumers[flat.output[0]] or [None]
        if first is None or first.op_type not in ("Gemm", "MatMul"):
            continue
        source = shapes.get(flat.input[0], ())
        if len(source) != 4 or source[2] * source[3] <= 1:
            continue
        relu = g.consumers[first.output[0]]
        if relu and relu[0].op_type == "Relu":
            second = g.consumers[relu[0].output[0]]
            if second and second[0].op_type in ("Gemm", "MatMul"):
                return
    raise AssertionError("no Flatten (H·W > 1) → Gemm → Relu → Gemm head")


def check_option_b_shortcut(model: onnx.ModelProto) -> None:
    """ResNet: a strided 1x1 Conv (+ BN) shortcut feeding a residual Add."""
    g = Graph(model)
    for add in g.of_type("Add"):
        for name in add.input:
            node = g.producer.get(name)
            if node is not None and node.op_type == "BatchNormalization":
                node = g.parent(node)
            if (
                node is not None and node.op_type == "Conv"
                and attr(node, "kernel_shape") == [1, 1] and attr(node, "strides") == [2, 2]
            ):
                return
    raise AssertionError("no option-B shortcut")


def check_grouped_conv(model: onnx.ModelProto) -> None:
    """ResNeXt: a 3x3 Conv with 1 < group < in channels (grouped, not depthwise) whose
    output, after BN/ReLU, reaches a residual Add through a 1x1 Conv."""
    g = Graph(model)
    grouped = [
        n for n in g.of_type("Conv")
        if attr(n, "group", 1) > 1 and g.weights[n.input[1]][1] > 1
        and attr(n, "kernel_shape") == [3, 3]
    ]
    assert grouped, "no grouped (non-depthwise) 3x3 Conv"
    assert g.of_type("Add"), "no residual Add"


def check_grouped_se(model: onnx.ModelProto) -> None:
    """RegNetY: grouped convs with different group counts (fixed group width) and SE gates."""
    check_grouped_conv(model)
    g = Graph(model)
    groups = {attr(n, "group") for n in g.of_type("Conv") if attr(n, "group", 1) > 1}
    assert len(groups) >= 2, f"one group count only: {groups}"
    check_se_gate(model)


def check_inception_concat(model: onnx.ModelProto) -> None:
    """Inception: a channel Concat of ≥ 3 branches, one of them MaxPool(stride 1) → 1x1 Conv,
    another a chain of two 3x3 Convs (the factorised 5x5)."""
    g = Graph(model)
    act = ("BatchNormalization", "Relu")
    for concat in g.of_type("Concat"):
        if attr(concat, "axis") != 1 or len(concat.input) < 3:
            continue
        heads = [g.skip(i, *act) for i in concat.input]
        if any(h is None or h.op_type != "Conv" for h in heads):
            continue
        pooled = [h for h in heads if (p := g.parent(h)) is not None and p.op_type == "MaxPool"
                  and attr(p, "strides") == [1, 1] and attr(h, "kernel_shape") == [1, 1]]
        double = [h for h in heads if attr(h, "kernel_shape") == [3, 3]
                  and (p := g.skip(h.input[0], *act)) is not None and p.op_type == "Conv"
                  and attr(p, "kernel_shape") == [3, 3]]
        if pooled and double:
            return
    raise AssertionError("no Inception Concat (pool-projection and double-3x3 branches)")


def is_hard_swish(g: Graph, node) -> bool:
    """``HardSwish``, ``Mul(x, HardSigmoid(x))`` (opset < 14), or ``Mul(x, Clip(x + 3, 0, 6)) / 6``."""
    if node.op_type == "HardSwish":
        return True
    if node.op_type == "Div":
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Mul":
        return False
    for index in (0, 1):
        gate = g.producer.get(node.input[index])
        if gate is None:
            continue
        if gate.op_type == "HardSigmoid" and gate.input[0] == node.input[1 - index]:
            return True
        if gate.op_type == "Clip" and (add := g.parent(gate)) is not None and add.op_type == "Add" \
                and node.input[1 - index] in add.input:
            return True
    return False


def check_hard_swish_se(model: onnx.ModelProto) -> None:
    """MobileNetV3: hard-swish after convs, depthwise convs, and an SE gate whose gate is a
    hard-sigmoid (``HardSigmoid``, or ``Clip(x + 3, 0, 6) / 6``)."""
    g = Graph(model)
    assert any(is_hard_swish(g, n) for n in g.nodes), "no hard-swish"
    assert depthwise_convs(g), "no depthwise Conv"
    for mul in g.of_type("Mul"):
        for index in (0, 1):
            gate = g.producer.get(mul.input[index])
            if gate is not None and gate.op_type == "Div":
                gate = g.parent(gate)
            if gate is None or gate.op_type not in ("HardSigmoid", "Clip"):
                continue
            squeeze = g.skip(gate.input[0], "Add", "Conv", "Relu")
            if squeeze is not None and squeeze.op_type in ("GlobalAveragePool", "ReduceMean") \
                    and squeeze.input[0] == mul.input[1 - index]:
                return
    raise AssertionError("no hard-sigmoid SE gate")


def is_silu(g: Graph, node) -> bool:
    """``Mul(x, Sigmoid(x))``."""
    if node.op_type != "Mul":
        return False
    return any(
        (p := g.producer.get(node.input[i])) is not None and p.op_type == "Sigmoid"
        and p.input[0] == node.input[1 - i]
        for i in (0, 1)
    )


def check_silu_mbconv(model: onnx.ModelProto) -> None:
    """EfficientNet: SiLU as Sigmoid → Mul, depthwise convs, and an SE gate
    ``Mul(x, Sigmoid(Conv(SiLU(Conv(pool(x))))))``."""
    g = Graph(model)
    assert any(is_silu(g, n) for n in g.nodes), "no SiLU (Sigmoid → Mul)"
    assert depthwise_convs(g), "no depthwise Conv"
    for mul in g.of_type("Mul"):
        for index in (0, 1):
            gate = g.producer.get(mul.input[index])
            if gate is None or gate.op_type != "Sigmoid" or gate.input[0] == mul.input[1 - index]:
                continue
            expand = g.parent(gate)
            silu = g.parent(expand) if expand is not None and expand.op_type == "Conv" else None
            if silu is None or not is_silu(g, silu):
                continue
            reduce = g.producer.get(silu.input[0])
            pool = g.parent(reduce) if reduce is not None and reduce.op_type == "Conv" else None
            if pool is not None and pool.op_type in ("GlobalAveragePool", "ReduceMean") \
                    and pool.input[0] == mul.input[1 - index]:
                return
    raise AssertionError("no SE gate with a SiLU squeeze")


LAYER_NORM_DECOMPOSED = ["Div", "Sqrt", "Add", "ReduceMean", "Pow", "Sub"]
"""LayerNorm below opset 17, walked up from the Div: (x - mean) / sqrt(mean((x - mean)²) + ε)."""


def is_layer_norm(g: Graph, node) -> bool:
    """``LayerNormalization`` or its opset < 17 spelling (matched from the ``Div``)."""
    if node.op_type == "LayerNormalization":
        return True
    if node.op_type != "Div":
        return False
    chain, current = [node], g.parent(node, 1)
    while current is not None and len(chain) < len(LAYER_NORM_DECOMPOSED):
        chain.append(current)
        current = g.parent(current)
    centered = g.parent(node)
    return [n.op_type for n in chain] == LAYER_NORM_DECOMPOSED and centered is not None and centered.op_type == "Sub"


def check_convnext(model: onnx.ModelProto) -> None:
    """ConvNeXt: depthwise 7x7 Conv → Transpose (NHWC) → LayerNorm → MatMul (the Linear)."""
    g = Graph(model)
    for conv in depthwise_convs(g):
        if attr(conv, "kernel_shape") != [7, 7]:
            continue
        (transpose, *_) = g.consumers[conv.output[0]] or [None]
        if transpose is None or transpose.op_type != "Transpose" or attr(transpose, "perm") != [0, 2, 3, 1]:
            continue
        frontier = [transpose]
        for _ in range(10):  # the decomposed LayerNorm is 9 nodes deep
            frontier = [c for n in frontier for c in g.consumers[n.output[0]]]
            if any(is_layer_norm(g, n) for n in frontier):
                return
    raise AssertionError("no depthwise 7x7 Conv → Transpose → LayerNorm")


def check_unet(model: onnx.ModelProto) -> None:
    """U-Net: a ConvTranspose and a Resize, each feeding (directly or through a Conv) a
    channel Concat with an encoder skip; a 4-D output with the input's spatial size."""
    g = Graph(model)
    ups = {"ConvTranspose": False, "Resize": False}
    for concat in g.of_type("Concat"):
        if attr(concat, "axis") != 1 or len(concat.input) != 2:
            continue
        for name in concat.input:
            node = g.skip(name, "Conv")
            if node is not None and node.op_type in ups:
                ups[node.op_type] = True
            node = g.producer.get(name)
            if node is not None and node.op_type in ups:
                ups[node.op_type] = True
    assert all(ups.values()), f"up paths into a skip Concat: {ups}"
    shapes = static_shapes(model)
    (x, y) = (shapes[model.graph.input[0].name], shapes[model.graph.output[0].name])
    assert len(y) == 4 and y[2:] == x[2:], f"output {y} is not a map of the input's size {x}"


def check_attention(model: onnx.ModelProto) -> None:
    """Transformer: Softmax(MatMul(q, kᵀ) scaled) → MatMul(·, v), both MatMuls between two
    activations, with q/k/v split into heads by Reshape → Transpose."""
    g = Graph(model)
    blocks = 0
    for softmax in g.of_type("Softmax"):
        (av, *_) = g.consumers[softmax.output[0]] or [None]
        if av is None or av.op_type != "MatMul" or any(g.is_constant(i) for i in av.input):
            continue
        qk = g.skip(softmax.input[0], "Div", "Mul")
        if qk is None or qk.op_type != "MatMul" or any(g.is_constant(i) for i in qk.input):
            continue
        heads = [g.producer.get(i) for i in (*qk.input, av.input[1])]
        heads = [g.skip(h.input[0], "Transpose") if h is not None and h.op_type == "Transpose" else h
                 for h in heads]
        if all(h is not None and h.op_type == "Reshape" for h in heads):
            blocks += 1
    assert blocks, "no attention (Reshape/Transpose heads, MatMul between activations, Softmax)"


STRUCTURE = {
    "yolo_c2f": check_c2f_split_concat,
    "densenet": check_dense_concat,
    "mobilenetv2": check_depthwise,
    "se_resnet": check_se_gate,
    "vgg16_bn": check_flatten_mlp,
    "resnet56": check_option_b_shortcut,
    "resnext": check_grouped_conv,
    "regnet": check_grouped_se,
    "inception": check_inception_concat,
    "mobilenetv3": check_hard_swish_se,
    "efficientnet": check_silu_mbconv,
    "convnext": check_convnext,
    "unet": check_unet,
    "vit": check_attention,
    "bert": check_attention,
}

NEAR_MISSES = [
    ("resnext", "mobilenetv2"),   # depthwise, not grouped
    ("regnet", "resnext"),        # grouped, but one group count and no SE
    ("inception", "densenet"),    # ≥ 3-input Concats without pool/double-3x3 branches
    ("mobilenetv3", "se_resnet"),  # Sigmoid SE gates, ReLU
    ("mobilenetv3", "mobilenetv2"),  # depthwise + Clip (ReLU6) but no hard-swish
    ("efficientnet", "yolo_c2f"),  # SiLU without depthwise convs or SE
    ("efficientnet", "mobilenetv3"),  # depthwise + SE, but hard-sigmoid and ReLU squeeze
    ("convnext", "mobilenetv2"),  # depthwise 3x3, no LayerNorm
    ("convnext", "vit"),          # LayerNorm and Transpose, no depthwise 7x7
    ("unet", "yolo_c2f"),         # Resize + Concat but no ConvTranspose, vector output
    ("vit", "convnext"),          # MatMul with weights only, no Softmax
]
"""(check, export that lacks the checked structure but has something close to it)."""


# ------------------------------------------------------------------------- registry


def test_registry_names_and_shapes():
    assert set(ARCHITECTURES) == {
        "resnet20", "resnet56", "vgg16_bn", "mobilenetv2", "densenet", "yolo_c2f", "se_resnet", "resnet50",
        "resnext", "regnet", "inception", "mobilenetv3", "efficientnet", "convnext", "unet", "vit", "bert",
    }
    for name, arch in ARCHITECTURES.items():
        assert isinstance(arch, Architecture) and arch.name == name
        if name == "bert":
            assert arch.input_shape == (1, 16, 64)  # [B, T, D] input embeddings
        else:
            assert len(arch.input_shape) == 4 and arch.input_shape[:2] == (1, 3)
        assert arch.description and "\n" not in arch.description
    assert ARCHITECTURES["resnet50"].input_shape == (1, 3, 224, 224)
    with pytest.raises(Exception):
        ARCHITECTURES["resnet20"].name = "x"  # frozen


def test_build_unknown_name():
    with pytest.raises(KeyError, match="resnet20"):
        build("resnet21")


@pytest.mark.parametrize("name", FAST)
def test_build_is_deterministic_and_leaves_global_rng(name, model_of):
    a = model_of(name)  # seed 0
    before = torch.random.get_rng_state()
    b, c = build(name, seed=0), build(name, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not a.training and not b.training
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize("name", FAST)
def test_normalization_is_not_identity(name, model_of):
    """Every BatchNorm has random affine parameters and measured statistics; every
    LayerNorm (ConvNeXt, transformers) has random affine parameters."""
    modules = list(model_of(name).modules())
    bns = [m for m in modules if isinstance(m, torch.nn.BatchNorm2d)]
    lns = [m for m in modules if isinstance(m, torch.nn.LayerNorm)]
    assert bns or lns
    for ln in lns:
        assert ln.weight.std() > 0.05 and (ln.weight - 1).abs().max() > 0.1
        assert ln.bias.abs().max() > 0.05
    for bn in bns:
        assert bn.weight.std() > 0.05 and (bn.weight - 1).abs().max() > 0.1
        assert bn.bias.abs().max() > 0.05
        assert (bn.running_var > 0).all() and (bn.running_var - 1).abs().max() > 0.05
        assert bn.running_mean.abs().max() > 1e-3


@pytest.mark.parametrize("name", FAST)
def test_output_is_bounded_and_depends_on_input(name, model_of):
    model, shape = model_of(name), ARCHITECTURES[name].input_shape
    with torch.no_grad():
        y1, y2 = model(sample(shape, 1)), model(sample(shape, 2))
    assert torch.isfinite(y1).all() and y1.abs().max() < 100
    assert (y1 - y2).abs().max() > 0.05 * y1.abs().max()


def test_randomize_bn_draws_layernorm_after_batchnorm():
    """LayerNorm draws come after every BN draw: a model without LayerNorm gets the same
    BN parameters as before LayerNorm support, and a LayerNorm is no longer the identity."""
    generator = torch.Generator().manual_seed(0)
    bn_only = torch.nn.BatchNorm2d(8)
    randomize_bn(bn_only, generator)
    both = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.BatchNorm2d(8))
    randomize_bn(both, torch.Generator().manual_seed(0))
    assert torch.equal(both[1].weight, bn_only.weight)
    assert both[0].weight.std() > 0.05 and both[0].bias.abs().max() > 0.05


def test_randomize_bn_without_calibration():
    bn = torch.nn.BatchNorm2d(16)
    randomize_bn(bn, torch.Generator().manual_seed(0))
    assert not bn.training
    assert (bn.running_var >= 0.5).all() and bn.running_var.std() > 0.1
    assert bn.running_mean.std() > 0.05 and bn.weight.std() > 0.05


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("fold_bn", [False, True], ids=["bn", "folded"])
@pytest.mark.parametrize("name", ALL)
def test_export_is_valid_and_matches_torch(name, fold_bn, model_of, export_of):
    exported = export_of(name, fold_bn)
    onnx.checker.check_model(exported, full_check=True)
    assert_matches_torch(model_of(name), exported, sample(ARCHITECTURES[name].input_shape))


@pytest.mark.parametrize("name", FAST)
def test_fold_bn_controls_batchnorm_nodes(name, model_of, export_of):
    """Without folding there is one BN node per BN module; with folding exactly the BNs
    whose input is a single-consumer Conv disappear (DenseNet keeps its pre-activation BNs)."""
    kept = Graph(export_of(name, fold_bn=False))
    bn_nodes = kept.of_type("BatchNormalization")
    modules = [m for m in model_of(name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn_nodes) == len(modules)
    foldable = [
        n for n in bn_nodes
        if (p := kept.parent(n)) is not None and p.op_type == "Conv" and len(kept.consumers[p.output[0]]) == 1
    ]
    folded = Graph(export_of(name, fold_bn=True))
    assert len(folded.of_type("BatchNormalization")) == len(bn_nodes) - len(foldable)
    assert len(folded.of_type("Conv")) == len(kept.of_type("Conv"))


@pytest.mark.parametrize("name", sorted(STRUCTURE))
def test_structure(name, export_of):
    STRUCTURE[name](export_of(name))


@pytest.mark.parametrize("name", sorted(set(STRUCTURE) - {"resnet56"}))
def test_structure_check_rejects_plain_resnet(name, export_of):
    with pytest.raises(AssertionError):
        STRUCTURE[name](export_of("resnet20"))


@pytest.mark.parametrize(("name", "other"), NEAR_MISSES, ids=[f"{a}-on-{b}" for a, b in NEAR_MISSES])
def test_structure_check_rejects_near_miss(name, other, export_of):
    with pytest.raises(AssertionError):
        STRUCTURE[name](export_of(other))


def test_structure_checks_accept_folded_exports(export_of):
    """The checks do not depend on BN nodes or on unfolded weight Transposes."""
    for name in ("resnext", "inception", "mobilenetv3", "efficientnet", "convnext", "unet", "vit", "bert"):
        STRUCTURE[name](export_of(name, fold_bn=True))


def test_option_b_check_rejects_densenet(export_of):
    with pytest.raises(AssertionError):
        check_option_b_shortcut(export_of("densenet"))


@pytest.mark.parametrize("name", FAST)
def test_dynamic_batch(name, model_of, export_of):
    static, dynamic = export_of(name, fold_bn=False), export_of(name, fold_bn=True)
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    for value in (dynamic.graph.input[0], dynamic.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert_matches_torch(model_of(name), dynamic, sample((3, *ARCHITECTURES[name].input_shape[1:])))


OLDER_OPSETS = [(name, 11) for name in FAST] + [("yolo_c2f", 13)]
"""Every model at the oldest supported opset (17, the default, is tested above); the
op-richest one also at 13, where Split's sizes move from an attribute to an input."""


@pytest.mark.parametrize(("name", "opset"), OLDER_OPSETS)
def test_older_opsets(name, opset, model_of, tmp_path):
    arch = ARCHITECTURES[name]
    path = export_onnx(model_of(name), tmp_path / "m.onnx", arch.input_shape, opset=opset)
    exported = onnx.load(path)
    assert exported.opset_import[0].version == opset
    onnx.checker.check_model(exported, full_check=True)
    assert_matches_torch(model_of(name), exported, sample(arch.input_shape))
    if name in STRUCTURE:  # e.g. LayerNorm and hard-swish are spelled differently below 17 and 14
        STRUCTURE[name](exported)


def test_opset_11_spells_layernorm_and_hardswish_out(model_of, tmp_path):
    """Below opset 17 LayerNorm is ReduceMean/Sub/Pow/Sqrt/Div; below 14 hard-swish is
    HardSigmoid·Mul. At 17 both are single ops (checked on the default exports)."""
    convnext = onnx.load(export_onnx(model_of("convnext"), tmp_path / "c.onnx", (1, 3, 32, 32), opset=11))
    ops = Graph(convnext).op_types()
    assert "LayerNormalization" not in ops and {"ReduceMean", "Pow", "Sqrt", "Div"} <= ops
    mbv3 = onnx.load(export_onnx(model_of("mobilenetv3"), tmp_path / "m.onnx", (1, 3, 32, 32), opset=11))
    assert "HardSwish" not in Graph(mbv3).op_types()


def test_opset_17_ops(export_of):
    """What the TorchScript exporter writes at opset 17 for the ops that matter here."""
    convnext, vit_, mbv3 = (Graph(export_of(n)).op_types() for n in ("convnext", "vit", "mobilenetv3"))
    assert "LayerNormalization" in convnext and "ReduceMean" in convnext  # only the final pool
    assert {"Erf", "Softmax", "LayerNormalization"} <= vit_ and "Gelu" not in vit_
    assert {"HardSwish", "HardSigmoid"} <= mbv3


def test_export_silences_deprecation_only_inside(model_of, tmp_path):
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(model_of("resnet20"), tmp_path / "sub" / "m.onnx", (1, 3, 32, 32))
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert warnings.filters == filters
    assert (tmp_path / "sub" / "m.onnx").is_file()


def test_export_keeps_training_mode(tmp_path):
    model = build("resnet20").train()
    export_onnx(model, tmp_path / "m.onnx", (1, 3, 32, 32))
    assert model.training
    assert "BatchNormalization" in Graph(onnx.load(tmp_path / "m.onnx")).op_types()


def test_cli(tmp_path, capsys):
    out = tmp_path / "r20.onnx"
    assert main(["resnet20", str(out), "--opset", "13", "--fold-bn", "--dynamic-batch"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    exported = onnx.load(out)
    assert exported.opset_import[0].version == 13
    assert "BatchNormalization" not in Graph(exported).op_types()
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with pytest.raises(SystemExit):
        main(["nonexistent", str(out)])


# ------------------------------------------------------------------ export variants


def run_ort_raw(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    return y


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize(("name", "hw"), [("resnet20", (40, 24)), ("unet", (48, 20))])
def test_dynamic_hw(name, hw, model_of, tmp_path):
    model = model_of(name)
    exported = onnx.load(export_onnx(model, tmp_path / "m.onnx", ARCHITECTURES[name].input_shape, dynamic_hw=True))
    onnx.checker.check_model(exported, full_check=True)
    assert dims(exported.graph.input[0]) == ["batch", 3, "height", "width"]
    expected_out = ["batch", 2, "height", "width"] if name == "unet" else ["batch", 10]
    assert dims(exported.graph.output[0]) == expected_out
    assert_matches_torch(model, exported, sample((2, 3, *hw)))


def test_dynamic_hw_needs_nchw(model_of, tmp_path):
    with pytest.raises(ValueError, match="NCHW"):
        export_onnx(model_of("bert"), tmp_path / "m.onnx", (1, 16, 64), dynamic_hw=True)


def test_dynamo_refuses_old_opsets(model_of, tmp_path):
    with pytest.raises(ValueError, match="18"):
        export_onnx(model_of("resnet20"), tmp_path / "m.onnx", (1, 3, 32, 32), dynamo=True, opset=17)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_end_to_end_head_exports_its_selection(tmp_path):
    """The NMS-free variant: ``TopK`` over the anchors and ``GatherElements`` of the chosen boxes
    in the graph, and onnxruntime computes what torch does: ``(N, 32, 6)`` rows of box, score,
    class, best first."""
    from models import VARIANTS

    model = build("yolo_e2e")
    exported = onnx.load(export_onnx(model, tmp_path / "e2e.onnx", VARIANTS["yolo_e2e"].input_shape))
    ops = collections.Counter(n.op_type for n in exported.graph.node)
    assert ops["TopK"] == 1 and ops["GatherElements"] == 2 and ops["ArgMax"] == 1
    x = sample(VARIANTS["yolo_e2e"].input_shape)
    assert_matches_torch(model, exported, x)
    rows = run_ort(exported, x)[0]
    assert rows.shape == (32, 6) and (np.diff(rows[:, 4]) <= 0).all()  # sorted by score
    assert ((rows[:, 5] >= 0) & (rows[:, 5] < 80) & (rows[:, 5] == np.round(rows[:, 5]))).all()


def test_dynamo_export_resnet20(model_of, tmp_path):
    """Dynamo: symbolic batch dim, parameter names kept, BN kept unless fold_bn."""
    pytest.importorskip("onnxscript")
    model = model_of("resnet20").train()  # traced in eval mode, mode restored
    kept = onnx.load(export_onnx(model, tmp_path / "kept.onnx", (1, 3, 32, 32), dynamo=True, dynamic_batch=True))
    assert model.training
    model.eval()
    onnx.checker.check_model(kept, full_check=True)
    assert kept.opset_import[0].version >= 18
    (batch, *rest) = kept.graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and not batch.dim_value and [d.dim_value for d in rest] == [3, 32, 32]
    assert kept.graph.output[0].type.tensor_type.shape.dim[0].dim_param == batch.dim_param
    graph = Graph(kept)
    assert len(graph.of_type("BatchNormalization")) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert "stem.conv.weight" in graph.weights
    assert {"Conv", "Relu", "Add", "Gemm"} <= graph.op_types() <= {"Conv", "BatchNormalization", "Relu", "Add", "Gemm", "ReduceMean", "Reshape"}
    assert_matches_torch(model, kept, sample((3, 3, 32, 32)))
    folded = onnx.load(export_onnx(model, tmp_path / "folded.onnx", (1, 3, 32, 32), dynamo=True, fold_bn=True))
    assert "BatchNormalization" not in Graph(folded).op_types()
    assert dims(folded.graph.input[0]) == [1, 3, 32, 32]
    assert_matches_torch(model, folded, sample((1, 3, 32, 32)))


@pytest.mark.slow
def test_dynamo_export_transformer(model_of, tmp_path):
    """Dynamo writes GELU as one Gelu op (opset 20) and keeps LayerNormalization; the
    attention is still plain Reshape/Transpose/MatMul/Softmax."""
    pytest.importorskip("onnxscript")
    model = model_of("vit")
    exported = onnx.load(export_onnx(model, tmp_path / "v.onnx", (1, 3, 32, 32), dynamo=True, dynamic_batch=True))
    onnx.checker.check_model(exported, full_check=True)
    ops = Graph(exported).op_types()
    assert {"Gelu", "LayerNormalization"} <= ops and "Erf" not in ops
    check_attention(exported)
    assert_matches_torch(model, exported, sample((2, 3, 32, 32)))


@pytest.mark.slow
def test_dynamo_dynamic_hw(model_of, tmp_path):
    """Dynamo with dynamic H and W: torch's symbols (e.g. "s53") on the input, and
    expressions such as "4*((s53//4))" on the U-Net's output map."""
    pytest.importorskip("onnxscript")
    model = model_of("unet")
    exported = onnx.load(export_onnx(model, tmp_path / "u.onnx", (1, 3, 32, 32), dynamo=True, dynamic_hw=True))
    (batch, channels, height, width) = dims(exported.graph.input[0])
    assert batch == "batch" and channels == 3 and isinstance(height, str) and isinstance(width, str)
    assert height != width
    out = dims(exported.graph.output[0])
    assert out[:2] == ["batch", 2] and height in out[2] and width in out[3]
    assert_matches_torch(model, exported, sample((2, 3, 48, 40)))


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_fuse_attention(name, model_of, export_of, tmp_path):
    """onnxruntime's optimizer turns every plain-op attention block into one
    com.microsoft Attention; the fused model still matches torch."""
    src = tmp_path / "plain.onnx"
    onnx.save(export_of(name, fold_bn=True), src)
    fused = onnx.load(fuse_attention(src, tmp_path / "fused.onnx", num_heads=4, hidden_size=64))
    attention = [n for n in fused.graph.node if n.op_type in ATTENTION_OPS]
    assert attention and all(n.domain == "com.microsoft" for n in attention)
    assert len(attention) == len(Graph(export_of(name)).of_type("Softmax"))
    assert "Softmax" not in Graph(fused).op_types()
    assert_matches_torch(model_of(name), fused, sample((2, *ARCHITECTURES[name].input_shape[1:])))


def test_fuse_attention_needs_the_div_spelling(tmp_path):
    """The optimizer does not match mask-free attention scaled with Mul (timm's spelling)."""
    src = export_onnx(vit(scale="mul"), tmp_path / "mul.onnx", (1, 3, 32, 32))
    with pytest.raises(RuntimeError, match="fused no attention"):
        fuse_attention(src, tmp_path / "fused.onnx", num_heads=4, hidden_size=64)
    assert not (tmp_path / "fused.onnx").exists()


@pytest.mark.parametrize("name", ["resnet20", "bert"])
def test_fp16(name, model_of, export_of, tmp_path):
    src = tmp_path / "fp32.onnx"
    onnx.save(export_of(name, fold_bn=True), src)
    half = onnx.load(to_fp16(src, tmp_path / "fp16.onnx"))
    onnx.checker.check_model(half, full_check=True)
    float_types = {i.data_type for i in half.graph.initializer} & {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    assert float_types == {onnx.TensorProto.FLOAT16}
    for value in (half.graph.input[0], half.graph.output[0]):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = sample((2, *ARCHITECTURES[name].input_shape[1:]))
    y = run_ort_raw(half, x.numpy().astype(np.float16))
    assert y.dtype == np.float16
    with torch.no_grad():
        expected = model_of(name)(x).numpy()
    assert np.abs(y.astype(np.float32) - expected).max() < 1e-2 * max(1.0, float(np.abs(expected).max()))


def test_cli_variants(tmp_path, capsys):
    out = tmp_path / "bert.onnx"
    assert main(["bert", str(out), "--fold-bn", "--dynamic-batch", "--fuse-attention", "--fp16"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    exported = onnx.load(out)
    assert "Attention" in Graph(exported).op_types()
    assert exported.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    with pytest.raises(SystemExit):
        main(["resnet20", str(tmp_path / "r.onnx"), "--fuse-attention"])
