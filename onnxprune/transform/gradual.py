"""Gradual pruning: reach a MACs or parameter target in N rounds of prune, recover, re-measure.

Round ``k`` (1..N) prunes the previous round's model so that ``target^(k/N)`` of the
original's MACs (or parameters) remain, with the same criterion, schedule and recovery as a
one-shot prune, so each round cuts about the same fraction of what is left. Recovery in every
round fits to the *original* model's activations (the kept channels of all rounds composed,
:func:`onnxprune.transform.recover.compose`), so the errors of earlier rounds are repaired
against the original too, not against an already damaged model. BatchNorm fusion runs only in
the last round, so every round sees the BatchNorms.
After each round the task metric is measured on the calibration data, against its labels
or else against the *original* model's outputs (:func:`onnxprune.runtime.evaluate.verify`),
and reported.

This is the iterative schedule of the dynamic-pruning seed (prune, let the remaining filters
recover, prune again), with training-free recovery between rounds, as in iterative pruning
(Han et al., "Learning both Weights and Connections", NeurIPS 2015; Zhu & Gupta, "To prune, or
not to prune", 2017, whose cubic schedule we replace by equal fractions of what is left).

Intermediate models are written to a temporary folder and removed; the last round's model is
staged in the caller's :class:`~onnxprune.graph.outputs.OutputSet`, with its metadata counting
from the original model. Errors (``OnnxPruneError``): those of each round.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from .recover import compose


@dataclass
class Round:
    """One round: the fraction of the original's MACs and parameters kept after it, the task
    metric against the original on the calibration data, and the round's prune seconds."""

    round: int
    macs_kept: float
    params_kept: float
    metric: str
    value: float
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def step_targets(goal: float, steps: int) -> list[float]:
    """The fraction of the original each round ends at: ``goal^(k/steps)``, k = 1..steps."""
    return [goal ** (k / steps) for k in range(1, steps + 1)]


def prune_in_steps(prune_file, outputs, model_path, options, input_shapes=None, *, model_label="out_path",
                   progress=None):
    """Prune ``model_path`` in ``options.steps`` rounds (see the module doc) and stage the last
    round's model in ``outputs`` under ``model_label``. ``prune_file`` is the one-shot
    :func:`onnxprune.pipeline.prune_file`. Returns the last round's
    :class:`~onnxprune.pipeline.PruneResult`, its ``before`` and metadata counting from the
    original, with ``rounds`` (a list of :class:`Round`) set."""
    from ..runtime.evaluate import verify

    step = progress or (lambda stage: None)
    budget = options.budget
    kind = budget.kind
    began = time.perf_counter()
    rounds: list[Round] = []
    warnings: list[str] = []
    first = result = None
    index: dict = {}
    with tempfile.TemporaryDirectory(prefix="onnxprune-steps-") as work:
        current = Path(model_path)
        for k, goal in enumerate(step_targets(budget.target, options.steps), start=1):
            kept = 1.0 if result is None else getattr(result.after, kind) / getattr(first.before, kind)
            fraction = min(1.0, goal / kept)
            last = k == options.steps
            teacher = (str(model_path), index) if result is not None and options.recover != "none" else None
            round_options = dataclasses.replace(options, steps=1, **{f"target_{kind}": fraction},
                                                fuse=options.fuse if last else False, allow_noop=last, teacher=teacher)
            out = Path(work) / f"round{k}.onnx"
            step(f"round {k}/{options.steps}")
            result = prune_file(current, out, round_options, input_shapes=input_shapes,
                                progress=lambda stage, k=k: step(f"round {k}/{options.steps}: {stage}"))
            first = first or result
            index = compose(index, result.kept_channels)
            warnings += [f"round {k}/{options.steps}: {w}" for w in result.warnings]
            report = verify(model_path, out, data_path=options.data, metric=options.metric, batch_size=16)
            metric = report.metrics[0]
            rounds.append(Round(k, result.after.macs / first.before.macs, result.after.params / first.before.params,
                                metric.metric, float(metric.pruned), result.seconds))
            current = out
        model = onnx.load(str(current))
        _count_from_original(model, first, options)
        outputs.stage_model(model_label, model.SerializeToString())
    result.model, result.before, result.bytes_before = model, first.before, first.bytes_before
    result.bytes_after = outputs.nbytes(model_label)
    result.seconds = time.perf_counter() - began
    result.rounds, result.warnings = rounds, warnings
    result.notes = [f"round {r.round}/{options.steps}: MACs kept {r.macs_kept:.4f}, params kept {r.params_kept:.4f}, "
                    f"{r.metric} {r.value:.4f} on the calibration data ({r.seconds:.1f} s)"
                    for r in rounds] + [f"round {options.steps}/{options.steps}: {note}" for note in result.notes]
    return result


def _count_from_original(model: onnx.ModelProto, first, options) -> None:
    """The last round's ``onnxprune.*`` metadata, with the amount and the costs "before" of
    the whole gradual prune."""
    kind = options.budget.kind
    fixed = {"onnxprune.macs_before": str(first.before.macs), "onnxprune.params_before": str(first.before.params),
             "onnxprune.amount": f"target_{kind}={options.budget.target} steps={options.steps}"}
    for prop in model.metadata_props:
        if prop.key in fixed:
            prop.value = fixed[prop.key]
