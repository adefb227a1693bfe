"""Fine-tune any pruned ONNX model by knowledge distillation from the original, without its source.

The pruned graph becomes a torch module (:class:`~onnxprune.torch.graph_module.GraphModule`),
trains, and its weights are written back into the same graph by initializer name, so the file
keeps the structure, names and metadata ``prune`` gave it.

**Loss** (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015): the
teacher is the original model, run once over the training data in onnxruntime. Each output is
distilled with the loss of its task (:mod:`onnxprune.torch.distill`: KL for classifiers and
per step for CTC recognizers, boxes and class scores normalized apart for detectors, scale-free
MSE otherwise), and the outputs are averaged. Where the data has labels that train the first
output (``[N]`` classes, ``[N, L]`` CTC strings), the loss is ``(1 − α) · supervised + α · KD``;
otherwise KD alone, and a note says labels were not used.

**Optimizer:** Adam (Kingma and Ba 2015), cosine learning rate from ``lr`` to 0, no weight
decay. Adam, not SGD: deployed files usually have BN folded into the convolutions, and without
normalization the gradients' scale differs by orders of magnitude between layers; SGD at one
learning rate diverged on the shipped digits model where Adam converged. The default 3e-4
recovered the most from ResNet-20 on the MNIST task pruned one-shot to half its MACs (three
epochs: 61%, 89.5% and 73% test accuracy at 1e-4, 3e-4 and 1e-3). No data augmentation.

**Validation:** with ``val``, the model is scored before training and after every epoch by
the first output's task metric (the one ``verify`` reports: accuracy or top-1 agreement, CTC
string agreement, mAP@0.5, map IoU, cosine), against ``val``'s labels where they fit. The best
scoring weights are kept, the starting weights included, so the result is never worse on
``val`` than its input.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import torch

from ..errors import OnnxPruneError
from ..runtime.evaluate import Dataset, load_data, run_model
from ..runtime.session import graph_input_specs, make_session
from .graph_module import GraphModule, write_back


@dataclass
class FinetuneOptions:
    """``epochs`` over the training data; ``lr`` the peak Adam learning rate; ``batch_size``
    samples per step; ``temperature`` T of the distillation; ``kd_weight`` α (used only with
    labels); ``seed`` for the shuffling and initial state."""

    epochs: int = 3
    lr: float = 3e-4
    batch_size: int = 64
    temperature: float = 4.0
    kd_weight: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1:
            raise OnnxPruneError(f"{{epochs}} must be at least 1, not {self.epochs}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise OnnxPruneError(f"{{lr}} must be a positive number, not {self.lr}")
        if self.batch_size < 1:
            raise OnnxPruneError(f"{{batch_size}} must be at least 1, not {self.batch_size}")
        if not self.temperature > 0:
            raise OnnxPruneError(f"{{temperature}} must be positive, not {self.temperature}")
        if not 0 <= self.kd_weight <= 1:
            raise OnnxPruneError(f"{{kd_weight}} must be in [0, 1], not {self.kd_weight}")


@dataclass
class FinetuneResult:
    """What :func:`finetune` did: per-epoch training loss and validation score, the metric's
    name, the score before training and of the kept weights, which epoch was kept (0: the
    starting weights), and the seconds spent training."""

    model: onnx.ModelProto = field(repr=False)
    metric: str | None
    history: list[dict]
    val_before: float | None
    val_after: float | None
    best_epoch: int
    seconds: float
    samples: int
    labels: bool
    options: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("model")
        return data


def finetune(student: onnx.ModelProto, teacher: onnx.ModelProto | str, data: Dataset, *,
             val: Dataset | None = None, options: FinetuneOptions | None = None, progress: bool = False) -> FinetuneResult:
    """Train ``student`` (the pruned model) to match ``teacher`` (the original: a proto or a
    path) on ``data``, and return a copy with the trained weights (see the module doc).

    ``data`` and ``val``: :class:`~onnxprune.runtime.evaluate.Dataset` with one array per graph
    input (labels optional). Outputs may hold their samples on any axis (a time-major CRNN's
    ``[T, N, K]``): it is traced, and every loss and score reads samples first. Errors
    (``OnnxPruneError``): an op the torch bridge lacks, bad options, inputs or outputs that
    differ between the two models, no output that carries the samples.
    """
    from ..runtime.metrics import CTCAgreement, producer_op, task_of
    from ..runtime.samples import trace_axes
    from .distill import label_loss, task_loss

    options = options or FinetuneOptions()
    options.validate()
    torch.manual_seed(options.seed)
    module = GraphModule(student)
    teacher_session = make_session(teacher, label="the teacher model")
    out_names = module.output_names
    if [o.name for o in teacher_session.get_outputs()] != out_names:
        raise OnnxPruneError("the teacher and the pruned model have different outputs: "
                             f"{[o.name for o in teacher_session.get_outputs()]} vs {out_names}")
    axes = trace_axes(student, data, out_names)
    trained = [k for k, name in enumerate(out_names) if axes[name] is not None]
    if not trained:
        raise OnnxPruneError("no output of the model carries the samples: there is nothing to distill")
    targets = run_model(teacher_session, data, batch_size=options.batch_size)
    val_targets = run_model(teacher_session, val, batch_size=options.batch_size) if val is not None else None
    producers = {name: producer_op(student, name) for name in out_names}
    tasks = {name: task_of(targets[name].shape, producers[name]) for name in out_names}
    inputs = [torch.from_numpy(np.ascontiguousarray(data.inputs[n])) for n in module.input_names]
    teacher_out = {k: torch.from_numpy(np.ascontiguousarray(targets[out_names[k]])) for k in trained}
    first = out_names[0]
    labels = torch.from_numpy(data.labels).long() if data.labels is not None else None
    blank = CTCAgreement().blank_of(targets[first]) if tasks[first] == "ctc" else 0
    notes = [f"distillation loss per output: {', '.join(f'{n} {tasks[n]}' for n in (out_names[k] for k in trained))}"]
    if labels is not None and (axes[first] is None or label_loss(tasks[first], teacher_out[0][:1], labels[:1], blank,
                                                                 producers[first]) is None):
        notes.append(f"labels are not used for training on a {tasks[first]} output: distillation alone")
        labels = None
    kd_weight = options.kd_weight if labels is not None else 1.0

    def loss_of(outputs, idx) -> torch.Tensor:
        kd = sum(task_loss(tasks[out_names[k]], _samples_first(outputs[k], axes[out_names[k]]), teacher_out[k][idx],
                           options.temperature, producers[out_names[k]]) for k in trained) / len(trained)
        loss = kd_weight * kd
        if labels is not None and kd_weight < 1:
            supervised = label_loss(tasks[first], _samples_first(outputs[0], axes[first]), labels[idx], blank,
                                    producers[first])
            loss = loss + (1 - kd_weight) * supervised
        return loss

    # NHWC ("channels_last") is oneDNN's fast layout for convolutions on the CPU, their backward
    # (depthwise included) most of all: PP-OCR's classifier epoch went 97 s -> 67 s on a loaded
    # 2-core machine. Values do not change.
    module.to(memory_format=torch.channels_last)
    inputs = [_fast_layout(x) for x in inputs]
    optimizer = torch.optim.Adam(module.parameters(), lr=options.lr)
    n = len(data)
    steps_per_epoch = math.ceil(n / options.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(options.seed)

    metric, val_before = None, None
    if val is not None:
        metric, val_before = _score(module, student, val, val_targets, axes, options.batch_size)
    score = (lambda: _score(module, student, val, val_targets, axes, options.batch_size)[1]) if val is not None else None
    best_score = val_before
    best_state, best_epoch = copy.deepcopy(module.state_dict()), 0
    history = []
    start = time.perf_counter()
    with _Progress(progress, options.epochs * steps_per_epoch) as bar:
        for epoch in range(1, options.epochs + 1):
            module.train()
            order = torch.randperm(n, generator=generator)
            total, count = 0.0, 0
            for begin in range(0, n, options.batch_size):
                idx = order[begin:begin + options.batch_size]
                loss = loss_of(module(*(_fast_layout(x[idx]) for x in inputs)), idx)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total, count = total + float(loss.detach()) * len(idx), count + len(idx)
                bar.advance(f"epoch {epoch}/{options.epochs} loss {total / count:.4f}")
            entry = {"epoch": epoch, "loss": total / count}
            if score:
                entry["val"] = score()
                if entry["val"] > best_score:
                    best_score, best_state, best_epoch = entry["val"], copy.deepcopy(module.state_dict()), epoch
            else:
                best_state, best_epoch = module.state_dict(), epoch
            history.append(entry)
    module.load_state_dict(best_state)
    return FinetuneResult(write_back(module, student), metric, history, val_before, best_score, best_epoch,
                          round(time.perf_counter() - start, 2), n, labels is not None, asdict(options), notes)


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    """A 4-D image batch in NHWC memory order (same values and shape); anything else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and x.is_floating_point() else x


def _samples_first(output: torch.Tensor, axis: int | None) -> torch.Tensor:
    return output if not axis else output.movedim(axis, 0)


def finetune_into(outputs, label: str, pruned, teacher, data_path, *, val_path=None,
                  options: FinetuneOptions | None = None, progress: bool = False,
                  shapes: dict | None = None) -> FinetuneResult:
    """Read ``pruned`` and the ``.npz`` files, :func:`finetune`, check the result (``onnx.checker``
    and one onnxruntime run, at ``shapes`` or else one sample of the data) and stage it as
    ``label`` in ``outputs`` (an :class:`~onnxprune.graph.outputs.OutputSet`, which the caller
    commits)."""
    from ..graph import external_data_files
    from ..graph.load import read_model
    from ..pipeline import finalize

    outputs.add_reads({"external data of a model": external_data_files(pruned) + external_data_files(teacher)})
    student, _ = read_model(pruned)
    data = load_dataset(data_path, student)
    val = load_dataset(val_path, student) if val_path else None
    result = finetune(student, str(teacher), data, val=val, options=options, progress=progress)
    shapes = {name: (1, *array.shape[1:]) for name, array in data.inputs.items()} | dict(shapes or {})
    outputs.stage_model(label, finalize(result.model, shapes, pruned))
    return result


def load_dataset(path: str, model: onnx.ModelProto) -> Dataset:
    """The ``.npz`` at ``path`` as a dataset for ``model``'s inputs (see :func:`load_data`)."""
    return load_data(path, graph_input_specs(model))


@torch.no_grad()
@torch.no_grad()
def _score(module: GraphModule, student: onnx.ModelProto, val: Dataset, targets: dict, axes: dict,
           batch_size: int) -> tuple[str, float]:
    """``(metric name, score)`` of the module on ``val``: the task metric of the first output
    (:func:`onnxprune.runtime.evaluate.task_scores`, as ``verify`` reports it), against the
    labels where they fit, else against the teacher; negated where lower is better."""
    from ..runtime.evaluate import task_scores

    module.eval()
    name = module.output_names[0]
    inputs = [torch.from_numpy(np.ascontiguousarray(val.inputs[n])) for n in module.input_names]
    outs = [_samples_first(module(*(_fast_layout(x[i:i + batch_size]) for x in inputs))[0], axes[name])
            for i in range(0, len(val), batch_size)]
    (result,) = task_scores(student, {name: targets[name]}, {name: torch.cat(outs).numpy()}, val.labels)
    return result.metric, result.pruned if result.higher_is_better else -result.pruned


class _Progress:
    """A rich progress bar (loss and ETA) when ``enabled``; a no-op otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("fine-tuning", total=self.total)
        return self

    def advance(self, description: str) -> None:
        if self.enabled:
            self._bar.update(self._task, advance=1, description=description)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)
