"""Task metrics: how well a pruned model does the original's job, one output at a time.

A metric is a small object in the manner of Polygraphy's comparators: it reads one output of
the original (``reference``) and of the pruned model (``candidate``), samples on axis 0, and
optionally ``labels``, and returns a number in [0, 1] (higher is better) or, for
``rel_mse``, an error (lower is better). :func:`choose` picks one per output: by name, or
``auto`` from the output's shape and the op that computes it. ``verify``, the measuring
schedules, recovery's "never worse" check and ``finetune``'s validation all go through
:func:`score`.

=========== ======================================================== ==========================
name        task and output                                          value
=========== ======================================================== ==========================
top1        classification ``[N, K]``                                top-1 agreement with the
                                                                     original; accuracy with
                                                                     int labels ``[N]``
map50       detection: YOLO ``[N, 4+K, A]`` / ``[N, A, 4+K]``        mAP@0.5 of the pruned
            (centre-size boxes, class scores), end-to-end            model's detections against
            ``[N, D, 6]`` (corner boxes, score, class)               the original's as
                                                                     pseudo-labels, both with
                                                                     scores > 0.25, after NMS
ctc         CTC sequences ``[N, T, K]`` (greedy decoding; blank:     decoded-string agreement;
            the class the original predicts most often)              with labels ``[N, L]``
                                                                     (-1 padded) exact-match
                                                                     accuracy. ``cer`` alongside
iou         dense maps ``[N, C, H, W]``: argmax over C, or a         IoU of the masks with the
            probability map thresholded at 0.3 (DB text maps)        original's, mean over samples
cosine      anything else (embeddings)                               cosine similarity, mean over
                                                                     samples
rel_mse     any output                                               ``|y - y0|² / |y0|²``
=========== ======================================================== ==========================

Sources: mAP@0.5 with COCO's 101-point interpolated precision (Lin et al., "Microsoft COCO",
ECCV 2014; pycocotools ``COCOeval``) per class, averaged over the classes the pseudo-labels
hold; greedy NMS at IoU 0.7 and the 0.25 confidence of Ultralytics' predictions; CTC greedy
decoding (Graves et al., ICML 2006); DB's 0.3 binarization threshold (Liao et al., AAAI 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OnnxPruneError

NAMES = ("top1", "map50", "ctc", "iou", "cosine", "rel_mse")
ALIASES = {"accuracy": "top1", "agreement": "top1"}
"""Older ``--metric`` names, still accepted."""

CONFIDENCE = 0.25
NMS_IOU = 0.7
MATCH_IOU = 0.5
MAP_THRESHOLD = 0.3


@dataclass(frozen=True)
class Value:
    """A metric's result: ``value`` (the main figure), ``higher`` (its direction), and extra
    figures (``cer``, ``detections``...)."""

    metric: str
    value: float
    higher: bool = True
    extra: dict | None = None

    def drop(self, baseline: float) -> float:
        """How much worse than ``baseline`` this is (0 when as good or better)."""
        return max(0.0, (baseline - self.value) if self.higher else (self.value - baseline))


class Metric:
    """One metric: :meth:`score` compares the candidate's output with the reference's;
    :meth:`baseline` is the original's own score (1 against itself, or its accuracy against
    labels)."""

    name = ""
    higher = True
    labels_shape = ""  # what labels it reads ("[N]", "[N, L]"...); "" for none

    def score(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Value:
        raise NotImplementedError

    def baseline(self, reference: np.ndarray, labels: np.ndarray | None = None) -> Value:
        return self.score(reference, reference, labels)

    def _value(self, value: float, **extra) -> Value:
        return Value(self.name, float(value), self.higher, extra or None)


class Top1(Metric):
    """Classification ``[N, K]``: top-1 agreement, or accuracy against int ``labels [N]``."""

    name = "top1"
    labels_shape = "[N] class indices"

    def score(self, reference, candidate, labels=None):
        pred = np.asarray(candidate).reshape(len(candidate), -1).argmax(axis=1)
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            return self._value(np.mean(pred == labels), accuracy=float(np.mean(pred == labels)))
        ref = np.asarray(reference).reshape(len(reference), -1).argmax(axis=1)
        return self._value(np.mean(pred == ref))


class Cosine(Metric):
    """Cosine similarity of each sample's flattened output with the original's, mean over samples."""

    name = "cosine"

    def score(self, reference, candidate, labels=None):
        a = np.asarray(reference, np.float64).reshape(len(reference), -1)
        b = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(na * nb > 0, np.einsum("ij,ij->i", a, b) / np.where(na * nb > 0, na * nb, 1), 0.0)
        cos = np.where((na == 0) & (nb == 0), 1.0, cos)
        return self._value(float(np.clip(cos, -1, 1).mean()) if len(cos) else 1.0)


class RelMSE(Metric):
    """``sum((y - y0)²) / sum(y0²)`` over all elements (0 for identical outputs)."""

    name = "rel_mse"
    higher = False

    def score(self, reference, candidate, labels=None):
        a, b = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
        energy = float(np.square(a).sum())
        err = float(np.square(a - b).sum())
        return self._value(err / energy if energy > 0 else (0.0 if err == 0 else np.inf))


# ---------------------------------------------------------------- detection
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes ``a [M, 4]`` and ``b [K, 4]`` (x1, y1, x2, y2): ``[M, K]``."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        if len(order) == 1:
            break
        overlap = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def detections(output: np.ndarray, layout: str, confidence: float = CONFIDENCE) -> list[np.ndarray]:
    """Per image, the detections ``[M, 6]`` (x1, y1, x2, y2, score, class) above
    ``confidence``: a YOLO output (``layout`` ``"yolo"``: ``[N, 4+K, A]`` centre-size boxes and
    class scores; ``"yolo_t"``: ``[N, A, 4+K]``) after class-aware NMS, or an end-to-end one
    (``"e2e"``: ``[N, D, 6]``, NMS already done in the graph)."""
    found = []
    for image in np.asarray(output, np.float64):
        if layout == "e2e":
            rows = image[image[:, 4] > confidence]
            found.append(rows)
            continue
        rows = image.T if layout == "yolo" else image
        xywh, cls = rows[:, :4], rows[:, 4:]
        score, label = cls.max(axis=1), cls.argmax(axis=1)
        keep = score > confidence
        xywh, score, label = xywh[keep], score[keep], label[keep]
        boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        offset = boxes + label[:, None] * (1 + boxes.max(initial=0))  # class-aware: other classes never overlap
        kept = nms(offset, score)
        found.append(np.concatenate([boxes[kept], score[kept, None], label[kept, None]], axis=1))
    return found


def average_precision(predicted: list[np.ndarray], truth: list[np.ndarray], iou: float = MATCH_IOU) -> float:
    """mAP at ``iou`` over the classes that ``truth`` holds: per class, predictions of every
    image sorted by score, greedily matched to unmatched truth boxes of the same image, and
    COCO's 101-point interpolated precision. Images with no truth and no prediction count as
    nothing; with truth and no prediction the class's AP is 0. No truth at all: 1.0 when
    nothing is predicted either, else 0.0."""
    classes = sorted({int(c) for t in truth for c in t[:, 5]}) if truth else []
    if not classes:
        return 1.0 if all(len(p) == 0 for p in predicted) else 0.0
    aps = []
    for c in classes:
        gt = [t[t[:, 5] == c, :4] for t in truth]
        total = sum(len(g) for g in gt)
        preds = [(float(p[k, 4]), i, p[k, :4]) for i, p in enumerate(predicted) for k in np.flatnonzero(p[:, 5] == c)]
        preds.sort(key=lambda r: -r[0])
        used = [np.zeros(len(g), bool) for g in gt]
        hits = np.zeros(len(preds))
        for j, (_, i, box) in enumerate(preds):
            if len(gt[i]):
                overlap = box_iou(box[None], gt[i])[0]
                overlap[used[i]] = -1
                best = int(overlap.argmax())
                if overlap[best] >= iou:
                    used[i][best] = True
                    hits[j] = 1
        tp = np.cumsum(hits)
        recall = tp / total
        precision = tp / np.arange(1, len(preds) + 1) if len(preds) else np.zeros(0)
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(preds) else precision
        points = np.linspace(0, 1, 101)
        at = np.searchsorted(recall, points, side="left")
        aps.append(float(np.mean([envelope[k] if k < len(envelope) else 0.0 for k in at])))
    return float(np.mean(aps))


class DetectionMAP(Metric):
    """Detection: mAP@0.5 of the candidate's detections against the reference's (pseudo-labels),
    or against ``labels`` given as ``[N, M, 6]`` detections (-1 rows padded). Both sides keep
    what a deployment keeps, the detections above :data:`CONFIDENCE`: a detector whose scores
    all fell below it finds nothing and scores 0, however well it still ranks its boxes."""

    name = "map50"
    labels_shape = "[N, M, 6] boxes (x1, y1, x2, y2, score, class; rows of -1 padding)"

    def __init__(self, layout: str) -> None:
        self.layout = layout

    def score(self, reference, candidate, labels=None):
        truth = _padded_rows(labels) if labels is not None else detections(reference, self.layout)
        found = detections(candidate, self.layout)
        return self._value(average_precision(found, truth), detections=int(sum(len(k) for k in found)),
                           reference_detections=int(sum(len(t) for t in truth)))


def _padded_rows(labels: np.ndarray) -> list[np.ndarray]:
    labels = np.asarray(labels, np.float64)
    return [image[image[:, 5] >= 0] for image in labels]


# ---------------------------------------------------------------- CTC sequences
def ctc_decode(output: np.ndarray, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of ``[N, T, K]``: argmax per step, repeats merged, blanks dropped."""
    best = np.asarray(output).argmax(axis=2)
    strings = []
    for row in best:
        merged = row[np.concatenate([[True], row[1:] != row[:-1]])]
        strings.append(tuple(int(t) for t in merged if t != blank))
    return strings


def edit_distance(a: tuple, b: tuple) -> int:
    """Levenshtein distance between two token sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


class CTCAgreement(Metric):
    """CTC recognition ``[N, T, K]``: the share of samples whose decoded string equals the
    original's (or the label sequence ``[N, L]``, -1 padded); ``cer`` is the character error
    rate against the same. ``blank``: the blank class; by default the class the original
    predicts most often over all steps (0 in PP-OCR, the last class in many torch CRNNs: a
    CTC model emits blank at most steps), reported as ``blank``."""

    name = "ctc"
    labels_shape = "[N, L] token ids (-1 padding)"

    def __init__(self, blank: int | None = None) -> None:
        self.blank = blank

    def blank_of(self, reference: np.ndarray) -> int:
        if self.blank is not None:
            return self.blank
        best = np.asarray(reference).argmax(axis=2).ravel()
        return int(np.bincount(best, minlength=np.shape(reference)[2]).argmax()) if best.size else 0

    def score(self, reference, candidate, labels=None):
        blank = self.blank_of(reference)
        got = ctc_decode(candidate, blank)
        if labels is not None:
            want = [tuple(int(t) for t in row if t >= 0) for row in np.asarray(labels).reshape(len(got), -1)]
        else:
            want = ctc_decode(reference, blank)
        same = np.mean([g == w for g, w in zip(got, want)]) if got else 1.0
        chars = sum(len(w) for w in want)
        cer = sum(edit_distance(g, w) for g, w in zip(got, want)) / chars if chars else 0.0
        return self._value(same, cer=float(cer), blank=blank)


# ---------------------------------------------------------------- dense maps
class MapIoU(Metric):
    """Dense maps ``[N, C, H, W]``: the mask of each sample (argmax over C; with one channel, the
    map above :data:`MAP_THRESHOLD`), IoU with the original's, mean over samples (1 when both
    are empty). Multi-class: the mean over the classes either mask holds."""

    name = "iou"
    labels_shape = "[N, H, W] class masks"

    def _masks(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        return (y[:, 0] > MAP_THRESHOLD).astype(np.int64) if y.shape[1] == 1 else y.argmax(axis=1)

    def score(self, reference, candidate, labels=None):
        ref = self._masks(reference) if labels is None else np.asarray(labels)
        got = self._masks(candidate)
        binary = np.asarray(reference).shape[1] == 1
        values = []
        for r, g in zip(ref, got):
            classes = [1] if binary else sorted(set(np.unique(r)) | set(np.unique(g)))
            ious = []
            for c in classes:
                inter, union = np.sum((r == c) & (g == c)), np.sum((r == c) | (g == c))
                ious.append(1.0 if union == 0 else inter / union)
            values.append(np.mean(ious))
        return self._value(np.mean(values) if values else 1.0)


# ---------------------------------------------------------------- choosing
SEQUENCE_OPS = ("Softmax", "LogSoftmax", "Add", "MatMul", "Gemm")
"""Ops that end a per-step classifier: a rank-3 output they compute is read as CTC ``[N, T, K]``."""


def task_of(shape: tuple, producer: str | None = None) -> str:
    """The metric ``auto`` picks for an output of ``shape`` (samples first), computed by op
    ``producer`` (the last op before reshapes and transposes, when known):

    * ``[N, K]`` → top1;
    * ``[N, D, 6]`` not from a Softmax → end-to-end detections;
    * ``[N, 4+K, A]`` (``A >= 8 (4+K)``) from a Concat → YOLO (``[N, A, 4+K]`` transposed);
    * ``[N, T, K]`` from a Softmax, LogSoftmax or a linear layer → CTC;
    * ``[N, C, H, W]`` with ``C <= 32`` (classes, or one probability map) → dense map IoU;
    * else cosine (embeddings, raw head tensors).
    """
    rank = len(shape)
    if rank == 2 and shape[1] > 1:
        return "top1"
    if rank == 3:
        if shape[2] in (6, 7) and producer not in ("Softmax", "LogSoftmax"):
            return "map50:e2e"
        if producer in ("Concat", None) and shape[1] >= 5 and shape[2] >= 8 * shape[1]:
            return "map50:yolo"
        if producer in ("Concat", None) and shape[2] >= 5 and shape[1] >= 8 * shape[2]:
            return "map50:yolo_t"
        if producer in SEQUENCE_OPS:
            return "ctc"
    if rank == 4 and shape[1] <= 32 and shape[2] > 1 and shape[3] > 1:
        return "iou"
    return "cosine"


def make(name: str) -> Metric:
    """The metric called ``name`` (``map50:yolo`` etc. name a detection layout).
    Errors: an unknown name."""
    base, _, layout = ALIASES.get(name, name).partition(":")
    if base == "top1":
        return Top1()
    if base == "map50":
        return DetectionMAP(layout or "yolo")
    if base == "ctc":
        return CTCAgreement()
    if base == "iou":
        return MapIoU()
    if base == "cosine":
        return Cosine()
    if base == "rel_mse":
        return RelMSE()
    raise OnnxPruneError(f"unknown metric {name!r}; choose one of auto, {', '.join(NAMES)}")


def choose(name: str, shape: tuple, producer: str | None = None, labels: np.ndarray | None = None) -> Metric:
    """The metric for one output: ``name`` (``auto``: :func:`task_of`). Errors: an unknown
    name; ``accuracy`` without labels; labels of a shape the metric cannot read."""
    if name == "accuracy" and labels is None:
        raise OnnxPruneError("metric accuracy needs 'labels' in the data")
    metric = make(task_of(shape, producer) if name == "auto" else name)
    if labels is not None:
        _check_labels(metric, shape, np.asarray(labels))
    return metric


def _check_labels(metric: Metric, shape: tuple, labels: np.ndarray) -> None:
    """Refuse labels the metric cannot read, or that cannot be real (a class the model lacks)."""
    rank = {"top1": 1, "ctc": 2, "map50": 3, "iou": 3}.get(metric.name)
    if rank is None:
        return
    if labels.ndim != rank or (metric.name != "map50" and not np.issubdtype(labels.dtype, np.integer)):
        raise OnnxPruneError(f"labels for metric {metric.name} are {metric.labels_shape}, got {labels.dtype} with "
                             f"shape {list(labels.shape)}")
    if isinstance(metric, Top1):
        k = int(np.prod(shape[1:]))
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise OnnxPruneError(f"labels hold class {int(labels.min()) if labels.min() < 0 else int(labels.max())}, "
                                 f"outside the model's {k} classes [0, {k})")
    if metric.name == "map50" and labels.shape[2] != 6:
        raise OnnxPruneError(f"box labels are [N, M, 6], got shape {list(labels.shape)}")


def producer_op(model, output: str) -> str | None:
    """The op computing ``output`` of ``model`` (an ``onnx.ModelProto``), looking through
    Reshape, Transpose, Squeeze, Unsqueeze, Identity and Cast."""
    producer = {o: n for n in model.graph.node for o in n.output}
    name = output
    for _ in range(16):
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type not in ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "Flatten"):
            return node.op_type
        name = node.input[0]
    return None
