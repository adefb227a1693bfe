"""The pruning pipeline as a Python API: load → analyze → score → plan → rewrite → check → save.

The CLI's ``prune`` command is a thin wrapper over :func:`prune_file`.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from . import __version__
from .cost import Cost, CostModel
from .errors import OnnxPruneError
from .graph import (
    PROTOBUF_LIMIT,
    StagedModel,
    check_model,
    check_output,
    load_model,
    model_nbytes,
    normalize,
    read_model,
    same_file,
    save_model_atomic,
    write_atomic,
)
from .groups import Analysis, analyze
from .decide.importance import CRITERIA, all_importance
from .decide.plan import (
    PruningPlan,
    check_ratio,
    fill_empty_tensors,
    global_plan,
    resolve,
    uniform_plan,
)
from .rewrite import apply_removal


@dataclass
class PruneOptions:
    """What to prune and how much (see ``onnxprune prune --help``).

    Exactly one amount: ``ratio`` (uniform, or global with ``global_rank``), ``target_macs``
    (fraction of MACs to keep, reached by bisection over the ratio), or ``plan``.
    """

    criterion: str = "l1"
    ratio: float | None = None
    global_rank: bool = False
    max_ratio: float = 0.9
    target_macs: float | None = None
    round_to: int = 1
    min_channels: int = 1
    exclude: tuple[str, ...] = ()
    plan: PruningPlan | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.criterion not in CRITERIA:
            raise OnnxPruneError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        amounts = [self.ratio is not None, self.target_macs is not None, self.plan is not None]
        if sum(amounts) != 1:
            raise OnnxPruneError("give exactly one of --ratio, --target-macs or --plan (an existing plan file)")
        if self.ratio is not None:
            check_ratio(self.ratio)
        check_ratio(self.max_ratio, "--max-ratio")
        if self.target_macs is not None and not (0.0 < self.target_macs <= 1.0 and math.isfinite(self.target_macs)):
            raise OnnxPruneError(f"--target-macs must be in (0, 1], got {self.target_macs}")
        if self.round_to < 1:
            raise OnnxPruneError(f"--round-to must be >= 1, got {self.round_to}")
        if self.min_channels < 1:
            raise OnnxPruneError(f"--min-channels must be >= 1, got {self.min_channels}")


@dataclass
class PruneResult:
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

    def to_dict(self) -> dict:
        return {
            "macs_before": self.before.macs, "macs_after": self.after.macs,
            "macs_kept": self.after.macs / self.before.macs if self.before.macs else None,
            "params_before": self.before.params, "params_after": self.after.params,
            "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
            "groups_pruned": self.groups_pruned, "groups_blocked": self.groups_blocked,
            "groups_untouched": self.groups_untouched, "criterion": self.plan.criterion,
            "notes": self.notes, "seconds": round(self.seconds, 3),
        }


def make_plan(analysis: Analysis, options: PruneOptions, cost_model: CostModel | None = None) -> tuple[PruningPlan, list[str]]:
    """The plan that ``options`` ask for, with ``keep`` resolved for every entry."""
    options.validate()
    scores = all_importance(analysis, options.criterion, options.seed)
    kw = dict(min_channels=options.min_channels, round_to=options.round_to, exclude=options.exclude,
              criterion=options.criterion)

    def at(ratio: float) -> PruningPlan:
        if options.global_rank:
            return global_plan(analysis, scores, ratio, max_ratio=options.max_ratio, **kw)
        return uniform_plan(analysis, scores, min(ratio, options.max_ratio), **kw)

    notes: list[str] = []
    if options.plan is not None:
        plan = options.plan
        plan.validate(analysis)
        plan.criterion = plan.criterion or options.criterion
        if plan.criterion != options.criterion:
            scores = all_importance(analysis, plan.criterion, options.seed)
        plan = resolve(plan, analysis, scores, min_channels=options.min_channels, round_to=options.round_to)
    elif options.ratio is not None:
        plan = at(options.ratio)
    else:
        plan, note = _search_macs(analysis, at, options, cost_model or CostModel(analysis))
        notes.append(note)
    notes += fill_empty_tensors(plan, analysis, scores)
    return plan, notes


def _search_macs(analysis, at, options, cost_model):
    """Bisection over the ratio for the smallest ratio whose MACs are within the target."""
    total = cost_model.cost().macs
    if total == 0:
        raise OnnxPruneError("the model has no countable MACs (Conv/Gemm/MatMul) at this input shape; use --ratio")

    def kept(ratio: float) -> float:
        return cost_model.cost_without(at(ratio).removed_units(analysis)).macs / total

    target, lo, hi = options.target_macs, 0.0, options.max_ratio
    if kept(hi) > target:
        plan = at(hi)
        return plan, f"--target-macs {target}: not reachable; the --max-ratio {hi} cap keeps {kept(hi):.4f}"
    for _ in range(30):
        mid = (lo + hi) / 2
        if kept(mid) > target:
            lo = mid
        else:
            hi = mid
    return at(hi), f"--target-macs {target}: ratio {hi:.4f} keeps {kept(hi):.4f} of MACs"


def prune_model(analysis: Analysis, options: PruneOptions) -> PruneResult:
    """Plan and rewrite in memory. The model is not yet checked: see :func:`finalize`."""
    start = time.perf_counter()
    _check_something_to_prune(analysis)
    cost_model = CostModel(analysis)
    plan, notes = make_plan(analysis, options, cost_model)
    removed = plan.removed_units(analysis)
    model = apply_removal(analysis, removed)
    before, after = cost_model.cost(), cost_model.cost_without(removed)
    pruned = sum(1 for g in plan.groups.values() if g.removed)
    blocked = sum(1 for g in analysis.groups if not g.prunable)
    _record_metadata(model, plan, options, before, after)
    plan.meta.update({"onnxprune": __version__, "input_shapes": {k: list(v) for k, v in analysis.input_shapes.items()}})
    return PruneResult(model, plan, before, after, pruned, blocked, len(analysis.groups) - pruned - blocked,
                       notes, time.perf_counter() - start)


def _check_something_to_prune(analysis: Analysis) -> None:
    """Refuse (``OnnxPruneError``) a model in which no channel group can be pruned: writing an
    unchanged copy labelled as pruned would hide that nothing was done."""
    if not analysis.groups:
        raise OnnxPruneError("nothing to prune: the model has no channel groups "
                             "(no Conv, ConvTranspose, Gemm or MatMul with constant weights)")
    if not analysis.prunable_groups:
        first = analysis.groups[0]
        raise OnnxPruneError(f"nothing to prune: all {len(analysis.groups)} channel groups are blocked "
                             f"(e.g. {first.id}: {first.blocked[0]}); `onnxprune analyze` lists why")


def _record_metadata(model, plan, options, before: Cost, after: Cost) -> None:
    amount = (f"ratio={options.ratio}" if options.ratio is not None else
              f"target_macs={options.target_macs}" if options.target_macs is not None else "plan")
    entries = {
        "onnxprune.version": __version__,
        "onnxprune.criterion": plan.criterion or options.criterion,
        "onnxprune.amount": amount + (" global" if options.global_rank else ""),
        "onnxprune.macs_before": str(before.macs),
        "onnxprune.macs_after": str(after.macs),
        "onnxprune.params_before": str(before.params),
        "onnxprune.params_after": str(after.params),
    }
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in entries.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def load_and_analyze(path: str | Path, input_shapes: dict | None = None) -> Analysis:
    """Load, normalize and analyze an ONNX file (one copy of the weights in memory)."""
    return analyze(normalize(load_model(path), inplace=True), input_shapes)


def finalize(model: onnx.ModelProto, analysis: Analysis) -> bytes:
    """Serialize ``model`` once, check it with ``onnx.checker`` (full check) and run it once in
    onnxruntime; returns the bytes to write. Errors: ``OnnxPruneError`` from either check."""
    data = model.SerializeToString()
    check_model(data)
    smoke_run(data, analysis)
    return data


def smoke_run(model, analysis) -> None:
    """Load ``model`` (serialized bytes, or a path: needed for external data) in onnxruntime
    and run one seeded random sample at the analysis shapes.

    ``analysis`` is the :class:`Analysis`, or just ``{input name: shape}``. Inputs get values
    of their declared type (random floats, zeros otherwise).
    Errors (``OnnxPruneError``): the session cannot be created or the run fails.
    """
    import onnxruntime as ort

    shapes = analysis.shapes if isinstance(analysis, Analysis) else analysis
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OnnxPruneError(f"onnxruntime rejects the pruned model: {str(exc).splitlines()[0][:300]}") from None
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = shapes.get(inp.name)
        dtype = _ORT_TYPES.get(inp.type)
        if shape is None or None in shape or dtype is None:
            return  # dynamic dims or a type we cannot fill: the session load above is the check
        dtype = np.dtype(dtype)
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    try:
        session.run(None, feeds)
    except Exception as exc:
        raise OnnxPruneError(f"onnxruntime fails to run the pruned model: {str(exc).splitlines()[0][:300]}") from None


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def prune_file(model_path: str | Path, out_path: str | Path, options: PruneOptions,
               input_shapes: dict | None = None, plan_out: str | Path | None = None) -> PruneResult:
    """Prune ``model_path`` into ``out_path`` (atomic write; never over the input).

    The output has passed ``onnx.checker.check_model(full_check=True)`` and run once in
    onnxruntime before it is written. ``plan_out`` saves the applied plan as JSON.

    When the input stores its tensors as external data, or the pruned model is too large for
    one protobuf (2 GB), the output is written with external data too: ``<out name>.data``
    next to ``out_path`` (see :class:`onnxprune.graph.StagedModel`). It is checked and run from
    the staged files, by path, and ``result.model`` is then the written proto, whose large
    tensors refer to that file. Memory: the input's weights plus the pruned ones; the input's
    are released before the check, and no serialized copy of the whole model is made.
    """
    start = time.perf_counter()
    if same_file(model_path, out_path):
        raise OnnxPruneError(f"refusing to overwrite the input model {model_path}; choose another output path")
    options.validate()
    model, data_files = read_model(model_path)
    protected = [model_path, *data_files]
    check_output(out_path, protected)
    analysis = analyze(normalize(model, inplace=True), input_shapes)
    del model
    result = prune_model(analysis, options)
    if not data_files and model_nbytes(result.model) < PROTOBUF_LIMIT:
        save_model_atomic(finalize(result.model, analysis), out_path, never_overwrite=protected)
    else:
        shapes = dict(analysis.shapes)
        del analysis  # the input's weights: only the pruned ones are needed from here on
        gc.collect()
        with StagedModel(result.model, out_path, never_overwrite=protected) as staged:
            result.model = staged.model  # drops the in-memory tensors, now in the staged data file
            gc.collect()
            check_model(staged.path)
            smoke_run(staged.path, shapes)
            staged.commit()
    try:
        if plan_out is not None:
            _save_plan_atomic(result.plan, plan_out)
        result.bytes_before = _disk_size(model_path, data_files)
        result.bytes_after = _disk_size(out_path, _data_files(result.model, out_path))
    except KeyboardInterrupt as exc:
        exc.written = getattr(exc, "written", None) or str(out_path)  # the model is already in place
        raise
    result.seconds = time.perf_counter() - start
    return result


def _data_files(model: onnx.ModelProto, path: str | Path) -> list[Path]:
    folder = Path(path).parent
    return sorted({folder / e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})


def _disk_size(path: str | Path, data_files) -> int:
    """Bytes of the model file and its external data files."""
    return Path(path).stat().st_size + sum(Path(f).stat().st_size for f in data_files)


def _save_plan_atomic(plan: PruningPlan, path: str | Path) -> None:
    """``plan`` as JSON at ``path``, written atomically (:func:`~onnxprune.graph.write_atomic`)."""
    write_atomic(path, plan.to_json().encode())


