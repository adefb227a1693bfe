"""The small Python API: analyze, measure sensitivity, prune, verify and bench a model file,
and load a plan.

Everything here is also what the CLI does; errors are :class:`~onnxprune.errors.OnnxPruneError`
with one-line messages that name these functions' parameters. ``input_shapes`` is a dict
``{input name: full shape}`` or ``"name:1x3x224x224"`` strings (one, or a list).

Example::

    import onnxprune

    analysis = onnxprune.analyze("model.onnx")
    result = onnxprune.prune("model.onnx", "pruned.onnx", target_macs=0.5, round_to=8)
    print(result.after.macs / result.before.macs)
    report = onnxprune.verify("model.onnx", "pruned.onnx")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .analysis.groups import Analysis
from .decide.plan import PruningPlan
from .decide.sensitivity import DEFAULT_RATIOS, SensitivityReport, measure
from .pipeline import PruneOptions, PruneResult, load_and_analyze, prune_file
from .runtime.bench import BenchReport
from .runtime.evaluate import VerifyReport, parse_input_shapes

PathLike = str | os.PathLike
Shapes = dict | str | Sequence[str] | None


def _shapes(input_shapes: Shapes) -> dict:
    if not input_shapes:
        return {}
    if isinstance(input_shapes, dict):
        return {str(k): tuple(int(d) for d in v) for k, v in input_shapes.items()}
    return parse_input_shapes(input_shapes)


def analyze(model: PathLike, input_shapes: Shapes = None) -> Analysis:
    """Load ``model`` and find its channel groups (``analysis.groups``: ``id``, ``anchor``,
    ``channels``, ``prunable``, ``blocked`` reasons). A dynamic batch is taken as 1; any other
    dynamic dim needs ``input_shapes``. Errors: ``OnnxPruneError``."""
    return load_and_analyze(model, _shapes(input_shapes))


def load_plan(path: PathLike) -> PruningPlan:
    """Read a plan saved by :func:`prune` (``plan_out``) or ``onnxprune prune --plan``."""
    return PruningPlan.load(path)


def prune(model: PathLike, output: PathLike, *, ratio: float | None = None, target_macs: float | None = None,
          target_params: float | None = None, target_latency: float | None = None, plan: PruningPlan | PathLike | None = None, schedule: str = "uniform",
          criterion: str = "l1", data: PathLike | None = None, recover: str = "none",
          sensitivity: SensitivityReport | PathLike | None = None, calib_samples: int | None = None,
          metric: str = "auto", evaluations: int = 300, jobs: int = 1, scheduler: str | None = None,
          global_rank: bool = False, max_ratio: float = 0.9, round_to: int | str = "auto", provider: str = "cpu",
          min_channels: int = 1,
          exclude: Sequence[str] = (), seed: int = 0, allow_noop: bool = False, input_shapes: Shapes = None,
          plan_out: PathLike | None = None, drop_blocks: int | Sequence[str] | None = None,
          depth_ratio: float | None = None, block_criterion: str = "norm", mix_blocks: bool = False,
          fuse: bool = True, strict: bool = False, steps: int = 1) -> PruneResult:
    """Prune ``model`` into ``output``: give exactly one of ``ratio`` (the fraction of each
    group's channels to remove), ``target_macs`` or ``target_params`` (the fraction of MACs or
    params to keep, met within 0.02), ``target_latency`` (the fraction of the latency on
    ``provider`` to keep, predicted by per-layer tables and measured: ``result.latency``) or ``plan`` (a :class:`PruningPlan` or the path of a saved
    one). ``schedule`` is ``uniform``, ``global``, ``sensitivity`` (curves from ``sensitivity``,
    or measured on ``data``) or ``evolution`` (searched on ``data``); ``recover`` (``bn`` or
    ``reconstruct``) repairs the result on ``data``. Depth: ``drop_blocks`` (a count, or residual
    block ids / Add names) or ``depth_ratio``, alone or with a width amount. ``fuse`` folds BN
    after pruning. ``steps`` > 1 reaches ``target_macs``/``target_params`` in rounds of prune and
    recover on ``data`` (``result.rounds``). ``criterion`` ``activation``, ``apoz`` and ``wanda``
    rank channels by ``data``'s activations. ``strict`` makes a goal that is not met (``result.warnings``) an error. The other
    parameters are ``onnxprune prune``'s options. Returns a :class:`PruneResult` (``before`` and
    ``after`` costs, ``plan``, ``notes``, ``warnings``, ``recovery``). The output is checked, and written atomically; it never replaces
    ``model`` or a file it reads. Errors: ``OnnxPruneError``."""
    if plan is not None and not isinstance(plan, PruningPlan):
        plan = PruningPlan.load(plan)
    if sensitivity is not None and not isinstance(sensitivity, SensitivityReport):
        sensitivity = SensitivityReport.load(sensitivity)
    options = PruneOptions(criterion=criterion, ratio=ratio, global_rank=global_rank, max_ratio=max_ratio,
                           target_macs=target_macs, round_to=round_to, provider=provider, min_channels=min_channels,
                           exclude=tuple(exclude), plan=plan, seed=seed, allow_noop=allow_noop, schedule=schedule,
                           target_params=target_params, target_latency=target_latency, sensitivity=sensitivity,
                           data=None if data is None else str(data), calib_samples=calib_samples, metric=metric,
                           evaluations=evaluations, jobs=jobs, scheduler=scheduler, recover=recover,
                           drop_blocks=() if drop_blocks is None or isinstance(drop_blocks, int) else tuple(drop_blocks),
                           drop_count=drop_blocks if isinstance(drop_blocks, int) else None, depth_ratio=depth_ratio,
                           block_criterion=block_criterion, mix_blocks=mix_blocks, fuse=fuse, strict=strict,
                           steps=steps)
    return prune_file(model, output, options, _shapes(input_shapes), plan_out=plan_out)


def sensitivity(model: PathLike, data: PathLike, *, ratios: Sequence[float] = DEFAULT_RATIOS, metric: str = "auto",
                criterion: str = "l1", recover: str = "none", calib_samples: int | None = None, jobs: int = 1,
                scheduler: str | None = None, input_shapes: Shapes = None) -> SensitivityReport:
    """Measure every prunable group's sensitivity curve on ``data`` (see
    :mod:`onnxprune.decide.sensitivity`); ``report.save(path)`` keeps it for ``prune``."""
    from .runtime.scoring import EvaluatorSpec

    spec = EvaluatorSpec(str(model), _shapes(input_shapes), str(data), criterion=criterion, calib_samples=calib_samples,
                         recover=recover)
    return measure(spec, ratios, metric, jobs=jobs, scheduler=scheduler)


def verify(original: PathLike, pruned: PathLike, data: PathLike | None = None, *, samples: int = 8, seed: int = 0,
           batch_size: int = 1, provider: str = "cpu", input_shapes: Shapes = None) -> VerifyReport:
    """Run both models on ``data`` (an ``.npz``) or on ``samples`` seeded random inputs, and
    compare their outputs (``report.outputs``: errors, cosine, top-1 agreement, accuracy)."""
    from .runtime.evaluate import verify as run_verify

    return run_verify(original, pruned, data_path=data, n_random=samples, shapes=_shapes(input_shapes) or None,
                      seed=seed, batch_size=batch_size, provider=provider)


def finetune(pruned: PathLike, output: PathLike, *, teacher: PathLike, data: PathLike, val: PathLike | None = None,
             epochs: int = 3, lr: float = 3e-4, batch_size: int = 64, temperature: float = 4.0,
             kd_weight: float = 0.5, seed: int = 0, progress: bool = False):
    """Fine-tune ``pruned`` by distillation from ``teacher`` on ``data`` (an ``.npz``; with
    ``labels`` also cross-entropy) and write it to ``output``, as ``onnxprune finetune`` does.
    Needs torch (``onnxprune[torch]``). Returns a
    :class:`~onnxprune.torch.finetune.FinetuneResult` (per-epoch history, validation scores)."""
    from .graph.outputs import OutputSet
    from .torch.finetune import FinetuneOptions, finetune_into

    reads = {"the pruned model": pruned, "the teacher model": teacher, "the data": data, "the validation data": val}
    with OutputSet({"output": output}, reads, models=["output"]) as outputs:
        options = FinetuneOptions(epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature,
                                  kd_weight=kd_weight, seed=seed)
        result = finetune_into(outputs, "output", pruned, teacher, data, val_path=val, options=options,
                               progress=progress)
        outputs.commit()
    return result


def bench(models: Sequence[PathLike], *, provider: str = "cpu", threads: int | None = None, batch_size: int = 1,
          runs: int = 50, warmup: int = 5, seed: int = 0, input_shapes: Shapes = None, fp16: bool = False) -> BenchReport:
    """Time ``models`` side by side in interleaved rounds (``report.models``: median, p90,
    throughput, ``speedup_vs_first``) on ``provider`` (``cpu``, ``cuda`` or ``tensorrt``; GPU
    inputs are bound on the device); ``fp16`` times float16 copies of the models."""
    from .runtime.bench import bench as run_bench

    return run_bench(list(models), provider=provider, threads=threads, batch=batch_size, warmup=warmup, runs=runs,
                     shapes=_shapes(input_shapes) or None, seed=seed, fp16=fp16)


def export_triton(model: PathLike, repo: PathLike, *, name: str | None = None, max_batch_size: int | None = None,
                  instances: int = 1, kind: str = "cpu", dynamic_batching: bool = False, input_shapes: Shapes = None,
                  plan: PathLike | None = None, accuracy_from: PathLike | None = None,
                  latency_from: PathLike | None = None):
    """Write ``repo/name/config.pbtxt``, ``repo/name/1/model.onnx`` and ``repo/name/model_card.json``
    for Triton Inference Server, as ``onnxprune export-triton`` does (see
    :mod:`onnxprune.deploy.triton`). Returns a :class:`~onnxprune.deploy.triton.TritonExport`
    (``config``, ``config_text``, ``validated``, ``card``, paths). Nothing is written on error
    (``OnnxPruneError``), and nothing is ever overwritten."""
    from .deploy.triton import export_triton as run_export

    return run_export(model, repo, name=name, max_batch_size=max_batch_size, instances=instances, kind=kind,
                      dynamic_batching=dynamic_batching, input_shapes=_shapes(input_shapes) or None, plan=plan,
                      accuracy_from=accuracy_from, latency_from=latency_from)


__all__ = ["analyze", "bench", "export_triton", "load_plan", "prune", "sensitivity", "verify"]
