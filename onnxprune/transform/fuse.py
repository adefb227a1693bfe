"""Layer fusion after pruning: fold what inference does not need as separate nodes.

The rewrites are onnxscript's pattern rules (``onnxscript.rewriter.rules.common``, maintained by
the ONNX exporter team of PyTorch), applied with ``onnxscript.rewriter.rewrite``; this module
only chooses them and reports what they did:

* BatchNormalization folded into the preceding Conv, ConvTranspose or Gemm (the BN's
  ``gamma / sqrt(var + eps)`` scales the weight's output channels, its shift becomes the bias);
* a per-channel ``Mul`` and ``Add`` by a constant after a Conv folded into its weight and bias;
* a 2-D ``MatMul`` followed by a bias ``Add`` merged into one ``Gemm``;
* no-ops removed: ``Identity`` (onnx_ir's ``IdentityEliminationPass``), ``Dropout`` at
  inference, ``Cast`` to the same type, ``Expand`` and ``Transpose`` that change nothing,
  ``x * 1``, ``x + 0``, ``x / 1``, ``x - 0``, two ``Reshape``\\ s or two ``Cast``\\ s in a row.

Every rule is exact up to fp32 round-off: the folded weights are computed once, and the
products the runtime computes are reassociated. Not done: merging two linear layers with nothing
nonlinear between them (a 1×1 Conv into the next Conv, Gemm into Gemm); no rule of the library
does it, and after pruning such pairs are rare.

Initializers no node read in the input are kept, as they were, and the others keep their
order. Node names are kept: a fused node takes the name of the node of its op type that it replaces
(a Conv that absorbed a BatchNormalization keeps the Conv's name). Graph inputs, outputs, opset
and metadata are kept; the result is re-checked by the caller
(:func:`onnxprune.pipeline.finalize`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import onnx

FUSED_OPS = ("BatchNormalization", "Mul", "Add", "Sub", "Div", "Dropout", "Cast", "Expand", "Transpose", "Reshape",
             "Identity")


@dataclass
class FuseReport:
    """Nodes before and after, and per op type the count removed (``{"BatchNormalization": 19}``)."""

    nodes_before: int
    nodes_after: int
    removed: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.removed:
            return "nothing to fuse"
        parts = ", ".join(f"{n} {op}" for op, n in sorted(self.removed.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"fused {parts} ({self.nodes_before} → {self.nodes_after} nodes)"

    def to_dict(self) -> dict:
        return {"nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "removed": dict(self.removed)}


def _rules():
    from onnxscript.rewriter.rules import common as c

    return [
        c.fuse_batchnorm_into_conv_rule, c.fuse_batchnorm_into_conv_transpose_rule, c.fuse_batchnorm_into_gemm_rule,
        c.conv_affine_fusion_rule, c.dropout_inference_rule, c.no_op_cast_rule, c.no_op_expand_rule,
        c.no_op_transpose_rule, c.mul_by_1_rule, c.add_0_rule, c.div_by_1_rule, c.sub_0_rule, c.reshape_reshape_rule,
        c.cast_cast_rule, c.matmul_add_to_gemm_rule,
    ]


def fuse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FuseReport]:
    """A fused copy of ``model`` (see the module doc) and what was fused.

    Errors: ``OnnxPruneError`` when onnxscript is not installed or fails on the model.
    """
    from ..errors import OnnxPruneError

    if not _could_fuse(model):  # nothing any rule matches: skip the library (its import alone is ~0.5 s)
        return model, FuseReport(len(model.graph.node), len(model.graph.node), {})
    try:
        from onnxscript import rewriter
    except ImportError:
        raise OnnxPruneError("fusion needs onnxscript: pip install onnxscript") from None
    before = Counter(n.op_type for n in model.graph.node)
    metadata = [(p.key, p.value) for p in model.metadata_props]
    try:
        import onnx_ir as ir
        from onnx_ir.passes.common import IdentityEliminationPass

        graph = rewriter.rewrite(ir.serde.deserialize_model(model), pattern_rewrite_rules=_rules())
        fused = ir.serde.serialize_model(IdentityEliminationPass()(graph).model)
    except Exception as exc:  # the library's own errors: report, never write a half-fused model
        raise OnnxPruneError(f"fusion failed on this model (onnxscript: {str(exc).splitlines()[0]})") from None
    if [(p.key, p.value) for p in fused.metadata_props] != metadata:
        del fused.metadata_props[:]
        fused.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in metadata)
    _restore_names(model, fused)
    _restore_initializers(model, fused)
    _restore_opsets(model, fused)
    after = Counter(n.op_type for n in fused.graph.node)
    removed = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}
    return fused, FuseReport(len(model.graph.node), len(fused.graph.node), removed)


_LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _could_fuse(model: onnx.ModelProto) -> bool:
    """Whether some rule of :func:`_rules` (or Identity elimination) could match: a cheap,
    conservative scan (True when in doubt)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n.op_type for n in model.graph.node for o in n.output if o}
    for node in model.graph.node:
        op = node.op_type
        if op in ("Identity", "Dropout", "Cast", "Expand", "Transpose"):
            return True
        if op == "BatchNormalization" and producer.get(node.input[0]) in _LINEAR:
            return True
        if op == "Reshape" and producer.get(node.input[0]) == "Reshape":
            return True
        if op in ("Mul", "Add", "Sub", "Div") and len(node.input) == 2:
            const = [k for k, name in enumerate(node.input) if name in inits]
            if len(const) != 1:
                continue
            if producer.get(node.input[1 - const[0]]) in _LINEAR:
                return True
            tensor = inits[node.input[const[0]]]
            if math.prod(tensor.dims) <= 16:
                values = numpy_helper.to_array(tensor)
                if (values == (1 if op in ("Mul", "Div") else 0)).all():
                    return True
    return False


def _restore_names(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Give each node of ``after`` the name of the node of ``before`` it stands for: the producer
    of its first output, or the first node of its op type up that producer's chain of first
    inputs (BN → Conv). Names stay unique; a node with no counterpart keeps its own."""
    producer = {o: n for n in before.graph.node for o in n.output if o}
    used: set[str] = set()
    for node in after.graph.node:
        source = producer.get(node.output[0]) if node.output else None
        for _ in range(8):
            if source is None or source.op_type == node.op_type:
                break
            source = producer.get(source.input[0]) if source.input else None
        if source is not None and source.op_type == node.op_type and source.name not in used:
            node.name = source.name
        base, k = node.name, 1
        while node.name in used:
            node.name, k = f"{base}_{k}", k + 1
        used.add(node.name)


def _restore_opsets(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Declare every opset the input declares, in its order and at its version (the library drops
    the ones no node uses, e.g. tf2onnx's ``ai.onnx.ml``); a domain the rules added comes last."""
    known = {o.domain for o in before.opset_import}
    added = [o for o in after.opset_import if o.domain not in known]
    del after.opset_import[:]
    after.opset_import.extend(list(before.opset_import) + added)


def _restore_initializers(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Put back the initializers that nothing read in ``before`` (the library drops them; this
    project never removes what it did not make unread), and order all of them as in ``before``
    (new ones last, in their order)."""
    read = {name for n in before.graph.node for name in n.input} | {o.name for o in before.graph.output}
    present = {t.name for t in after.graph.initializer}
    position = {t.name: k for k, t in enumerate(before.graph.initializer)}
    tensors = list(after.graph.initializer)
    tensors += [t for t in before.graph.initializer if t.name not in read and t.name not in present]
    tensors.sort(key=lambda t: position.get(t.name, len(position)))
    copies = []
    for t in tensors:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copies.append(copy)
    del after.graph.initializer[:]
    after.graph.initializer.extend(copies)
