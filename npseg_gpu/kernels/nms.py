"""Non-maximum suppression, bitmask style (mirror :func:`npseg.ops.nms` / ``batched_nms``).

The boxes arrive sorted by decreasing score (stable: ties in index order) with their areas
``(x2 - x1) * (y2 - y1)`` computed beforehand, as the NumPy op does. :func:`nms_mask_kernel`
runs one thread per 64-bit word ``(i, b) = np.unravel_index(t, (K, ceil(K / 64)))``: bit ``r``
of ``mask[i, b]`` says that box ``i`` suppresses the later box ``j = 64 b + r > i``::

    w = min(x2_i, x2_j) - max(x1_i, x1_j),  h = min(y2_i, y2_j) - max(y1_i, y1_j)
    inter = max(w, 0) * max(h, 0),  union = area_i + area_j - inter
    bit = inter / union > iou_threshold        (union 0: never; with labels: same label only)

in the boxes' dtype, each step rounded as in NumPy, and the quotient compared in float64 with
the threshold (the NumPy op compares with ``np.float64(iou_threshold)``). So the mask, and the
kept set, equal the CPU op's exactly. Words of boxes before ``i`` are 0 (only later boxes can be
suppressed by ``i``).

The greedy pass over the mask (visit the boxes in order; a box not yet suppressed is kept and
ORs its row into the running "suppressed" words) is sequential and lives on the host, in
``npseg_gpu.ops.boxes``: one copy of the mask to the host (``K * ceil(K / 64)`` words, 2 MB for
4000 boxes) and a loop over 64-box blocks.

The quotient must be rounded exactly as on the CPU. NVVM contracts a multiply feeding an
add into one fused multiply-add (one rounding fewer) by default; the union subtracts
``max(inter, 0)``, not the product itself, so ``area_i + area_j - w * h`` cannot be contracted
(the PTX of this kernel has no ``fma``; with CUDA 12's NVVM it has none without the guard either,
the guard keeps it so).
"""

from __future__ import annotations

from numba import cuda

from npseg_gpu.kernels._launch import float_signatures, kernel

_I64 = cuda.int64
_F64 = cuda.float64  # resolved at import: inside a simulated kernel `cuda` is a stand-in
_MASK = cuda.uint64[:, ::1]


@kernel(float_signatures(lambda f: (f[:, ::1], f[::1], cuda.int64[::1], _I64, cuda.float64,
                                    _MASK)))
def nms_mask_kernel(boxes, areas, labels, has_labels, iou_threshold, mask):
    """mask[i, b] bit r = box i suppresses box j = 64 b + r (j > i; with ``has_labels``, only
    boxes of its own label)."""
    n = boxes.shape[0]
    words = mask.shape[1]
    zero = boxes.dtype.type(0)
    for t in range(cuda.grid(1), n * words, cuda.gridsize(1)):
        b = t % words
        i = t // words
        start = b * 64
        word = mask.dtype.type(0)
        ax1, ay1, ax2, ay2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        area_i = areas[i]
        for j in range(max(start, i + 1), min(start + 64, n)):
            if has_labels != 0 and labels[j] != labels[i]:
                continue
            w = min(ax2, boxes[j, 2]) - max(ax1, boxes[j, 0])
            h = min(ay2, boxes[j, 3]) - max(ay1, boxes[j, 1])
            inter = max(w, zero) * max(h, zero)
            inter = max(inter, zero)                 # blocks an FMA contraction (see above)
            union = area_i + areas[j] - inter
            if union > zero and _F64(inter / union) > iou_threshold:
                word |= mask.dtype.type(1) << mask.dtype.type(j - start)
        mask[i, b] = word
