"""Box utilities on the device (mirror :mod:`npseg.ops.boxes`): IoU, NMS, batched NMS, box coding.

* ``box_iou``, ``encode_boxes``, ``decode_boxes``: the NumPy module's own functions, which are
  written against the array module of their inputs (``xp = array_module(boxes)``), so on CuPy
  arrays they run as CuPy elementwise code. Only a device check is added here.
* ``nms`` / ``batched_nms``: bitmask NMS. Sort by score (stable, as the NumPy op), then
  :func:`npseg_gpu.kernels.nms.nms_mask_kernel` computes, for every box ``i``, a row of
  ``ceil(K / 64)`` 64-bit words whose bit ``j`` says "IoU(i, j) > iou_threshold" for each later
  box ``j`` (same label only, for ``batched_nms``). The greedy pass over that mask is sequential:
  it runs **on the host** (:func:`_greedy_keep`): the mask (``8 K ceil(K / 64)`` bytes: 2 MB for
  4000 boxes) is copied to the host once, the kept positions go back to the device. Since the
  number of kept boxes decides the size of the result, NMS has to synchronise with the host in
  any case.

The IoU in the kernel is rounded step by step as in the NumPy op, so ``keep`` is identical.
"""

from __future__ import annotations

import numpy as np

from npseg.ops import boxes as _cpu
from npseg.ops._checks import check_int_array, check_number
from npseg.ops.boxes import _check_boxes, _check_scores
from npseg_gpu._device import asnumpy, xp
from npseg_gpu.kernels import nms as K
from npseg_gpu.kernels._launch import launch
from npseg_gpu.ops._util import contiguous, empty, require_device, upload

__all__ = ["box_iou", "nms", "batched_nms", "encode_boxes", "decode_boxes"]

#: boxes per mask word
WORD = 64


# --- the NumPy module's array-module agnostic functions ---------------------------------------

def box_iou(a, b):
    """IoU of every pair of boxes, ``(K, M)``: :func:`npseg.ops.box_iou` on device arrays."""
    require_device(a, "a")
    require_device(b, "b")
    return _cpu.box_iou(a, b)


def encode_boxes(reference, proposals, weights):
    """Box deltas ``(K, 4)``: :func:`npseg.ops.encode_boxes` on device arrays."""
    require_device(reference, "reference")
    require_device(proposals, "proposals")
    return _cpu.encode_boxes(reference, proposals, weights)


def decode_boxes(deltas, boxes, weights, scale_clamp=_cpu.DEFAULT_SCALE_CLAMP):
    """Boxes from deltas ``(K, 4 * num_classes)``: :func:`npseg.ops.decode_boxes` on device
    arrays."""
    require_device(deltas, "deltas")
    require_device(boxes, "boxes")
    return _cpu.decode_boxes(deltas, boxes, weights, scale_clamp)


# --- NMS --------------------------------------------------------------------------------------

def _order_by_score(scores):
    """Indices by decreasing score, ties in index order (a stable sort of ``-scores``)."""
    m = xp()
    if m is np:
        return np.argsort(-scores, kind="stable")
    return m.argsort(-scores)                       # CuPy's sort is always stable


def _greedy_keep(mask: np.ndarray, n: int) -> np.ndarray:
    """The greedy pass over the suppression mask, on the host: positions (in score order) of
    the kept boxes.

    Visit the boxes in order; box ``p`` is kept when no kept box has suppressed it, and then
    suppresses the boxes of its row. Block by block of 64 boxes: the word ``removed[b]`` of the
    block is final once the earlier blocks are done; its 64 boxes are decided one by one with
    Python ints (a kept box ORs its word of the diagonal block into the running word), then the
    rows of the block's kept boxes are ORed into the later blocks' words in one NumPy reduction.
    """
    words = mask.shape[1]
    removed = np.zeros(words, dtype=np.uint64)
    keep = []
    for b in range(words):
        start = b * WORD
        count = min(WORD, n - start)
        running = int(removed[b])
        diagonal = mask[start:start + count, b].tolist()
        kept = []
        for r in range(count):
            if not (running >> r) & 1:
                kept.append(start + r)
                running |= diagonal[r]
        if kept and b + 1 < words:
            removed[b + 1:] |= np.bitwise_or.reduce(mask[kept, b + 1:], axis=0)
        keep.extend(kept)
    return np.asarray(keep, dtype=np.int64)


def _bitmask_nms(boxes, scores, iou_threshold: float, idxs=None):
    """Greedy NMS (per label with ``idxs``): kernel mask on the device, greedy pass on the host."""
    m = xp()
    n = boxes.shape[0]
    if n == 0:
        return m.zeros(0, dtype=m.int64)
    order = _order_by_score(scores)
    ordered = contiguous(boxes[order])
    areas = contiguous((ordered[:, 2] - ordered[:, 0]) * (ordered[:, 3] - ordered[:, 1]))
    if idxs is None:
        labels, has_labels = m.zeros(1, dtype=m.int64), 0
    else:
        labels, has_labels = contiguous(idxs[order], np.int64), 1
    words = -(-n // WORD)
    mask = empty((n, words), np.uint64)
    launch(K.nms_mask_kernel, n * words, ordered, areas, labels, has_labels,
           float(iou_threshold), mask)
    positions = _greedy_keep(asnumpy(mask), n)
    return order[upload(positions)].astype(m.int64, copy=False)


def nms(boxes, scores, iou_threshold):
    """Non-maximum suppression, as :func:`npseg.ops.nms`.

    ``boxes`` (K, 4), ``scores`` (K,) of the same float dtype, ``iou_threshold`` in [0, 1].
    Returns ``keep``, the int64 indices (a device array) of the kept boxes in decreasing score
    order: take the best box left, keep it, drop every box with ``IoU > iou_threshold``, repeat.
    """
    _check_boxes(boxes, "boxes", valid=True)
    _check_scores(scores, boxes)
    iou_threshold = check_number(iou_threshold, "iou_threshold", low=0, high=1)
    require_device(boxes, "boxes")
    require_device(scores, "scores")
    return _bitmask_nms(boxes, scores, iou_threshold)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS per category (``idxs`` (K,) integers), as :func:`npseg.ops.batched_nms`: a box only
    suppresses boxes of its own category. Returns int64 indices in decreasing score order."""
    _check_boxes(boxes, "boxes", valid=True)
    _check_scores(scores, boxes)
    check_int_array(idxs, "idxs", shape=(boxes.shape[0],))
    iou_threshold = check_number(iou_threshold, "iou_threshold", low=0, high=1)
    require_device(boxes, "boxes")
    require_device(scores, "scores")
    require_device(idxs, "idxs")
    return _bitmask_nms(boxes, scores, iou_threshold, idxs)
