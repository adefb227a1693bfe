"""Score many candidate pruning plans cheaply, serially or in parallel: the one interface that
sensitivity analysis and ratio searches (sensitivity-guided, differential evolution,
latency-aware) build on.

``PlanEvaluator(spec)(plan) -> PlanScore``: the model is loaded and analyzed once, the reference
outputs are computed once on a fixed calibration set; each plan is then rewritten in memory
(never written to disk) and run in onnxruntime. :func:`evaluate_plans` fans plans out to worker
processes, each building its evaluator once from the picklable :class:`EvaluatorSpec`.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from ..cost import CostModel
from ..errors import OnnxPruneError
from .evaluate import Dataset, compare_outputs, input_specs, load_data, make_session, random_data, run_model
from ..decide.plan import PruningPlan, resolve
from ..pipeline import load_and_analyze
from ..rewrite import apply_removal


@dataclass(frozen=True)
class EvaluatorSpec:
    """Everything a worker needs to build a :class:`PlanEvaluator` (picklable).

    ``data``: an ``.npz`` (inputs and optional ``labels``), or None for ``samples`` seeded random
    samples at ``input_shapes``. ``threads``: onnxruntime intra-op threads per evaluator.
    """

    model: str
    input_shapes: dict = field(default_factory=dict)
    data: str | None = None
    samples: int = 16
    seed: int = 0
    threads: int = 1
    criterion: str = "l1"


@dataclass(frozen=True)
class PlanScore:
    """How a plan does: ``macs_kept``/``params_kept`` are fractions of the original; output
    fidelity is measured on the first output (cosine similarity averaged over samples, max
    absolute error); ``top1_agreement`` and ``accuracy`` where the output is a classifier."""

    macs_kept: float
    params_kept: float
    cosine_similarity: float
    max_abs_error: float
    top1_agreement: float | None
    accuracy: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class PlanEvaluator:
    """Callable scoring one :class:`PruningPlan` at a time (see the module doc)."""

    def __init__(self, spec: EvaluatorSpec) -> None:
        from ..decide.importance import all_importance

        self.spec = spec
        self.analysis = load_and_analyze(spec.model, spec.input_shapes)
        self.cost = CostModel(self.analysis)
        self.before = self.cost.cost()
        self.scores = all_importance(self.analysis, spec.criterion, spec.seed)
        session = make_session(self.analysis.model.SerializeToString(), threads=spec.threads)
        self.data: Dataset = (
            load_data(spec.data, input_specs(session)) if spec.data
            else random_data(input_specs(session), spec.samples, spec.input_shapes or None, spec.seed)
        )
        self.reference = run_model(session, self.data)

    def __call__(self, plan: PruningPlan) -> PlanScore:
        plan.validate(self.analysis)
        resolve(plan, self.analysis, self.scores)
        removed = plan.removed_units(self.analysis)
        after = self.cost.cost_without(removed)
        session = make_session(apply_removal(self.analysis, removed).SerializeToString(), threads=self.spec.threads)
        outputs = run_model(session, self.data)
        first = compare_outputs(self.reference, outputs, self.data.labels)[0]
        return PlanScore(
            macs_kept=after.macs / self.before.macs if self.before.macs else 1.0,
            params_kept=after.params / self.before.params if self.before.params else 1.0,
            cosine_similarity=float(first.cosine_similarity),
            max_abs_error=float(first.max_abs_error),
            top1_agreement=first.top1_agreement,
            accuracy=first.accuracy_pruned,
        )


_WORKER: PlanEvaluator | None = None


def _init_worker(spec: EvaluatorSpec) -> None:
    global _WORKER
    _WORKER = PlanEvaluator(spec)


def _score(plan_dict: dict) -> dict:
    assert _WORKER is not None
    return _WORKER(PruningPlan.from_dict(plan_dict)).to_dict()


def evaluate_plans(spec: EvaluatorSpec, plans: list[PruningPlan], workers: int = 1) -> list[PlanScore]:
    """Scores of ``plans`` in order; ``workers > 1`` uses that many processes.

    Errors: ``OnnxPruneError`` for a bad spec or an invalid plan (raised in the caller).
    """
    if workers < 1:
        raise OnnxPruneError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        evaluator = PlanEvaluator(spec)
        return [evaluator(plan) for plan in plans]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(spec,)) as pool:
        return [PlanScore(**d) for d in pool.map(_score, [p.to_dict() for p in plans])]


def ratio_plan(evaluator: PlanEvaluator, ratios: dict[str, float]) -> PruningPlan:
    """A plan that carries only per-group pruning ratios (resolved with the spec's criterion)."""
    from ..decide.plan import GroupPlan

    plan = PruningPlan(criterion=evaluator.spec.criterion)
    for gid, ratio in ratios.items():
        g = evaluator.analysis.group(gid)
        plan.groups[gid] = GroupPlan(gid, g.anchor, g.channels, float(ratio), None)
    return plan


__all__ = ["EvaluatorSpec", "PlanEvaluator", "PlanScore", "evaluate_plans", "ratio_plan"]
