"""Semantic segmentation metrics from a confusion matrix.

With ``C`` classes, the confusion matrix ``M`` is ``(C, C)``: ``M[t, p]`` counts the pixels of
true class ``t`` predicted as ``p`` (rows = truth, columns = prediction), over all pixels whose
truth is not the ignore index. From it, with ``TP_c = M[c, c]``:

* pixel accuracy  = ``sum_c TP_c / sum M``;
* IoU of class c  = ``TP_c / (sum_p M[c, p] + sum_t M[t, c] - TP_c)`` (intersection over
  union of "truth is c" and "prediction is c"); undefined (NaN) for a class in neither;
* mean IoU        = the mean of the defined IoUs (NaN classes excluded; a class that is only
  predicted, never true, counts with IoU 0);
* mean accuracy   = the mean over classes present in the truth of ``TP_c / sum_p M[c, p]``;
* frequency-weighted IoU = ``sum_c freq_c IoU_c`` with ``freq_c`` the share of truth pixels
  (the four measures of the FCN paper).
"""

from __future__ import annotations

import math

import numpy as np

from npseg._device import array_module

__all__ = [
    "confusion_matrix",
    "pixel_accuracy",
    "per_class_iou",
    "mean_iou",
    "mean_accuracy",
    "frequency_weighted_iou",
    "SegmentationMetric",
]


def _to_host(x):
    return x.get() if array_module(x) is not np else np.asarray(x)


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """int64 ``(C, C)`` confusion matrix of integer maps ``pred`` and ``target`` (same shape).

    ``M = bincount(C * target + pred)`` over the pixels where ``target != ignore_index``,
    reshaped to ``(C, C)``. Values outside ``[0, C)`` (other than ignored target pixels) are a
    ``ValueError``. NumPy or CuPy inputs; the result is a NumPy array.
    """
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    xp = array_module(target)
    for name, a in (("pred", pred), ("target", target)):
        if not hasattr(a, "dtype") or not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise TypeError(f"{name} must be an integer array of class indices, got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    pred = pred.reshape(-1).astype(xp.int64)
    target = target.reshape(-1).astype(xp.int64)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, a in (("target", target), ("pred", pred)):
        bad = (a < 0) | (a >= num_classes)
        if bool(bad.any()):
            value = int(a[bad][0])
            raise ValueError(
                f"{name} has value {value} outside [0, num_classes={num_classes})"
                + (f" and not the ignore_index {ignore_index}" if name == "target" else ""))
    counts = xp.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return _to_host(counts).astype(np.int64).reshape(num_classes, num_classes)


def _check_cm(cm) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (C, C) confusion matrix, got shape {cm.shape}")
    return cm.astype(np.float64)


def pixel_accuracy(cm) -> float:
    """``trace(M) / sum(M)``; NaN for an empty matrix."""
    cm = _check_cm(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else math.nan


def per_class_iou(cm) -> np.ndarray:
    """float64 ``(C,)``: ``TP / (row + column - TP)``, NaN where the class is in neither."""
    cm = _check_cm(cm)
    tp = np.diag(cm)
    union = cm.sum(axis=1) + cm.sum(axis=0) - tp
    iou = np.full(len(tp), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def mean_iou(cm) -> float:
    """Mean of the defined per-class IoUs (classes absent from truth and prediction excluded)."""
    return _nanmean(per_class_iou(cm))


def mean_accuracy(cm) -> float:
    """Mean over the classes present in the truth of ``TP_c / (pixels of class c)``."""
    cm = _check_cm(cm)
    rows = cm.sum(axis=1)
    acc = np.full(len(rows), np.nan)
    np.divide(np.diag(cm), rows, out=acc, where=rows > 0)
    return _nanmean(acc)


def frequency_weighted_iou(cm) -> float:
    """``sum_c freq_c IoU_c``, ``freq_c`` = share of truth pixels of class c (absent: weight 0)."""
    cm = _check_cm(cm)
    total = cm.sum()
    if total == 0:
        return math.nan
    freq = cm.sum(axis=1) / total
    iou = per_class_iou(cm)
    return float(np.sum(freq[freq > 0] * iou[freq > 0]))


def _json_float(x: float):
    return None if math.isnan(x) else float(x)


class SegmentationMetric:
    """Accumulates a confusion matrix over batches.

    ``update(pred, target)``: ``pred`` is ``(N, H, W)`` class indices or ``(N, C, H, W)`` scores
    (arg-maxed over C), ``target`` ``(N, H, W)``. ``compute()`` returns a JSON-ready dict:
    ``miou``, ``pixel_accuracy``, ``mean_accuracy``, ``fw_iou``, ``per_class_iou`` (a list,
    ``None`` for classes absent from truth and prediction; undefined measures are ``None`` too)
    and ``class_names`` when given.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, class_names=None):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names, expected {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"pred scores have {pred.shape[1]} channels, expected "
                                 f"num_classes={self.num_classes}")
            pred = pred.argmax(axis=1)
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict:
        result = {
            "miou": _json_float(mean_iou(self.cm)),
            "pixel_accuracy": _json_float(pixel_accuracy(self.cm)),
            "mean_accuracy": _json_float(mean_accuracy(self.cm)),
            "fw_iou": _json_float(frequency_weighted_iou(self.cm)),
            "per_class_iou": [_json_float(v) for v in per_class_iou(self.cm)],
        }
        if self.class_names is not None:
            result["class_names"] = list(self.class_names)
        return result
