"""Schedules: how the per-group pruning ratios are chosen under a budget.

* ``uniform``: the same ratio for every group (:func:`~onnxprune.decide.plan.uniform_plan`);
* ``global``: channels ranked across groups by their normalized scores
  (:func:`~onnxprune.decide.plan.global_plan`);
* ``sensitivity``: from measured per-group sensitivity curves (:mod:`.allocation`);
* ``evolution``: searched by differential evolution on the measured metric (:mod:`.evolution`).

Each schedule is a one-parameter family of plans, more pruning as the parameter grows; the
budget (a fraction of MACs, params or predicted latency) is met by :func:`~onnxprune.decide.target.meet_target`
within 0.02. ``uniform`` and ``global`` also take a plain ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..analysis.cost import CostModel
from ..errors import OnnxPruneError
from ..analysis.groups import Analysis
from .plan import PruningPlan, excluded, global_plan, uniform_plan
from .target import TargetSearch, meet_target

SCHEDULES = ("uniform", "global", "sensitivity", "evolution")


@dataclass
class Budget:
    """Keep ``target`` of the model's ``kind``: ``"macs"``, ``"params"`` or ``"latency"`` (predicted
    by the cost model's latency table, :meth:`~onnxprune.analysis.cost.CostModel.with_latency`)."""

    kind: str
    target: float


def plan_for_budget(analysis: Analysis, cost_model: CostModel, scores: dict[str, np.ndarray], schedule: str,
                    budget: Budget, *, max_ratio: float, min_channels: int, round_to: int, exclude=(),
                    criterion: str | None = None, report=None,
                    losses: Callable[[list[PruningPlan]], list[float]] | None = None, evaluations: int = 300,
                    seed: int = 0, progress=None, blocks=()) -> tuple[PruningPlan, list[str]]:
    """The ``schedule``'s plan that meets ``budget``, and notes. ``report``: the sensitivity
    report (``sensitivity``); ``losses``: measures plans (``evolution``); ``blocks``: residual
    blocks the ``sensitivity`` and ``evolution`` schedules may drop as well (``--mix-blocks``).

    Errors (``OnnxPruneError``): an unknown schedule, a missing report or data, a budget that
    cannot be met."""
    kw = dict(min_channels=min_channels, round_to=round_to)
    groups = [g for g in analysis.prunable_groups if not excluded(g, exclude)]
    common = dict(max_ratio=max_ratio, budget=budget.kind, **kw)
    notes: list[str] = []
    if schedule == "uniform":
        search = meet_target(analysis, cost_model, lambda r: uniform_plan(
            analysis, scores, min(r, max_ratio), exclude=exclude, criterion=criterion, **kw), scores, budget.target,
            order="ratio", **common)
    elif schedule == "global":
        search = meet_target(analysis, cost_model, lambda r: global_plan(
            analysis, scores, r, max_ratio=max_ratio, exclude=exclude, criterion=criterion, **kw), scores, budget.target,
            order="score", **common)
    elif schedule == "sensitivity":
        from .allocation import SensitivityAllocation

        if report is None:
            raise OnnxPruneError("schedule sensitivity needs sensitivity curves: {sensitivity} (a saved report) or {data}")
        report.validate(analysis)
        alloc = SensitivityAllocation(report, groups, scores, max_ratio=max_ratio, criterion=criterion, blocks=blocks,
                                      **kw)
        search = meet_target(analysis, cost_model, alloc.at, scores, budget.target, order=alloc.step_cost,
                             top=alloc.top, label="allowed loss", **common)
        notes.append(f"sensitivity schedule: predicted {report.metric} loss {alloc.predicted_loss(search.plan):.4g} "
                     f"(sum over groups, from curves measured on {report.samples} samples)")
    elif schedule == "evolution":
        search, note = _evolution(analysis, cost_model, scores, groups, budget, losses, criterion=criterion,
                                  evaluations=evaluations, seed=seed, progress=progress, max_ratio=max_ratio,
                                  blocks=blocks, **kw)
        notes.append(note)
    else:
        raise OnnxPruneError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if blocks and schedule in ("sensitivity", "evolution"):
        notes.append(f"{schedule} schedule: dropped {len(search.plan.drop_blocks)} of {len(blocks)} residual blocks "
                     "offered to it")
    search.plan.meta["schedule"] = schedule
    return search.plan, [search.note(budget.target), *notes]


def _evolution(analysis, cost_model, scores, groups, budget: Budget, losses, *, criterion, evaluations, seed, progress,
               max_ratio, min_channels, round_to, blocks=()) -> tuple[TargetSearch, str]:
    from .evolution import Projection, evolve
    from .plan import empty_tensor, fill_empty_tensors

    if losses is None:
        raise OnnxPruneError("schedule evolution needs calibration data: {data}")
    kind = budget.kind
    total = cost_model.total(kind)

    from .depth import PlanCost
    from .target import TOLERANCE

    plan_cost = PlanCost(analysis, cost_model)

    def kept(plan: PruningPlan) -> float:
        if empty_tensor(plan, analysis) is not None:
            plan = plan.copy()
            fill_empty_tensors(plan, analysis, scores)
        return plan_cost.total(plan, kind) / total

    def feasible_losses(plans: list[PruningPlan]) -> list[float]:
        """Measured losses; a plan whose blocks alone go below the budget is not measured."""
        ok = [kept(p) >= budget.target - TOLERANCE for p in plans]
        measured = iter(losses([p for p, good in zip(plans, ok) if good]) if any(ok) else [])
        return [next(measured) if good else 1e6 for good in ok]

    projection = Projection(groups, scores, kept, budget.target, max_ratio=max_ratio, min_channels=min_channels,
                            round_to=round_to, criterion=criterion, blocks=blocks)
    weights = evolve(projection, projection.dims, feasible_losses, evaluations=evaluations, seed=seed,
                     progress=progress, x0=projection.start())
    common = dict(max_ratio=max_ratio, min_channels=min_channels, round_to=round_to, order="ratio", budget=kind)
    found = meet_target(analysis, cost_model, lambda s: projection.plan(weights, s), scores, budget.target,
                        top=projection.top(weights), label="scale", **common)
    uniform = meet_target(analysis, cost_model, lambda r: projection.plan(projection.start(), r), scores,
                          budget.target, **common)
    # the budget's last single-group steps can move a plan from what evolution measured: measure
    # both finished plans, and never return worse than uniform on the search's own fitness
    evolved_loss, uniform_loss = losses([found.plan.copy(), uniform.plan.copy()])
    if uniform_loss < evolved_loss:
        return uniform, (f"evolution schedule: {evaluations} evaluations; the uniform allocation measured better "
                         f"({uniform_loss:.4g} against {evolved_loss:.4g} calibration loss) and was kept")
    return found, f"evolution schedule: {evaluations} evaluations, calibration loss {evolved_loss:.4g} (uniform: {uniform_loss:.4g})"


def sparsity_for_budget(layers: list[tuple[str, str, int]], weights_of, schedule: str, target: float, *,
                        losses=None, evaluations: int = 300, seed: int = 0, progress=None,
                        max_sparsity: float = 0.99) -> tuple[dict[str, float], list[str]]:
    """Per-layer unstructured sparsities (node name → fraction zeroed) that keep ``target`` of
    the ``layers``' weights nonzero (``--granularity weight``), and notes.

    ``uniform``: the same sparsity everywhere; ``global``: one magnitude threshold across the
    layers (``weights_of(weight name)`` gives the values); ``evolution``: differential evolution
    over the per-layer sparsities, projected onto the budget, ``losses(sparsities)`` its fitness.
    Errors (``OnnxPruneError``): another schedule, or no data for evolution."""
    sizes = np.array([n for _, _, n in layers], dtype=np.float64)
    zeros = (1.0 - target) * sizes.sum()
    if schedule == "uniform":
        return {node: 1.0 - target for node, _, _ in layers}, []
    if schedule == "global":
        magnitudes = np.concatenate([np.abs(np.asarray(weights_of(weight))).reshape(-1) for _, weight, _ in layers])
        k = int(zeros)
        threshold = np.partition(magnitudes, k)[k] if 0 < k < len(magnitudes) else (np.inf if k else -1.0)
        result = {}
        for node, weight, n in layers:
            result[node] = float((np.abs(np.asarray(weights_of(weight))) < threshold).sum()) / n
        return result, []
    if schedule != "evolution":
        raise OnnxPruneError(f"--granularity weight takes the uniform, global or evolution schedule, not {schedule}")
    if losses is None:
        raise OnnxPruneError("schedule evolution needs calibration data: {data}")
    from .evolution import evolve

    def project(v: np.ndarray) -> dict[str, float]:
        positive = v[v > 0]
        lo, hi = 0.0, max_sparsity / max(float(positive.min()) if positive.size else 1.0, 1e-9)
        for _ in range(40):  # the scale at which the zeros meet the budget
            mid = (lo + hi) / 2
            if float((np.minimum(mid * v, max_sparsity) * sizes).sum()) < zeros:
                lo = mid
            else:
                hi = mid
        return {node: float(min(hi * w, max_sparsity)) for (node, _, _), w in zip(layers, v)}

    best = evolve(project, len(layers), losses, evaluations=evaluations, seed=seed, progress=progress)
    found, uniform = project(best), project(np.ones(len(layers)))
    found_loss, uniform_loss = losses([found, uniform])
    if uniform_loss < found_loss:
        return uniform, [f"evolution ({evaluations} evaluations): the uniform sparsity measured better and was kept"]
    return found, [f"evolution ({evaluations} evaluations): calibration loss {found_loss:.4g} (uniform: {uniform_loss:.4g})"]
