"""End-to-end tests of the ``onnxprune`` command line: analyze, prune, verify, bench.

The commands run in-process through ``click.testing.CliRunner`` (the rich Consoles in
``onnxprune.cli`` resolve ``sys.stdout``/``sys.stderr`` when they print, so the runner captures
both streams separately). A few tests run ``python -m onnxprune.cli`` as a subprocess to cover
the real entry point and a second interpreter.

Oracles are computed here, independently of onnxprune: MACs and params from the ONNX protos,
accuracies and output differences with onnxruntime. Nothing is ever written into ``models/``
(an autouse fixture checks that ``models/digits/`` is unchanged after the module).

Bad input must give exit code 2, ``error: ...`` on stderr, nothing on stdout and no traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference


from clirun import assert_bad_input, cli, ok, sha256
from onnxprune.analysis.rules import registered_ops

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
MODEL = MODELS_DIR / "digits" / "resnet8_digits.onnx"
DATA = MODELS_DIR / "digits" / "digits_test.npz"

# Prunable channels of the digits ResNet-8: conv1 16, layer1 16, layer2 32+32, layer3 64+64.
PRUNABLE_CHANNELS = 16 + 16 + 32 + 32 + 64 + 64


# ---------------------------------------------------------------- helpers
def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def float_params(model: onnx.ModelProto) -> int:
    """Elements of all float initializers: what the file stores.

    torch's exporter de-duplicates equal tensors into one initializer read through Identity
    nodes (the digits model does this for two BatchNorm biases); such a tensor is stored, and
    counted, once.
    """
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def count_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """MACs of the Conv and Gemm layers, from onnx's own shape inference (dynamic batch = ``batch``)."""
    inferred = shape_inference.infer_shapes(model)
    dims = {
        vi.name: [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            total += int(np.prod(dims[node.output[0]])) * int(np.prod(weights[node.input[1]][1:]))
        elif node.op_type == "Gemm":
            total += batch * int(np.prod(weights[node.input[1]]))
    return total


def conv_out_channels(model: onnx.ModelProto) -> dict[str, int]:
    """Output channels of every Conv, by node name, read off its weight."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    return {n.name: weights[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_model(path: Path, x: np.ndarray) -> np.ndarray:
    sess = session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def three_conv_model(path: Path, mid_op: str, domain: str = "", **attrs) -> Path:
    """Conv(3→8) → Relu → Conv(8→8) → ``mid_op`` → Conv(8→8) → Relu → Conv(8→4) on x [N, 3, 8, 8].

    The group of the second conv's output channels runs through ``mid_op``; with an op that has
    no pruning rule, that group must be blocked while the first and third stay prunable.
    """
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 8, 3, 3), weight("b2", 8),
             weight("w3", 8, 8, 3, 3), weight("b3", 8), weight("w4", 4, 8, 1, 1), weight("b4", 4)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node(mid_op, ["c2"], ["m"], name="mid", domain=domain, **attrs),
        helper.make_node("Conv", ["m", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["y"], name="conv4"),
    ]
    graph = helper.make_graph(nodes, "three_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, path)
    return path


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def models_dir_untouched():
    """Fail the module if any file in models/digits/ was added, removed or changed.

    (Only the shipped artifacts: the rest of models/ is source that others may be editing.)
    """

    def snapshot():
        return {p.name: sha256(p) for p in sorted(MODEL.parent.iterdir())}

    before = snapshot()
    yield
    assert snapshot() == before


@pytest.fixture(scope="module")
def digits():
    """The held-out digits set: ``input`` [540, 1, 32, 32] float32 and ``labels`` [540]."""
    with np.load(DATA) as z:
        return z["input"], z["labels"]


@pytest.fixture(scope="module")
def original() -> onnx.ModelProto:
    return onnx.load(str(MODEL))


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """``prune MODEL -o out.onnx --ratio 0.5 --json s.json --plan plan.json``, run once for the module."""
    d = tmp_path_factory.mktemp("pruned")
    hash_before = sha256(MODEL)
    result = ok(cli("prune", MODEL, "-o", d / "out.onnx", "--ratio", "0.5", "--json", d / "s.json", "--plan", d / "plan.json"))
    return SimpleNamespace(dir=d, out=d / "out.onnx", summary=read_json(d / "s.json"), plan_path=d / "plan.json",
                           plan=read_json(d / "plan.json"), result=result, hash_before=hash_before, hash_after=sha256(MODEL))


# ================================================================ analyze
def test_analyze_json_and_plot(tmp_path, original):
    result = ok(cli("analyze", MODEL, "--json", tmp_path / "out.json", "--plot", tmp_path / "g.png"))
    report = read_json(tmp_path / "out.json")

    totals = report["totals"]
    assert isinstance(totals["macs"], int) and totals["macs"] > 0
    assert totals["macs"] == count_macs(original) == 12_206_720
    assert totals["params"] == float_params(original)
    assert report["input_shapes"] == {"input": [1, 1, 32, 32]}

    groups = report["groups"]
    assert totals["groups"] == len(groups) == 7
    for g in groups:
        assert {"channels", "prunable", "blocked"} <= set(g)
        assert g["prunable"] == (not g["blocked"])
    # Each group is anchored at the layer that produces its channels: same width as that weight.
    weights = {t.name: list(t.dims) for t in original.graph.initializer}
    widths = {n.name: weights[n.input[1]][0] for n in original.graph.node if n.op_type in ("Conv", "Gemm")}
    assert all(g["channels"] == widths[g["anchor"]] for g in groups)
    assert sorted(g["channels"] for g in groups if g["prunable"]) == [16, 16, 32, 32, 64, 64]

    blocked = [g for g in groups if not g["prunable"]]
    assert [g["anchor"] for g in blocked] == ["/fc/Gemm"]
    assert blocked[0]["channels"] == 10
    assert any("graph output" in reason and "logits" in reason for reason in blocked[0]["blocked"])
    assert totals["prunable_groups"] == 6 and totals["blocked_groups"] == 1

    assert "6 prunable, 1 blocked" in " ".join(result.stdout.split())
    png = (tmp_path / "g.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_analyze_input_shape_scales_macs(tmp_path, original):
    ok(cli("analyze", MODEL, "--input-shape", "input:4x1x32x32", "--json", tmp_path / "a.json"))
    report = read_json(tmp_path / "a.json")
    assert report["input_shapes"] == {"input": [4, 1, 32, 32]}
    assert report["totals"]["macs"] == count_macs(original, batch=4) == 4 * 12_206_720


def test_analyze_details_lists_nodes_and_weights():
    result = ok(cli("analyze", MODEL, "--details"))
    text = " ".join(result.stdout.split())
    assert "/layer1/conv1/Conv" in text and "layer1.bn1.weight" in text


# ================================================================ prune: happy paths
def test_prune_writes_checked_smaller_model(pruned, original, digits):
    x, _ = digits
    out = onnx.load(str(pruned.out))
    onnx.checker.check_model(out, full_check=True)
    logits = run_model(pruned.out, x)
    assert logits.shape == (540, 10) and np.isfinite(logits).all()

    s = pruned.summary
    assert s["macs_after"] < s["macs_before"]
    assert s["macs_before"] == count_macs(original) and s["macs_after"] == count_macs(out)
    assert s["params_before"] == float_params(original) and s["params_after"] == float_params(out)
    assert s["macs_kept"] == pytest.approx(s["macs_after"] / s["macs_before"])
    assert s["bytes_before"] == MODEL.stat().st_size and s["bytes_after"] == pruned.out.stat().st_size
    assert (s["groups_pruned"], s["groups_blocked"], s["groups_untouched"]) == (6, 1, 0)
    assert s["criterion"] == "l1" and s["notes"] == []

    # interface kept: names, dynamic batch, opset, IR version
    assert [i.name for i in out.graph.input] == [i.name for i in original.graph.input] == ["input"]
    assert [o.name for o in out.graph.output] == [o.name for o in original.graph.output] == ["logits"]
    for a, b in ((out.graph.input[0], original.graph.input[0]), (out.graph.output[0], original.graph.output[0])):
        assert a.type == b.type
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.ir_version == original.ir_version
    assert {(o.domain, o.version) for o in out.opset_import} == {(o.domain, o.version) for o in original.opset_import}

    meta = metadata(out)
    assert meta["onnxprune.version"] and meta["onnxprune.criterion"] == "l1"
    assert int(meta["onnxprune.macs_before"]) == s["macs_before"]
    assert int(meta["onnxprune.macs_after"]) == s["macs_after"]
    assert all(meta[k] == v for k, v in metadata(original).items())  # the model's own metadata survives

    assert pruned.hash_after == pruned.hash_before  # input untouched
    assert "plan written to" in pruned.result.stdout


def test_prune_plan_matches_written_model(pruned, original):
    plan = pruned.plan
    assert plan["format"] == "onnxprune.plan/1" and plan["criterion"] == "l1"
    widths = conv_out_channels(onnx.load(str(pruned.out)))
    before = conv_out_channels(original)
    for g in plan["groups"]:
        assert g["channels"] == before[g["anchor"]]
        assert len(g["keep"]) == g["channels"] // 2 == widths[g["anchor"]]
        assert g["keep"] == sorted(set(g["keep"]))


def test_replayed_plan_gives_same_graph(pruned, tmp_path):
    """The same graph; the summary and the metadata say what the replay applied: the plan's own
    channel counts, not the rounding a new plan would use."""
    result = ok(cli("prune", MODEL, "-o", tmp_path / "again.onnx", "--plan", pruned.plan_path))
    a, b = onnx.load(str(pruned.out)), onnx.load(str(tmp_path / "again.onnx"))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    meta_a, meta_b = metadata(a), metadata(b)
    assert meta_b.pop("onnxprune.amount") == "plan" and meta_a.pop("onnxprune.amount") == "ratio=0.5"
    assert meta_b.pop("onnxprune.schedule") == "plan" and meta_a.pop("onnxprune.schedule") == "uniform"
    assert meta_b.pop("onnxprune.round_to") == "none (the plan's channel counts)"
    assert meta_a.pop("onnxprune.round_to").startswith("auto (16")
    assert meta_a == meta_b
    assert "round-to none (the plan's channel counts)" in result.stdout and "auto (16" not in result.stdout


def test_replayed_plan_records_how_it_was_made(pruned, tmp_path):
    """The graph is identical (see above); the metadata says the amount came from a plan."""
    ok(cli("prune", MODEL, "-o", tmp_path / "again.onnx", "--plan", pruned.plan_path))
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "again.onnx")).metadata_props}
    assert meta["onnxprune.amount"] == "plan"
    original = {p.key: p.value for p in onnx.load(str(pruned.out)).metadata_props}
    assert original["onnxprune.amount"] == "ratio=0.5"


def test_ratio_only_plan_resolves_like_ratio(pruned, tmp_path):
    """A plan that carries only per-group ratios (no keep lists) is resolved with its criterion."""
    plan = json.loads(json.dumps(pruned.plan))
    for g in plan["groups"]:
        g["keep"] = None
    (tmp_path / "ratios.json").write_text(json.dumps(plan))
    ok(cli("prune", MODEL, "-o", tmp_path / "r.onnx", "--plan", tmp_path / "ratios.json"))
    assert onnx.load(str(tmp_path / "r.onnx")).graph.SerializeToString() == onnx.load(str(pruned.out)).graph.SerializeToString()


def test_prune_is_deterministic_across_processes(pruned, tmp_path):
    ok(cli("prune", MODEL, "-o", tmp_path / "twice.onnx", "--ratio", "0.5"))
    assert (tmp_path / "twice.onnx").read_bytes() == pruned.out.read_bytes()
    # another interpreter with another hash seed: no dependence on set/dict iteration order
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "onnxprune.cli", "prune", str(MODEL), "-o", str(tmp_path / "sub.onnx"),
                           "--ratio", "0.5"], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sub.onnx").read_bytes() == pruned.out.read_bytes()


def test_keep_all_round_trip(tmp_path, original, digits):
    x, _ = digits
    out_path = tmp_path / "keep.onnx"
    ok(cli("prune", MODEL, "-o", out_path, "--ratio", "0", "--allow-noop", "--json", tmp_path / "s.json"))
    s = read_json(tmp_path / "s.json")
    assert s["noop"] is True and any("unchanged copy" in note for note in s["notes"])
    assert s["macs_after"] == s["macs_before"] and s["params_after"] == s["params_before"]
    assert s["groups_pruned"] == 0 and s["groups_untouched"] == 6

    assert np.abs(run_model(out_path, x) - run_model(MODEL, x)).max() == 0.0
    out = onnx.load(str(out_path))
    before = {t.name: t for t in original.graph.initializer}
    after = {t.name: t for t in out.graph.initializer}
    assert set(before) == set(after)
    for name, t in before.items():
        assert after[name].SerializeToString() == t.SerializeToString(), name
    # the Identity nodes that shared a tensor (see float_params) became direct reads of it
    identities = [n for n in original.graph.node if n.op_type == "Identity"]
    assert identities and not [n for n in out.graph.node if n.op_type == "Identity"]
    readers = {i for n in out.graph.node for i in n.input}
    assert all(n.input[0] in readers for n in identities)


def test_target_macs(tmp_path, original):
    result = ok(cli("prune", MODEL, "-o", tmp_path / "t.onnx", "--target-macs", "0.5", "--json", tmp_path / "s.json"))
    s = read_json(tmp_path / "s.json")
    assert 0.3 < s["macs_kept"] <= 0.5
    assert s["macs_kept"] == pytest.approx(count_macs(onnx.load(str(tmp_path / "t.onnx"))) / count_macs(original))
    assert any("--target-macs 0.5" in note for note in s["notes"])
    assert "note: --target-macs 0.5" in result.stdout
    assert metadata(onnx.load(str(tmp_path / "t.onnx")))["onnxprune.amount"] == "target_macs=0.5"


def test_target_macs_unreachable_is_an_error(tmp_path):
    """The --max-ratio cap keeps too much: the error names the cap and what it keeps."""
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "t.onnx", "--target-macs", "0.1", "--max-ratio", "0.5",
                         "--json", tmp_path / "s.json"), "--target-macs 0.1 cannot be met", "--max-ratio cap of 0.5 keeps")
    assert list(tmp_path.iterdir()) == []
    # no cap can help when the smallest widths allowed keep more: the error says so instead
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "t.onnx", "--target-macs", "0.05", "--max-ratio", "0.99",
                         "--min-channels", "16", "--round-to", "1"),
                     "smallest widths allowed (--min-channels 16, --round-to 1) keep")


def test_global_ratio(tmp_path, digits):
    ok(cli("prune", MODEL, "-o", tmp_path / "g.onnx", "--global", "--ratio", "0.3", "--plan", tmp_path / "p.json",
           "--round-to", "1", "--json", tmp_path / "s.json"))
    plan = read_json(tmp_path / "p.json")
    removed = {g["id"]: g["channels"] - len(g["keep"]) for g in plan["groups"]}
    assert sum(removed.values()) == math.floor(0.3 * PRUNABLE_CHANNELS)
    ratios = {round(removed[g["id"]] / g["channels"], 6) for g in plan["groups"]}
    assert len(ratios) > 1  # ranked across groups, not the same ratio everywhere
    assert all(removed[g["id"]] <= 0.9 * g["channels"] for g in plan["groups"])
    assert metadata(onnx.load(str(tmp_path / "g.onnx")))["onnxprune.amount"] == "ratio=0.3 global"
    assert run_model(tmp_path / "g.onnx", digits[0][:4]).shape == (4, 10)


@pytest.mark.parametrize("criterion", ["l2", "bn-scale", "fpgm", "random"])
def test_criteria(criterion, tmp_path, pruned, digits):
    out = tmp_path / "c.onnx"
    ok(cli("prune", MODEL, "-o", out, "--ratio", "0.5", "--criterion", criterion, "--json", tmp_path / "s.json",
           "--plan", tmp_path / "p.json"))
    s = read_json(tmp_path / "s.json")
    assert s["criterion"] == criterion and metadata(onnx.load(str(out)))["onnxprune.criterion"] == criterion
    assert s["macs_after"] == pruned.summary["macs_after"]  # same uniform ratio, same widths
    assert run_model(out, digits[0][:4]).shape == (4, 10)
    plan = read_json(tmp_path / "p.json")
    assert plan["criterion"] == criterion
    if criterion == "bn-scale":  # g1 = layer1.conv1 → layer1.bn1: keep the 8 largest |gamma|
        gamma = numpy_helper.to_array(next(t for t in onnx.load(str(MODEL)).graph.initializer if t.name == "layer1.bn1.weight"))
        g1 = next(g for g in plan["groups"] if g["anchor"] == "/layer1/conv1/Conv")
        assert g1["keep"] == sorted(np.argsort(-np.abs(gamma), kind="stable")[:8].tolist())
    if criterion == "random":
        assert [g["keep"] for g in plan["groups"]] != [g["keep"] for g in pruned.plan["groups"]]
        ok(cli("prune", MODEL, "-o", tmp_path / "c1.onnx", "--ratio", "0.5", "--criterion", "random", "--seed", "1"))
        ok(cli("prune", MODEL, "-o", tmp_path / "c0.onnx", "--ratio", "0.5", "--criterion", "random", "--seed", "0"))
        assert (tmp_path / "c0.onnx").read_bytes() == out.read_bytes()
        assert (tmp_path / "c1.onnx").read_bytes() != out.read_bytes()


def test_round_to(tmp_path, original):
    ok(cli("prune", MODEL, "-o", tmp_path / "r.onnx", "--ratio", "0.3", "--round-to", "8"))
    before, after = conv_out_channels(original), conv_out_channels(onnx.load(str(tmp_path / "r.onnx")))
    assert after.keys() == before.keys()
    for name, n in after.items():
        assert n % 8 == 0 or n == before[name], (name, n)
    # ratio 0.3 alone would keep 12/16, 23/32, 45/64: rounding up gives 16, 24, 48
    assert sorted(set(after.values())) == [16, 24, 48]


def test_min_channels(tmp_path, original):
    ok(cli("prune", MODEL, "-o", tmp_path / "m.onnx", "--ratio", "0.9", "--min-channels", "12"))
    after = conv_out_channels(onnx.load(str(tmp_path / "m.onnx")))
    assert set(after.values()) == {12}  # 0.9 would leave 2, 4 or 7 channels


def test_exclude(tmp_path, original):
    ok(cli("prune", MODEL, "-o", tmp_path / "x.onnx", "--ratio", "0.5", "--exclude", "/layer3/*", "--no-fuse"))
    out = onnx.load(str(tmp_path / "x.onnx"))
    before, after = conv_out_channels(original), conv_out_channels(out)
    layer3 = [n for n in before if n.startswith("/layer3/")]
    assert len(layer3) == 3
    for name in layer3:
        assert after[name] == before[name]
    # layer3's weights are untouched, inputs included (their input group touches layer3 too)
    w_before = {t.name: t.SerializeToString() for t in original.graph.initializer}
    w_after = {t.name: t.SerializeToString() for t in out.graph.initializer}
    assert all(w_after[n] == w_before[n] for n in w_before if n.startswith("layer3."))
    assert after["/conv1/Conv"] == 8 and after["/layer1/conv1/Conv"] == 8


# ================================================================ verify, bench
def test_verify_with_data(pruned, tmp_path, digits):
    x, labels = digits
    result = ok(cli("verify", MODEL, pruned.out, "--data", DATA, "--json", tmp_path / "v.json"))
    report = read_json(tmp_path / "v.json")
    assert report["n_samples"] == 540
    (o,) = report["outputs"]
    a, b = run_model(MODEL, x), run_model(pruned.out, x)
    assert o["name"] == "logits"
    assert o["accuracy_original"] == pytest.approx(float((a.argmax(1) == labels).mean()))
    assert o["accuracy_original"] == pytest.approx(0.994, abs=0.001)
    assert o["accuracy_pruned"] == pytest.approx(float((b.argmax(1) == labels).mean()))
    assert o["top1_agreement"] == pytest.approx(float((a.argmax(1) == b.argmax(1)).mean()))
    assert o["max_abs_error"] == pytest.approx(float(np.abs(a - b).max()), rel=1e-5)
    assert "logits" in result.stdout


def test_verify_model_against_itself(tmp_path):
    ok(cli("verify", MODEL, MODEL, "--json", tmp_path / "v.json"))
    report = read_json(tmp_path / "v.json")
    assert report["data_source"].startswith("random") and report["n_samples"] == 8
    (o,) = report["outputs"]
    assert o["max_abs_error"] == 0 and o["top1_agreement"] == 1
    assert o["accuracy_original"] is None and o["accuracy_pruned"] is None


def test_bench(pruned, tmp_path):
    result = ok(cli("bench", MODEL, pruned.out, "--runs", "5", "--warmup", "1", "--json", tmp_path / "b.json"))
    report = read_json(tmp_path / "b.json")
    assert report["runs"] == 5 and report["warmup"] == 1
    first, second = report["models"]
    assert first["speedup_vs_first"] == 1.0
    assert first["name"] == str(MODEL) and second["name"] == str(pruned.out)
    for m in (first, second):
        assert 0 < m["min_ms"] <= m["median_ms"] <= m["p90_ms"]
    assert second["speedup_vs_first"] == pytest.approx(first["median_ms"] / second["median_ms"])
    assert "speedup" in result.stdout


# ================================================================ help, version, entry point
@pytest.mark.parametrize("command, options", [
    ("analyze", ["--json", "--plot", "--input-shape", "--details"]),
    ("prune", ["--output", "--ratio", "--target-macs", "--plan", "--criterion", "--global", "--round-to",
               "--min-channels", "--exclude", "--json"]),
    ("verify", ["--data", "--samples", "--json"]),
    ("bench", ["--runs", "--warmup", "--batch", "--json"]),
    ("finetune", ["--teacher", "--data", "--output", "--val", "--epochs", "--lr", "--batch-size", "--kd-weight",
                  "--json"]),
    ("export-triton", ["--repo", "--name", "--max-batch-size", "--instances", "--kind", "--dynamic-batching",
                       "--plan", "--accuracy-from", "--latency-from", "--input-shape", "--json"]),
])
def test_help(command, options):
    text = ok(cli(command, "--help")).stdout
    assert text.startswith(f"Usage: main {command} [OPTIONS]")
    for option in options:
        assert option in text, option


def test_main_help_and_version():
    text = ok(cli("--help")).stdout
    assert all(c in text for c in ("analyze", "prune", "verify", "bench", "finetune", "export-triton"))
    assert "onnxprune, version" in ok(cli("--version")).stdout


def test_module_entry_point(tmp_path):
    """The real process: a table on stdout, a one-line error on stderr, exit codes 0 and 2."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "onnxprune.cli", *map(str, a)], capture_output=True,
                                    text=True, cwd=REPO_ROOT, timeout=120)
    good = run("analyze", MODEL, "--json", tmp_path / "a.json")
    assert good.returncode == 0, good.stderr
    assert "/layer1/conv1/Conv" in good.stdout and read_json(tmp_path / "a.json")["totals"]["groups"] == 7
    bad = run("prune", MODEL, "-o", tmp_path / "x.onnx", "--ratio", "1.5")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == ["error: --ratio must be in [0, 1), got 1.5"]


# ================================================================ bad input
@pytest.fixture
def prose(tmp_path) -> Path:
    path = tmp_path / "notes.onnx"
    path.write_text("Structured pruning removes whole channels from convolutional layers.\n" * 3)
    return path


@pytest.fixture
def truncated(tmp_path) -> Path:
    data = MODEL.read_bytes()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("kind", ["prose", "truncated"])
@pytest.mark.parametrize("command", ["analyze", "prune"])
def test_not_an_onnx_file(command, kind, request, tmp_path):
    path = request.getfixturevalue(kind)
    args = ["analyze", path] if command == "analyze" else ["prune", path, "-o", tmp_path / "o.onnx", "--ratio", "0.5"]
    assert_bad_input(cli(*args), str(path), "not a valid ONNX file")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_not_an_onnx_file_verify_bench(command, prose):
    extra = ["--runs", "1", "--warmup", "0"] if command == "bench" else []
    assert_bad_input(cli(command, MODEL, prose, *extra), str(prose))


@pytest.mark.parametrize("args, needle", [
    (["--ratio", "1.5"], "--ratio must be in [0, 1)"),
    (["--ratio", "-0.1"], "--ratio must be in [0, 1)"),
    (["--ratio", "nan"], "--ratio must be in [0, 1)"),
    (["--target-macs", "0"], "--target-macs must be in (0, 1]"),
    (["--target-macs", "1.5"], "--target-macs must be in (0, 1]"),
    (["--ratio", "0.5", "--round-to", "0"], "--round-to takes 'auto' or an integer >= 1, got '0'"),
    (["--ratio", "0.5", "--min-channels", "0"], "--min-channels': 0 is not in the range x>=1"),
    (["--ratio", "0.5", "--max-ratio", "1"], "--max-ratio must be in [0, 1)"),
    ([], "give exactly one of --ratio, --target-macs, --target-params, --target-latency or --plan"),
    (["--ratio", "0.5", "--target-macs", "0.5"], "give exactly one of"),
])
def test_bad_amounts(args, needle, tmp_path):
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", *args), needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "symlinked-input", "hardlink"])
def test_output_is_the_input(spelling, tmp_path, monkeypatch):
    model = MODEL
    if spelling == "same":
        output = MODEL
    elif spelling == "dotdot":
        monkeypatch.chdir(REPO_ROOT)
        model, output = Path("models/digits/resnet8_digits.onnx"), "./models/../models/digits/resnet8_digits.onnx"
    elif spelling == "symlink":
        output = tmp_path / "link.onnx"
        output.symlink_to(MODEL)
    elif spelling == "symlinked-input":
        model = tmp_path / "link.onnx"
        model.symlink_to(MODEL)
        output = MODEL
    else:  # a hard link, made to a copy in tmp_path (never write into models/)
        model = tmp_path / "copy.onnx"
        model.write_bytes(MODEL.read_bytes())
        output = tmp_path / "hard.onnx"
        os.link(model, output)
    folder = sorted(Path(model).resolve().parent.iterdir())
    digest = sha256(model)
    assert_bad_input(cli("prune", model, "-o", output, "--ratio", "0.5"), "refusing to overwrite the input model")
    assert sha256(model) == digest
    assert sorted(Path(model).resolve().parent.iterdir()) == folder  # no temp files left behind


def test_output_folder_missing(tmp_path):
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "no" / "such" / "o.onnx", "--ratio", "0.5"),
                     "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_verify_missing_data(tmp_path):
    assert_bad_input(cli("verify", MODEL, MODEL, "--data", tmp_path / "missing.npz"), "missing.npz")


def test_verify_npz_without_the_input(tmp_path):
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 1, 32, 32), np.float32))
    assert_bad_input(cli("verify", MODEL, MODEL, "--data", tmp_path / "wrong.npz"), "'input'", "pixels")


def test_verify_bench_missing_model(tmp_path):
    assert_bad_input(cli("verify", MODEL, tmp_path / "gone.onnx"), "gone.onnx", "no such file")
    assert_bad_input(cli("bench", MODEL, tmp_path / "gone.onnx"), "gone.onnx", "no such file")


def test_plan_for_another_model(tmp_path):
    small = three_conv_model(tmp_path / "small.onnx", "Relu")
    ok(cli("prune", small, "-o", tmp_path / "small_p.onnx", "--ratio", "0.5", "--plan", tmp_path / "small_plan.json"))
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--plan", tmp_path / "small_plan.json"),
                     "does not match this model", "another model")
    assert not (tmp_path / "o.onnx").exists()


def _edited_plan(pruned, tmp_path, edit) -> Path:
    plan = json.loads(json.dumps(pruned.plan))
    edit(plan)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["groups"][0].update(channels=17), "does not match this model"),
    (lambda p: p["groups"][0].update(anchor="/other/Conv"), "does not match this model"),
    (lambda p: p["groups"][0].update(id="g99"), "no channel group 'g99'"),
    (lambda p: p["groups"][0].update(keep=[0, 99]), "distinct indices"),
    (lambda p: p["groups"][0].update(keep=[]), "distinct indices"),
    (lambda p: p["groups"][0].update(keep=[1, 1, 2]), "distinct indices"),
    (lambda p: p["groups"][0].update(keep=None, ratio=1.5), "ratio of group g0"),
    (lambda p: p["groups"][0].update(channels=None), "malformed plan"),
    (lambda p: p["groups"].append({"id": "g6", "anchor": "/fc/Gemm", "channels": 10, "keep": [0, 1]}), "blocked group g6"),
    (lambda p: p.update(format="something/2"), "not an onnxprune plan"),
    (lambda p: p.update(groups=5), "malformed plan"),
    (lambda p: p.update(drop_blocks=["layer2"]), "no residual block 'layer2'"),
    (lambda p: p.update(criterion="l7"), "unknown criterion"),
], ids=["channels", "anchor", "unknown-group", "keep-range", "keep-empty", "keep-dup", "ratio", "channels-null",
        "blocked", "format", "groups-type", "drop-blocks", "criterion"])
def test_bad_plan(edit, needle, pruned, tmp_path):
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--plan", _edited_plan(pruned, tmp_path, edit)), needle)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("text, needle", [
    ('{"format": "onnxprune.plan/1", "groups": [', "not valid JSON"),
    ("[1, 2]", "not an onnxprune plan"),
    ("", "not valid JSON"),
])
def test_malformed_plan_json(text, needle, tmp_path):
    (tmp_path / "plan.json").write_text(text)
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--plan", tmp_path / "plan.json"), needle)
    assert not (tmp_path / "o.onnx").exists()


def test_missing_plan_file(tmp_path):
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--plan", tmp_path / "nope.json"), "plan file not found")


@pytest.mark.parametrize("field, value", [("drop_blocks", 5), ("meta", 5), ("meta", "ab")])
def test_plan_with_wrongly_typed_fields(field, value, pruned, tmp_path):
    path = _edited_plan(pruned, tmp_path, lambda p: p.update({field: value}))
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--plan", path), "plan")


def test_plan_with_fractional_keep_indices(pruned, tmp_path):
    path = _edited_plan(pruned, tmp_path, lambda p: p["groups"][0].update(keep=[0.5, 1.7, 3]))
    assert_bad_input(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--plan", path), "plan")


@pytest.mark.parametrize("spec, needle", [
    ("input:1xfoo", "bad --input-shape"),
    ("garbage", "bad --input-shape"),
    ("input:0x1x32x32", "dims must be positive"),
    ("nope:1x1x32x32", "unknown input"),
    ("input:1x1x32", "rank 3"),
    ("input:1x3x32x32", "axis 1 is fixed to 1"),
])
@pytest.mark.parametrize("command", ["analyze", "prune"])
def test_bad_input_shape(command, spec, needle, tmp_path):
    args = ["analyze", MODEL] if command == "analyze" else ["prune", MODEL, "-o", tmp_path / "o.onnx", "--ratio", "0.5"]
    assert_bad_input(cli(*args, "--input-shape", spec), needle)
    assert not (tmp_path / "o.onnx").exists()


# ================================================================ ops without a rule
def test_unregistered_ops_used_below_are_unregistered():
    assert "LRN" not in registered_ops() and "Foo" not in registered_ops()


def _group_by_anchor(report: dict) -> dict:
    return {g["anchor"]: g for g in report["groups"]}


def test_op_without_rule_blocks_only_its_group(tmp_path):
    model = three_conv_model(tmp_path / "lrn.onnx", "LRN", size=3)
    ok(cli("analyze", model, "--json", tmp_path / "a.json"))
    groups = _group_by_anchor(read_json(tmp_path / "a.json"))
    assert groups["conv2"]["prunable"] is False
    assert any("LRN" in reason and "mid" in reason for reason in groups["conv2"]["blocked"])
    assert groups["conv1"]["prunable"] and groups["conv3"]["prunable"]
    assert not groups["conv4"]["prunable"]  # graph output

    ok(cli("prune", model, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--json", tmp_path / "s.json"))
    s = read_json(tmp_path / "s.json")
    assert s["macs_after"] < s["macs_before"] and (s["groups_pruned"], s["groups_blocked"]) == (2, 2)
    out = onnx.load(str(tmp_path / "p.onnx"))
    assert conv_out_channels(out) == {"conv1": 4, "conv2": 8, "conv3": 4, "conv4": 4}
    assert s["macs_after"] == count_macs(out)
    y = run_model(tmp_path / "p.onnx", np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    assert y.shape == (2, 4, 8, 8)


def test_custom_domain_op(tmp_path):
    model = three_conv_model(tmp_path / "foo.onnx", "Foo", domain="com.example")
    ok(cli("analyze", model, "--json", tmp_path / "a.json"))
    groups = _group_by_anchor(read_json(tmp_path / "a.json"))
    assert groups["conv2"]["prunable"] is False
    assert any("com.example::Foo" in reason for reason in groups["conv2"]["blocked"])
    assert groups["conv1"]["prunable"] and groups["conv3"]["prunable"]
    # onnxruntime cannot run the custom op, so the pruned model is refused and nothing is written
    assert_bad_input(cli("prune", model, "-o", tmp_path / "p.onnx", "--ratio", "0.5"), "onnxruntime")
    assert not (tmp_path / "p.onnx").exists()


# ================================================================ bugs
def test_long_error_message_is_one_line(prose):
    result = cli("analyze", prose)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_plot_into_missing_folder(tmp_path):
    assert_bad_input(cli("analyze", MODEL, "--plot", tmp_path / "no" / "g.png"), "g.png", quiet=False)


def test_plan_into_missing_folder(tmp_path):
    result = cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--ratio", "0.5", "--plan", tmp_path / "no" / "plan.json")
    assert result.exit_code == 2 and result.stderr.startswith("error: "), result.stderr


def test_output_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        ok(cli("prune", MODEL, "-o", tmp_path / "o.onnx", "--ratio", "0.5"))
    finally:
        os.umask(old)
    assert (tmp_path / "o.onnx").stat().st_mode & 0o777 == 0o644
