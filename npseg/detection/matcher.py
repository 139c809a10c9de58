"""Matching predictions (anchors or proposals) to ground-truth boxes by IoU.

Given the ``(G, N)`` IoU matrix of ``G`` ground-truth boxes against ``N`` predictions, every
prediction ``j`` gets the ground truth it overlaps most, ``matches[j] = argmax_g iou[g, j]``, and
a label from that best IoU ``m_j = max_g iou[g, j]``:

    label  1  (foreground)  if m_j >= high_threshold
    label -1  (ignored)     if low_threshold <= m_j < high_threshold
    label  0  (background)  if m_j < low_threshold

RPN: ``high = 0.7, low = 0.3, allow_low_quality_matches=True``. RoI heads: ``high = low = 0.5``
(no ignore band: ``>= 0.5`` foreground, else background).

``allow_low_quality_matches`` (Faster R-CNN, Detectron2): a ground truth whose best IoU is below
``high_threshold`` would otherwise get no positive at all, so for every ground truth ``g`` the
predictions with ``iou[g, j] == max_j iou[g, j]`` (all ties) are made positive too. As in
Detectron2, only the label changes: ``matches[j]`` stays the argmax over ground truths.
One deliberate difference: a ground truth whose best IoU is 0 (it overlaps no prediction at
all) rescues nothing, instead of making every prediction positive.

No ground truth (``G = 0``): every prediction is background, ``matches`` all 0.
"""

from __future__ import annotations

from npseg._device import array_module
from npseg.ops._checks import check_bool, check_finite, check_float_array, check_number

__all__ = ["Matcher", "FOREGROUND", "BACKGROUND", "IGNORE"]

FOREGROUND, BACKGROUND, IGNORE = 1, 0, -1


class Matcher:
    """``Matcher(high_threshold, low_threshold, allow_low_quality_matches)``; see the module doc.

    ``matcher(iou)`` with ``iou`` a float ``(G, N)`` array returns ``(matches, labels)``: int64
    ``(N,)`` index of the matched ground truth, int8 ``(N,)`` label in ``{1, 0, -1}``.
    """

    def __init__(self, high_threshold: float = 0.7, low_threshold: float = 0.3,
                 allow_low_quality_matches: bool = False):
        self.high_threshold = check_number(high_threshold, "high_threshold", low=0.0, high=1.0)
        self.low_threshold = check_number(low_threshold, "low_threshold", low=0.0,
                                          high=self.high_threshold)
        self.allow_low_quality_matches = check_bool(allow_low_quality_matches,
                                                    "allow_low_quality_matches")

    def __repr__(self):
        return (f"Matcher(high_threshold={self.high_threshold}, "
                f"low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, iou):
        check_float_array(iou, "iou", ndim=2, layout="(G, N): ground truths x predictions")
        check_finite(iou, "iou")
        xp = array_module(iou)
        num_gt, num_pred = iou.shape
        if num_gt == 0:
            return (xp.zeros(num_pred, dtype=xp.int64),
                    xp.full(num_pred, BACKGROUND, dtype=xp.int8))
        if num_pred == 0:
            return xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.int8)

        matches = xp.argmax(iou, axis=0)                            # (N,) best ground truth
        best = xp.max(iou, axis=0)                                  # (N,) its IoU
        labels = xp.full(num_pred, IGNORE, dtype=xp.int8)
        labels[best >= self.high_threshold] = FOREGROUND
        labels[best < self.low_threshold] = BACKGROUND

        if self.allow_low_quality_matches:
            best_per_gt = xp.max(iou, axis=1, keepdims=True)        # (G, 1)
            is_best = (iou == best_per_gt) & (best_per_gt > 0)      # (G, N): every tie counts
            labels[xp.any(is_best, axis=0)] = FOREGROUND
        return matches.astype(xp.int64), labels
