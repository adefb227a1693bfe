"""Per-group sensitivity: how much the model's metric falls when one channel group alone is
pruned at each ratio (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, Sec. 4.1
and Fig. 2: prune each layer independently, evaluate, and prune insensitive layers harder).

Each point is scored as it would be written: with the recovery of the evaluator's spec
(``recover``, e.g. ``reconstruct``) applied first, so curves can rank groups by the damage that
recovery cannot repair. Measured with onnxruntime on calibration data through
:meth:`onnxprune.runtime.scoring.PlanEvaluator.group_scores`, one task per group, fanned out
over local processes or a Dask cluster. The result is a :class:`SensitivityReport`, saved as
JSON (``format: onnxprune.sensitivity/1``) and reusable by the ``sensitivity`` schedule.

Metrics (``METRICS``): the task metric of the first output (:mod:`onnxprune.runtime.metrics`):

* ``accuracy``: top-1 accuracy against the ``.npz`` labels (needs labels, a classifier output);
* ``agreement``: top-1 agreement with the original model's predictions (classifier outputs);
* ``top1``, ``map50``, ``ctc``, ``iou``: top-1 (accuracy with labels), detection mAP@0.5 against
  the original's detections, CTC string agreement, dense-map IoU;
* ``cosine``: cosine similarity of the first output with the original's, mean over samples;
* ``rel_mse``: relative squared error of the first output, ``|y - y0|^2 / |y0|^2``.

``auto`` picks from the output's shape and the op that computes it: accuracy or agreement for
a classifier, mAP for a YOLO or end-to-end detection head, CTC agreement for ``[N, T, K]``
sequences, IoU for dense maps, else cosine. The **loss** of a point is what the metric lost
against the original (``baseline - value``; ``value`` for ``rel_mse``), so it is 0 for the
unpruned model and grows with damage, for every metric.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxPruneError
from ..analysis.groups import Analysis
from .plan import keep_count

FORMAT = "onnxprune.sensitivity/1"
METRICS = ("auto", "accuracy", "agreement", "top1", "map50", "ctc", "iou", "cosine", "rel_mse")
DEFAULT_RATIOS = tuple(round(0.1 * k, 1) for k in range(1, 10))


@dataclass
class Point:
    """One measurement: the group pruned alone at ``ratio`` (``kept`` channels left)."""

    ratio: float
    kept: int
    value: float
    loss: float
    macs_saved: float
    params_saved: float
    accuracy: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    rel_mse: float | None = None


@dataclass
class Curve:
    """A group's sensitivity curve: its points in increasing ratio."""

    id: str
    anchor: str
    channels: int
    points: list[Point] = field(default_factory=list)

    @property
    def area(self) -> float:
        """The mean loss over the measured ratios: the sensitivity ranking key."""
        return float(np.mean([p.loss for p in self.points])) if self.points else 0.0

    def loss_at(self, ratio: float) -> float:
        """The loss at ``ratio``, interpolated linearly between measured points (0 at ratio 0)."""
        xs = [0.0] + [p.ratio for p in self.points]
        ys = [0.0] + [p.loss for p in self.points]
        return float(np.interp(ratio, xs, ys))


@dataclass
class BlockDrop:
    """One residual block dropped alone: the metric's ``value`` and ``loss``, and what it saves."""

    id: str
    add: str
    value: float
    loss: float
    macs_saved: float
    params_saved: float
    accuracy: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    rel_mse: float | None = None


@dataclass
class SensitivityReport:
    """Every group's curve, and what they were measured on."""

    model: str
    metric: str
    baseline: float
    samples: int
    criterion: str
    input_shapes: dict
    curves: list[Curve]
    data: str | None = None
    seconds: float = 0.0
    recover: str = "none"
    blocks: list[BlockDrop] = field(default_factory=list)
    complete: bool = True  # False: a checkpoint of a scan still running, or interrupted
    excluded: list[str] = field(default_factory=list)  # groups left out by --exclude (no curve)

    def ranked(self) -> list[Curve]:
        """Curves from the least to the most sensitive (mean loss over the ratios)."""
        return sorted(self.curves, key=lambda c: (c.area, c.id))

    def curve(self, group_id: str) -> Curve:
        for c in self.curves:
            if c.id == group_id:
                return c
        raise OnnxPruneError(f"the sensitivity report has no curve for group {group_id!r}")

    # ---- JSON ----
    def to_dict(self) -> dict:
        data = asdict(self)
        data["format"] = FORMAT
        return data

    def save(self, path) -> None:
        from ..graph.outputs import write_atomic

        write_atomic(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    @classmethod
    def from_dict(cls, data: dict) -> SensitivityReport:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise OnnxPruneError(f"not an onnxprune sensitivity report (expected \"format\": \"{FORMAT}\")")
        try:
            curves = [Curve(str(c["id"]), str(c["anchor"]), int(c["channels"]), [Point(**p) for p in c["points"]])
                      for c in data["curves"]]
            blocks = [BlockDrop(**b) for b in data.get("blocks") or []]
            return cls(str(data["model"]), str(data["metric"]), float(data["baseline"]), int(data["samples"]),
                       str(data["criterion"]), dict(data.get("input_shapes") or {}), curves, data.get("data"),
                       float(data.get("seconds", 0.0)), str(data.get("recover", "none")), blocks,
                       bool(data.get("complete", True)), [str(g) for g in data.get("excluded") or []])
        except (KeyError, TypeError, ValueError) as exc:
            raise OnnxPruneError(f"malformed sensitivity report: {exc}") from None

    @classmethod
    def load(cls, path) -> SensitivityReport:
        """Read a report saved by :meth:`save`, or the JSON of ``onnxprune analyze --sensitivity``
        (which holds one under ``"sensitivity"``)."""
        path = Path(path)
        if not path.is_file():
            raise OnnxPruneError(f"sensitivity report not found: {path}")
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("sensitivity"), dict):
                data = data["sensitivity"]
            return cls.from_dict(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OnnxPruneError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise OnnxPruneError(f"{path}: not a sensitivity report (nested too deeply)") from None

    def validate(self, analysis: Analysis) -> None:
        """Refuse a report measured on another model: every prunable group needs its curve,
        with the same anchor and channel count."""
        if not self.complete:
            raise OnnxPruneError("the sensitivity report is the checkpoint of an unfinished scan: finish it with "
                                 "onnxprune analyze --sensitivity --resume")
        by_id = {c.id: c for c in self.curves}
        for g in analysis.prunable_groups:
            c = by_id.get(g.id)
            if c is None and g.id in self.excluded:
                continue  # left out of the scan: a schedule must leave it alone too
            if c is None or c.anchor != g.anchor or c.channels != g.channels:
                found = "none" if c is None else f"{c.anchor}, {c.channels} channels"
                raise OnnxPruneError(f"the sensitivity report does not match this model: group {g.id} is {g.anchor} "
                                     f"with {g.channels} channels, the report has {found}; was it measured on another "
                                     "model or input shape?")
        known = {b.id: b.add for b in analysis.removable_blocks}
        for b in self.blocks:
            if known.get(b.id) != b.add:
                raise OnnxPruneError(f"the sensitivity report does not match this model: it drops block {b.id} "
                                     f"({b.add}), which this model does not have as a removable block")

    def block_losses(self) -> dict[str, float]:
        """Block id → the measured loss of dropping it alone (empty when not measured)."""
        return {b.id: b.loss for b in self.blocks}


def check_metric(metric: str) -> str:
    """``metric`` if it is one of :data:`METRICS`. Errors: ``OnnxPruneError`` otherwise."""
    if metric not in METRICS:
        raise OnnxPruneError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def check_ratios(ratios) -> list[float]:
    ratios = sorted({float(r) for r in ratios})
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise OnnxPruneError(f"{{ratios}} must be values in (0, 1), got {ratios}")
    return ratios


def measure(spec, ratios=DEFAULT_RATIOS, metric: str = "auto", *, jobs: int = 1, scheduler: str | None = None,
            progress=None, with_blocks: bool = True, exclude=(), checkpoint=None,
            resume: SensitivityReport | None = None) -> SensitivityReport:
    """Measure every prunable group's sensitivity curve, and (``with_blocks``) the loss of
    dropping each removable residual block alone (see the module doc).

    ``spec`` is an :class:`~onnxprune.runtime.scoring.EvaluatorSpec`; ``jobs`` local processes or
    a Dask ``scheduler`` run one task per group (:mod:`onnxprune.runtime.executors`);
    ``progress(done, total)`` is told after each group. The report is the same whatever runs it.
    ``exclude``: globs of groups to leave out (as ``prune --exclude``). ``checkpoint``: a path
    where the report so far (``complete: false``) is saved atomically after every finished
    group and block; ``resume``: such a checkpoint, whose groups and blocks are not measured
    again (it must come from the same model, data and options).

    Errors (``OnnxPruneError``): bad ratios or metric, a checkpoint of another scan, and every
    error of the evaluator; a group or block that fails is named in the error.
    """
    import time

    from ..runtime.executors import completed, executor
    from ..runtime.scoring import evaluator_for, group_scores_task, score_plan_task
    from .depth import drop_plan
    from .plan import excluded as is_excluded

    start = time.perf_counter()
    ratios = check_ratios(ratios)
    check_metric(metric)
    if metric != spec.metric:
        from dataclasses import replace

        spec = replace(spec, metric=metric)
    local = evaluator_for(spec)  # validates the model and data here, before any worker starts
    task = local.task
    metric, baseline = task.name, task.baseline
    left_out = [g.id for g in local.analysis.prunable_groups if is_excluded(g, exclude)]
    groups = [g for g in local.analysis.prunable_groups if g.id not in left_out]
    blocks = local.analysis.removable_blocks if with_blocks else []

    def measured(score: dict) -> dict:
        """The fields :class:`Point` and :class:`BlockDrop` share, from one PlanScore dict."""
        value = score["value"]
        return dict(value=value, loss=task.loss(value), macs_saved=1.0 - score["macs_kept"],
                    params_saved=1.0 - score["params_kept"], accuracy=score["accuracy"],
                    agreement=score["top1_agreement"], cosine=score["cosine_similarity"], rel_mse=score["relative_mse"])

    report = SensitivityReport(model=str(spec.model), metric=metric, baseline=baseline, samples=len(local.data),
                               criterion=spec.criterion, input_shapes={k: list(v) for k, v in spec.input_shapes.items()},
                               curves=[], data=spec.data, recover=spec.recover, complete=False, excluded=left_out)
    curves = {c.id: c for c in (resume.curves if resume is not None else [])}
    drops = {b.id: b for b in (resume.blocks if resume is not None else [])}
    if resume is not None:
        _check_resumable(resume, report, ratios)
    todo_groups = [g for g in groups if g.id not in curves]
    todo_blocks = [b for b in blocks if b.id not in drops]

    def save() -> None:
        report.curves = [curves[g.id] for g in groups if g.id in curves]
        report.blocks = [drops[b.id] for b in blocks if b.id in drops]
        report.seconds = round(time.perf_counter() - start + (resume.seconds if resume is not None else 0.0), 3)
        if checkpoint is not None:
            report.save(checkpoint)

    with executor(jobs, scheduler) as pool:
        futures = {pool.submit(group_scores_task, spec, g.id, ratios): ("group", g) for g in todo_groups}
        futures.update({pool.submit(score_plan_task, spec, drop_plan(b, spec.criterion).to_dict()): ("block", b)
                        for b in todo_blocks})
        for k, future in enumerate(completed(futures), 1):
            kind, item = futures[future]
            try:
                result = future.result()
            except OnnxPruneError as exc:
                raise OnnxPruneError(f"sensitivity of {kind} {item.id} ({getattr(item, 'anchor', None) or item.add}) "
                                     f"failed: {exc.template}") from None
            except Exception as exc:
                raise RuntimeError(f"sensitivity of {kind} {item.id} failed: {type(exc).__name__}: {exc}") from exc
            if kind == "group":
                curves[item.id] = Curve(item.id, item.anchor, item.channels,
                                        [Point(ratio=ratio, kept=keep_count(item.channels, ratio), **measured(score))
                                         for ratio, score in zip(ratios, result)])
            else:
                drops[item.id] = BlockDrop(item.id, item.add, **measured(result))
            save()
            if progress:
                progress(k, len(futures))
    save()
    report.complete = True
    return report


def _check_resumable(previous: SensitivityReport, now: SensitivityReport, ratios: list[float]) -> None:
    """A checkpoint can be resumed only by the scan that wrote it."""
    for field_name in ("model", "metric", "samples", "criterion", "input_shapes", "data", "recover", "excluded"):
        if getattr(previous, field_name) != getattr(now, field_name):
            raise OnnxPruneError(f"the checkpoint was written by another scan ({field_name} "
                                 f"{getattr(previous, field_name)!r}, now {getattr(now, field_name)!r}); remove it, or "
                                 "resume with the options it was started with")
    for curve in previous.curves:
        if [p.ratio for p in curve.points] != ratios:
            raise OnnxPruneError(f"the checkpoint measured {curve.id} at other ratios; resume with --ratios "
                                 + ",".join(f"{p.ratio:g}" for p in curve.points))
