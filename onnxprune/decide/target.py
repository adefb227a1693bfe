"""Meet a budget: keep a given fraction of the model's MACs (or params), within a tolerance.

A schedule with one knob (a uniform or a global pruning ratio) makes MACs a step function of
that knob once channel counts are rounded: with ``round_to=16`` every 64-channel group jumps
from 64 to 48 channels at the same ratio, so bisection over the ratio alone can miss a target
by a wide margin. The search therefore runs in two steps:

1. **Bisection** over the ratio finds the boundary: the plan just above the target (fewer
   channels removed) and the one at or below it.
2. **Single-group steps.** From the plan above the target, one group at a time gives up one
   rounding step of channels (``round_to`` of them, or one channel). A step is taken while the
   kept MACs are above the tolerance band, or when it brings them closer to the target; never
   one that falls below the band (that group is then left as it is). The uniform schedule steps the least-pruned group first, so
   ratios stay as even as they can; the global schedule steps the group whose next channels
   score lowest, as its ranking would.

The result keeps the target within :data:`TOLERANCE` (0.5 means 0.48-0.52), or the search
says why it cannot: the smallest widths allowed keep more, the ``max_ratio`` cap stops it, or
one rounding step is too coarse for this model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..analysis.cost import CostModel
from ..errors import OnnxPruneError
from ..analysis.groups import Analysis
from .plan import GroupPlan, PruningPlan, empty_tensor, fill_empty_tensors, keep_count, top_k
from .rounding import as_rounding

_WHAT = {"macs": "MACs", "params": "params", "latency": "predicted latency"}
_NOTHING = {"macs": "MACs (Conv/Gemm/MatMul) at this input shape", "params": "params",
            "latency": "latency (no Conv/Gemm/MatMul layer could be timed at this input shape)"}

TOLERANCE = 0.02
"""How far, as a fraction of the model's MACs, the kept MACs may be from the target."""


@dataclass
class TargetSearch:
    """What :func:`meet_target` found: the plan, the fraction of the budget (MACs or params) it
    keeps, the bisected parameter and how many single-group steps followed."""

    plan: PruningPlan
    kept: float
    ratio: float
    steps: int
    budget: str = "macs"
    label: str = "ratio"

    def note(self, target: float) -> str:
        steps = f", then {self.steps} single-group step{'s' * (self.steps != 1)}" if self.steps else ""
        what = _WHAT[self.budget]
        # A latency plan may aim at a corrected prediction (see pipeline._latency_plan): never
        # shown as the option, which says what the user asked for.
        aim = f"planned for a predicted {target:.4g}" if self.budget == "latency" else f"{{target_{self.budget}}} {target:.4g}"
        return f"{aim}: keeps {self.kept:.4f} of {what} ({self.label} {self.ratio:.4g}{steps})"


StepCost = Callable[[str, int, int], float]
"""``step_cost(group id, channels kept now, channels kept after the step)``: lower steps first."""


def meet_target(analysis: Analysis, cost_model: CostModel, at: Callable[[float], PruningPlan],
                scores: dict[str, np.ndarray], target: float, *, max_ratio: float, min_channels: int = 1,
                round_to: int = 1, order: str | StepCost = "ratio", budget: str = "macs", top: float | None = None,
                label: str = "ratio", tolerance: float = TOLERANCE) -> TargetSearch:
    """The plan that keeps ``target`` of the model's MACs (``budget="macs"``) or params
    (``"params"``), within ``tolerance`` (see the module doc).

    ``at(x)`` builds the schedule's plan for one value of its parameter ``x`` in ``[0, top]``
    (default ``max_ratio``), pruning more as ``x`` grows, with keep lists resolved; ``at(top)``
    is the deepest plan the schedule allows. ``scores`` are the criterion's channel scores.
    ``order`` picks the next single-group step: ``"ratio"`` (uniform: the least-pruned group),
    ``"score"`` (global: the group whose next channels score lowest), or a :data:`StepCost`.
    ``label`` names the parameter in the note.

    Errors (``OnnxPruneError``): nothing to count (no MACs, or no params); the target cannot be
    met within ``tolerance``, with the reason.
    """
    from .depth import PlanCost

    plan_cost = PlanCost(analysis, cost_model)

    def measure(plan) -> float:
        return cost_model.total(budget) if plan is None else plan_cost.total(plan, budget)

    total = measure(None)
    if total == 0:
        raise OnnxPruneError(f"the model has no countable {_NOTHING[budget]}; use {{ratio}}")

    def kept(plan: PruningPlan) -> float:  # as the plan will be applied: with emptied tensors given a channel back
        if empty_tensor(plan, analysis) is not None:
            plan = plan.copy()
            fill_empty_tensors(plan, analysis, scores)
        return measure(plan) / total

    top = max_ratio if top is None else top
    deepest = at(top)
    if kept(deepest) > target + tolerance:
        raise OnnxPruneError(_unreachable(kept, deepest, target, max_ratio, min_channels, round_to, budget, tolerance))
    lo, hi = 0.0, top
    for _ in range(16):  # to 1e-5 of the range: the single-group steps do the rest
        mid = (lo + hi) / 2
        if kept(at(mid)) > target:
            lo = mid
        else:
            hi = mid
    plan, ratio = at(lo), lo
    current = kept(plan)
    if current <= target:  # the start already meets it (a target of 1, or nothing to prune)
        if target - current > tolerance:
            raise OnnxPruneError(f"internal error: the schedule's lightest plan keeps {current:.4f}, below the target")
        return TargetSearch(plan, current, ratio, 0, budget, label)
    floors = {gid: keep_count(gp.channels, max_ratio, min_channels, round_to) for gid, gp in plan.groups.items()}
    steps, closed = 0, set()
    while abs(current - target) > 1e-9:
        gid = _next_group(plan, scores, floors, closed, round_to, order)
        if gid is None:
            break
        gp = plan.groups[gid]
        before = gp.keep
        gp.keep = top_k(scores[gid], _step_down(len(gp.keep), round_to))
        after = kept(plan)
        safe = after >= target - tolerance  # never step out of the band below the target
        if safe and (current > target + tolerance or abs(after - target) < abs(current - target)):
            current, steps = after, steps + 1
            gp.ratio = round(1 - len(gp.keep) / gp.channels, 6)
        else:
            gp.keep = before
            closed.add(gid)
    if abs(current - target) > tolerance:
        raise OnnxPruneError(
            f"{{target_{budget}}} {target} cannot be met within {tolerance}: the closest plan keeps {current:.4f}, "
            f"and one more rounding step of any group falls below {target - tolerance:.2f}; try a smaller "
            f"{{round_to}} (now {round_to})")
    return TargetSearch(plan, current, ratio, steps, budget, label)


def meet_macs_target(analysis, cost_model, at, scores, target, **kw) -> TargetSearch:
    """:func:`meet_target` with the MACs budget."""
    return meet_target(analysis, cost_model, at, scores, target, budget="macs", **kw)


def _step_down(keep: int, round_to) -> int:
    """The next smaller channel count that ``round_to`` allows (:mod:`.rounding`)."""
    return as_rounding(round_to).down(keep)


def _next_group(plan: PruningPlan, scores, floors, closed, round_to: int, order) -> str | None:
    """The group to give up one step next, or None when no group can."""
    best, best_key = None, None
    for gid, gp in plan.groups.items():
        if gid in closed:
            continue
        new = _step_down(len(gp.keep), round_to)
        if new < max(floors[gid], 1):
            continue
        if callable(order):
            key = (order(gid, len(gp.keep), new), gid)
        elif order == "score":
            dropped = np.setdiff1d(gp.keep, top_k(scores[gid], new))
            key = (float(np.mean(scores[gid][dropped])), gid)
        else:
            key = (1 - len(gp.keep) / gp.channels, gid)
        if best_key is None or key < best_key:
            best, best_key = gid, key
    return best


def _unreachable(kept, deepest, target, max_ratio, min_channels, round_to, budget, tolerance) -> str:
    """Why no plan reaches ``target``: the cap, or the smallest widths allowed."""
    floor = PruningPlan(criterion=deepest.criterion, drop_blocks=list(deepest.drop_blocks))
    for gid, gp in deepest.groups.items():
        n = keep_count(gp.channels, 1.0 - 1e-12, min_channels, round_to)
        floor.groups[gid] = GroupPlan(gp.id, gp.anchor, gp.channels, None, list(range(n)))  # counts set the cost
    what = _WHAT[budget]
    if kept(floor) > target + tolerance:
        return (f"{{target_{budget}}} {target} cannot be met: the smallest widths allowed ({{min_channels}} {min_channels}, "
                f"{{round_to}} {round_to}) keep {kept(floor):.4f} of {what}; the rest sits where pruning cannot shrink it "
                "(blocked or excluded groups, graph outputs, tensors that must keep one channel)")
    return (f"{{target_{budget}}} {target} cannot be met: the {{max_ratio}} cap of {max_ratio} keeps {kept(deepest):.4f} "
            f"of {what}; raise {{max_ratio}}")
