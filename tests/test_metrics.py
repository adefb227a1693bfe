"""Task metrics (:mod:`onnxprune.runtime.metrics`) on hand-computed cases, and the choice
``auto`` makes for the outputs of real models."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import OnnxPruneError
from onnxprune.runtime import metrics
from onnxprune.runtime.metrics import (CTCAgreement, DetectionMAP, MapIoU, Top1, average_precision, choose,
                                       ctc_decode, detections, edit_distance, nms, task_of)


def test_top1_agreement_and_accuracy():
    ref = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    cand = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    assert Top1().score(ref, cand).value == 0.75
    assert Top1().score(ref, cand, np.array([0, 1, 1, 1])).value == 0.5
    assert Top1().baseline(ref, np.array([0, 1, 1, 1])).value == 0.75


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float64)
    assert nms(boxes, np.array([0.9, 0.8, 0.7])).tolist() == [0, 2]
    assert nms(boxes, np.array([0.5, 0.8, 0.7])).tolist() == [1, 2]


def test_average_precision_by_hand():
    """Two truth boxes of class 0; three predictions: a hit (0.9), a miss (0.8), a hit (0.7).
    Precision envelope: 1 up to recall 0.5, then 2/3 up to recall 1: AP = (51 + 50·2/3)/101."""
    truth = [np.array([[0, 0, 10, 10, 1, 0], [20, 20, 30, 30, 1, 0]], np.float64)]
    pred = [np.array([[0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.8, 0], [20, 20, 30, 30, 0.7, 0]], np.float64)]
    assert average_precision(pred, truth) == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert average_precision(truth, truth) == 1.0
    assert average_precision([np.zeros((0, 6))], truth) == 0.0  # a dead detector
    assert average_precision([np.zeros((0, 6))], [np.zeros((0, 6))]) == 1.0


def yolo_output(boxes_xywh, class_scores) -> np.ndarray:
    """One image's ``[1, 4+K, A]`` YOLO output."""
    return np.concatenate([np.asarray(boxes_xywh, np.float32).T, np.asarray(class_scores, np.float32).T])[None]


def test_detection_map_sees_a_dead_detector():
    """The case verify missed: the pruned detector's scores all fall below 0.25, so it has no
    detection left, while its output's cosine with the original's stays high (the box
    coordinates, up to 320, dominate it)."""
    boxes = [[50, 50, 20, 20], [200, 200, 40, 40], [120, 60, 30, 30]]
    original = yolo_output(boxes, [[0.9, 0.0], [0.0, 0.8], [0.7, 0.1]])
    dead = yolo_output(boxes, [[0.2, 0.0], [0.0, 0.1], [0.1, 0.05]])
    metric = DetectionMAP("yolo")
    assert metric.baseline(original).value == 1.0
    value = metric.score(original, dead)
    assert value.value < 0.5 and value.extra["detections"] == 0 and value.extra["reference_detections"] == 3
    assert metrics.Cosine().score(original, dead).value > 0.97


def test_end_to_end_rows_are_detections():
    rows = np.array([[[0, 0, 10, 10, 0.9, 3], [5, 5, 8, 8, 0.1, 1]]], np.float32)
    (found,) = detections(rows, "e2e")
    assert found.shape == (1, 6) and found[0, 5] == 3
    assert task_of((1, 300, 6), "Concat") == "map50:e2e"


def test_ctc_decoding_and_agreement():
    """Steps argmax [1, 1, 0, 2, 2, 0, 1] decode to (1, 2, 1)."""
    steps = np.eye(3)[[1, 1, 0, 2, 2, 0, 1]][None]
    assert ctc_decode(steps) == [(1, 2, 1)]
    other = np.eye(3)[[1, 0, 1, 2, 2, 0, 1]][None]  # (1, 1, 2, 1): one insertion
    value = CTCAgreement(blank=0).score(steps, other)
    assert value.value == 0.0 and value.extra["cer"] == pytest.approx(1 / 3)
    assert CTCAgreement(blank=0).score(steps, steps, np.array([[1, 2, 1, -1]])).value == 1.0
    assert edit_distance((1, 2, 3), (1, 3)) == 1


def test_ctc_blank_is_the_class_the_original_emits_most():
    """A CRNN whose blank is its last class (captcha-whisperer's 36): decoded with blank 0, the
    strings would hold the blank; the default reads the blank off the original's steps."""
    steps = np.eye(4)[[3, 1, 3, 3, 2, 2, 3, 0, 3]][None]
    value = CTCAgreement().score(steps, steps, np.array([[1, 2, 0]]))
    assert value.extra["blank"] == 3 and value.value == 1.0
    assert CTCAgreement(blank=0).score(steps, steps, np.array([[1, 2, 0]])).value == 0.0


def test_map_iou():
    ref = np.zeros((1, 1, 4, 4), np.float32)
    ref[0, 0, :2, :2] = 0.9
    cand = np.zeros_like(ref)
    cand[0, 0, :2, :] = 0.9
    assert MapIoU().score(ref, cand).value == pytest.approx(0.5)
    assert MapIoU().score(ref, ref).value == 1.0


@pytest.mark.parametrize("shape, producer, task", [
    ((8, 2), "Softmax", "top1"),  # PP-OCR text direction, open_nsfw
    ((8, 40, 6625), "Softmax", "ctc"),  # PP-OCRv4 recognizer
    ((8, 20, 37), "Add", "ctc"),  # captcha CRNN (time-major in the graph, samples first here)
    ((8, 84, 8400), "Concat", "map50:yolo"),  # Ultralytics YOLOv8
    ((8, 8400, 84), "Concat", "map50:yolo_t"),
    ((8, 300, 6), "Concat", "map50:e2e"),  # YOLOv10/YOLO26 end to end
    ((8, 1, 640, 640), "Sigmoid", "iou"),  # DB text map
    ((8, 144, 84), "Concat", "cosine"),  # raw DFL logits: no boxes to decode
    ((8, 512), "Gemm", "top1"),
    ((8, 64, 16, 16), "Conv", "cosine"),  # a feature map with many channels
])
def test_auto_picks_the_task(shape, producer, task):
    assert task_of(shape, producer) == task


def test_choose_refuses_what_it_cannot_read():
    with pytest.raises(OnnxPruneError, match="unknown metric"):
        choose("bleu", (8, 10))
    with pytest.raises(OnnxPruneError, match="outside the model's 10 classes"):
        choose("auto", (8, 10), labels=np.array([0, 3, 10]))
    with pytest.raises(OnnxPruneError, match="needs 'labels'"):
        choose("accuracy", (8, 10))
    assert isinstance(choose("agreement", (8, 10)), Top1)
