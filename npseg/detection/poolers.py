"""RoI pooling over an FPN: which level serves which RoI, and RoIAlign on all levels at once.

FPN paper, eq. (1) (torchvision's ``LevelMapper``): a RoI of width ``w`` and height ``h`` (image
pixels) is pooled from level

    k = floor(k0 + log2(sqrt(w * h) / 224) + eps),   clamped to [k_min, k_max]

with the canonical level ``k0 = 4`` for the canonical ImageNet size 224 and ``eps = 1e-6`` so that
a box of exactly ``224 * 2**n`` pixels lands on level ``k0 + n`` despite rounding. Level ``k`` has
stride ``2**k``: spatial scale ``1 / 2**k`` (P2..P5: k_min = 2, k_max = 5).
"""

from __future__ import annotations

import math

from npseg._device import array_module, ops_for_array
from npseg.ops._checks import check_float_array, check_int, check_number, pair

from .box_coder import check_boxes

__all__ = ["assign_levels", "levels_from_scales", "multiscale_roi_align"]

LEVEL_EPS = 1e-6


def assign_levels(boxes, k_min: int, k_max: int, canonical_size: float = 224,
                  canonical_level: int = 4, eps: float = LEVEL_EPS):
    """The FPN level ``k`` (an int64 array ``(K,)``, values in ``[k_min, k_max]``) of each box.

    ``boxes`` is ``(K, 4)`` ``(x1, y1, x2, y2)`` in image pixels. ``k = floor(canonical_level +
    log2(sqrt(area) / canonical_size) + eps)`` clamped to ``[k_min, k_max]``; a zero-area box goes
    to ``k_min``. The result is the level itself: index a list of P``k_min``..P``k_max`` features
    with ``k - k_min``.
    """
    check_boxes(boxes, "boxes")
    k_min = check_int(k_min, "k_min")
    k_max = check_int(k_max, "k_max", minimum=k_min)
    canonical_size = check_number(canonical_size, "canonical_size", low=0.0, low_open=True)
    canonical_level = check_int(canonical_level, "canonical_level")
    eps = check_number(eps, "eps", low=0.0)
    xp = array_module(boxes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    tiny = xp.finfo(boxes.dtype).tiny                      # log2(0) would be -inf: clamp instead
    size = xp.sqrt(xp.maximum(area, tiny))
    k = xp.floor(canonical_level + xp.log2(size / canonical_size) + eps)
    return xp.clip(k, k_min, k_max).astype(xp.int64)


def levels_from_scales(scales) -> tuple[int, int]:
    """``(k_min, k_max)`` from the spatial scales ``1 / 2**k`` of consecutive levels."""
    if not isinstance(scales, (tuple, list)) or not scales:
        raise ValueError(f"scales must be a non-empty sequence (one per level), got {scales!r}")
    levels = []
    for s in scales:
        s = check_number(s, "scales", low=0.0, low_open=True)
        k = -math.log2(s)
        if abs(k - round(k)) > 1e-6:
            raise ValueError(f"scales must be powers of 2 (1 / stride), got {scales!r}")
        levels.append(int(round(k)))
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"scales must be consecutive FPN levels 1/2**k_min, ..., 1/2**k_max, "
                         f"got {scales!r}")
    return levels[0], levels[-1]


def multiscale_roi_align(features, rois, output_size, scales, sampling_ratio: int = -1,
                         aligned: bool = False, canonical_size: float = 224,
                         canonical_level: int = 4):
    """RoIAlign of every RoI from its own FPN level; results in RoI order.

    ``features``: one ``(N, C, H_l, W_l)`` array per level, finest first; ``scales``: their
    spatial scales ``1 / 2**k`` (consecutive levels, e.g. ``(1/4, 1/8, 1/16, 1/32)``).
    ``rois``: ``(K, 5)`` ``(batch_index, x1, y1, x2, y2)`` in image pixels. Each RoI's level is
    ``assign_levels`` of its box; ``roi_align_forward`` then runs once per level on that level's
    RoIs (a Python loop over the levels only) and the results are put back in RoI order.
    Returns ``(K, C, out_h, out_w)``. Forward only (the model pools at Tensor level).
    """
    if not isinstance(features, (tuple, list)) or not features:
        raise ValueError("features must be a non-empty list of (N, C, H, W) arrays, one per level")
    if not isinstance(scales, (tuple, list)) or len(scales) != len(features):
        raise ValueError(f"scales must have one entry per feature level ({len(features)}), "
                         f"got {scales!r}")
    k_min, k_max = levels_from_scales(scales)
    first = check_float_array(features[0], "features[0]", ndim=4, layout="N, C, H, W")
    for level, feat in enumerate(features):
        check_float_array(feat, f"features[{level}]", ndim=4, layout="N, C, H, W")
        if feat.shape[:2] != first.shape[:2] or feat.dtype != first.dtype:
            raise ValueError(f"features[{level}] must share N, C and dtype with features[0] "
                             f"({tuple(first.shape[:2])}, {first.dtype}), got "
                             f"{tuple(feat.shape[:2])}, {feat.dtype}")
    check_float_array(rois, "rois", ndim=2, layout="(K, 5) rois (batch_index, x1, y1, x2, y2)")
    if rois.shape[1] != 5:
        raise ValueError(f"rois must have shape (K, 5) (batch_index, x1, y1, x2, y2), "
                         f"got {tuple(rois.shape)}")
    check_boxes(rois[:, 1:], "rois[:, 1:] (x1, y1, x2, y2)")
    out_h, out_w = pair(output_size, "output_size", minimum=1)

    xp = array_module(first)
    ops = ops_for_array(first)
    level_index = assign_levels(rois[:, 1:], k_min, k_max, canonical_size, canonical_level) - k_min
    out = xp.zeros((rois.shape[0], first.shape[1], out_h, out_w), dtype=first.dtype)
    for level, (feat, scale) in enumerate(zip(features, scales)):
        idx = xp.nonzero(level_index == level)[0]
        if idx.size == 0:
            continue
        pooled, _ = ops.roi_align_forward(feat, rois[idx], (out_h, out_w), spatial_scale=scale,
                                          sampling_ratio=sampling_ratio, aligned=aligned)
        out[idx] = pooled
    return out
