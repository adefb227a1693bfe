"""Exactness self-check: prove on *your* model that the rewrite keeps what it keeps.

The oracle (``../shared/GUIDE.md``, "Testing oracles that cannot lie"): pick channels in every
prunable group and make them dead by zeroing every weight entry they index (producer filters
and biases, BN scale and shift, the consumer columns that read them). The kept channels then
compute the same values with or without the dead ones, so removing them must leave every output
unchanged up to fp32 round-off, and the MACs must drop by exactly what the cost model planned.
A wrong index map (a Concat offset, a Flatten expansion, a grouped conv) breaks one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .cost import CostModel
from .groups import BIAS, IN, NORM, OUT, Analysis, analyze
from .decide.plan import GroupPlan, PruningPlan, fill_empty_tensors
from .rewrite import apply_removal

ZEROED_ROLES = (OUT, IN, NORM, BIAS)


def dead_channel_plan(analysis: Analysis, fraction: float = 0.5, seed: int = 0) -> PruningPlan:
    """A plan removing a random ``fraction`` (at least one channel, never all) of every prunable group."""
    rng = np.random.default_rng(seed)
    plan = PruningPlan(criterion="dead")
    for g in analysis.prunable_groups:
        n_remove = min(g.channels - 1, max(1, int(g.channels * fraction)))
        if n_remove <= 0:
            continue
        removed = set(rng.choice(g.channels, n_remove, replace=False).tolist())
        keep = [i for i in range(g.channels) if i not in removed]
        plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, None, keep)
    return plan


def kill_channels(analysis: Analysis, removed_units: np.ndarray) -> onnx.ModelProto:
    """A copy of the analyzed model in which ``removed_units`` contribute nothing (see module doc)."""
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    inits = {t.name: t for t in model.graph.initializer}
    dead = np.zeros(len(analysis.root_of), dtype=bool)
    dead[removed_units] = True
    values: dict[str, np.ndarray] = {}
    for slot in analysis.slots:
        if slot.role not in ZEROED_ROLES:
            continue
        mask = dead[analysis.root_of[slot.ids]]
        if not mask.any():
            continue
        arr = values.setdefault(slot.tensor, numpy_helper.to_array(inits[slot.tensor]).copy())
        index = [slice(None)] * arr.ndim
        index[slot.axis] = np.flatnonzero(mask)
        arr[tuple(index)] = 0
    for name, arr in values.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return model


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Outputs of ``model`` in onnxruntime (CPU) for ``feeds``."""
    from .runtime.session import make_session

    return make_session(model.SerializeToString()).run(None, feeds)


def random_feeds(analysis: Analysis, seed: int = 0) -> dict:
    """Seeded standard-normal inputs at the analysis shapes (batch 1 unless fixed otherwise)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in analysis.model.graph.initializer}
    feeds = {}
    for vi in analysis.model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(analysis.shapes[vi.name]).astype(dtype)
    return feeds


TOLERANCE = 1e-4


@dataclass(frozen=True)
class SelfCheck:
    """Result of :func:`self_check`: MACs per sample; ``output_scale`` is the largest absolute
    output value. It passes when the max abs error is within ``1e-4 * max(1, output_scale)``
    (fp32 round-off grows with the magnitude of the outputs) and planned MACs equal measured."""

    groups_checked: int
    channels_removed: int
    max_abs_error: float
    output_scale: float
    macs_planned: int
    macs_measured: int
    macs_before: int

    @property
    def passed(self) -> bool:
        tolerance = TOLERANCE * max(1.0, self.output_scale)
        return self.max_abs_error <= tolerance and self.macs_planned == self.macs_measured

    def to_dict(self) -> dict:
        return {**self.__dict__, "passed": self.passed}


def self_check(analysis: Analysis, fraction: float = 0.5, seed: int = 0) -> SelfCheck:
    """Run the dead-channel oracle on ``analysis.model`` (see the module doc).

    Removes ``fraction`` of every prunable group's channels after killing them, compares the
    outputs on seeded random inputs in onnxruntime, and recounts the MACs on the rewritten graph.
    Errors: ``OnnxPruneError`` if the model has dynamic dims the analysis could not fix.
    """
    plan = dead_channel_plan(analysis, fraction, seed)
    fill_empty_tensors(plan, analysis, {})  # e.g. a whole Split output: give one channel back
    removed = plan.removed_units(analysis)
    killed = kill_channels(analysis, removed)
    killed_analysis = analyze(killed, analysis.input_shapes)
    pruned = apply_removal(killed_analysis, removed)
    feeds = random_feeds(analysis, seed)
    reference, candidate = run(killed, feeds), run(pruned, feeds)
    error = max((float(np.abs(a - b).max()) for a, b in zip(reference, candidate)), default=0.0)
    scale = max((float(np.abs(a).max()) for a in reference if a.size), default=0.0)
    cost = CostModel(killed_analysis)
    return SelfCheck(
        groups_checked=len(plan.groups), channels_removed=int(len(removed)), max_abs_error=error, output_scale=scale,
        macs_planned=cost.cost_without(removed).macs, macs_measured=CostModel(analyze(pruned, analysis.input_shapes)).cost().macs,
        macs_before=cost.cost().macs,
    )
