"""npseg.metrics.semantic: confusion matrix, pixel accuracy, IoU, the accumulator."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npseg.metrics import (SegmentationMetric, confusion_matrix, frequency_weighted_iou,
                           mean_accuracy, mean_iou, per_class_iou, pixel_accuracy)


def test_hand_worked_example_three_classes():
    target = np.array([[0, 0, 1],
                       [1, 2, 2]])
    pred = np.array([[0, 1, 1],
                     [1, 2, 0]])
    # (truth, prediction) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 1]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)
    # IoU_0 = 1 / (2 + 2 - 1), IoU_1 = 2 / (2 + 3 - 2), IoU_2 = 1 / (2 + 1 - 1)
    np.testing.assert_allclose(per_class_iou(cm), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert mean_accuracy(cm) == pytest.approx((1 / 2 + 2 / 2 + 1 / 2) / 3)
    assert frequency_weighted_iou(cm) == pytest.approx((2 * 1 / 3 + 2 * 2 / 3 + 2 * 1 / 2) / 6)


def test_hand_worked_example_ignore_and_absent_classes():
    target = np.array([[0, 255, 1],
                       [1, 0, 255]])
    pred = np.array([[0, 3, 1],
                     [0, 0, 2]])  # classes 2 and 3 only appear on ignored pixels
    cm = confusion_matrix(pred, target, 4)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 2
    expected[1, 1] = 1
    expected[1, 0] = 1
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 4  # the two ignored pixels are not counted
    assert pixel_accuracy(cm) == pytest.approx(3 / 4)
    iou = per_class_iou(cm)
    np.testing.assert_allclose(iou[:2], [2 / 3, 1 / 2])
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 2)  # absent classes excluded


def test_class_only_predicted_counts_as_zero():
    target = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 1, 1])
    cm = confusion_matrix(pred, target, 3)
    iou = per_class_iou(cm)
    assert iou[0] == pytest.approx(0.5) and iou[1] == 0.0 and np.isnan(iou[2])
    assert mean_iou(cm) == pytest.approx(0.25)


def test_custom_ignore_index_and_none():
    target = np.array([0, 1, -1, 1])
    pred = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2, ignore_index=-1), [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="target has value -1"):
        confusion_matrix(pred, target, 2, ignore_index=None)


def test_bad_input():
    t = np.zeros((2, 2), np.int64)
    with pytest.raises(ValueError, match="target has value 3"):
        confusion_matrix(t, np.full((2, 2), 3), 3)
    with pytest.raises(ValueError, match="pred has value 7"):
        confusion_matrix(np.full((2, 2), 7), t, 3)
    with pytest.raises(ValueError, match="pred has value -2"):
        confusion_matrix(np.full((2, 2), -2), t, 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 3), np.int64), t, 3)
    with pytest.raises(TypeError, match="pred must be an integer array"):
        confusion_matrix(np.zeros((2, 2)), t, 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(t, t, 0)
    with pytest.raises(ValueError, match="square"):
        per_class_iou(np.zeros((2, 3)))


def test_empty_matrix_is_nan():
    cm = np.zeros((3, 3), np.int64)
    assert math.isnan(pixel_accuracy(cm)) and math.isnan(mean_iou(cm))


@given(st.integers(1, 5), st.integers(0, 40), st.integers(0, 2 ** 31 - 1))
def test_confusion_matrix_matches_counting(c, n, seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, n)
    target[rng.random(n) < 0.2] = 255
    pred = rng.integers(0, c, n)
    cm = confusion_matrix(pred, target, c)
    reference = np.zeros((c, c), np.int64)
    for t, p in zip(target.tolist(), pred.tolist()):
        if t != 255:
            reference[t, p] += 1
    np.testing.assert_array_equal(cm, reference)
    iou = per_class_iou(cm)
    for k in range(c):
        inter = np.sum((target == k) & (pred == k))
        union = np.sum(((target == k) | (pred == k)) & (target != 255))
        if union == 0:
            assert np.isnan(iou[k])
        else:
            assert iou[k] == pytest.approx(inter / union)


def test_perfect_prediction():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, (2, 8, 8))  # class 3 never appears
    cm = confusion_matrix(target, target, 5)
    iou = per_class_iou(cm)
    np.testing.assert_array_equal(iou[:3], 1.0)
    assert np.isnan(iou[3:]).all()
    assert mean_iou(cm) == 1.0 and pixel_accuracy(cm) == 1.0


def test_segmentation_metric_accumulates():
    rng = np.random.default_rng(1)
    targets = [rng.integers(0, 3, (2, 5, 6)) for _ in range(3)]
    preds = [np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 3, t.shape)) for t in targets]
    targets[0][0, 0, :3] = 255
    metric = SegmentationMetric(4, class_names=["bg", "a", "b", "c"])
    for p, t in zip(preds, targets):
        metric.update(p, t)
    cm = confusion_matrix(np.concatenate(preds), np.concatenate(targets), 4)
    np.testing.assert_array_equal(metric.cm, cm)
    result = metric.compute()
    assert result["miou"] == pytest.approx(mean_iou(cm))
    assert result["pixel_accuracy"] == pytest.approx(pixel_accuracy(cm))
    assert result["per_class_iou"][3] is None  # class 3 absent
    assert result["per_class_iou"][:3] == pytest.approx(per_class_iou(cm)[:3].tolist())
    assert result["class_names"] == ["bg", "a", "b", "c"]
    json.dumps(result, allow_nan=False)
    metric.reset()
    assert metric.cm.sum() == 0
    assert metric.compute()["miou"] is None


def test_segmentation_metric_takes_scores():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    target = rng.integers(0, 3, (2, 4, 5))
    metric = SegmentationMetric(3)
    metric.update(logits, target)
    np.testing.assert_array_equal(metric.cm, confusion_matrix(logits.argmax(1), target, 3))
    with pytest.raises(ValueError, match="channels"):
        SegmentationMetric(4).update(logits, target)
