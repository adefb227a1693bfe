"""Reference architectures (models/) and their ONNX export (models/export.py).

Every registered model is built, exported with and without BN folding, checked by the
ONNX checker, run in onnxruntime and compared with torch. The structure tests assert the
ops that make each architecture interesting to a pruner (Split/Concat, depthwise conv,
SE gates, Flatten→Gemm, option-B shortcuts); each is also run on an export that lacks
that structure (ResNet-20, or DenseNet for the shortcut check), where it must fail.
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
from models.export import export_onnx, main  # noqa: E402

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


def check_depthwise(model: onnx.ModelProto) -> None:
    """MobileNetV2: a Conv with group == in channels == out channels > 1, and Clip (ReLU6)."""
    g = Graph(model)
    depthwise = [
        n for n in g.of_type("Conv")
        if attr(n, "group", 1) > 1
        and g.weights[n.input[1]][1] == 1
        and g.weights[n.input[1]][0] == attr(n, "group")
    ]
    assert depthwise, "no depthwise Conv"
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


STRUCTURE = {
    "yolo_c2f": check_c2f_split_concat,
    "densenet": check_dense_concat,
    "mobilenetv2": check_depthwise,
    "se_resnet": check_se_gate,
    "vgg16_bn": check_flatten_mlp,
    "resnet56": check_option_b_shortcut,
}


# ------------------------------------------------------------------------- registry


def test_registry_names_and_shapes():
    assert set(ARCHITECTURES) == {
        "resnet20", "resnet56", "vgg16_bn", "mobilenetv2", "densenet", "yolo_c2f", "se_resnet", "resnet50",
    }
    for name, arch in ARCHITECTURES.items():
        assert isinstance(arch, Architecture) and arch.name == name
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
def test_batchnorm_is_not_identity(name, model_of):
    bns = [m for m in model_of(name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
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
