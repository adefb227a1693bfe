"""Score many candidate pruning plans cheaply: the one interface that sensitivity analysis and
ratio searches (sensitivity schedules, differential evolution) build on.

``PlanEvaluator(spec)(plan) -> PlanScore``: the model is loaded and analyzed once, the reference
outputs are computed once on a fixed calibration set; each plan is then rewritten in memory
(never written to disk, never put through the full checker) and run in onnxruntime.

:meth:`PlanEvaluator.group_scores` scores one channel group pruned alone at several ratios, the
points of a sensitivity curve. Only the nodes from the group's first node on can change, so the
activations that flow into that part are computed once (from the original model's prefix) and
each ratio runs only the rest (:mod:`onnxprune.graph.subgraph`).

Work fans out with :func:`onnxprune.runtime.executors.executor` (local processes or a Dask
cluster); each worker builds its evaluator once from the picklable :class:`EvaluatorSpec`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import onnx

from ..analysis.cost import CostModel
from ..decide.plan import GroupPlan, PruningPlan, resolve
from ..errors import OnnxPruneError
from ..graph.subgraph import crossing, node_reads, submodel
from ..analysis.load import load_and_analyze
from ..decide.depth import dropped_nodes
from ..rewrite import apply_removal
from .evaluate import Dataset, compare_outputs, load_data, random_data, run_model
from .samples import run_all, trace_axes
from .session import input_specs, make_session


@dataclass(frozen=True)
class EvaluatorSpec:
    """Everything a worker needs to build a :class:`PlanEvaluator` (picklable).

    ``data``: an ``.npz`` (inputs and optional ``labels``), of which the first ``calib_samples``
    are used (all when None); or None for ``samples`` seeded random samples at
    ``input_shapes``. ``threads``: onnxruntime intra-op threads per evaluator;
    ``batch_size``: samples per onnxruntime run. ``recover``: the recovery
    (:mod:`onnxprune.transform.recover`) applied to every plan on the same data before it is
    scored, so that searches rank plans as they will be written.
    """

    model: str
    input_shapes: dict = field(default_factory=dict)
    data: str | None = None
    samples: int = 16
    seed: int = 0
    threads: int = 1
    criterion: str = "l1"
    calib_samples: int | None = None
    batch_size: int = 64
    recover: str = "none"
    metric: str = "auto"

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


@dataclass(frozen=True)
class PlanScore:
    """How a plan does: ``macs_kept``/``params_kept`` are fractions of the original; ``value``
    is the task metric of the first output (the evaluator's ``metric``: accuracy, mAP@0.5, CTC
    string agreement, ...); output fidelity on the first output: cosine similarity averaged over
    samples, max absolute error, relative MSE; ``top1_agreement`` and ``accuracy`` where the
    output is a classifier (accuracy needs labels)."""

    macs_kept: float
    params_kept: float
    cosine_similarity: float
    max_abs_error: float
    top1_agreement: float | None
    accuracy: float | None
    relative_mse: float = 0.0
    value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class PlanEvaluator:
    """Callable scoring one :class:`PruningPlan` at a time (see the module doc).

    Errors (``OnnxPruneError``): those of loading the model and the data; fewer than 2 samples.
    """

    def __init__(self, spec: EvaluatorSpec) -> None:
        from ..decide.importance import all_importance

        self.spec = spec
        self.analysis = load_and_analyze(spec.model, spec.input_shapes)
        self.cost = CostModel(self.analysis)
        self.before = self.cost.cost()
        session = self._session(self.analysis.model)
        specs = input_specs(session)
        if spec.data:
            data = load_data(spec.data, specs)
            n = len(data) if spec.calib_samples is None else min(spec.calib_samples, len(data))
            data = Dataset({k: v[:n] for k, v in data.inputs.items()}, None if data.labels is None else data.labels[:n])
        else:
            data = random_data(specs, spec.samples, spec.input_shapes or None, spec.seed)
        if len(data) < 2:
            raise OnnxPruneError(f"calibration data has {len(data)} sample; give at least 2")
        self.data: Dataset = data
        self.scores = all_importance(self.analysis, spec.criterion, spec.seed, data)
        self.reference = run_model(session, data, spec.batch_size)
        self.baseline = compare_outputs(self.reference, self.reference, data.labels)[0]
        self._position = {n.name: i for i, n in enumerate(self.analysis.model.graph.node)}
        self.task = TaskMetric.of(self.analysis.model, self.reference, data.labels, spec.metric)

    def baseline_score(self) -> dict:
        """The unpruned model's :class:`PlanScore`, as a dict."""
        return PlanScore(1.0, 1.0, 1.0, 0.0, self.baseline.top1_agreement, self.baseline.accuracy_pruned, 0.0,
                         self.task.baseline).to_dict()

    def _session(self, model: onnx.ModelProto):
        return make_session(model.SerializeToString(), threads=self.spec.threads, allow_spinning=False)

    def plan_for(self, ratios: dict[str, float]) -> PruningPlan:
        """A plan of per-group pruning ratios, resolved with the spec's criterion."""
        plan = PruningPlan(criterion=self.spec.criterion)
        for gid, ratio in ratios.items():
            g = self.analysis.group(gid)
            plan.groups[gid] = GroupPlan(gid, g.anchor, g.channels, float(ratio), None)
        plan.validate(self.analysis)
        return resolve(plan, self.analysis, self.scores)

    def _score(self, outputs: dict, removed: np.ndarray, dropped=frozenset()) -> PlanScore:
        after = self.cost.dropping(dropped).cost_without(removed)
        first = compare_outputs(self.reference, outputs, self.data.labels)[0]
        return PlanScore(
            macs_kept=after.macs / self.before.macs if self.before.macs else 1.0,
            params_kept=after.params / self.before.params if self.before.params else 1.0,
            cosine_similarity=float(first.cosine_similarity),
            max_abs_error=float(first.max_abs_error),
            top1_agreement=first.top1_agreement,
            accuracy=first.accuracy_pruned,
            relative_mse=float(first.relative_mse),
            value=self.task.value(outputs),
        )

    def _recovered(self, removed: np.ndarray, start=None, blocks=(), dropped=frozenset()) -> onnx.ModelProto:
        from ..transform.depth import drop_blocks
        from ..transform.recover import recover

        pruned = drop_blocks(apply_removal(self.analysis, removed), list(blocks))
        if self.spec.recover != "none":
            pruned, _ = recover(self.analysis, pruned, removed, self.data, self.spec.recover, seed=self.spec.seed,
                                batch_size=self.spec.batch_size, start=start,
                                dropped_from=min(dropped) if dropped else None, axes=self.axes)
        return pruned

    def score_sparsities(self, sparsities: dict[str, float]) -> PlanScore:
        """The score of the model with these unstructured per-layer sparsities
        (:mod:`onnxprune.transform.sparsify`); ``params_kept`` is the nonzero fraction."""
        from ..transform.sparsify import sparsify, sparsity_of

        model = sparsify(self.analysis.model, sparsities)
        outputs = run_model(self._session(model), self.data, self.spec.batch_size)
        first = compare_outputs(self.reference, outputs, self.data.labels)[0]
        return PlanScore(1.0, 1.0 - sparsity_of(model), float(first.cosine_similarity), float(first.max_abs_error),
                         first.top1_agreement, first.accuracy_pruned, float(first.relative_mse),
                         self.task.value(outputs))

    def __call__(self, plan: PruningPlan) -> PlanScore:
        plan.validate(self.analysis)
        resolve(plan, self.analysis, self.scores)
        removed = plan.removed_units(self.analysis)
        blocks = plan.blocks(self.analysis)
        dropped = dropped_nodes(self.analysis, blocks)
        session = self._session(self._recovered(removed, blocks=blocks, dropped=dropped))
        return self._score(run_model(session, self.data, self.spec.batch_size), removed, dropped)

    def group_scores(self, group_id: str, ratios: list[float]) -> list[PlanScore]:
        """Scores of ``group_id`` pruned alone at each of ``ratios`` (the other groups whole).

        The activations entering the group's first node are computed once, run by run
        (:func:`~onnxprune.runtime.activations.capture`); each ratio runs the rewritten model
        from that node on. Memory: those activations for every sample."""
        from .activations import capture, fed

        group = self.analysis.group(group_id)
        model = self.analysis.model
        cut = min(self._position[name] for name in group.nodes)
        names = crossing(model, cut)
        prefix_names = {n.name for n in model.graph.node[:cut]}
        acts = capture(model, self.data, names, self.spec.batch_size, self.spec.threads, self.axes)
        scores = []
        for ratio in ratios:
            try:
                plan = self.plan_for({group_id: ratio})
                removed = plan.removed_units(self.analysis)
                pruned = self._recovered(removed, start=(cut, acts))
                nodes = [n for n in pruned.graph.node if n.name not in prefix_names]
                reads = set().union(*(node_reads(n) for n in nodes))
                wanted = [o.name for o in pruned.graph.output if o.name not in acts]  # the rest come from the prefix
                rest = submodel(pruned, nodes, fed(acts, [name for name in names if name in reads]), wanted)
                ran = run_all(self._session(rest), acts, wanted, self.axes)
                outputs = {name: (ran if name in ran else acts).joined(name, samples_first=True)
                           for name in self.reference}
                scores.append(self._score(outputs, removed))
            except OnnxPruneError as exc:
                raise OnnxPruneError(f"at ratio {ratio:g}: {exc.template}") from None
            except Exception as exc:
                raise RuntimeError(f"at ratio {ratio:g}: {type(exc).__name__}: {exc}") from exc
        return scores

    @cached_property
    def axes(self) -> dict:
        """The sample axis of every tensor of the model (traced once, :func:`trace_axes`)."""
        return trace_axes(self.analysis.model, self.data)


@dataclass
class TaskMetric:
    """The task metric a search optimizes: ``name`` (as resolved from ``auto``) on the first
    output (``output``, the original's values ``reference``), the original's ``baseline``
    value, and the direction. :meth:`loss` is what a value lost against the baseline (0 for the
    original; larger is worse, for every metric)."""

    name: str
    baseline: float
    higher: bool
    output: str
    reference: np.ndarray
    labels: object = None

    @classmethod
    def of(cls, model, reference: dict, labels, metric: str = "auto") -> TaskMetric:
        """The metric ``metric`` for the first of the ``reference`` outputs of ``model`` (see
        :func:`~onnxprune.runtime.evaluate.task_scores`). Errors: ``OnnxPruneError``."""
        from .evaluate import task_scores

        output = next(iter(reference))
        (score,) = task_scores(model, {output: reference[output]}, {output: reference[output]}, labels, metric)
        return cls(score.metric, score.original, score.higher_is_better, output, reference[output],
                   labels if score.labels else None)

    def value(self, outputs: dict) -> float:
        """The metric of ``outputs`` (samples on axis 0) against the reference."""
        from .metrics import make

        name = "top1" if self.name in ("accuracy", "agreement") else self.name
        return make(name).score(self.reference, outputs[self.output], self.labels).value

    def loss(self, value: float) -> float:
        return (self.baseline - value) if self.higher else (value - self.baseline)


_CACHE: dict[str, PlanEvaluator] = {}
_LOCK = threading.Lock()


def evaluator_for(spec: EvaluatorSpec) -> PlanEvaluator:
    """This process's evaluator for ``spec``, built on first use (worker processes and Dask
    workers build it once and keep it)."""
    key = spec.key()
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one model at a time per process
            _CACHE[key] = PlanEvaluator(spec)
        return _CACHE[key]


def score_plan_task(spec: EvaluatorSpec, plan_dict: dict) -> dict:
    """Worker task: the :class:`PlanScore` of one plan, as a dict."""
    return evaluator_for(spec)(PruningPlan.from_dict(plan_dict)).to_dict()


def group_scores_task(spec: EvaluatorSpec, group_id: str, ratios: list[float]) -> list[dict]:
    """Worker task: :meth:`PlanEvaluator.group_scores` as dicts."""
    return [s.to_dict() for s in evaluator_for(spec).group_scores(group_id, ratios)]


def sparsity_task(spec: EvaluatorSpec, sparsities: dict[str, float]) -> dict:
    """Worker task: :meth:`PlanEvaluator.score_sparsities` as a dict."""
    return evaluator_for(spec).score_sparsities(sparsities).to_dict()


def evaluate_plans(spec: EvaluatorSpec, plans: list[PruningPlan], workers: int = 1) -> list[PlanScore]:
    """Scores of ``plans`` in order; ``workers > 1`` uses that many local processes.

    Errors: ``OnnxPruneError`` for a bad spec or an invalid plan (raised in the caller).
    """
    from .executors import executor

    if workers < 1:
        raise OnnxPruneError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        evaluator = PlanEvaluator(spec)
        return [evaluator(plan) for plan in plans]
    with executor(jobs=workers) as pool:
        futures = [pool.submit(score_plan_task, spec, p.to_dict()) for p in plans]
        return [PlanScore(**f.result()) for f in futures]


def ratio_plan(evaluator: PlanEvaluator, ratios: dict[str, float]) -> PruningPlan:
    """A plan that carries only per-group pruning ratios (resolved with the spec's criterion
    when it is scored)."""
    plan = PruningPlan(criterion=evaluator.spec.criterion)
    for gid, ratio in ratios.items():
        g = evaluator.analysis.group(gid)
        plan.groups[gid] = GroupPlan(gid, g.anchor, g.channels, float(ratio), None)
    return plan


__all__ = ["EvaluatorSpec", "PlanEvaluator", "PlanScore", "evaluate_plans", "evaluator_for", "group_scores_task",
           "ratio_plan", "score_plan_task"]
