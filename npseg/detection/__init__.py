"""npseg.detection: the Mask R-CNN pipeline below the model, on arrays of either device.

anchors      ``AnchorGenerator``: per-level anchors in the RPN head's ``(y, x, anchor)`` order
box_coder    ``BoxCoder``: boxes <-> deltas with a head's weights and clamp (wraps the ops)
matcher      ``Matcher``: IoU matrix -> matched ground truth and label 1 / 0 / -1
sampler      ``BalancedPositiveNegativeSampler``: positives/negatives of a training batch
proposals    ``generate_proposals``: RPN outputs -> top-k, decode, clip, NMS per level, top-k
poolers      ``assign_levels`` (FPN level of a RoI), ``multiscale_roi_align``
roi_targets  ``build_roi_targets``: append gt, match at 0.5, sample 512 at 25 %, targets
masks        ``mask_targets`` (28 x 28 RoIAlign crops of instance masks), ``paste_masks_in_image``

Everything takes NumPy or CuPy arrays and returns arrays of the same module: light glue through
``array_module(x)``, heavy work (IoU, NMS, RoIAlign, box coding) through the ops package of the
array's device. Randomness comes from an explicit ``numpy.random.Generator``.
"""

from .anchors import (DEFAULT_ASPECT_RATIOS, DEFAULT_SIZES, DEFAULT_STRIDES, AnchorGenerator,
                      base_anchors, generate_anchors, grid_anchors)
from .box_coder import DEFAULT_SCALE_CLAMP, BoxCoder, check_boxes
from .masks import DEFAULT_MASK_SIZE, mask_targets, paste_masks_in_image
from .matcher import BACKGROUND, FOREGROUND, IGNORE, Matcher
from .poolers import assign_levels, levels_from_scales, multiscale_roi_align
from .proposals import (ProposalConfig, clip_boxes_to_image, flatten_rpn_outputs,
                        generate_proposals, nonempty_boxes)
from .roi_targets import (RoITargetConfig, RoITargets, add_gt_proposals, build_roi_targets,
                          build_roi_targets_for_image)
from .sampler import BalancedPositiveNegativeSampler, subsample_labels

__all__ = [
    "AnchorGenerator", "base_anchors", "grid_anchors", "generate_anchors",
    "DEFAULT_SIZES", "DEFAULT_STRIDES", "DEFAULT_ASPECT_RATIOS",
    "BoxCoder", "check_boxes", "DEFAULT_SCALE_CLAMP",
    "Matcher", "FOREGROUND", "BACKGROUND", "IGNORE",
    "BalancedPositiveNegativeSampler", "subsample_labels",
    "ProposalConfig", "generate_proposals", "flatten_rpn_outputs", "clip_boxes_to_image",
    "nonempty_boxes",
    "assign_levels", "levels_from_scales", "multiscale_roi_align",
    "RoITargetConfig", "RoITargets", "build_roi_targets", "build_roi_targets_for_image",
    "add_gt_proposals",
    "mask_targets", "paste_masks_in_image", "DEFAULT_MASK_SIZE",
]
