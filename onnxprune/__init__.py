"""onnxprune: structured channel pruning of ONNX models.

The Python API (:mod:`onnxprune.api`), loaded on first use so that ``import onnxprune`` stays
light: :func:`analyze`, :func:`sensitivity`, :func:`prune`, :func:`verify`, :func:`bench`,
:func:`finetune` (needs torch), :func:`load_plan`, and
:class:`OnnxPruneError`.
"""

__version__ = "0.1.0"

_API = {"analyze", "bench", "export_triton", "finetune", "load_plan", "prune", "sensitivity", "verify"}


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "OnnxPruneError":
        from .errors import OnnxPruneError

        return OnnxPruneError
    raise AttributeError(f"module 'onnxprune' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _API | {"OnnxPruneError"})


__all__ = sorted(_API | {"OnnxPruneError", "__version__"})
