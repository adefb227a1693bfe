"""Distillation losses per task (onnxprune.torch.distill): score channels are not swamped by
coordinates, CTC is compared per step, labels train only where they fit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from onnxprune.torch.distill import label_loss, task_loss  # noqa: E402


def yolo_head(seed=0):
    """``[2, 4+3, 64]``: boxes in pixels (0-320), class scores in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(2, 4, 64, generator=g) * 320
    scores = torch.rand(2, 3, 64, generator=g) * 0.9
    return torch.cat([boxes, scores], 1)


def test_a_dead_detector_costs_as_much_as_shifted_boxes():
    """Zeroing every class score (a detector with no detections left) must cost about as much
    as moving every box by a sixth of its size: one MSE would see the scores as noise."""
    t = yolo_head()
    dead = t.clone()
    dead[:, 4:] = 0
    shifted = t.clone()
    shifted[:, :4] *= 1.15
    scores_loss = task_loss("map50:yolo", dead, t, 4.0, "Concat")
    boxes_loss = task_loss("map50:yolo", shifted, t, 4.0, "Concat")
    plain = torch.nn.functional.mse_loss(dead, t) / t.pow(2).mean()
    assert scores_loss > 0.1 and scores_loss > 0.3 * boxes_loss
    assert plain < 0.01  # what one scale-free MSE over the whole head makes of it
    assert task_loss("map50:yolo", t, t, 4.0, "Concat") == 0
    transposed = task_loss("map50:yolo_t", dead.transpose(1, 2), t.transpose(1, 2), 4.0, "Concat")
    assert torch.isclose(transposed, scores_loss)


def test_ctc_kl_per_step_and_softmax_outputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 10, 5, generator=g)
    assert task_loss("ctc", logits, logits, 4.0, "Add") < 1e-6
    assert task_loss("ctc", logits, torch.randn(2, 10, 5, generator=g), 4.0, "Add") > 0
    probs = logits.softmax(2)
    same = task_loss("ctc", probs, probs, 4.0, "Softmax")
    assert same.abs() < 1e-6 and task_loss("ctc", probs.roll(1, 2), probs, 4.0, "Softmax") > 0.1


def test_labels_train_classifiers_and_recognizers_only():
    logits = torch.randn(3, 4)
    assert label_loss("top1", logits, torch.tensor([0, 1, 2]), 0, "Gemm") > 0
    steps = torch.randn(2, 12, 6, requires_grad=True)
    ctc = label_loss("ctc", steps, torch.tensor([[1, 2, -1], [3, 3, 4]]), 5, "Add")
    ctc.backward()
    assert torch.isfinite(ctc) and steps.grad.abs().sum() > 0
    assert label_loss("map50:yolo", yolo_head(), torch.zeros(2, 5, 6), 0, "Concat") is None
    assert label_loss("top1", logits, torch.zeros(3, 2, dtype=torch.long), 0, "Gemm") is None
