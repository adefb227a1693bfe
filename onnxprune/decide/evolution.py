"""The ``evolution`` schedule: per-group pruning ratios searched by differential evolution, as in
the differential-evolution layer-wise pruning literature, with ``scipy.optimize.differential_evolution``
(Storn & Price 1997) as the optimiser.

A candidate is one weight ``v_g`` in [0, 1] per group. It becomes a plan by **projection onto
the budget**: the ratios ``min(s * v_g, max_ratio)``, with the scale ``s`` bisected so that the
plan keeps the target fraction of MACs (or params). Every candidate is therefore on budget, and
evolution searches only *how* the pruning is spread. The fitness is the metric's loss measured
on the calibration data (:class:`~onnxprune.runtime.scoring.PlanEvaluator`, the full pruned
model in onnxruntime). The first member of the initial population is the uniform allocation
(all ``v_g = 1``), so the search never returns worse than uniform on its own fitness.

With ``blocks`` (``--mix-blocks``), each removable residual block gets a weight too, and is
dropped when its weight exceeds 0.5 (it starts at 0, kept); the group ratios are then projected
onto what the budget leaves. A candidate whose dropped blocks alone go below the budget is
infeasible, and is given a loss above any measured one without being measured.

Budget: ``evaluations`` fitness evaluations in all (population × generations); the run is
seeded and deterministic whatever runs the evaluations. The best fitness so far is reported
after each generation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import OnnxPruneError
from .plan import GroupPlan, PruningPlan, keep_count, top_k


class Projection:
    """Candidate vectors → plans on budget (see the module doc)."""

    def __init__(self, groups, scores, kept: Callable[[PruningPlan], float], target: float, *, max_ratio: float,
                 min_channels: int = 1, round_to: int = 1, criterion: str | None = None, blocks=()) -> None:
        self.groups, self.scores, self.kept, self.target = list(groups), scores, kept, target
        self.blocks = list(blocks)
        self.max_ratio, self.min_channels, self.round_to, self.criterion = max_ratio, min_channels, round_to, criterion

    @property
    def dims(self) -> int:
        return len(self.groups) + len(self.blocks)

    def start(self) -> np.ndarray:
        """The uniform allocation, every block kept."""
        return np.concatenate([np.ones(len(self.groups)), np.zeros(len(self.blocks))])

    def plan(self, weights: np.ndarray, scale: float) -> PruningPlan:
        plan = PruningPlan(criterion=self.criterion)
        plan.drop_blocks = [b.add for b, w in zip(self.blocks, weights[len(self.groups):]) if w > 0.5]
        for g, w in zip(self.groups, weights):
            ratio = min(float(scale * w), self.max_ratio)
            keep = top_k(self.scores[g.id], keep_count(g.channels, ratio, self.min_channels, self.round_to))
            plan.groups[g.id] = GroupPlan(g.id, g.anchor, g.channels, round(ratio, 6), keep)
        return plan

    def top(self, weights: np.ndarray) -> float:
        """The scale at which every group with a positive weight reaches ``max_ratio``."""
        weights = weights[:len(self.groups)]
        positive = weights[weights > 0]
        return self.max_ratio / float(positive.min()) if positive.size else 0.0

    def __call__(self, weights: np.ndarray) -> PruningPlan:
        """The plan of ``weights`` whose kept fraction is closest above or at the target."""
        lo, hi = 0.0, self.top(weights)
        if hi == 0.0:
            return self.plan(weights, 0.0)
        for _ in range(14):
            mid = (lo + hi) / 2
            if self.kept(self.plan(weights, mid)) > self.target:
                lo = mid
            else:
                hi = mid
        return self.plan(weights, hi)


def evolve(projection: Callable[[np.ndarray], object], dims: int, losses: Callable[[list], list[float]], *,
           evaluations: int, seed: int = 0, progress: Callable[[int, float], None] | None = None,
           x0: np.ndarray | None = None) -> np.ndarray:
    """The best of ``dims`` weights in [0, 1] found; ``projection(weights)`` makes a candidate
    (a plan on budget) and ``losses(candidates)`` measures the fitness of many at once (in
    parallel where it can). Errors: ``evaluations`` too small for two generations."""
    from scipy.optimize import differential_evolution

    if dims == 0:
        return np.zeros(0)
    popsize = max(1, math.ceil(12 / dims))
    per_generation = popsize * dims
    if evaluations < 2 * per_generation:
        raise OnnxPruneError(f"{{evaluations}} must be at least {2 * per_generation} for a search over {dims} groups "
                             f"or layers (two generations of {per_generation})")
    maxiter = evaluations // per_generation - 1
    best = {"loss": math.inf, "generation": 0}

    def fitness_many(xs) -> list[float]:
        values = losses([projection(np.asarray(x)) for x in xs])
        best["loss"] = min([best["loss"], *values])
        return values

    def vectorized(func, xs):  # scipy calls this with the whole population when it is the `workers` map
        return fitness_many(list(xs))

    def callback(*args, **kwargs):
        best["generation"] += 1
        if progress:
            progress(best["generation"], best["loss"])

    result = differential_evolution(lambda x: fitness_many([x])[0], [(0.0, 1.0)] * dims, maxiter=maxiter,
                                    popsize=popsize, seed=seed, polish=False, updating="deferred", workers=vectorized,
                                    x0=np.ones(dims) if x0 is None else x0, tol=0.0, atol=0.0, callback=callback, init="latinhypercube")
    return np.asarray(result.x)
