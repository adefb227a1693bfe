"""The pruning pipeline as a Python API: load → analyze → score → plan → rewrite → check → save.

:func:`prune_file` is the whole pipeline from a file to a file. :func:`prune_into` stages the
result in an :class:`~onnxprune.graph.outputs.OutputSet` that the caller commits, so that a
command can publish its other outputs (a JSON summary) in the same transaction. The CLI's
``prune`` command is a thin wrapper over it. Errors name options as Python parameters; the CLI
spells them as its flags.
"""

from __future__ import annotations

import fnmatch
import gc
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from . import __version__
from .analysis.cost import Cost, CostModel, float_params
from .decide.importance import CRITERIA, DATA_CRITERIA, all_importance, criterion_used
from .decide.plan import (
    PruningPlan,
    check_ratio,
    excluded,
    fill_empty_tensors,
    global_plan,
    resolve,
    uniform_plan,
)
from .decide.depth import dropped_nodes, without_dropped_groups
from .decide.rounding import Rounding
from .decide.rounding import resolve as resolve_rounding
from .decide.schedule import SCHEDULES, Budget, plan_for_budget
from .decide.sensitivity import SensitivityReport
from .errors import OnnxPruneError, render_options
from .graph import PROTOBUF_LIMIT, check_model, model_nbytes, normalize, read_model
from .graph.outputs import OutputSet
from .analysis.groups import Analysis, analyze
from .analysis.load import load_and_analyze  # noqa: F401  (part of this module's API)
from .rewrite import apply_removal
from .transform.depth import drop_blocks
from .transform.recover import METHODS as RECOVERY
from .transform.recover import RecoveryReport, kept_outputs, recover
from .transform.gradual import prune_in_steps

Progress = Callable[[str], None]
"""Told the name of each stage as it starts: loading, analyzing, planning, rewriting, checking,
saving."""


@dataclass
class PruneOptions:
    """What to prune and how much (see ``onnxprune prune --help``).

    At most one width amount: ``ratio`` (uniform, or global with ``global_rank``),
    ``target_macs``, ``target_params`` or ``target_latency`` (fraction to keep, met within 0.02 by
    :mod:`onnxprune.decide.target`; the latency is predicted by per-layer tables measured on
    ``provider`` with ``threads``, then measured, :func:`_latency_plan`), or ``plan``; and at
    most one depth amount: ``drop_blocks`` (residual block ids or Add names), ``drop_count``
    (the lowest by ``block_criterion``) or ``depth_ratio``. With both, the budget counts the
    dropped blocks. ``scan_recover``: the recovery the measuring schedules score each candidate
    with (default: ``recover``; the CLI's measured defaults scan one-shot). ``teacher``:
    ``(path, index)`` when the input was itself pruned from the model at ``path`` (gradual
    pruning sets it): recovery then fits to that model's activations, ``index`` mapping channels
    (:func:`onnxprune.transform.recover.compose`). ``steps`` > 1 reaches ``target_macs`` or
    ``target_params`` in that many rounds of prune and recover (:mod:`onnxprune.transform.gradual`).
    ``mix_blocks`` lets the sensitivity and evolution schedules drop blocks themselves. ``fuse`` (default) folds BN and per-channel scales after pruning
    (:mod:`onnxprune.transform.fuse`). ``round_to`` (``"auto"`` or an int) and ``provider``
    set the channel multiple (:mod:`onnxprune.decide.rounding`). A plan that removes nothing
    is refused unless ``allow_noop``. ``strict`` turns every warning of the result (a
    ``target_latency`` missed by more than :data:`LATENCY_TOLERANCE`) into an error: nothing is
    written.
    """

    criterion: str = "l1"
    ratio: float | None = None
    global_rank: bool = False
    max_ratio: float = 0.9
    target_macs: float | None = None
    round_to: int | str = "auto"
    provider: str = "cpu"
    min_channels: int = 1
    exclude: tuple[str, ...] = ()
    plan: PruningPlan | None = None
    seed: int = 0
    allow_noop: bool = False
    schedule: str = "uniform"
    target_params: float | None = None
    target_latency: float | None = None
    threads: int | None = None
    sensitivity: SensitivityReport | None = None
    data: str | None = None
    calib_samples: int | None = None
    metric: str = "auto"
    evaluations: int = 300
    jobs: int = 1
    scheduler: str | None = None
    recover: str = "none"
    granularity: str = "channel"
    drop_blocks: tuple[str, ...] = ()
    drop_count: int | None = None
    depth_ratio: float | None = None
    block_criterion: str = "norm"
    fuse: bool = True
    mix_blocks: bool = False
    strict: bool = False
    steps: int = 1
    scan_recover: str | None = None
    teacher: tuple | None = None

    @property
    def budget(self) -> Budget | None:
        """The target to meet, if any: ``target_macs``, ``target_params`` or ``target_latency``."""
        for kind in ("macs", "params", "latency"):
            value = getattr(self, f"target_{kind}")
            if value is not None:
                return Budget(kind, value)
        return None

    @property
    def scan_recovery(self) -> str:
        """The recovery each candidate of a measuring schedule is scored after."""
        return self.recover if self.scan_recover is None else self.scan_recover

    def rounding(self) -> Rounding:
        """``round_to`` resolved for ``provider`` (``"auto"``: the target's channel multiple, see
        :mod:`onnxprune.decide.rounding`)."""
        return resolve_rounding(self.round_to, self.provider)

    @property
    def depth(self) -> bool:
        """Whether residual blocks are to be dropped (``drop_blocks``, ``drop_count`` or ``depth_ratio``)."""
        return bool(self.drop_blocks) or bool(self.drop_count) or bool(self.depth_ratio)

    def validate(self) -> None:
        if self.criterion not in CRITERIA:
            raise OnnxPruneError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        amounts = [self.ratio is not None, self.target_macs is not None, self.target_params is not None,
                   self.target_latency is not None, self.plan is not None]
        depth = [bool(self.drop_blocks), self.drop_count is not None, self.depth_ratio is not None]
        if sum(amounts) > 1 or (sum(amounts) == 0 and not any(depth)):
            raise OnnxPruneError("give exactly one of {ratio}, {target_macs}, {target_params}, {target_latency} or {plan} "
                                 "(an existing plan file), or a depth amount ({drop_blocks} or {depth_ratio}) alone")
        if sum(depth) > 1:
            raise OnnxPruneError("give one depth amount: {drop_blocks} (a count or names) or {depth_ratio}")
        if any(depth) and self.plan is not None:
            raise OnnxPruneError("a plan file lists its own residual blocks to drop: do not combine {plan} with {drop_blocks} "
                                 "or {depth_ratio}")
        if self.drop_count is not None and (isinstance(self.drop_count, bool) or not isinstance(self.drop_count, int)
                                            or self.drop_count < 0):
            raise OnnxPruneError(f"{{drop_blocks}} must be a count >= 0 or block names, got {self.drop_count}")
        if self.depth_ratio is not None:
            check_ratio(self.depth_ratio, "{depth_ratio}")
        from .decide.depth import BLOCK_CRITERIA

        if self.block_criterion not in BLOCK_CRITERIA:
            raise OnnxPruneError(f"unknown block criterion {self.block_criterion!r}; choose one of "
                                 f"{', '.join(BLOCK_CRITERIA)}")
        if self.block_criterion == "similarity" and (self.drop_count or self.depth_ratio) and not self.data or \
                self.block_criterion == "drop" and (self.drop_count or self.depth_ratio) and not self.data \
                and not (self.sensitivity is not None and self.sensitivity.blocks):
            raise OnnxPruneError(f"block criterion {self.block_criterion} measures the model: give {{data}}")
        if self.mix_blocks and (self.schedule not in ("sensitivity", "evolution") or
                                self.budget is None):
            raise OnnxPruneError("{mix_blocks} lets the sensitivity or evolution schedule drop residual blocks under "
                                 "{target_macs}, {target_params} or {target_latency}: give one of those schedules and "
                                 "a target")
        if any(depth) and self.granularity == "weight":
            raise OnnxPruneError("{granularity} weight keeps the graph: it cannot drop residual blocks")
        if self.ratio is not None:
            check_ratio(self.ratio)
        check_ratio(self.max_ratio, "{max_ratio}")
        for name in ("target_macs", "target_params", "target_latency"):
            value = getattr(self, name)
            if value is not None and not (0.0 < value <= 1.0 and math.isfinite(value)):
                raise OnnxPruneError(f"{{{name}}} must be in (0, 1], got {value}")
        if self.schedule not in SCHEDULES:
            raise OnnxPruneError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.global_rank and self.schedule not in ("uniform", "global"):
            raise OnnxPruneError(f"{{global_rank}} is the global schedule; it cannot go with schedule {self.schedule}")
        if self.schedule in ("sensitivity", "evolution") and self.ratio is not None:
            raise OnnxPruneError(f"schedule {self.schedule} chooses the ratios itself: give {{target_macs}} or "
                                 "{target_params} instead of {ratio}")
        if self.schedule == "sensitivity" and self.sensitivity is None and not self.data and self.plan is None:
            raise OnnxPruneError("schedule sensitivity needs {sensitivity} (a saved report) or {data} to measure one")
        if self.schedule == "evolution" and not self.data and self.plan is None:
            raise OnnxPruneError("schedule evolution needs calibration data: {data}")
        if self.granularity not in ("channel", "weight"):
            raise OnnxPruneError(f"unknown granularity {self.granularity!r}; choose channel or weight")
        if self.granularity == "weight":
            if self.target_macs is not None or self.target_latency is not None or self.plan is not None:
                raise OnnxPruneError("{granularity} weight zeroes weights and keeps every MAC: give {target_params} "
                                     "(the fraction of weights left nonzero) or {ratio} (the sparsity)")
            if self.recover != "none" or self.schedule == "sensitivity":
                raise OnnxPruneError("{granularity} weight takes the uniform, global or evolution schedule, "
                                     "without recovery")
        if self.criterion in DATA_CRITERIA and not self.data and (self.plan is None or any(
                gp.keep is None for gp in self.plan.groups.values())):
            raise OnnxPruneError(f"criterion {self.criterion} ranks channels by their activations: give calibration "
                                 "data ({data})")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise OnnxPruneError(f"{{steps}} must be an integer >= 1, got {self.steps}")
        if self.steps > 1:
            if self.target_macs is None and self.target_params is None:
                raise OnnxPruneError("{steps} reaches a target in rounds: give {target_macs} or {target_params}")
            if self.sensitivity is not None or self.plan is not None or self.depth or self.granularity == "weight":
                raise OnnxPruneError("{steps} re-plans every round on the model the last round made: it cannot take "
                                     "{sensitivity} or {plan} (they describe the input model), a depth amount, or "
                                     "{granularity} weight")
            if not self.data:
                raise OnnxPruneError("{steps} measures the task metric after every round: give calibration data ({data})")
        for value in (self.recover, self.scan_recovery):
            if value not in RECOVERY:
                raise OnnxPruneError(f"unknown recovery {value!r}; choose one of {', '.join(RECOVERY)}")
        if self.recover != "none" and not self.data:
            raise OnnxPruneError(f"recovery {self.recover} needs calibration data: {{data}}")
        for name, minimum in (("evaluations", 1), ("jobs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise OnnxPruneError(f"{{{name}}} must be an integer >= {minimum}, got {value}")
        if self.calib_samples is not None and (not isinstance(self.calib_samples, int) or self.calib_samples < 2):
            raise OnnxPruneError(f"{{calib_samples}} must be an integer >= 2, got {self.calib_samples}")
        self.rounding()
        if isinstance(self.min_channels, bool) or not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise OnnxPruneError(f"{{min_channels}} must be an integer >= 1, got {self.min_channels}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OnnxPruneError(f"{{seed}} must be an integer >= 0, got {self.seed}")


@dataclass
class PruneResult:
    """What a prune did. ``criterion`` says what ranked the channels, fallbacks included
    (``bn-scale (l1 for 2 groups without BN)``); ``noop`` is True when nothing was removed
    (only with ``allow_noop``). ``notes`` write options as ``{name}``: read them through
    :meth:`notes_text` or :meth:`to_dict`."""

    model: onnx.ModelProto
    plan: PruningPlan
    before: Cost
    after: Cost
    groups_pruned: int
    groups_blocked: int
    groups_untouched: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes_before: int | None = None
    bytes_after: int | None = None
    criterion: str = ""
    input_shapes: dict = field(default_factory=dict)
    noop: bool = False
    schedule: str = "uniform"
    recovery: RecoveryReport | None = None
    blocks_dropped: list[str] = field(default_factory=list)
    blocks_removable: int = 0
    fusion: object | None = None  # a FuseReport (onnxprune.transform.fuse) when fused
    round_to: str = "1"  # the channel rounding applied, as the summary shows it ("auto (16: ...)")
    latency: LatencyCheck | None = None  # with target_latency: predicted against measured
    warnings: list[str] = field(default_factory=list)  # a goal not met; options written as {name}
    rounds: list = field(default_factory=list)  # with steps > 1: one onnxprune.transform.gradual.Round each
    kept_channels: dict = field(default_factory=dict)  # with recovery: transform.recover.kept_outputs of the input

    def notes_text(self, spell=None) -> list[str]:
        """:attr:`notes` with their options spelled by ``spell`` (default: Python parameter names;
        the CLI spells them as its flags)."""
        return [render_options(note, spell) for note in self.notes]

    def to_dict(self, spell=None) -> dict:
        """A JSON-serialisable summary (notes rendered with ``spell``, see :meth:`notes_text`)."""
        return {
            "macs_before": self.before.macs, "macs_after": self.after.macs,
            "macs_kept": self.after.macs / self.before.macs if self.before.macs else None,
            "params_before": self.before.params, "params_after": self.after.params,
            "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
            "groups_pruned": self.groups_pruned, "groups_blocked": self.groups_blocked,
            "groups_untouched": self.groups_untouched, "criterion": self.criterion or self.plan.criterion,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}, "noop": self.noop,
            "schedule": self.schedule, "recovery": self.recovery.to_dict() if self.recovery else None,
            "blocks_dropped": list(self.blocks_dropped), "blocks_removable": self.blocks_removable,
            "fusion": self.fusion.to_dict() if self.fusion is not None else None,
            "notes": self.notes_text(spell), "seconds": round(self.seconds, 3),
            "round_to": self.plan.meta.get("round_to", 1),
            "latency": self.latency.to_dict() if self.latency else None,
            "warnings": [render_options(w, spell) for w in self.warnings],
            "rounds": [r.to_dict() for r in self.rounds],
        }


def make_plan(analysis: Analysis, options: PruneOptions, cost_model: CostModel | None = None, *,
              model_path: str | os.PathLike | None = None, progress: Progress | None = None) -> tuple[PruningPlan, list[str]]:
    """The plan that ``options`` ask for, with ``keep`` resolved for every entry; and notes.

    ``model_path`` (the analyzed file) is needed by the schedules that measure the model
    (``sensitivity`` without a saved report, ``evolution``): their evaluators load it.

    Errors (``OnnxPruneError``): bad options, an ``exclude`` pattern that matches nothing,
    ``bn-scale`` on a model without BatchNorm, a budget that cannot be met.
    """
    options.validate()
    check_exclude(analysis, options.exclude)
    schedule = "global" if options.global_rank else options.schedule
    criterion = options.plan.criterion if options.plan is not None and options.plan.criterion else options.criterion
    cost_model = cost_model or CostModel(analysis)
    notes: list[str] = []
    with Measurements(analysis.input_shapes, options, model_path, progress) as measured:
        blocks = (options.plan.blocks(analysis) if options.plan is not None
                  else _choose_blocks(analysis, options, measured, notes))
        dropped = dropped_nodes(analysis, blocks)
        if dropped:
            cost_model = cost_model.dropping(dropped)
            analysis = without_dropped_groups(analysis, dropped)
        width = options.plan is not None or any(
            amount is not None for amount in (options.ratio, options.budget))
        if width and (options.plan is None or any(gp.keep is None for gp in options.plan.groups.values())):
            _check_criterion(analysis, criterion)  # only where channels are still to be ranked
        data = calibration_data(analysis.model, options) if criterion in DATA_CRITERIA and options.data else None
        scores = all_importance(analysis, criterion, options.seed, data)
        rounding = options.rounding()
        kw = dict(min_channels=options.min_channels, round_to=rounding, exclude=options.exclude, criterion=criterion)
        if options.plan is not None:
            plan = options.plan
            plan.validate(analysis)
            plan.criterion = criterion
            as_planned = all(gp.keep is not None for gp in plan.groups.values())
            plan = resolve(plan, analysis, scores, min_channels=options.min_channels, round_to=rounding)
        elif options.ratio is not None:
            plan = (global_plan(analysis, scores, options.ratio, max_ratio=options.max_ratio, **kw)
                    if schedule == "global" else uniform_plan(analysis, scores, min(options.ratio, options.max_ratio), **kw))
        elif options.budget is None:
            plan = PruningPlan(criterion=criterion)  # depth alone
        else:
            budget = options.budget
            _check_depth_budget(cost_model, budget, len(blocks))
            offered = [b for b in analysis.removable_blocks if b not in blocks] if options.mix_blocks else []
            plan, more = plan_for_budget(
                analysis, cost_model, scores, schedule, budget, max_ratio=options.max_ratio,
                report=measured.sensitivity() if schedule == "sensitivity" else None,
                losses=measured.losses if schedule == "evolution" else None, evaluations=options.evaluations,
                seed=options.seed, progress=measured.generation, blocks=offered, **kw)
            notes += more
        notes += measured.notes
    chosen = {b.add for b in blocks} | set(plan.drop_blocks)
    plan.drop_blocks = [b.add for b in analysis.blocks if b.add in chosen]  # in graph order
    notes += fill_empty_tensors(plan, analysis, scores)
    plan.meta["round_to"] = PLANNED if options.plan is not None and as_planned else rounding.to_json()
    return plan, notes


PLANNED = "plan"
"""``round_to`` of a plan applied as saved: its channel counts, rounded by nothing."""


def rounding_applied(plan: PruningPlan, options: PruneOptions) -> str:
    """The channel rounding a prune applied, as the summary shows it: ``auto (16: AVX-512 NCHWc
    block)``, ``8``, or, for a plan applied with its own keep lists, what it says."""
    if plan.meta.get("round_to") == PLANNED:
        return "none (the plan's channel counts)"
    return str(options.rounding())


def _choose_blocks(analysis: Analysis, options: PruneOptions, measured: "Measurements", notes: list[str]) -> list:
    """The residual blocks ``options`` ask to drop, ranked by ``options.block_criterion``."""
    from .decide.depth import choose_blocks, drop_plan, norm_scores, similarity_scores

    if not options.depth:
        return []
    scores: dict[str, float] = {}
    if not options.drop_blocks:
        if not analysis.removable_blocks:
            raise OnnxPruneError(f"the model has no removable residual block{_why_no_blocks(analysis)}")
        if options.block_criterion == "norm":
            scores = norm_scores(analysis)
        elif options.block_criterion == "similarity":
            measured.progress("measuring block similarity")
            scores = similarity_scores(analysis, calibration_data(analysis.model, options))
        elif options.sensitivity is not None and options.sensitivity.blocks:
            options.sensitivity.validate(analysis)
            scores = options.sensitivity.block_losses()  # measured already: nothing to run
        else:
            measured.progress(f"measuring the drop of {len(analysis.removable_blocks)} blocks")
            losses = measured.losses([drop_plan(b, options.criterion) for b in analysis.removable_blocks])
            scores = {b.id: loss for b, loss in zip(analysis.removable_blocks, losses)}
    blocks = choose_blocks(analysis, scores, names=options.drop_blocks, count=options.drop_count,
                           ratio=options.depth_ratio)
    if blocks:
        how = "as named" if options.drop_blocks else f"lowest {options.block_criterion}"
        notes.append(f"dropped {len(blocks)} of {len(analysis.removable_blocks)} removable residual blocks ({how}): "
                     + ", ".join(b.id for b in blocks))
    return blocks


def _why_no_blocks(analysis: Analysis) -> str:
    if not analysis.blocks:
        return " (no Add of a tensor and a branch computed from it)"
    return f": {analysis.blocks[0].id} ({analysis.blocks[0].add}) {analysis.blocks[0].reason}"


def _check_depth_budget(cost_model: CostModel, budget: Budget, n_blocks: int) -> None:
    """Dropping the blocks alone must not already go below the budget."""
    if not n_blocks:
        return
    total, after = cost_model.cost(), cost_model.cost_without(np.zeros(0, dtype=np.int64))
    full, left = total.of(budget.kind), after.of(budget.kind)
    kept = left / full if full else 1.0
    if kept < budget.target - 0.02:
        flag = f"{{target_{budget.kind}}}"
        raise OnnxPruneError(f"dropping {n_blocks} residual blocks alone keeps {kept:.3f} of the {budget.kind}, below "
                             f"{flag} {budget.target}: drop fewer blocks or lower the target")


class Measurements:
    """What the measuring schedules need, set up once: the evaluator spec, the sensitivity
    report (loaded, or measured), and plan losses through a worker pool kept open meanwhile."""

    def __init__(self, input_shapes: dict, options: PruneOptions, model_path, progress: Progress | None) -> None:
        self.options, self.progress = options, progress or (lambda stage: None)
        self.notes: list[str] = []
        self._stack = ExitStack()
        self._pool = None
        self.spec = None
        if options.data and model_path is not None:
            from .runtime.scoring import EvaluatorSpec

            self.spec = EvaluatorSpec(str(model_path), dict(input_shapes), str(options.data),
                                      criterion=options.criterion, seed=options.seed, calib_samples=options.calib_samples,
                                      recover=options.scan_recovery, metric=options.metric)

    def __enter__(self) -> Measurements:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def sensitivity(self) -> SensitivityReport:
        if self.options.sensitivity is not None:
            report = self.options.sensitivity
            if report.recover != self.options.scan_recovery:
                self.notes.append(f"the sensitivity curves were measured with recovery {report.recover}, the model is "
                                  f"pruned with {self.options.recover}")
            return report
        from .decide.sensitivity import measure

        self.progress("measuring sensitivity")
        report = measure(self._need_spec(), metric=self.options.metric, jobs=self.options.jobs,
                         scheduler=self.options.scheduler,
                         progress=lambda done, total: self.progress(f"measuring sensitivity {done}/{total}"))
        blocks = f" and {len(report.blocks)} residual blocks" if report.blocks else ""
        self.notes.append(f"measured the sensitivity of {len(report.curves)} groups{blocks} ({report.metric}) in "
                          f"{report.seconds:.1f} s")
        return report

    def _need_spec(self):
        if self.spec is None:
            raise OnnxPruneError("this schedule measures the model: give {data} (and the model as a file)")
        return self.spec

    def losses(self, plans: list[PruningPlan]) -> list[float]:
        """The metric's loss of each plan on the calibration data (see
        :mod:`onnxprune.decide.sensitivity`), evaluated in the worker pool."""
        from .runtime.scoring import score_plan_task

        return self._losses(score_plan_task, [plan.to_dict() for plan in plans])

    def sparsity_losses(self, candidates: list[dict]) -> list[float]:
        """:meth:`losses` of per-layer unstructured sparsities."""
        from .runtime.scoring import sparsity_task

        return self._losses(sparsity_task, candidates)

    def _losses(self, task, items: list) -> list[float]:
        from .runtime.executors import executor
        from .runtime.scoring import evaluator_for

        spec = self._need_spec()
        if self._pool is None:
            self.task = evaluator_for(spec).task
            self._pool = self._stack.enter_context(executor(self.options.jobs, self.options.scheduler))
        futures = [self._pool.submit(task, spec, item) for item in items]
        return [self.task.loss(f.result()["value"]) for f in futures]

    def generation(self, generation: int, best: float) -> None:
        self.progress(f"evolution, generation {generation}, best loss {best:.4g}")


def check_exclude(analysis: Analysis, patterns) -> None:
    """Every ``exclude`` glob must match a node or tensor name. Errors: ``OnnxPruneError``."""
    if not patterns:
        return
    names = {n.name for n in analysis.graph.nodes} | set(analysis.graph.tensors())
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise OnnxPruneError(f"{{exclude}} pattern {pattern!r} matches no node or tensor name of the model")


def _check_criterion(analysis: Analysis, criterion: str) -> None:
    if criterion == "bn-scale" and analysis.prunable_groups and all(
            criterion_used(g, criterion, analysis) != "bn-scale" for g in analysis.prunable_groups):
        raise OnnxPruneError("criterion bn-scale ranks channels by BatchNorm scales, and no prunable group of this "
                             "model has a BatchNorm (folded at export?); use l1 or l2")


def describe_criterion(analysis: Analysis, plan: PruningPlan) -> str:
    """``bn-scale``, or ``bn-scale (l1 for 2 groups without BN)`` when some pruned groups fell back."""
    criterion = plan.criterion or "l1"
    fallbacks: dict[str, int] = {}
    for gp in plan.groups.values():
        if gp.removed:
            used = criterion_used(analysis.group(gp.id), criterion, analysis)
            if used != criterion:
                fallbacks[used] = fallbacks.get(used, 0) + 1
    if not fallbacks:
        return criterion
    why = {"l1": "without BN", "l2": "without producer filters", "none": "without weights (index order)"}
    if criterion in DATA_CRITERIA:
        why["l1"] = "that no Conv, Gemm or MatMul reads"
    parts = [f"{used} for {n} group{'s' * (n != 1)} {why[used]}" for used, n in sorted(fallbacks.items())]
    return f"{criterion} ({'; '.join(parts)})"


def prune_model(analysis: Analysis, options: PruneOptions, progress: Progress | None = None, *,
                model_path: str | os.PathLike | None = None) -> PruneResult:
    """Plan, rewrite and recover in memory. The model is not yet checked: see :func:`finalize`.

    Errors (``OnnxPruneError``): those of :func:`make_plan`, and a plan that removes nothing
    (unless ``options.allow_noop``), with the reason.
    """
    step = progress or (lambda stage: None)
    start = time.perf_counter()
    step("planning")
    cost_model = CostModel(analysis)
    table = None
    if options.target_latency is not None:
        from .runtime.latency import LatencyTable

        table = LatencyTable(options.provider, options.threads,
                             progress=lambda n: step(f"measuring layer latencies ({n} timed)"))
        cost_model = cost_model.with_latency(table)
    if not analysis.prunable_groups and not options.depth and not (options.plan and options.plan.drop_blocks):
        plan, notes = PruningPlan(criterion=options.criterion), []
        options.validate()
    else:
        try:
            if table is not None:
                plan, notes = _latency_plan(analysis, options, cost_model, model_path, step)
            else:
                plan, notes = make_plan(analysis, options, cost_model, model_path=model_path, progress=step)
        finally:
            if table is not None:
                table.save()  # what was measured is kept, even when the target cannot be met
    removed = plan.removed_units(analysis)
    blocks = plan.blocks(analysis)
    dropped = dropped_nodes(analysis, blocks)
    if not len(removed) and not blocks:
        reason = _why_nothing_is_removed(analysis, options)
        if not options.allow_noop:
            raise OnnxPruneError(f"nothing to prune: {reason}; no file was written "
                                 "(pass {allow_noop} to write an unchanged copy)")
        notes.append(f"nothing was pruned ({reason}): the output is an unchanged copy")
    step("rewriting")
    model = drop_blocks(apply_removal(analysis, removed), blocks)
    before, after = cost_model.cost(), cost_model.dropping(dropped).cost_without(removed)
    recovery = fusion = None
    warnings: list[str] = []
    kept_channels = kept_outputs(analysis, removed) if options.recover != "none" else {}
    if options.recover != "none" and (len(removed) or blocks):
        step(f"recovering ({options.recover})")
        model, recovery = _recover_checked(analysis, model, removed, options, dropped, notes, warnings)
        if recovery.kept:
            after = Cost(after.macs, after.params + recovery.added_params, after.latency)
    if options.fuse and (len(removed) or blocks):  # an unchanged copy stays unchanged
        from .transform.fuse import fuse

        step("fusing")
        model, fusion = fuse(model)
        after = Cost(after.macs, float_params(model), after.latency)
    pruned = sum(1 for g in plan.groups.values() if g.removed)
    blocked = sum(1 for g in analysis.groups if not g.prunable)
    criterion = describe_criterion(analysis, plan) if len(removed) else (plan.criterion or options.criterion)
    latency = None
    if table is not None:
        step("timing the pruned model against the original")
        latency = measured_latency(analysis, model, options, before, after)
        notes.append(latency.note())
        if not latency.met:
            warnings.append(latency.warning())
        if table.untimed:
            notes.append(f"{len(table.untimed)} layers could not be timed alone and are not in the prediction: "
                         f"{', '.join(sorted(table.untimed)[:3])}{' ...' if len(table.untimed) > 3 else ''}")
    if warnings and options.strict:
        raise OnnxPruneError(f"{warnings[0]}; {{strict}} makes this an error: nothing was written")
    schedule = plan.meta.get("schedule", "plan" if options.plan is not None else
                             "global" if options.global_rank else options.schedule)
    _record_metadata(model, plan, options, before, after, criterion, schedule, recovery)
    plan.meta.update({"onnxprune": __version__, "input_shapes": {k: list(v) for k, v in analysis.input_shapes.items()}})
    return PruneResult(model, plan, before, after, pruned, blocked, len(analysis.groups) - pruned - blocked,
                       notes, time.perf_counter() - start, criterion=criterion,
                       input_shapes=_input_shapes(analysis), noop=not len(removed) and not blocks,
                       blocks_dropped=[b.id for b in blocks], blocks_removable=len(analysis.removable_blocks),
                       fusion=fusion, schedule=schedule,
                       recovery=recovery, round_to=rounding_applied(plan, options), latency=latency,
                       warnings=warnings, kept_channels=kept_channels)


LATENCY_REPLANS = 2
"""``--target-latency``: how many times a plan is made again when the measured latency misses."""


def _latency_plan(analysis: Analysis, options: PruneOptions, cost_model: CostModel, model_path,
                  step: Progress) -> tuple[PruningPlan, list[str]]:
    """The plan for ``options.target_latency``, closed on the measured latency.

    The layer tables predict only the MAC-counted layers; the rest of the model (activations,
    residual adds, pooling, reorders) shrinks more slowly. So the plan is rewritten and timed
    against the original (:func:`measured_latency`'s interleaved run); while the measured fraction
    misses the target by more than 5%, the predicted target is scaled by ``target / measured``
    and the plan made again, at most :data:`LATENCY_REPLANS` times; the plan measured closest to
    the target is kept. A sensitivity report is measured once for all rounds; the evolution
    schedule is not re-run (its plan is measured and reported).
    """
    target = options.target_latency
    if options.schedule == "sensitivity" and options.sensitivity is None and options.data:
        with Measurements(analysis.input_shapes, options, model_path, step) as measured:
            options = replace(options, sensitivity=measured.sensitivity())
            first_notes = measured.notes
    else:
        first_notes = []
    tries = []
    wanted = target
    for attempt in range(1 + LATENCY_REPLANS):
        try:
            plan, notes = make_plan(analysis, replace(options, target_latency=wanted), cost_model,
                                    model_path=model_path, progress=step)
        except OnnxPruneError:
            if not tries:
                raise
            break  # a corrected target the schedule cannot meet: keep the best so far
        step(f"timing the plan against the original (round {attempt + 1})")
        removed, blocks = plan.removed_units(analysis), plan.blocks(analysis)
        original_ms, pruned_ms = _latency_ms(analysis, drop_blocks(apply_removal(analysis, removed), blocks), options)
        ratio = pruned_ms / original_ms
        tries.append((abs(ratio - target), attempt, plan, notes, wanted, ratio))
        if abs(ratio - target) <= 0.05 * target or options.schedule == "evolution":
            break
        wanted = min(1.0, max(0.01, wanted * target / ratio))
    _, _, plan, notes, wanted, ratio = min(tries, key=lambda t: t[:2])
    rounds = "; ".join(f"predicted {w:.3f} → measured {r:.3f}" for _, _, _, _, w, r in tries)
    notes = first_notes + notes + [f"latency plans ({len(tries)}): {rounds}; kept the one measured closest to "
                                   f"{{target_latency}} {target}"]
    return plan, notes


def _latency_ms(analysis: Analysis, model: onnx.ModelProto, options: PruneOptions) -> tuple[float, float]:
    """Median ms of the original (``analysis.model``) and of ``model``, timed in one interleaved
    run on ``options.provider`` at the analysis input shapes (:func:`onnxprune.runtime.bench.bench`)."""
    from .runtime.bench import bench

    shapes = {k: v for k, v in _input_shapes(analysis).items() if v} or None
    batch = next(iter(shapes.values()))[0] if shapes else 1
    report = bench([analysis.model, model], names=["original", "pruned"], provider=options.provider,
                   threads=options.threads, batch=batch, warmup=3, runs=LATENCY_RUNS, shapes=shapes)
    return report.models[0].median_ms, report.models[1].median_ms


@dataclass
class LatencyCheck:
    """``--target-latency``'s figures: the kept fraction of latency the layer tables predicted
    (``predicted``), and the fraction measured on the whole models (``measured``: the pruned
    model's median over the original's, one interleaved onnxruntime run), with both medians in ms."""

    target: float
    predicted: float
    measured: float
    original_ms: float
    pruned_ms: float
    runs: int

    @property
    def met(self) -> bool:
        """Whether the measured fraction is within :data:`LATENCY_TOLERANCE` of the target."""
        return abs(self.measured - self.target) <= LATENCY_TOLERANCE * self.target

    def note(self) -> str:
        return (f"latency: predicted {self.predicted:.3f} of the original, measured {self.measured:.3f} "
                f"({self.pruned_ms:.2f} ms against {self.original_ms:.2f} ms, median of {self.runs} interleaved runs); "
                f"{{target_latency}} {self.target}")

    def warning(self) -> str:
        return (f"{{target_latency}} {self.target} not met: the pruned model measured {self.measured:.3f} of the "
                f"original's latency, more than {LATENCY_TOLERANCE:.0%} away")

    def to_dict(self) -> dict:
        return {"target": self.target, "predicted": round(self.predicted, 4), "measured": round(self.measured, 4),
                "original_ms": round(self.original_ms, 4), "pruned_ms": round(self.pruned_ms, 4), "runs": self.runs,
                "met": self.met}


LATENCY_TOLERANCE = 0.10
"""``target_latency`` is met when the measured fraction is within 10% of it (0.5: 0.45-0.55)."""


LATENCY_RUNS = 30


def measured_latency(analysis: Analysis, model: onnx.ModelProto, options: PruneOptions, before: Cost,
                     after: Cost) -> LatencyCheck:
    """The predicted fraction (``after`` over ``before``) against the measured one: the
    original and the pruned ``model`` timed by :func:`_latency_ms`."""
    original_ms, pruned_ms = _latency_ms(analysis, model, options)
    return LatencyCheck(options.target_latency, after.latency / before.latency if before.latency else 1.0,
                        pruned_ms / original_ms, original_ms, pruned_ms, LATENCY_RUNS)


def _recover_checked(analysis: Analysis, model: onnx.ModelProto, removed, options: PruneOptions, dropped, notes: list,
                     warnings: list) -> tuple[onnx.ModelProto, RecoveryReport]:
    """Recovery on the fit part of the calibration data, kept only where the held-out part
    (:func:`onnxprune.runtime.calibration.split`) does not come out worse; notes and warnings
    (layers left with fewer least-squares rows than unknowns) are appended."""
    from .runtime.calibration import MIN_FOR_HOLDOUT, check_real, split

    data = check_real(calibration_data(analysis.model, options))
    fit, check = split(data, options.seed)
    unrecovered = onnx.ModelProto()
    unrecovered.CopyFrom(model)
    teacher = None
    if options.teacher is not None:
        path, index = options.teacher
        teacher = (normalize(read_model(path)[0], inplace=True), index)
    model, recovery = recover(analysis, model, removed, fit, options.recover, seed=options.seed,
                              dropped_from=min(dropped) if dropped else None, teacher=teacher)
    recovery.checked_on = None if check is None else len(check)
    held = (f", checked on {len(check)} held-out samples" if check is not None else
            f", checked on the same samples (fewer than {MIN_FOR_HOLDOUT}: none held out)")
    notes.append(f"recovery {options.recover}: {sum(f.applied for f in recovery.layers)} of {len(recovery.layers)} "
                 f"layers fixed on {recovery.samples} calibration samples in {recovery.seconds:.1f} s{held}")
    short = recovery.underdetermined
    if short:
        worst = min(short, key=lambda f: f.rows / f.unknowns)
        warnings.append(f"recovery {options.recover}: {len(short)} layers had fewer least-squares rows than unknowns and "
                        f"were not refit (e.g. {worst.node}: {worst.rows} rows for {worst.unknowns}); about "
                        f"{recovery.samples_needed()} calibration samples would fill every fit")
    reference = teacher[0] if teacher is not None else analysis.model
    if not _recovery_helps(reference, unrecovered, model, check if check is not None else fit, options.metric,
                           recovery):
        where = "held-out" if check is not None else "calibration"
        warnings.append(f"recovery {options.recover} made the {where} {recovery.metric} worse (loss "
                        f"{recovery.loss_with:.4g} against {recovery.loss_without:.4g} without it): it was undone")
        return unrecovered, recovery
    return model, recovery


def _recovery_helps(original: onnx.ModelProto, unrecovered: onnx.ModelProto, recovered: onnx.ModelProto, data,
                    metric: str, report: RecoveryReport) -> bool:
    """Whether the recovered model's loss on ``data`` (the task metric of the first output,
    :class:`~onnxprune.runtime.scoring.TaskMetric`) is at most the unrecovered one's: recovery
    fixes one layer at a time, and the model as a whole must not come out worse. ``data`` is
    the held-out part of the calibration data where there is one. Records both in ``report``."""
    from .runtime.evaluate import run_model
    from .runtime.scoring import TaskMetric
    from .runtime.session import make_session

    def outputs(model):
        return run_model(make_session(model.SerializeToString(), allow_spinning=False), data, 64)

    task = TaskMetric.of(original, outputs(original), data.labels, metric)
    report.metric = task.name
    report.loss_without = task.loss(task.value(outputs(unrecovered)))
    report.loss_with = task.loss(task.value(outputs(recovered)))
    report.kept = report.loss_with <= report.loss_without
    return report.kept


def calibration_data(model: onnx.ModelProto, options: PruneOptions):
    """The first ``calib_samples`` samples of ``options.data`` for ``model``'s inputs."""
    from .runtime.evaluate import Dataset, load_data
    from .runtime.session import graph_input_specs

    data = load_data(options.data, graph_input_specs(model))
    n = len(data) if options.calib_samples is None else min(options.calib_samples, len(data))
    return Dataset({k: v[:n] for k, v in data.inputs.items()}, None if data.labels is None else data.labels[:n])


def _input_shapes(analysis: Analysis) -> dict[str, tuple]:
    """The shape each graph input was analyzed at (batch defaulted to 1 where dynamic)."""
    inits = {t.name for t in analysis.model.graph.initializer}
    return {i.name: tuple(analysis.shapes.get(i.name) or ()) for i in analysis.model.graph.input if i.name not in inits}


def _why_nothing_is_removed(analysis: Analysis, options: PruneOptions) -> str:
    """One phrase: why a plan built from ``options`` removes no channel."""
    if not analysis.groups:
        return "the model has no channel groups (no Conv, ConvTranspose, Gemm or MatMul with constant weights)"
    if not analysis.prunable_groups:
        first = analysis.groups[0]
        return (f"all {len(analysis.groups)} channel groups are blocked (e.g. {first.id}: {first.blocked[0]}); "
                "`onnxprune analyze` lists why")
    groups = [g for g in analysis.prunable_groups if not excluded(g, options.exclude)]
    if not groups:
        return f"{{exclude}} leaves out all {len(analysis.prunable_groups)} prunable groups"
    largest = max(g.channels for g in groups)
    if options.plan is not None:
        return "the plan keeps every channel"
    if options.ratio == 0:
        return "a {ratio} of 0 removes no channel"
    if options.target_macs is not None and options.target_macs >= 1:
        return "a {target_macs} of 1 keeps every MAC"
    if options.min_channels >= largest:
        return f"{{min_channels}} {options.min_channels} keeps every channel (the largest prunable group has {largest})"
    rounding = options.rounding()
    if rounding.multiple >= largest and not rounding.free_below:
        return f"{{round_to}} {rounding} rounds every group back to its full width (the largest has {largest})"
    if rounding.multiple > 1 and (largest > rounding.multiple or not rounding.free_below):
        return (f"the ratio removes less than one rounding step ({{round_to}} {rounding}) from every group; "
                "{round_to} 1 keeps exact counts")
    return "the ratio removes less than one channel from every group"


def _record_metadata(model, plan, options, before: Cost, after: Cost, criterion: str, schedule: str,
                     recovery: RecoveryReport | None) -> None:
    """What ``onnxprune prune`` stores in ``metadata_props`` (``onnxprune.*``; read back by the
    model card, :mod:`onnxprune.deploy.card`). ``onnxprune.calibration`` is JSON: the data
    file's name, SHA-256 and the samples used."""
    amount = (f"ratio={options.ratio}" if options.ratio is not None else
              f"target_macs={options.target_macs}" if options.target_macs is not None else
              f"target_params={options.target_params}" if options.target_params is not None else
              f"target_latency={options.target_latency}" if options.target_latency is not None else
              "plan" if options.plan is not None else "depth")
    entries = {
        "onnxprune.version": __version__,
        "onnxprune.criterion": criterion,
        "onnxprune.amount": amount + (" global" if options.global_rank else ""),
        "onnxprune.blocks_dropped": ",".join(plan.drop_blocks),
        "onnxprune.round_to": rounding_applied(plan, options),
        "onnxprune.macs_before": str(before.macs),
        "onnxprune.macs_after": str(after.macs),
        "onnxprune.params_before": str(before.params),
        "onnxprune.params_after": str(after.params),
        "onnxprune.schedule": schedule,
        "onnxprune.recovery": recovery.method if recovery is not None and recovery.kept else "none",
    }
    if options.data:
        from .runtime.evaluate import calibration_record

        used = recovery.samples + (recovery.checked_on or 0) if recovery is not None else None
        record = calibration_record(options.data, options.calib_samples, used)
        if recovery is not None:
            record.update(fit=recovery.samples, check=recovery.checked_on)
        entries["onnxprune.calibration"] = json.dumps(record)
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in entries.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def finalize(model: onnx.ModelProto, analysis: Analysis | dict, source: str | os.PathLike | None = None) -> bytes:
    """Serialize ``model`` once, check it with ``onnx.checker`` (full check) and run it once in
    onnxruntime at the analysis shapes (``analysis``, or ``{tensor: shape}``); returns the bytes
    to write.

    Errors (``OnnxPruneError``): either check fails. When ``source`` (the input model's path)
    fails the same check, the error says the input is at fault, not the rewrite."""
    data = model.SerializeToString()
    _checked(check_model, data, source, "the rewritten model")
    _checked(smoke_run, data, source, "the pruned model", analysis.shapes if isinstance(analysis, Analysis) else analysis)
    return data


def _checked(check, target, source, what: str, *args) -> None:
    """``check(target, *args, what=what)``; on failure, blame the input when it fails too."""
    try:
        check(target, *args, what=what)
    except OnnxPruneError as exc:
        if source is not None:
            check(source, *args, what=f"the input model {os.fspath(source)}")  # raises if the input is at fault
        raise exc from None


def smoke_run(model, analysis, what: str = "the pruned model") -> None:
    """Load ``model`` (serialized bytes, or a path: needed for external data) in onnxruntime
    and run one seeded random sample at the analysis shapes.

    ``analysis`` is the :class:`Analysis`, or just ``{input name: shape}``. Inputs get values
    of their declared type (random floats, zeros otherwise). ``what`` names the model in errors.
    Errors (``OnnxPruneError``): the session cannot be created or the run fails.
    """
    from .runtime.session import input_specs, make_session, ort_message

    shapes = analysis.shapes if isinstance(analysis, Analysis) else analysis
    session = make_session(model, label=what)
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in input_specs(session):
        shape = shapes.get(spec.name)
        if shape is None or None in shape:
            return  # a shape the analysis could not fix: the session load above is the check
        feeds[spec.name] = (rng.standard_normal(shape).astype(spec.dtype) if spec.dtype.kind == "f"
                            else np.zeros(shape, spec.dtype))
    try:
        session.run(None, feeds)
    except Exception as exc:
        raise OnnxPruneError(f"onnxruntime fails to run {what}: {ort_message(exc)}") from None


def prune_into(outputs: OutputSet, model_path: str | Path, options: PruneOptions, input_shapes: dict | None = None, *,
               model_label: str = "out_path", plan_label: str | None = None, progress: Progress | None = None) -> PruneResult:
    """Prune ``model_path`` and stage the result in ``outputs`` under ``model_label`` (and the
    applied plan, as JSON, under ``plan_label``). The caller commits ``outputs``.

    The model has passed ``onnx.checker.check_model(full_check=True)`` and run once in
    onnxruntime before it is staged. When the input stores its tensors as external data, or the
    pruned model is too large for one protobuf (2 GB), it is staged with external data:
    ``<out name>.data`` beside it, checked and run from the staged files by path; ``result.model``
    is then the written proto, whose large tensors refer to that file. Memory: the input's
    weights plus the pruned ones; the input's are released before the check.
    """
    start = time.perf_counter()
    step = progress or (lambda stage: None)
    options.validate()
    if options.steps > 1:
        if plan_label is not None:
            raise OnnxPruneError("{steps} makes one plan per round, each for the model the round before made: it "
                                 "cannot save one plan for the input model")
        return prune_in_steps(prune_file, outputs, model_path, options, input_shapes, model_label=model_label,
                              progress=progress)
    step("loading")
    model, data_files = read_model(model_path)
    outputs.add_reads({"the external data of the input model": data_files})
    if options.granularity == "weight":
        return _sparsify_into(outputs, model_path, model, data_files, options, input_shapes, model_label, plan_label,
                              step, start)
    step("analyzing")
    analysis = analyze(normalize(model, inplace=True), input_shapes)
    del model
    result = prune_model(analysis, options, step, model_path=model_path)
    step("checking")
    if not data_files and model_nbytes(result.model) < PROTOBUF_LIMIT:
        data = finalize(result.model, analysis, model_path)
        step("saving")
        outputs.stage_model(model_label, data)
    else:
        shapes = dict(analysis.shapes)
        del analysis  # the input's weights: only the pruned ones are needed from here on
        gc.collect()

        def check(path: Path) -> None:
            _checked(check_model, path, model_path, "the rewritten model")
            _checked(smoke_run, path, model_path, "the pruned model", shapes)

        result.model = outputs.stage_model(model_label, result.model, external=True, check=check)
        gc.collect()
    if plan_label is not None:
        outputs.stage_bytes(plan_label, result.plan.to_json().encode())
    result.bytes_before = Path(model_path).stat().st_size + sum(Path(f).stat().st_size for f in data_files)
    result.bytes_after = outputs.nbytes(model_label)
    result.seconds = time.perf_counter() - start
    return result


def _sparsify_into(outputs, model_path, model, data_files, options: PruneOptions, input_shapes, model_label, plan_label,
                   step, start) -> PruneResult:
    """``--granularity weight``: zero each layer's smallest weights (:mod:`onnxprune.transform.sparsify`)."""
    from onnx import numpy_helper

    from .decide.schedule import sparsity_for_budget
    from .transform.sparsify import gzip_size, sparse_layers, sparsify, sparsity_of

    if data_files:
        raise OnnxPruneError("{granularity} weight writes the model inline; it does not take models with external data")
    analysis = analyze(normalize(model, inplace=True), input_shapes)
    shapes, macs = analysis.shapes, CostModel(analysis).cost().macs
    layers = sparse_layers(model)
    if not layers:
        raise OnnxPruneError("nothing to prune: the model has no Conv, ConvTranspose, Gemm or MatMul with a weight of "
                             "its own")
    step("planning")
    inits = {t.name: t for t in model.graph.initializer}
    target = options.target_params if options.target_params is not None else 1.0 - options.ratio
    with Measurements(dict(input_shapes or {}), options, model_path, step) as measured:
        sparsities, notes = sparsity_for_budget(
            layers, lambda name: numpy_helper.to_array(inits[name]), options.schedule if not options.global_rank
            else "global", target, losses=measured.sparsity_losses if options.schedule == "evolution" else None,
            evaluations=options.evaluations, seed=options.seed, progress=measured.generation)
    step("rewriting")
    sparse = sparsify(model, sparsities)
    sparsity = sparsity_of(sparse)
    step("checking")
    data = finalize(sparse, shapes, model_path)
    original = model.SerializeToString()
    notes.append(f"granularity weight: {sparsity:.1%} of the weights of {len(layers)} layers are zero; gzip-compressed "
                 f"file {gzip_size(original)} → {gzip_size(data)} bytes; the graph is unchanged, so dense runtimes run "
                 "it no faster")
    step("saving")
    outputs.stage_model(model_label, data)
    plan = PruningPlan(criterion="magnitude", meta={"granularity": "weight", "schedule": options.schedule,
                                                     "sparsity": {k: round(v, 6) for k, v in sparsities.items()},
                                                     "onnxprune": __version__})
    if plan_label is not None:
        outputs.stage_bytes(plan_label, plan.to_json().encode())
    total = sum(n for _, _, n in layers)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    result = PruneResult(sparse, plan, Cost(macs, params), Cost(macs, params - int(round(sparsity * total))), 0, 0, 0,
                         notes, criterion="magnitude", input_shapes=_input_shapes(analysis), schedule=options.schedule)
    result.bytes_before = Path(model_path).stat().st_size
    result.bytes_after = outputs.nbytes(model_label)
    result.seconds = time.perf_counter() - start
    return result


def prune_file(model_path: str | Path, out_path: str | Path, options: PruneOptions, input_shapes: dict | None = None,
               plan_out: str | Path | None = None, progress: Progress | None = None) -> PruneResult:
    """Prune ``model_path`` into ``out_path`` (and save the applied plan to ``plan_out``).

    Every output is checked against the inputs and against each other before any work, and
    published atomically, all or nothing (:class:`~onnxprune.graph.outputs.OutputSet`): never
    over the input model, its external data, or each other. See :func:`prune_into`.
    """
    with OutputSet({"out_path": out_path, "plan_out": plan_out}, {"the input model": model_path},
                   models=["out_path"]) as outputs:
        result = prune_into(outputs, model_path, options, input_shapes,
                            plan_label="plan_out" if plan_out is not None else None, progress=progress)
        outputs.commit()
    return result
