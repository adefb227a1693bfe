"""One pruning rule per ONNX op type, looked up by ``op_type`` in a dict registry.

Adding support for an op means writing one :class:`~onnxprune.analysis.rules.base.Rule` subclass in one
module here and decorating it with :func:`register`. Ops outside the registry (and every op of a
custom domain) have no rule: the analyzer freezes their channels and reports why.
"""

from __future__ import annotations

from .base import Rule, register, registered_ops, rule_for
from . import conv, elementwise, linear, norm, recurrent, tensor, unary  # noqa: F401  (registration)

__all__ = ["Rule", "register", "registered_ops", "rule_for"]
