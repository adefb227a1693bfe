"""Channel groups and residual blocks of a torch module, found on its ONNX export.

:func:`prepare` exports the module (or takes an existing export), analyzes the graph with the
same rules as ``onnxprune analyze``, and maps every channel group and removable block onto the
module's parameters (:func:`onnxprune.torch.mapping.group_parameters`). A mask or penalty
written against these groups respects coupling by construction: residual-coupled channels are
one group and share one mask, and a depthwise conv's channels are the same group as its
producer's.

**Names.** The TorchScript exporter with constant folding off (what :func:`export` writes) and
the dynamo exporter name each initializer after its parameter (``layer1.0.conv1.weight``).
Where an exporter renamed a parameter (``onnx::Conv_12``), the initializer is matched to the
parameter with the same shape and bit-identical values (weight identity), when exactly one
such parameter exists. A weight the exporter or normalization transformed (a folded BN, a
transposed MatMul weight) matches nothing; a group none of whose producing parameters map is
listed in :attr:`ModuleGroups.unmapped` and is never masked or planned.

**Masks.** ``masked_parameters`` multiplies every mapped slot of a group (producer weights and
biases, BN scale and shift, consumer input columns) by the group's channel mask, so a masked
channel contributes nothing: the masked module computes what the pruned graph computes. A
block mask multiplies every parameter of the block's branch, so a zero mask makes the branch
output zero (Conv/BN/ReLU/Linear branches).

**BN statistics.** Masks that move during training leave BatchNorm running averages behind
the channels finally kept: :meth:`ModuleGroups.recalibrate_bn` re-estimates them for the masked
module before it is exported or evaluated.

**MACs.** :meth:`ModuleGroups.macs` is differentiable in per-group keep fractions: each counted
node's MACs are ``macs_n · Π_g k_g^{e_{n,g}} · Π_b keep_b``, the exponents read off the cost
model by halving each group once (1 for a layer the group feeds or produces, 0 otherwise), and
``keep_b`` for the blocks whose branch holds the node.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from onnx import numpy_helper
from torch import nn

from ..analysis.cost import CostModel
from ..analysis.groups import OUT, Analysis
from ..decide.depth import PlanCost, dropped_nodes, without_dropped_groups
from ..decide.plan import GroupPlan, PruningPlan, global_plan
from ..decide.target import TOLERANCE, meet_macs_target
from ..errors import OnnxPruneError
from .mapping import ParameterSlot, group_parameters

EXPORT_OPSET = 17


@dataclass
class TorchGroup:
    """A prunable channel group as seen from the module: ``slots`` on its parameters (dim
    ``slot.dim`` of ``slot.name``; ``slot.channels[i]`` is the group channel at index ``i``,
    -1 for another group's channel)."""

    id: str
    anchor: str
    channels: int
    slots: list[ParameterSlot]


@dataclass
class TorchBlock:
    """A removable residual block: its Add node's name (what plans store) and the parameters
    its branch reads."""

    id: str
    add: str
    params: list[str]


@dataclass
class ModuleGroups:
    """What :func:`prepare` found; see the module doc."""

    module: nn.Module
    example_inputs: tuple
    analysis: Analysis
    groups: list[TorchGroup]
    blocks: list[TorchBlock]
    renamed: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cost_model = CostModel(self.analysis)
        self._terms = _macs_terms(self)
        self.base_macs = sum(m for m, _, _ in self._terms) or 1

    # -- masks -------------------------------------------------------------------------------
    def masked_parameters(self, channel_masks: dict[str, torch.Tensor] | None = None,
                          block_masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The module's parameters with ``channel_masks`` (group id → ``[channels]``) and
        ``block_masks`` (Add name → scalar) applied; parameters no mask touches are the module's
        own tensors. Gradients flow to both the parameters and the masks."""
        params = dict(self.module.named_parameters())
        out = dict(params)
        for group in self.groups:
            mask = (channel_masks or {}).get(group.id)
            if mask is None:
                continue
            padded = torch.cat([mask, mask.new_ones(1)])
            for slot in group.slots:
                index = torch.as_tensor([c if c >= 0 else group.channels for c in slot.channels])
                shape = [1] * out[slot.name].dim()
                shape[slot.dim] = -1
                out[slot.name] = out[slot.name] * padded[index].view(shape)
        for block in self.blocks:
            mask = (block_masks or {}).get(block.add)
            if mask is not None:
                for name in block.params:
                    out[name] = out[name] * mask
        return out

    def forward(self, *inputs, channel_masks=None, block_masks=None):
        """The module's output with the masks applied (``torch.func.functional_call``)."""
        params = self.masked_parameters(channel_masks, block_masks)
        return torch.func.functional_call(self.module, params, inputs)

    @torch.no_grad()
    def recalibrate_bn(self, batches, channel_masks=None, block_masks=None) -> int:
        """Re-estimate every BatchNorm's running statistics as the plain average over
        ``batches`` (an iterable of input tuples or tensors) of the masked module. Masks that
        changed during training leave the running averages behind the channels finally kept
        (on ResNet-20 a mask-trained model scored 64.5% before and 96.5% after). Returns the
        number of samples seen; the module's train/eval mode is restored."""
        norms = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m.momentum, m.training) for m in norms]
        training = self.module.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.module.train()
        seen = 0
        try:
            for batch in batches:
                inputs = batch if isinstance(batch, (tuple, list)) else (batch,)
                self.forward(*inputs, channel_masks=channel_masks, block_masks=block_masks)
                seen += len(inputs[0])
        finally:
            for m, (momentum, _) in zip(norms, saved):
                m.momentum = momentum
            self.module.train(training)
        return seen

    @torch.no_grad()
    def apply_masks_(self, channel_masks=None, block_masks=None) -> None:
        """Multiply the module's parameters by the masks in place."""
        masked = self.masked_parameters(channel_masks, block_masks)
        for name, p in self.module.named_parameters():
            p.copy_(masked[name])

    def masks_for(self, plan: PruningPlan) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The channel and block masks (1 kept, 0 removed) that ``plan`` stands for, to pass to
        :meth:`forward` or :meth:`apply_masks_`."""
        channel = {}
        for gid, gp in plan.groups.items():
            if gp.keep is not None and gid in {g.id for g in self.groups}:
                mask = torch.zeros(gp.channels)
                mask[torch.as_tensor(gp.keep, dtype=torch.long)] = 1.0
                channel[gid] = mask
        return channel, {add: torch.zeros(()) for add in plan.drop_blocks}

    # -- cost --------------------------------------------------------------------------------
    def macs(self, keep: dict[str, torch.Tensor], block_keep: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Fraction of the model's MACs kept (a differentiable scalar) when group ``g`` keeps
        the fraction ``keep[g]`` of its channels and block ``b`` is kept with ``block_keep[b]``
        (1 kept, 0 dropped). Groups and blocks not named stay whole."""
        total = torch.zeros(())
        for macs, exps, blocks in self._terms:
            term = torch.tensor(float(macs))
            for gid, e in exps.items():
                if gid in keep:
                    term = term * keep[gid] ** e
            for add in blocks:
                if block_keep and add in block_keep:
                    term = term * block_keep[add]
            total = total + term
        return total / self.base_macs

    # -- plans -------------------------------------------------------------------------------
    def plan(self, scores: dict[str, np.ndarray], *, threshold: float | None = None,
             target_macs: float | None = None, drop_blocks=(), method: str = "learned",
             tolerance: float = TOLERANCE) -> PruningPlan:
        """A plan from learned channel ``scores`` (group id → ``[channels]``, higher is kept).

        With ``threshold``, a group keeps its channels scoring at least ``threshold`` (at least
        its best one). With ``target_macs`` (fraction kept), that plan is used when its MACs are
        within ``tolerance`` of the target; otherwise (or without a threshold) channels are
        ranked across groups by score and removed lowest first until the target is met
        (:func:`onnxprune.decide.target.meet_macs_target`). ``drop_blocks`` (Add names) go in
        the plan and count in its MACs; ``method`` is recorded in ``plan.meta``. Errors: ``OnnxPruneError`` when the target cannot be met.
        """
        drop = [str(a) for a in drop_blocks]
        by_add = {b.add: b for b in self.analysis.removable_blocks}
        view = without_dropped_groups(self.analysis, dropped_nodes(self.analysis, [by_add[a] for a in drop]))
        planned = [g for g in self.groups if view.group(g.id).prunable]
        full = {g.id: np.full(g.channels, np.inf) for g in view.groups}
        full.update({g.id: np.asarray(scores[g.id], dtype=np.float64) for g in planned if g.id in scores})
        if threshold is not None:
            plan = PruningPlan(drop_blocks=list(drop), meta={"method": method})
            for g in planned:
                s = full[g.id]
                keep = np.flatnonzero(s >= threshold)
                if len(keep) == 0:
                    keep = np.array([int(np.argmax(s))])
                plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, round(1 - len(keep) / g.channels, 6),
                                              sorted(int(i) for i in keep))
            if target_macs is None or abs(self.kept(plan) - target_macs) <= tolerance:
                return plan
        if target_macs is None:
            raise OnnxPruneError("a plan needs a threshold or a MACs target")

        def at(ratio: float) -> PruningPlan:
            plan = global_plan(view, full, ratio, max_ratio=0.9)
            plan.groups = {gid: gp for gid, gp in plan.groups.items() if np.isfinite(full[gid]).any()}
            plan.drop_blocks, plan.meta = list(drop), {"method": method}
            return plan

        return meet_macs_target(view, self.cost_model, at, full, target_macs, max_ratio=0.9,
                                order="score", tolerance=tolerance).plan

    def kept(self, plan: PruningPlan) -> float:
        """Fraction of MACs ``plan`` keeps, counted on the graph as the rewrite would leave it."""
        return PlanCost(self.analysis, self.cost_model)(plan).macs / self.cost_model.cost().macs

    def export(self, path: str | Path) -> Path:
        """Export the module as :func:`prepare` did, so a plan made here applies to the file."""
        return export(self.module, self.example_inputs, path)


def export(module: nn.Module, example_inputs, path: str | Path) -> Path:
    """Write ``module`` to ``path`` with the TorchScript exporter, constant folding off (every
    initializer keeps its parameter's name, BN stays a node), opset 17, in eval mode, with a
    dynamic batch axis on every input and output. Returns the path."""
    path = Path(path)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))]
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            outputs = module(*inputs)
        n_out = len(outputs) if isinstance(outputs, (tuple, list)) else 1
        out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=EXPORT_OPSET,
                              do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL,
                              input_names=names, output_names=out_names,
                              dynamic_axes={n: {0: "batch"} for n in names + out_names})
    finally:
        module.train(training)
    return path


def prepare(module: nn.Module, example_inputs, onnx_path: str | Path | None = None) -> ModuleGroups:
    """Channel groups and removable residual blocks of ``module``, mapped to its parameters.

    ``example_inputs``: a tensor or a tuple of tensors (batch 1 is fine) for the export and the
    MACs count. ``onnx_path``: an existing export of this module to analyze instead of
    exporting one (then initializer names must be parameter names, or weight identity must
    find them; see the module doc). Errors: ``OnnxPruneError`` when nothing maps.
    """
    from ..pipeline import load_and_analyze

    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if onnx_path is None:
        with tempfile.TemporaryDirectory() as tmp:
            analysis = load_and_analyze(export(module, inputs, Path(tmp) / "module.onnx"))
    else:
        analysis = load_and_analyze(onnx_path)
    params = dict(module.named_parameters())
    renamed = _by_identity(analysis, params)
    slots_by_group = group_parameters(analysis, set(params) | set(renamed))
    groups, unmapped = [], {}
    for g in analysis.prunable_groups:
        slots = [ParameterSlot(renamed.get(s.name, s.name), s.dim, s.role, s.channels) for s in slots_by_group[g.id]]
        produced = {c for s in slots if s.role == OUT for c in s.channels if c >= 0}
        if produced != set(range(g.channels)):
            unmapped[g.id] = f"{g.anchor}: its producing weights do not map to parameters of the module"
            continue
        groups.append(TorchGroup(g.id, g.anchor, g.channels, slots))
    if not groups and analysis.prunable_groups:
        raise OnnxPruneError("no channel group of the export maps to the module's parameters "
                             "(export with constant folding off, or pass the module that was exported)")
    blocks = []
    nodes = {n.name: n for n in analysis.model.graph.node}
    for b in analysis.removable_blocks:
        names = {renamed.get(t, t) for name in b.nodes for t in nodes[name].input}
        blocks.append(TorchBlock(b.id, b.add, sorted(n for n in names if n in params)))
    return ModuleGroups(module, inputs, analysis, groups, blocks, renamed, unmapped)


PRODUCING_ROLES = ("out", "bias", "norm")
"""Slot roles that carry a channel's own values (not a consumer's input columns)."""


def channel_norms(params: dict[str, torch.Tensor], group: TorchGroup, eps: float = 1e-12) -> torch.Tensor:
    """l2 norm per channel of ``group`` over its producing slots, ``[channels]``
    (``sqrt(Σ θ² + eps)``, differentiable at zero)."""
    total = torch.zeros(group.channels)
    for slot in group.slots:
        if slot.role in PRODUCING_ROLES:
            p = params[slot.name]
            flat = p.movedim(slot.dim, 0).reshape(p.shape[slot.dim], -1).pow(2).sum(1)
            index = torch.as_tensor(slot.channels)
            inside = index >= 0
            total = total.index_add(0, index[inside], flat[inside].to(total.dtype))
    return (total + eps).sqrt()


def _by_identity(analysis: Analysis, params: dict[str, torch.Tensor]) -> dict[str, str]:
    """Initializer name → parameter name, for initializers not named after a parameter whose
    values equal exactly one parameter's, bit for bit."""
    by_shape: dict[tuple, list[str]] = {}
    for name, p in params.items():
        by_shape.setdefault(tuple(p.shape), []).append(name)
    out = {}
    for init in analysis.model.graph.initializer:
        if init.name in params or tuple(init.dims) not in by_shape:
            continue
        values = numpy_helper.to_array(init)
        hits = [n for n in by_shape[tuple(init.dims)]
                if values.dtype == np.float32 and np.array_equal(params[n].detach().cpu().numpy(), values)]
        if len(hits) == 1:
            out[init.name] = hits[0]
    return out


def _macs_terms(mg: ModuleGroups) -> list[tuple[int, dict[str, float], list[str]]]:
    """Per counted node: (MACs, {group id: exponent}, [Add names of blocks holding it])."""
    analysis, cost_model = mg.analysis, mg.cost_model
    base = cost_model.macs_by_node()
    exps: dict[int, dict[str, float]] = {i: {} for i in base}
    for g in mg.groups:
        if g.channels < 2:
            continue
        half = g.channels // 2
        removed = analysis.group(g.id).units[:half]
        fraction = (g.channels - half) / g.channels
        halved = cost_model.macs_by_node(analysis.alive_ids(removed))
        for i, m in base.items():
            if m and halved[i] != m:
                exps[i][g.id] = math.log(halved[i] / m) / math.log(fraction) if halved[i] else 1.0
    holders: dict[int, list[str]] = {}
    by_add = {b.add: b for b in analysis.removable_blocks}
    for tb in mg.blocks:
        for i in dropped_nodes(analysis, [by_add[tb.add]]):
            holders.setdefault(i, []).append(tb.add)
    return [(m, exps[i], holders.get(i, [])) for i, m in base.items() if m]
