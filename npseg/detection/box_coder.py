"""The box coder: boxes <-> regression deltas, with the weights and the clamp of one head.

Faster R-CNN regresses a box ``(x1, y1, x2, y2)`` relative to a reference box (an anchor or a
proposal) of width ``w_a = x2 - x1``, height ``h_a``, centre ``(x_a, y_a)``:

    dx = wx * (x - x_a) / w_a        dy = wy * (y - y_a) / h_a
    dw = ww * log(w / w_a)           dh = wh * log(h / h_a)

and decodes the other way, with ``dw, dh`` clamped to ``scale_clamp = log(1000 / 16)`` so that
``exp`` cannot overflow. The RPN uses weights ``(1, 1, 1, 1)``, the box head ``(10, 10, 5, 5)``.

The arithmetic lives in the ops (``encode_boxes`` / ``decode_boxes`` of ``npseg.ops`` or
``npseg_gpu.ops``, looked up from the array); this class only remembers the weights and the clamp,
as torchvision's ``BoxCoder`` does. ``check_boxes`` is the box validation the whole
``npseg.detection`` package shares.
"""

from __future__ import annotations

import math

from npseg._device import array_module, ops_for_array
from npseg.ops._checks import check_finite, check_float_array, check_number

__all__ = ["BoxCoder", "check_boxes", "DEFAULT_SCALE_CLAMP"]

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def check_boxes(boxes, name: str, ordered: bool = True):
    """Check ``boxes`` is a finite float ``(K, 4)`` array of ``(x1, y1, x2, y2)``.

    With ``ordered`` (the default) every box must also have ``x2 >= x1`` and ``y2 >= y1``
    (zero-width boxes are allowed). Raises a ``TypeError``/``ValueError`` naming ``name``.
    """
    check_float_array(boxes, name, ndim=2, layout="(K, 4) boxes (x1, y1, x2, y2)")
    if boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (K, 4) (x1, y1, x2, y2), "
                         f"got {tuple(boxes.shape)}")
    check_finite(boxes, name)
    if ordered and boxes.shape[0]:
        xp = array_module(boxes)
        bad = int(xp.count_nonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])))
        if bad:
            raise ValueError(f"{name} must have x2 >= x1 and y2 >= y1 in every box, "
                             f"got {bad} box(es) with x2 < x1 or y2 < y1")
    return boxes


class BoxCoder:
    """Encode/decode boxes with fixed ``weights = (wx, wy, ww, wh)`` and a ``scale_clamp``.

    ``encode(reference_boxes, proposals)`` -> deltas ``(K, 4)``: the deltas that move each
    proposal onto its reference (ground-truth) box (torchvision's ``BoxCoder.encode`` order).
    ``decode(deltas, boxes)`` -> boxes: ``deltas`` is ``(K, 4)`` or ``(K, C*4)`` (one box per
    class, as the box head predicts), the result ``(K, 4)`` or ``(K, C, 4)``.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if not isinstance(weights, (tuple, list)) or len(weights) != 4:
            raise ValueError(f"weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(check_number(w, "weights", low=0.0, low_open=True) for w in weights)
        self.scale_clamp = check_number(scale_clamp, "scale_clamp")

    def __repr__(self):
        return f"BoxCoder(weights={self.weights}, scale_clamp={self.scale_clamp:.4f})"

    def encode(self, reference_boxes, proposals):
        """Deltas ``(K, 4)`` with ``decode(encode(g, p), p) == g`` (up to the clamp)."""
        check_boxes(reference_boxes, "reference_boxes", ordered=False)
        check_boxes(proposals, "proposals", ordered=False)
        if reference_boxes.shape != proposals.shape:
            raise ValueError("reference_boxes and proposals must have the same shape (K, 4), got "
                             f"{tuple(reference_boxes.shape)} and {tuple(proposals.shape)}")
        return ops_for_array(proposals).encode_boxes(reference_boxes, proposals, self.weights)

    def decode(self, deltas, boxes):
        """Apply ``deltas`` (``(K, 4)`` or ``(K, C*4)``) to ``boxes`` ``(K, 4)``."""
        check_float_array(deltas, "deltas", ndim=2, layout="(K, 4) or (K, C*4)")
        check_boxes(boxes, "boxes", ordered=False)
        k, width = deltas.shape
        if width == 0 or width % 4 or k != boxes.shape[0]:
            raise ValueError(f"deltas must have shape ({boxes.shape[0]}, C*4) to match boxes "
                             f"{tuple(boxes.shape)}, got {tuple(deltas.shape)}")
        classes = width // 4
        if k == 0:                                 # nothing to decode
            out = deltas.copy()
        else:
            out = ops_for_array(boxes).decode_boxes(deltas, boxes, self.weights,
                                                    scale_clamp=self.scale_clamp)
        return out if classes == 1 else out.reshape(k, classes, 4)
