"""Metrics: semantic segmentation (confusion matrix, IoU) and COCO-style detection AP."""

from npseg.metrics.coco_eval import evaluate_detections, to_coco_results
from npseg.metrics.semantic import (SegmentationMetric, confusion_matrix, frequency_weighted_iou,
                                    mean_accuracy, mean_iou, per_class_iou, pixel_accuracy)

__all__ = [
    "confusion_matrix", "pixel_accuracy", "per_class_iou", "mean_iou", "mean_accuracy",
    "frequency_weighted_iou", "SegmentationMetric",
    "evaluate_detections", "to_coco_results",
]
