"""Training targets of the RoI heads (Detectron2's ``label_and_sample_proposals``).

For one image with proposals ``P`` (from the RPN) and ground truth boxes ``G`` with class ids
``1..K``:

1. (training) append the ground-truth boxes to the proposals, so that every ground truth has
   at least one perfect proposal early in training;
2. match proposals to ground truth by IoU: foreground if the best IoU is ``>= fg_iou_threshold``
   (0.5), background if ``< bg_iou_threshold`` (0.5: no ignore band; a lower value ignores the
   proposals in between);
3. sample ``batch_size_per_image`` (512) of them with at most ``positive_fraction`` (25 %)
   foreground (``BalancedPositiveNegativeSampler``, explicit ``numpy.random.Generator``);
4. targets of the sampled RoIs, foreground first:
   class label ``gt_labels[matched]`` (foreground) or 0 (background); box regression target
   ``encode(gt_boxes[matched], proposal)`` with weights ``(10, 10, 5, 5)`` (foreground; zeros for
   background, which has no box loss); the matched ground-truth index (foreground; -1 for
   background), which picks the instance mask for the mask targets.

``build_roi_targets`` loops over the images of a batch (their numbers of proposals and ground
truths differ); everything inside one image is vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from npseg._device import array_module, ops_for_array
from npseg.ops._checks import check_bool, check_int, check_int_array, check_number

from .box_coder import BoxCoder, check_boxes
from .matcher import BACKGROUND, FOREGROUND, Matcher
from .sampler import check_rng, subsample_labels

__all__ = ["RoITargetConfig", "RoITargets", "build_roi_targets", "build_roi_targets_for_image",
           "add_gt_proposals"]


@dataclass(frozen=True)
class RoITargetConfig:
    """Matching and sampling of the RoI heads (Detectron2 / torchvision defaults)."""

    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    fg_iou_threshold: float = 0.5
    bg_iou_threshold: float = 0.5
    bbox_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    append_gt_boxes: bool = True

    def __post_init__(self):
        check_int(self.batch_size_per_image, "batch_size_per_image", minimum=0)
        check_number(self.positive_fraction, "positive_fraction", low=0.0, high=1.0)
        check_number(self.fg_iou_threshold, "fg_iou_threshold", low=0.0, high=1.0)
        check_number(self.bg_iou_threshold, "bg_iou_threshold", low=0.0, high=self.fg_iou_threshold)
        BoxCoder(self.bbox_reg_weights)
        check_bool(self.append_gt_boxes, "append_gt_boxes")


class RoITargets(NamedTuple):
    """The sampled RoIs of one image and their targets; foreground rows come first.

    ``proposals (S, 4)``, ``labels (S,)`` int64 (class 1..K, 0 background),
    ``regression_targets (S, 4)`` (zeros for background), ``matched_gt (S,)`` int64 (index into
    the image's ground truth; -1 for background).
    """

    proposals: Any
    labels: Any
    regression_targets: Any
    matched_gt: Any

    @property
    def num_foreground(self) -> int:
        return int((self.labels > 0).sum())


def add_gt_proposals(proposals, gt_boxes):
    """``proposals`` followed by the ground-truth boxes: ``(P + G, 4)``."""
    return array_module(proposals).concatenate([proposals, gt_boxes], axis=0)


def build_roi_targets_for_image(proposals, gt_boxes, gt_labels, rng,
                                config: RoITargetConfig = RoITargetConfig()) -> RoITargets:
    """Sampled RoIs and their targets for one image (see the module doc).

    ``proposals (P, 4)``, ``gt_boxes (G, 4)`` (same float dtype), ``gt_labels (G,)`` int in
    ``1..K``, ``rng`` a ``numpy.random.Generator``.
    """
    if not isinstance(config, RoITargetConfig):
        raise TypeError(f"config must be a RoITargetConfig, got {type(config).__name__}")
    check_boxes(proposals, "proposals")
    check_boxes(gt_boxes, "gt_boxes")
    if gt_boxes.dtype != proposals.dtype:
        raise TypeError(f"gt_boxes must have the dtype of proposals ({proposals.dtype}), "
                        f"got {gt_boxes.dtype}")
    check_int_array(gt_labels, "gt_labels", shape=(gt_boxes.shape[0],))
    check_rng(rng)
    xp = array_module(proposals)
    ops = ops_for_array(proposals)
    num_gt = gt_boxes.shape[0]
    if num_gt and int(gt_labels.min()) < 1:
        raise ValueError(f"gt_labels must be class ids >= 1 (0 is background), "
                         f"got minimum {int(gt_labels.min())}")

    if config.append_gt_boxes:
        proposals = add_gt_proposals(proposals, gt_boxes)
    if num_gt and proposals.shape[0]:
        iou = ops.box_iou(gt_boxes, proposals)                               # (G, P)
    else:
        iou = xp.zeros((num_gt, proposals.shape[0]), dtype=proposals.dtype)
    matcher = Matcher(config.fg_iou_threshold, config.bg_iou_threshold,
                      allow_low_quality_matches=False)
    matches, match_labels = matcher(iou)

    # Class of every proposal: its gt's class (foreground), 0 (background) or -1 (ignored).
    classes = xp.full(proposals.shape[0], -1, dtype=xp.int64)
    if num_gt:
        fg = match_labels == FOREGROUND
        classes[fg] = gt_labels[matches[fg]].astype(xp.int64)
    classes[match_labels == BACKGROUND] = 0

    pos_idx, neg_idx = subsample_labels(classes, config.batch_size_per_image,
                                        config.positive_fraction, rng)
    sampled = xp.concatenate([pos_idx, neg_idx])
    num_pos = int(pos_idx.size)

    boxes = proposals[sampled]
    labels = classes[sampled]
    matched_gt = xp.full(sampled.size, -1, dtype=xp.int64)
    matched_gt[:num_pos] = matches[pos_idx]
    targets = xp.zeros_like(boxes)
    if num_pos:
        coder = BoxCoder(config.bbox_reg_weights)
        targets[:num_pos] = coder.encode(gt_boxes[matches[pos_idx]], boxes[:num_pos])
    return RoITargets(boxes, labels, targets, matched_gt)


def build_roi_targets(proposals, gt_boxes, gt_labels, rng,
                      config: RoITargetConfig = RoITargetConfig()) -> list[RoITargets]:
    """``build_roi_targets_for_image`` for every image: lists of per-image arrays in, list out."""
    for name, value in (("proposals", proposals), ("gt_boxes", gt_boxes),
                        ("gt_labels", gt_labels)):
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{name} must be a list with one array per image, "
                            f"got {type(value).__name__}")
    if not len(proposals) == len(gt_boxes) == len(gt_labels):
        raise ValueError(f"proposals, gt_boxes and gt_labels must have one entry per image, got "
                         f"{len(proposals)}, {len(gt_boxes)}, {len(gt_labels)}")
    return [build_roi_targets_for_image(p, b, c, rng, config)
            for p, b, c in zip(proposals, gt_boxes, gt_labels)]
