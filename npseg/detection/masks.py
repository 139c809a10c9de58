"""Instance masks <-> fixed-size RoI masks: training targets and pasting predictions back.

**Mask targets** (training; Detectron2's ``BitMasks.crop_and_resize``). The mask head predicts an
``M x M`` (28 x 28) mask inside each foreground RoI. Its target is the RoI's matched instance
mask, cropped to the RoI box and resized to ``M x M`` by RoIAlign itself: the binary masks
``(G, H, W)`` are stacked as a one-channel feature map ``(G, 1, H, W)`` and pooled with rois
``(matched_gt, x1, y1, x2, y2)``, ``spatial_scale = 1``, ``aligned = True`` (a pixel ``(i, j)``
of the mask covers ``[j, j+1) x [i, i+1)``, its centre at ``j + 0.5``) and
``sampling_ratio = 0`` (adaptive: ``ceil(box size / M)`` samples per bin and axis, Detectron2's
choice; torchvision's equivalent is ``-1``). The pooled values are thresholded
``>= 0.5`` -> float targets in ``{0, 1}``.

**Pasting** (inference; Detectron2's ``paste_masks_in_image``, ``grid_sample`` semantics with
``align_corners=False`` and zero padding). A soft ``M x M`` mask predicted for a box
``(x1, y1, x2, y2)`` is resampled at every image pixel centre ``(x + 0.5, y + 0.5)``; the centre
maps to the mask coordinates (pixel-centre convention: mask cell ``j`` is centred at ``j``)

    u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5,      v = (y + 0.5 - y1) / (y2 - y1) * M - 0.5

and the mask is bilinearly interpolated there, mask cells outside ``0..M-1`` counting as 0.
Pixels whose centre lies outside the box are 0 (with zero padding they would get less than
half of an edge value, which the 0.5 threshold drops anyway). The result is thresholded
``>= threshold`` (0.5) -> a bool ``(R, H, W)`` mask per box.

Bilinear interpolation is separable, so the paste is two matrix products per box,
``window = Wy @ mask @ Wx^T``, with ``Wy (h, M)`` and ``Wx (w, M)`` the interpolation matrices
(at most two non-zero weights per row) of the ``h x w`` pixel window that covers the box;
batched over boxes with ``matmul`` (windows padded to the largest box of a chunk of similar
boxes), then scattered into the ``(R, H, W)`` result.
"""

from __future__ import annotations

from npseg._device import array_module, ops_for_array
from npseg.ops._checks import check_float_array, check_int, check_int_array, check_number, pair

from .box_coder import check_boxes

__all__ = ["mask_targets", "paste_masks_in_image", "DEFAULT_MASK_SIZE"]

DEFAULT_MASK_SIZE = 28


def _check_gt_masks(gt_masks):
    if not (hasattr(gt_masks, "dtype") and hasattr(gt_masks, "ndim")):
        raise TypeError(f"gt_masks must be an array, got {type(gt_masks).__name__}")
    if gt_masks.ndim != 3:
        raise ValueError(f"gt_masks must be 3-D (G, H, W) instance masks, got shape "
                         f"{tuple(gt_masks.shape)}")
    if gt_masks.dtype.kind not in "biuf":
        raise TypeError(f"gt_masks must be bool, integer or float, got {gt_masks.dtype}")
    return gt_masks


def mask_targets(gt_masks, boxes, matched_gt, mask_size=DEFAULT_MASK_SIZE,
                 sampling_ratio: int = 0, threshold: float = 0.5):
    """The ``(R, M, M)`` float ``{0, 1}`` targets of the foreground RoIs of one image.

    ``gt_masks (G, H, W)``: the image's binary instance masks (bool, int or float);
    ``boxes (R, 4)``: the foreground proposal boxes (image pixels, float); ``matched_gt (R,)``:
    the index of each box's instance in ``gt_masks``. ``mask_size``: ``M`` or ``(Mh, Mw)``.
    Target = ``roi_align(gt_masks[:, None], (matched_gt, box), M, 1.0, sampling_ratio,
    aligned=True) >= threshold``, in the dtype of ``boxes``.
    """
    _check_gt_masks(gt_masks)
    check_boxes(boxes, "boxes")
    num = boxes.shape[0]
    check_int_array(matched_gt, "matched_gt", shape=(num,))
    out_h, out_w = pair(mask_size, "mask_size", minimum=1)
    sampling_ratio = check_int(sampling_ratio, "sampling_ratio")
    threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
    xp = array_module(boxes)
    if array_module(gt_masks) is not xp or array_module(matched_gt) is not xp:
        raise TypeError("gt_masks, boxes and matched_gt must live on the same device")
    num_gt = gt_masks.shape[0]
    if num and (int(matched_gt.min()) < 0 or int(matched_gt.max()) >= num_gt):
        raise ValueError(f"matched_gt must index gt_masks (0..{num_gt - 1}), got values in "
                         f"[{int(matched_gt.min())}, {int(matched_gt.max())}]")
    if num == 0:
        return xp.zeros((0, out_h, out_w), dtype=boxes.dtype)

    masks = gt_masks.astype(boxes.dtype)[:, None, :, :]                     # (G, 1, H, W)
    rois = xp.concatenate([matched_gt.astype(boxes.dtype)[:, None], boxes], axis=1)  # (R, 5)
    pooled, _ = ops_for_array(boxes).roi_align_forward(
        masks, rois, (out_h, out_w), spatial_scale=1.0, sampling_ratio=sampling_ratio,
        aligned=True)
    return (pooled[:, 0] >= threshold).astype(boxes.dtype)


def _interpolation_matrix(xp, pixels, low, high, cells: int, dtype):
    """``(R, P, cells)`` bilinear weights of the mask cells at the pixel centres ``pixels + 0.5``.

    ``pixels (R, P)`` are pixel indices along one axis, ``low, high (R,)`` the box edges on it.
    Row ``p`` of box ``r`` holds the weights of the centre ``c = pixels[r, p] + 0.5`` at mask
    coordinate ``u = (c - low_r) / (high_r - low_r) * cells - 0.5``: ``1 - frac(u)`` on cell
    ``floor(u)``, ``frac(u)`` on the next one, nothing on cells outside ``0..cells-1`` (zero
    padding), and an all-zero row when ``c`` is outside ``[low_r, high_r]``.
    """
    centres = pixels + 0.5                                                  # (R, P)
    extent = high - low                                                     # (R,)
    nonempty = extent > 0
    safe = xp.where(nonempty, extent, 1).astype(dtype)
    u = (centres - low[:, None]) / safe[:, None] * cells - 0.5              # (R, P)
    u0 = xp.floor(u)
    frac = (u - u0)[..., None]
    cell = xp.arange(cells, dtype=dtype)                                    # (cells,)
    weights = (1 - frac) * (cell == u0[..., None]) + frac * (cell == u0[..., None] + 1)
    inside = (centres >= low[:, None]) & (centres <= high[:, None]) & nonempty[:, None]
    return (weights * inside[..., None]).astype(dtype)


def paste_masks_in_image(masks, boxes, image_size, threshold: float | None = 0.5,
                         max_chunk_bytes: int = 1 << 26):
    """Paste ``(R, Mh, Mw)`` soft masks into their boxes of an ``image_size = (H, W)`` image.

    Returns a bool ``(R, H, W)`` array (``soft >= threshold``), or the soft float values when
    ``threshold`` is None. See the module doc for the sampling convention.

    Only the pixels of each box's window (``floor(x1)..ceil(x2)``, clipped to the image) are
    computed: boxes are sorted by area and taken in chunks; a chunk computes windows of its
    largest box's size (about ``max_chunk_bytes`` each chunk) and scatters them into the image.
    """
    check_float_array(masks, "masks", ndim=3, layout="R, M, M")
    check_boxes(boxes, "boxes")
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"boxes must have one row per mask ({masks.shape[0]}), "
                         f"got shape {tuple(boxes.shape)}")
    height, width = pair(image_size, "image_size", minimum=0)
    if threshold is not None:
        threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
    max_chunk_bytes = check_int(max_chunk_bytes, "max_chunk_bytes", minimum=1)
    xp = array_module(masks)
    if array_module(boxes) is not xp:
        raise TypeError("masks and boxes must live on the same device")

    num, mask_h, mask_w = masks.shape
    dtype = masks.dtype
    out = xp.zeros((num, height, width), dtype=bool if threshold is not None else dtype)
    if num == 0 or height == 0 or width == 0:
        return out
    boxes = boxes.astype(dtype)
    # Pixel window of every box: the pixels whose centre may lie inside it, clipped to the image.
    x0 = xp.clip(xp.floor(boxes[:, 0]), 0, width).astype(xp.int64)
    y0 = xp.clip(xp.floor(boxes[:, 1]), 0, height).astype(xp.int64)
    span_w = xp.clip(xp.ceil(boxes[:, 2]), 0, width).astype(xp.int64) - x0
    span_h = xp.clip(xp.ceil(boxes[:, 3]), 0, height).astype(xp.int64) - y0
    order = xp.argsort(span_w * span_h)                   # similar sizes share a chunk
    largest = max(1, int(span_w.max()) * int(span_h.max()))
    per_box = (largest + (mask_h + 1) * (int(span_w.max()) + int(span_h.max()))) * dtype.itemsize
    chunk = max(1, max_chunk_bytes // per_box)
    for start in range(0, num, chunk):                    # chunks bound the memory
        idx = order[start:start + chunk]
        win_h, win_w = int(span_h[idx].max()), int(span_w[idx].max())
        if win_h == 0 or win_w == 0:
            continue                                       # boxes outside the image or empty
        b = boxes[idx]
        rows = y0[idx, None] + xp.arange(win_h)            # (r, win_h) image rows of the windows
        cols = x0[idx, None] + xp.arange(win_w)            # (r, win_w)
        wy = _interpolation_matrix(xp, rows.astype(dtype), b[:, 1], b[:, 3], mask_h, dtype)
        wx = _interpolation_matrix(xp, cols.astype(dtype), b[:, 0], b[:, 2], mask_w, dtype)
        soft = xp.matmul(wy, xp.matmul(masks[idx], wx.transpose(0, 2, 1)))    # (r, win_h, win_w)
        # scatter the windows into the image; window pixels beyond the image edge are dropped
        valid = (rows < height)[:, :, None] & (cols < width)[:, None, :]
        r_idx = xp.broadcast_to(idx[:, None, None], valid.shape)[valid]
        y_idx = xp.broadcast_to(rows[:, :, None], valid.shape)[valid]
        x_idx = xp.broadcast_to(cols[:, None, :], valid.shape)[valid]
        values = soft[valid]
        out[r_idx, y_idx, x_idx] = values if threshold is None else values >= threshold
    return out
