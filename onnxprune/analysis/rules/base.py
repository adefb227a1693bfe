"""The rule interface and the op registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:  # pragma: no cover
    from ..groups import Tracer
    from ...rewrite import Rewriter

ShapeFn = Callable[[object], "tuple | None"]

_REGISTRY: dict[str, "Rule"] = {}


class Rule:
    """How channels flow through one op, and how to fix the op up when channels go.

    * :meth:`trace` answers which input and output channels are the same (pass-through,
      coupled or independent), how indices map (identity, offset, expand), and which axes of
      constant inputs are indexed by channels (parameter slots, sliced generically).
    * :meth:`rewrite` fixes what slicing slots cannot: attributes (``group``), and shape-valued
      constants (Reshape targets, Split sizes, Slice bounds, Resize sizes).
    * :meth:`macs` counts multiply-accumulates from (possibly pruned) shapes.
    """

    def trace(self, node: gs.Node, t: "Tracer") -> None:
        raise NotImplementedError

    def rewrite(self, node: gs.Node, rw: "Rewriter") -> None:
        """Default: nothing beyond the generic slicing of parameter slots."""

    def macs(self, node: gs.Node, shape: ShapeFn) -> int:
        """Default: ops that are not Conv/Gemm/MatMul count no MACs."""
        return 0


def register(*op_types: str):
    """Class decorator: register one instance of the rule for each of ``op_types``."""

    def wrap(cls):
        instance = cls()
        for op in op_types:
            if op in _REGISTRY:
                raise RuntimeError(f"two rules for op {op}")
            _REGISTRY[op] = instance
        return cls

    return wrap


def rule_for(node: gs.Node) -> Rule | None:
    """The rule for ``node``'s op, or None (custom domains never have one)."""
    if not is_default_domain(node):
        return None
    return _REGISTRY.get(node.op)


def is_default_domain(node: gs.Node) -> bool:
    return node.domain in (None, "", "ai.onnx")


def registered_ops() -> list[str]:
    return sorted(_REGISTRY)


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def numel(shape) -> int | None:
    if shape is None or any(d is None for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def int_list(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]
