"""Distillation losses, one per task: what ``finetune`` minimises, per output.

Each output's task is the one :func:`onnxprune.runtime.metrics.task_of` reads off its shape and
the op computing it (the metric ``verify`` uses), and each loss is normalized so that every
output, and every part of a detection head, weighs about the same, whatever its units:

=============== ============================================================================
task            loss between the student ``s`` and the teacher ``t`` (samples on axis 0)
=============== ============================================================================
``top1``        ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` over the classes (Hinton et al. 2015)
``ctc``         the same KL at every time step, over the last axis (``[N, T, K]``); an output
                computed by a Softmax is already a distribution and is compared as one
``map50:yolo``  boxes and class scores apart (``[N, 4+K, A]``; ``yolo_t`` transposed): the
                boxes' MSE over the teacher's mean square of the boxes, plus the class scores'
                MSE over theirs, halved. One MSE would let coordinates in pixels (up to the
                image size) swamp scores in [0, 1]
``map50:e2e``   the same with boxes ``[..., :4]`` and scores ``[..., 4:5]``; the class column
                is an index and is left out
``iou``,        MSE over the teacher's mean square (scale-free)
others
=============== ============================================================================

With labels: :func:`label_loss` adds cross-entropy for a classifier (``[N]`` labels) and the
CTC loss (Graves et al., ICML 2006; ``torch.nn.functional.ctc_loss``) for a recognizer
(``[N, L]`` labels, -1 padded; blank as :class:`~onnxprune.runtime.metrics.CTCAgreement`
finds it). Labels of other tasks are not used for training (:func:`label_loss` returns None).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-12


def _scaled_mse(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(s, t) / (t.pow(2).mean() + EPS)


def _kl(s: torch.Tensor, t: torch.Tensor, temperature: float, axis: int, probabilities: bool) -> torch.Tensor:
    """KL(t ‖ s) over ``axis``, averaged over every other position, times T²."""
    if probabilities:  # a Softmax output: compare the distributions themselves
        log_p, q = s.clamp_min(1e-8).log(), t
        temperature = 1.0
    else:
        log_p, q = F.log_softmax(s / temperature, dim=axis), F.softmax(t / temperature, dim=axis)
    per_position = (q * (q.clamp_min(1e-12).log() - log_p)).sum(dim=axis)
    return per_position.mean() * temperature ** 2


def task_loss(task: str, s: torch.Tensor, t: torch.Tensor, temperature: float, producer: str | None) -> torch.Tensor:
    """The distillation loss of one output of task ``task`` (see the module doc)."""
    probabilities = producer == "Softmax"
    if task == "top1":
        return _kl(s, t, temperature, 1, probabilities)
    if task == "ctc":
        return _kl(s, t, temperature, 2, probabilities)
    if task in ("map50:yolo", "map50:yolo_t"):
        if task == "map50:yolo_t":
            s, t = s.transpose(1, 2), t.transpose(1, 2)
        return 0.5 * (_scaled_mse(s[:, :4], t[:, :4]) + _scaled_mse(s[:, 4:], t[:, 4:]))
    if task == "map50:e2e":
        return 0.5 * (_scaled_mse(s[..., :4], t[..., :4]) + _scaled_mse(s[..., 4:5], t[..., 4:5]))
    return _scaled_mse(s, t)


def label_loss(task: str, s: torch.Tensor, labels: torch.Tensor, blank: int, producer: str | None):
    """The supervised loss of the first output against ``labels``, or None where the task's
    labels do not train (see the module doc)."""
    if task == "top1" and labels.dim() == 1:
        return F.nll_loss(s.clamp_min(1e-8).log(), labels) if producer == "Softmax" else F.cross_entropy(s, labels)
    if task == "ctc" and labels.dim() == 2:
        log_probs = (s.clamp_min(1e-8).log() if producer == "Softmax" else F.log_softmax(s, dim=2)).transpose(0, 1)
        lengths = (labels >= 0).sum(dim=1)
        targets = torch.cat([row[row >= 0] for row in labels])
        steps = torch.full((s.shape[0],), s.shape[1], dtype=torch.long)
        return F.ctc_loss(log_probs, targets, steps, lengths, blank=blank, zero_infinity=True)
    return None
