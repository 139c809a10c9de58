"""Box utilities of the detectors: IoU, non-maximum suppression, box coding.

Plain functions (no gradients). Boxes are ``(x1, y1, x2, y2)`` in input-image pixels, rows of a
``(K, 4)`` float array; a box's width is ``x2 - x1`` and its height ``y2 - y1`` (no ``+ 1``),
so its area is ``(x2 - x1)(y2 - y1)``.

The glue is written against the array module of the input (``xp = array_module(boxes)``: NumPy
here, CuPy on the GPU), so ``npseg_gpu`` can reuse what it has no kernel for.

Box coding (Faster R-CNN). A proposal (or anchor) ``P`` and a box ``G`` are described by their
centres and sizes, ``x = x1 + 0.5 w``, ``y = y1 + 0.5 h``, ``w = x2 - x1``, ``h = y2 - y1``;
the deltas that move ``P`` onto ``G`` are, with weights ``(w_x, w_y, w_w, w_h)``::

    t_x = w_x (G_x - P_x) / P_w        t_w = w_w log(G_w / P_w)
    t_y = w_y (G_y - P_y) / P_h        t_h = w_h log(G_h / P_h)

and decoding inverts them: ``G_x = P_w d_x + P_x``, ``G_w = P_w exp(d_w)`` with
``d = t / weights``. The RPN uses weights ``(1, 1, 1, 1)``, the box head ``(10, 10, 5, 5)``.
"""

from __future__ import annotations

import math

import numpy as np

from npseg._device import array_module
from npseg.ops._checks import (check_finite, check_float_array, check_int_array, check_number,
                               check_same_dtype, check_shape)

__all__ = ["box_iou", "nms", "batched_nms", "encode_boxes", "decode_boxes"]

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------- argument checks

def _check_boxes(boxes, name: str, valid: bool = False):
    """A finite float ``(K, 4)`` array; with ``valid``, every box has ``x2 >= x1``, ``y2 >= y1``."""
    check_float_array(boxes, name, ndim=2, layout="K, 4")
    if boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (K, 4) (x1, y1, x2, y2), "
                         f"got {tuple(boxes.shape)}")
    check_finite(boxes, name)
    if valid and boxes.shape[0]:
        xp = array_module(boxes)
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bool(xp.any(bad)):
            k = int(xp.argmax(bad))
            raise ValueError(f"{name} must have x2 >= x1 and y2 >= y1, got box {k}: "
                             f"{[float(v) for v in boxes[k]]}")
    return boxes


def _check_scores(scores, boxes, name: str = "scores"):
    check_float_array(scores, name, ndim=1, layout="K")
    check_shape(scores, name, (boxes.shape[0],))
    check_same_dtype(boxes, "boxes", **{name: scores})
    check_finite(scores, name)
    return scores


def _check_weights(weights) -> tuple[float, float, float, float]:
    if not isinstance(weights, (tuple, list)) or len(weights) != 4:
        raise TypeError(f"weights must be a (wx, wy, ww, wh) tuple of 4 numbers, got {weights!r}")
    return tuple(check_number(w, f"weights[{i}]", low=0, low_open=True)
                 for i, w in enumerate(weights))


def _check_positive_size(boxes, name: str):
    """Box coding divides by widths and takes logs: sizes must be > 0."""
    xp = array_module(boxes)
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if boxes.shape[0] and bool(xp.any(bad)):
        k = int(xp.argmax(bad))
        raise ValueError(f"{name} must have positive width and height (x2 > x1, y2 > y1), "
                         f"got box {k}: {[float(v) for v in boxes[k]]}")


# ------------------------------------------------------------------------------------------ IoU

def _area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_matrix(a, b):
    """IoU of every box of ``a`` (K, 4) with every box of ``b`` (M, 4), unchecked."""
    xp = array_module(a)
    top_left = xp.maximum(a[:, None, :2], b[None, :, :2])        # (K, M, 2)
    bottom_right = xp.minimum(a[:, None, 2:], b[None, :, 2:])    # (K, M, 2)
    wh = xp.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    # union == 0 only for two zero-area boxes; their intersection is 0 too: IoU 0, not NaN
    return inter / xp.where(union > 0, union, 1)


def box_iou(a, b):
    """Intersection over union of every pair of boxes.

    ``a`` (K, 4) and ``b`` (M, 4), ``(x1, y1, x2, y2)`` with ``x2 >= x1``, ``y2 >= y1``, same
    float dtype. Returns ``(K, M)`` with::

        inter = max(0, min(x2a, x2b) - max(x1a, x1b)) * max(0, min(y2a, y2b) - max(y1a, y1b))
        IoU   = inter / (area_a + area_b - inter)          (0 where the union is empty)
    """
    _check_boxes(a, "a", valid=True)
    _check_boxes(b, "b", valid=True)
    check_same_dtype(a, "a", b=b)
    return _iou_matrix(a, b)


# ---------------------------------------------------------------------------------------- NMS

def _suppresses(a, b, iou_threshold, label_a=None, label_b=None):
    """``(p, m)``: does box ``a[:, i]`` suppress box ``b[:, j]`` (IoU > threshold, same label)?

    ``a`` (5, p) and ``b`` (5, m) hold ``x1, y1, x2, y2, area`` as rows. A zero union (two
    zero-area boxes) gives 0/0 = NaN, and NaN > threshold is False: such boxes never suppress
    one another, as box_iou's IoU of 0 says.
    """
    xp = array_module(a)
    w = xp.minimum(a[2][:, None], b[2]) - xp.maximum(a[0][:, None], b[0])
    h = xp.minimum(a[3][:, None], b[3]) - xp.maximum(a[1][:, None], b[1])
    inter = xp.maximum(w, 0) * xp.maximum(h, 0)
    hit = inter / (a[4][:, None] + b[4] - inter) > iou_threshold
    if label_a is not None:
        hit &= label_a[:, None] == label_b
    return hit


def _greedy_nms(boxes, scores, iou_threshold, idxs=None, block=32):
    """Greedy NMS; with ``idxs`` a box only suppresses boxes of its own category.

    The definition: visit the boxes by decreasing score (ties: lower index first, a stable
    sort as torchvision); keep the best box still in the running and drop every box in the
    running whose IoU with it is ``> iou_threshold``; repeat.

    The same result with fewer Python iterations: if the first ``r`` boxes in the running do
    not suppress one another, the definition keeps all ``r`` one after the other (none can
    drop the next), so each iteration keeps that whole run at once (looked for among the next
    ``block`` boxes, at least one box) and drops, in one vectorized IoU of the run against the
    rest, every box the run suppresses. The box that ends the run is suppressed by it.
    """
    xp = array_module(boxes)
    iou_threshold = xp.float64(iou_threshold)   # compare as torchvision: float IoU vs double
    order = xp.argsort(-scores, kind="stable")
    candidates = xp.empty((5, order.shape[0]), dtype=boxes.dtype)   # rows x1, y1, x2, y2, area
    candidates[:4] = boxes[order].T
    candidates[4] = (candidates[2] - candidates[0]) * (candidates[3] - candidates[1])
    label = None if idxs is None else idxs[order]
    rest = xp.arange(order.shape[0])            # positions in ``order`` still in the running
    keep = []
    with np.errstate(invalid="ignore"):
        while rest.shape[0]:
            head = candidates[:, :block]
            head_label = None if label is None else label[:block]
            # clash[j]: an earlier box of the head suppresses head box j
            clash = xp.triu(_suppresses(head, head, iou_threshold, head_label, head_label),
                            1).any(axis=0)
            run = int(xp.argmax(clash)) if bool(clash.any()) else head.shape[1]
            keep.append(rest[:run])
            suppressed = _suppresses(candidates[:, :run], candidates[:, run:], iou_threshold,
                                     None if label is None else label[:run],
                                     None if label is None else label[run:]).any(axis=0)
            stay = xp.flatnonzero(~suppressed)
            candidates = candidates[:, run:].take(stay, axis=1)
            rest = rest[run:].take(stay)
            if label is not None:
                label = label[run:].take(stay)
    if not keep:
        return xp.zeros(0, dtype=xp.int64)
    return order[xp.concatenate(keep)].astype(xp.int64, copy=False)


def nms(boxes, scores, iou_threshold):
    """Non-maximum suppression.

    ``boxes`` (K, 4), ``scores`` (K,) of the same float dtype, ``iou_threshold`` in [0, 1].
    Returns ``keep``, the int64 indices of the kept boxes in decreasing score order. Greedy:
    take the highest-scoring box left, keep it, drop every other box with
    ``IoU(kept, box) > iou_threshold``, repeat. Equal scores are visited in index order (stable
    sort), as torchvision; the IoU is computed in the boxes' dtype, as torchvision.
    """
    _check_boxes(boxes, "boxes", valid=True)
    _check_scores(scores, boxes)
    iou_threshold = check_number(iou_threshold, "iou_threshold", low=0, high=1)
    return _greedy_nms(boxes, scores, iou_threshold)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS independently per category: a box only suppresses boxes with the same ``idxs``.

    ``boxes`` (K, 4), ``scores`` (K,), ``idxs`` (K,) integer categories. Returns the int64
    indices of the kept boxes in decreasing score order, exactly the union of
    ``nms`` run on each category sorted by score (stable) like ``nms``'s result.
    """
    _check_boxes(boxes, "boxes", valid=True)
    _check_scores(scores, boxes)
    check_int_array(idxs, "idxs", shape=(boxes.shape[0],))
    iou_threshold = check_number(iou_threshold, "iou_threshold", low=0, high=1)
    return _greedy_nms(boxes, scores, iou_threshold, idxs)


# --------------------------------------------------------------------------------- box coding

def _centre_size(boxes):
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode_boxes(reference, proposals, weights):
    """Deltas that move each proposal onto its reference box (torchvision's BoxCoder.encode).

    ``reference`` (K, 4): the boxes being encoded (ground truth matched to each proposal);
    ``proposals`` (K, 4): the anchors or proposals they are encoded against; both with
    positive widths and heights, same float dtype. ``weights = (wx, wy, ww, wh)``. Returns
    ``(K, 4)`` deltas ``(t_x, t_y, t_w, t_h)``::

        t_x = wx (G_x - P_x) / P_w      t_w = ww log(G_w / P_w)
        t_y = wy (G_y - P_y) / P_h      t_h = wh log(G_h / P_h)

    with ``G`` = reference, ``P`` = proposals, centres ``x1 + 0.5 w``, ``y1 + 0.5 h``.
    """
    _check_boxes(reference, "reference")
    _check_boxes(proposals, "proposals")
    check_shape(proposals, "proposals", tuple(reference.shape))
    check_same_dtype(reference, "reference", proposals=proposals)
    wx, wy, ww, wh = _check_weights(weights)
    _check_positive_size(reference, "reference")
    _check_positive_size(proposals, "proposals")
    xp = array_module(reference)
    gx, gy, gw, gh = _centre_size(reference)
    px, py, pw, ph = _centre_size(proposals)
    return xp.stack([wx * (gx - px) / pw,
                     wy * (gy - py) / ph,
                     ww * xp.log(gw / pw),
                     wh * xp.log(gh / ph)], axis=1)


def decode_boxes(deltas, boxes, weights, scale_clamp=DEFAULT_SCALE_CLAMP):
    """Apply deltas to boxes (torchvision's BoxCoder.decode_single), the inverse of encode.

    ``deltas`` (K, 4 * num_classes): one ``(t_x, t_y, t_w, t_h)`` group per class (class-specific
    regression as in the box head; ``num_classes = 1`` for the RPN), ``boxes`` (K, 4) the
    proposals they apply to, same float dtype. Returns ``(K, 4 * num_classes)`` boxes::

        d = t / (wx, wy, ww, wh),     d_w, d_h clamped to <= scale_clamp (exp cannot overflow)
        G_x = P_w d_x + P_x           G_w = P_w exp(d_w)
        G_y = P_h d_y + P_y           G_h = P_h exp(d_h)
        box = (G_x - 0.5 G_w, G_y - 0.5 G_h, G_x + 0.5 G_w, G_y + 0.5 G_h)
    """
    check_float_array(deltas, "deltas", ndim=2, layout="K, 4 * num_classes")
    if deltas.shape[1] == 0 or deltas.shape[1] % 4:
        raise ValueError(f"deltas must have shape (K, 4 * num_classes), got {tuple(deltas.shape)}")
    check_finite(deltas, "deltas")
    _check_boxes(boxes, "boxes", valid=True)
    if boxes.shape[0] != deltas.shape[0]:
        raise ValueError(f"boxes must have one row per row of deltas ({deltas.shape[0]}), "
                         f"got shape {tuple(boxes.shape)}")
    check_same_dtype(deltas, "deltas", boxes=boxes)
    wx, wy, ww, wh = _check_weights(weights)
    scale_clamp = check_number(scale_clamp, "scale_clamp")
    xp = array_module(deltas)
    px, py, pw, ph = (v[:, None] for v in _centre_size(boxes))
    d = deltas.reshape(deltas.shape[0], deltas.shape[1] // 4, 4)  # (K, num_classes, 4)
    dx, dy = d[..., 0] / wx, d[..., 1] / wy
    dw = xp.minimum(d[..., 2] / ww, scale_clamp)
    dh = xp.minimum(d[..., 3] / wh, scale_clamp)
    gx, gy = dx * pw + px, dy * ph + py
    gw, gh = xp.exp(dw) * pw, xp.exp(dh) * ph
    out = xp.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], axis=-1)
    return out.reshape(deltas.shape).astype(deltas.dtype, copy=False)
