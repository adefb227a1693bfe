"""The ``sensitivity`` schedule: per-group pruning ratios from measured sensitivity curves.

Allocation (after AIMET's greedy compression-ratio selection, Qualcomm AI Model Efficiency
Toolkit, and Li et al. 2017's "prune insensitive layers harder"): for an allowed loss ``d``,
every group is pruned at the largest ratio whose predicted loss stays within ``d``. The
prediction interpolates the group's measured curve linearly (loss 0 at ratio 0), made
non-decreasing (the running maximum), so the ratio grows with ``d``. ``d`` is bisected until
the budget (MACs or params) is met, then single-group steps finish it
(:mod:`onnxprune.decide.target`), each time taking the step whose predicted loss grows least.

With ``blocks`` (``--mix-blocks``), residual blocks compete under the same allowed loss: a block
is dropped once the measured loss of dropping it alone is within ``d`` (plus a tie-breaker smaller
than the groups', so that a block whose drop costs nothing goes before harmless channels do).

The curves say how each group hurts the metric on its own; the allocation assumes the losses of
several groups do not interact much, as AIMET does. Recovery (``--recover``) and measuring the
result with ``onnxprune verify`` are what check that assumption.
"""

from __future__ import annotations

import numpy as np

from .plan import GroupPlan, PruningPlan, keep_count, top_k
from .sensitivity import Curve, SensitivityReport

_GRID = np.linspace(0.0, 1.0, 201)


def envelope(curve: Curve, tie: float = 1e-6) -> np.ndarray:
    """The curve's predicted loss on :data:`_GRID` (ratio 0 to 1): non-decreasing, plus
    ``tie * ratio`` so that it rises strictly. Where several ratios predict no loss (common
    after recovery), the allocation then grows them evenly from 0 instead of jumping to the
    largest harmless ratio at once."""
    xs = [0.0] + [p.ratio for p in curve.points]
    ys = [0.0] + [max(p.loss, 0.0) for p in curve.points]
    return np.maximum.accumulate(np.interp(_GRID, xs, ys)) + tie * _GRID


class SensitivityAllocation:
    """Plans of the ``sensitivity`` schedule for the ``groups`` (prunable, not excluded) of a
    model, from ``report`` (validated against the model by the caller)."""

    def __init__(self, report: SensitivityReport, groups, scores: dict[str, np.ndarray], *, max_ratio: float,
                 min_channels: int = 1, round_to: int = 1, criterion: str | None = None, blocks=()) -> None:
        self.groups = list(groups)
        self.scores = scores
        self.max_ratio, self.min_channels, self.round_to = max_ratio, min_channels, round_to
        self.criterion = criterion
        scale = max((max((p.loss for p in report.curve(g.id).points), default=0.0) for g in self.groups), default=0.0)
        self.loss = {g.id: envelope(report.curve(g.id), 1e-6 * (1.0 + max(scale, 0.0))) for g in self.groups}
        allowed = _GRID <= max_ratio + 1e-12
        self.top = max((float(curve[allowed][-1]) for curve in self.loss.values()), default=0.0) + 1e-9
        measured = report.block_losses()
        missing = [b.id for b in blocks if b.id not in measured]
        if missing:
            from ..errors import OnnxPruneError

            raise OnnxPruneError(f"the sensitivity report has no measurement of dropping block {missing[0]}: measure "
                                 "it again with this version (analyze --sensitivity measures every removable block)")
        self.block_loss = {b.add: max(measured[b.id], 0.0) + 1e-9 * (1.0 + max(scale, 0.0)) for b in blocks}
        self.top = max([self.top, *(v + 1e-9 for v in self.block_loss.values())])

    def ratio(self, group_id: str, allowed_loss: float) -> float:
        """The largest ratio (up to ``max_ratio``) whose predicted loss is within ``allowed_loss``."""
        curve = self.loss[group_id]
        ok = (curve <= allowed_loss) & (_GRID <= self.max_ratio + 1e-12)
        return float(_GRID[ok][-1]) if ok.any() else 0.0

    def at(self, allowed_loss: float) -> PruningPlan:
        """The plan for one allowed loss (the schedule's parameter, in ``[0, self.top]``)."""
        plan = PruningPlan(criterion=self.criterion)
        for g in self.groups:
            ratio = self.ratio(g.id, allowed_loss)
            keep = top_k(self.scores[g.id], keep_count(g.channels, ratio, self.min_channels, self.round_to))
            plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, round(ratio, 6), keep)
        plan.drop_blocks = [add for add, loss in self.block_loss.items() if loss <= allowed_loss]
        return plan

    def step_cost(self, group_id: str, keep_now: int, keep_next: int) -> float:
        """The predicted loss that one more step of ``group_id`` adds."""
        channels = next(g.channels for g in self.groups if g.id == group_id)
        curve = self.loss[group_id]
        return float(np.interp(1 - keep_next / channels, _GRID, curve) - np.interp(1 - keep_now / channels, _GRID, curve))

    def predicted_loss(self, plan: PruningPlan) -> float:
        """The sum of the groups' predicted losses at the plan's ratios and of the dropped blocks'
        (the allocation's model)."""
        return float(sum(np.interp(gp.removed / gp.channels, _GRID, self.loss[gid])
                         for gid, gp in plan.groups.items() if gid in self.loss)
                     + sum(self.block_loss.get(add, 0.0) for add in plan.drop_blocks))
