"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def avx512_cpu(request, monkeypatch):
    """Every test sees an AVX-512 CPU, so that ``--round-to auto`` (16) gives the same plans on
    every CI machine; tests marked ``real_cpu`` see the machine's own."""
    if request.node.get_closest_marker("real_cpu") is None:
        from onnxprune.decide import rounding

        monkeypatch.setattr(rounding, "cpu_features", lambda: {"AVX512F": True, "AVX2": True, "AVX": True})


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(name, fold)``: the path of architecture (or variant) ``name`` from ``models/``, exported once
    per session with a dynamic batch, BN folded (``fold``) or kept."""
    pytest.importorskip("torch")
    from models import ALL, build
    from models.export import export_onnx

    cache: dict = {}

    def get(name: str, fold: bool) -> str:
        if (name, fold) not in cache:
            path = tmp_path_factory.mktemp("models") / f"{name}-{fold}.onnx"
            export_onnx(build(name), path, ALL[name].input_shape, fold_bn=fold, dynamic_batch=True)
            cache[name, fold] = str(path)
        return cache[name, fold]

    return get
