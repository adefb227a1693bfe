"""``--round-to auto`` (the default) and ``--provider``: kept counts the target's kernels like."""

from __future__ import annotations

import json

import onnx
import pytest

from onnxprune.decide import rounding
from onnxprune.decide.plan import keep_count
from onnxprune.decide.rounding import Rounding, resolve
from onnxprune.errors import OnnxPruneError

from clirun import assert_bad_input, cli, ok
from graphs import conv_bn_relu_conv


def test_explicit_multiple_rounds_up_and_steps_by_whole_blocks():
    r = Rounding(16)
    assert [r.up(k, 64) for k in (1, 15, 16, 17, 60)] == [16, 16, 16, 32, 64]
    assert [r.down(k) for k in (64, 40, 16)] == [48, 32, 0]


def test_auto_allows_any_count_below_the_block():
    r = Rounding(16, free_below=True, reason="test")
    assert [r.up(k, 64) for k in (1, 12, 16, 17, 33)] == [1, 12, 16, 32, 48]
    assert [r.down(k) for k in (64, 32, 20, 16, 12, 1)] == [48, 16, 16, 15, 11, 0]
    # a 16-channel group stays prunable one channel at a time; a 64-channel one by blocks of 16
    assert keep_count(16, 0.3, round_to=r) == 12
    assert keep_count(64, 0.3, round_to=r) == 48


@pytest.mark.parametrize("features, multiple", [
    ({"AVX512F": True, "AVX2": True, "AVX": True}, 16),
    ({"AVX512F": False, "AVX2": True, "AVX": True}, 8),
    ({"ASIMD": True}, 1),
])
def test_auto_follows_the_cpu(monkeypatch, features, multiple):
    monkeypatch.setattr(rounding, "cpu_features", lambda: features)
    chosen = resolve("auto", "cpu")
    assert chosen.multiple == multiple and chosen.free_below == (multiple > 1)
    assert str(chosen).startswith(f"auto ({multiple}")


@pytest.mark.real_cpu
def test_the_real_cpu_gives_a_known_block():
    multiple, reason = rounding.cpu_block()
    features = rounding.cpu_features()
    assert multiple == (16 if features.get("AVX512F") else 8 if features.get("AVX2") or features.get("AVX") else 1)
    assert reason


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_auto_on_gpu_providers_is_eight(provider):
    assert resolve("auto", provider) == Rounding(8, True, f"{provider}: tensor-core channel multiple")


@pytest.mark.parametrize("bad", [0, -1, "x", True, 2.5])
def test_bad_round_to_is_refused(bad):
    with pytest.raises(OnnxPruneError, match="round_to"):
        resolve(bad, "cpu")


def test_unknown_provider_is_refused():
    with pytest.raises(OnnxPruneError, match="unknown provider"):
        resolve("auto", "tpu")


@pytest.fixture
def wide(tmp_path):
    """conv_bn_relu_conv's model: its prunable group has 8 channels (below any block)."""
    path = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu_conv(), path)
    return path


def test_cli_default_is_auto_and_says_so(tmp_path, wide):  # conftest: an AVX-512 CPU
    result = ok(cli("prune", wide, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--json", "-"))
    data = json.loads(result.stdout)
    assert data["round_to"] == {"auto": True, "multiple": 16, "free_below": True, "reason": "AVX-512 NCHWc block"}
    assert "round-to auto (16: AVX-512 NCHWc block)" in result.stderr
    # below the block every count is allowed: the same plan as exact ratios
    exact = json.loads(ok(cli("prune", wide, "-o", tmp_path / "e.onnx", "--ratio", "0.5", "--round-to", "1",
                              "--json", "-")).stdout)
    assert exact["round_to"] == 1 and exact["macs_after"] == data["macs_after"]
    meta = {p.key: p.value for p in onnx.load(tmp_path / "p.onnx").metadata_props}
    assert meta["onnxprune.round_to"] == "auto (16: AVX-512 NCHWc block)"


def test_cli_provider_cuda_rounds_to_eight(tmp_path, wide):
    data = json.loads(ok(cli("prune", wide, "-o", tmp_path / "p.onnx", "--ratio", "0.3", "--provider", "cuda",
                             "--json", "-")).stdout)
    assert data["round_to"]["multiple"] == 8


@pytest.mark.parametrize("value", ["0", "-3", "sixteen"])
def test_cli_bad_round_to(tmp_path, wide, value):
    assert_bad_input(cli("prune", wide, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--round-to", value),
                     "--round-to")
    assert not (tmp_path / "p.onnx").exists()
