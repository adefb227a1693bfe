"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest

# One onnxruntime thread per session (and one torch thread): the suite's models are small, and a
# machine shared with other jobs runs them 1.5x faster that way (measured: test_recover.py beside
# two busy loops on 2 cores, 94 s with onnxruntime's default threads, 62 s with one).
os.environ.setdefault("ONNXPRUNE_THREADS", "1")
try:
    import torch
except ImportError:  # pragma: no cover - the torch-free install
    torch = None
else:
    torch.set_num_threads(1)


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
