"""RoIAlign and RoIPool: a fixed-size feature grid for every region of interest.

``x`` is a feature map ``(N, C, H, W)``; ``rois`` is ``(K, 5)``, one row
``(batch_index, x1, y1, x2, y2)`` per region in input-image pixels; ``spatial_scale`` maps them
onto the map (1/16 for a stride-16 map). Both ops return ``(K, C, ph, pw)``, ``output_size =
(ph, pw)``, and follow torchvision's CPU kernels exactly (the boundary rules included).

RoIAlign (Mask R-CNN) keeps the region's real-valued corners. Region ``k`` on the map::

    offset = 0.5 if aligned else 0          (aligned: pixel centres sit at integer + 0.5)
    y1' = y1 * spatial_scale - offset,  h = y2 * spatial_scale - offset - y1'
    h = max(h, 1) if not aligned            (same for x, w)
    bin_h = h / ph,  grid_h = sampling_ratio if sampling_ratio > 0 else ceil(h / ph)

Bin ``(i, j)`` averages ``grid_h * grid_w`` bilinear samples at::

    y = y1' + i * bin_h + (iy + 0.5) * bin_h / grid_h,    iy = 0 .. grid_h - 1  (x likewise)
    out[k, c, i, j] = sum_{iy, ix} bilinear(x[n_k, c], y, x) / max(grid_h * grid_w, 1)

with torchvision's bilinear rule, one axis at a time (``size`` = H for y, W for x): a sample with
``y < -1`` or ``y > size`` contributes 0; ``y <= 0`` is moved to 0; ``y_low = floor(y)``,
``y_high = y_low + 1``, except ``y_low >= size - 1`` gives ``y_low = y_high = size - 1`` and
``y = y_low``; with ``l = y - y_low``, ``h = 1 - l`` the four corners get weights
``h_y h_x, h_y l_x, l_y h_x, l_y l_x``.

RoIPool (Fast R-CNN) quantises: the corners are rounded (half away from zero, C's ``round``)
after scaling, the region is ``max(end - start + 1, 1)`` pixels per axis, bin ``i`` covers rows
``[floor(i * bin_h), ceil((i + 1) * bin_h))`` offset by the start and clipped to the map, and
the output is the maximum over the bin (0 for an empty bin). The gradient goes to the argmax
(the first maximum in scan order, row by row).

Implementation: vectorized over RoIs, bins and channels. The map is read as one row of C
channel values per pixel (``rows[(n * H + y) * W + x] = x[n, :, y, x]``), so a gather of
pixel rows moves contiguous channel vectors. RoIs are processed in groups that share a shape
(RoIAlign: the sampling grid ``(grid_h, grid_w)``; RoIPool: the largest bin window), a loop over
the few distinct shapes, and in chunks of a bounded number of gathered values.
"""

from __future__ import annotations

import numpy as np

from npseg.ops._checks import (check_bool, check_dout, check_finite, check_float_array, check_int,
                               check_number, check_same_dtype, pair)

__all__ = ["roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward"]

# at most this many values are gathered at once (16 MiB of float32): bounds the memory and
# keeps the working set in cache
_CHUNK_ELEMENTS = 1 << 22
# RoIAlign's backward sorts at most about this many taps at once (~50 MiB of tap lists)
_TAPS_PER_SCATTER = 1 << 21


# ----------------------------------------------------------------------------- argument checks

def _check_rois(x, rois):
    """``x`` (N, C, H, W) float, ``rois`` (K, 5) of x's dtype, finite, integral batch indices
    in ``[0, N)``, ``x2 >= x1`` and ``y2 >= y1``."""
    check_float_array(x, "x", ndim=4, layout="N, C, H, W")
    n = x.shape[0]
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x must have a non-empty spatial size, got shape {tuple(x.shape)}")
    check_float_array(rois, "rois", ndim=2, layout="K, 5")
    if rois.shape[1] != 5:
        raise ValueError("rois must have shape (K, 5) (batch_index, x1, y1, x2, y2), "
                         f"got {tuple(rois.shape)}")
    check_same_dtype(x, "x", rois=rois)
    check_finite(rois, "rois")
    if rois.shape[0] == 0:
        return
    batch = rois[:, 0]
    bad = batch != np.floor(batch)
    if bad.any():
        raise ValueError("rois[:, 0] (batch index) must hold integers, "
                         f"got {float(batch[np.argmax(bad)])}")
    bad = (batch < 0) | (batch >= n)
    if bad.any():
        raise ValueError(f"rois[:, 0] (batch index) must be in [0, N) = [0, {n}), "
                         f"got {float(batch[np.argmax(bad)])}")
    bad = (rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"rois must have x2 >= x1 and y2 >= y1, got roi {k}: "
                         f"{[float(v) for v in rois[k]]}")


def _pixel_rows(x):
    """``(N*H*W, C)``: one row of channel values per pixel, ``rows[(n*H + y)*W + x]``."""
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * h * w, c)


def _chunks(ids, per_roi):
    """Split RoI indices into chunks gathering about ``_CHUNK_ELEMENTS`` values each."""
    size = max(1, _CHUNK_ELEMENTS // max(per_roi, 1))
    for start in range(0, ids.shape[0], size):
        yield ids[start:start + size]


def _groups(keys):
    """``(key, ids)`` for every distinct row of ``keys`` (K, 2): the RoIs sharing that shape."""
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(distinct.shape[0] + 1))
    for g, key in enumerate(distinct):
        yield tuple(int(v) for v in key), order[bounds[g]:bounds[g + 1]]


# ------------------------------------------------------------------------------------ RoIAlign

def _bilinear_taps(coord, size):
    """torchvision's bilinear rule along one axis of ``size`` pixels.

    Returns ``(low, high, w_low, w_high)``: the two pixel indices a sample at ``coord`` reads
    and their weights (both 0 when ``coord < -1`` or ``coord > size``).
    """
    inside = (coord >= -1) & (coord <= size)
    coord = np.maximum(coord, 0)
    low = np.floor(coord)
    edge = low >= size - 1                      # at the last pixel: read it alone
    low = np.minimum(low, size - 1)
    frac = np.where(edge, 0, coord - low)       # l = y - y_low
    low = low.astype(np.int64)
    high = np.where(edge, low, low + 1)
    return low, high, (1 - frac) * inside, frac * inside


def _sample_coords(start, bin_size, pooled, grid, dtype):
    """``(k, pooled, grid)`` sample positions ``start + p * bin + (g + 0.5) * bin / grid``."""
    p = np.arange(pooled, dtype=dtype)[None, :, None]
    g = np.arange(grid, dtype=dtype)[None, None, :]
    start, bin_size = start[:, None, None], bin_size[:, None, None]
    return start + p * bin_size + (g + 0.5) * bin_size / grid


def _align_samples(rois, shape, output_size, spatial_scale, sampling_ratio, aligned):
    """Every bilinear tap of every bin, by chunks of RoIs that share a sampling grid.

    Yields ``(ids, pos, weight)``: ``ids`` (k,) RoI indices; ``pos`` (k*ph*pw, S) the pixel rows
    (``(n*H + y)*W + x``) of the 4 corners of the ``grid_h * grid_w`` samples of each bin
    (``S = 4 grid_h grid_w``), bins in ``(roi, i, j)`` order; ``weight`` (k*ph*pw, S) their
    bilinear weights divided by the sample count, so ``out[bin] = sum_s weight * x[pos]``.
    RoIs with an empty grid (a zero-size region with ``aligned``) have no taps: output 0.
    """
    _, c, h, w = shape
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:                             # legacy mode: regions of at least 1 pixel
        roi_w, roi_h = np.maximum(roi_w, 1), np.maximum(roi_h, 1)
    bin_w, bin_h = roi_w / pw, roi_h / ph
    if sampling_ratio > 0:
        grid = np.full((rois.shape[0], 2), sampling_ratio, dtype=np.int64)
    else:                                       # adaptive: about one sample per map pixel
        grid = np.stack([np.ceil(bin_h), np.ceil(bin_w)], axis=1).astype(np.int64)
    batch = rois[:, 0].astype(np.int64)
    for (gh, gw), group in _groups(grid):
        if gh == 0 or gw == 0:
            continue
        taps = 4 * gh * gw
        for ids in _chunks(group, ph * pw * taps * c):
            k = ids.shape[0]
            ys = _sample_coords(y1[ids], bin_h[ids], ph, gh, rois.dtype)     # (k, ph, gh)
            xs = _sample_coords(x1[ids], bin_w[ids], pw, gw, rois.dtype)     # (k, pw, gw)
            y_low, y_high, wy_low, wy_high = _bilinear_taps(ys, h)
            x_low, x_high, wx_low, wx_high = _bilinear_taps(xs, w)
            # the two taps of each sample side by side: (k, ph, 2 gh) and (k, pw, 2 gw)
            row = np.stack([y_low, y_high], axis=-1).reshape(k, ph, 2 * gh)
            col = np.stack([x_low, x_high], axis=-1).reshape(k, pw, 2 * gw)
            wy = np.stack([wy_low, wy_high], axis=-1).reshape(k, ph, 2 * gh)
            wx = np.stack([wx_low, wx_high], axis=-1).reshape(k, pw, 2 * gw)
            # every (row tap, column tap) pair of bin (i, j): (k, ph, pw, 2 gh, 2 gw)
            pos = ((batch[ids, None, None, None, None] * h + row[:, :, None, :, None]) * w
                   + col[:, None, :, None, :])
            weight = wy[:, :, None, :, None] * wx[:, None, :, None, :] / (gh * gw)
            yield ids, pos.reshape(k * ph * pw, taps), weight.reshape(k * ph * pw, taps)


def roi_align_forward(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign (torchvision.ops.roi_align semantics).

    ``x`` (N, C, H, W), ``rois`` (K, 5) ``(batch_index, x1, y1, x2, y2)`` of x's dtype,
    ``output_size`` int or ``(ph, pw)``. Returns ``(out, cache)`` with ``out`` (K, C, ph, pw)::

        out[k, c, i, j] = 1/count * sum_{samples of bin (i, j)} sum_{4 corners} w * x[n_k, c, y, x]

    (sample positions, corner weights and boundary rules in the module docstring). Each bin's
    corner taps are gathered as pixel rows (all channels at once) and weight-summed.
    """
    _check_rois(x, rois)
    output_size = pair(output_size, "output_size", minimum=1)
    spatial_scale = check_number(spatial_scale, "spatial_scale", low=0, low_open=True)
    sampling_ratio = check_int(sampling_ratio, "sampling_ratio")
    aligned = check_bool(aligned, "aligned")
    n, c, h, w = x.shape
    ph, pw = output_size
    k = rois.shape[0]
    out = np.zeros((k, c, ph, pw), dtype=x.dtype)
    if k and c:
        rows = _pixel_rows(x)
        for ids, pos, weight in _align_samples(rois, x.shape, output_size, spatial_scale,
                                               sampling_ratio, aligned):
            taps = np.take(rows, pos, axis=0)                        # (bins, S, C)
            bins = np.einsum("bs,bsc->bc", weight, taps)             # (bins, C)
            out[ids] = bins.reshape(ids.shape[0], ph, pw, c).transpose(0, 3, 1, 2)
    cache = (x.shape, x.dtype, rois.copy(), output_size, spatial_scale, sampling_ratio, aligned)
    return out, cache


def _scatter_add_columns(target, pixel, weight, source, grad):
    """``target[:, pixel[t]] += weight[t] * grad[:, source[t]]`` for every tap ``t``.

    ``target`` (C, P); ``pixel``, ``weight``, ``source`` (T,) the pixel, weight and bin of each
    tap; ``grad`` (C, B) one column per bin. Many taps hit the same pixel, so the taps are
    sorted by pixel (a stable sort: the summation order is fixed and the result deterministic)
    and each pixel's run is summed with ``np.add.reduceat`` along contiguous memory; each pixel
    is then written once per chunk of sorted taps.
    """
    live = weight != 0
    pixel, weight, source = pixel[live], weight[live], source[live]
    order = np.argsort(pixel, kind="stable")
    pixel, weight, source = pixel[order], weight[order], source[order]
    step = max(1, _CHUNK_ELEMENTS // max(grad.shape[0], 1))
    for start in range(0, pixel.shape[0], step):
        run = slice(start, start + step)
        p = pixel[run]
        starts = np.flatnonzero(np.concatenate([[True], p[1:] != p[:-1]]))
        contributions = np.take(grad, source[run], axis=1)           # (C, taps)
        contributions *= weight[run]
        target[:, p[starts]] += np.add.reduceat(contributions, starts, axis=1)


def roi_align_backward(dout, cache):
    """Gradient of RoIAlign w.r.t. ``x``: every tap sends ``weight * dout[k, c, i, j]`` back to
    the pixel it read::

        dx[n_k, c, y, x] += sum over the taps (y, x) of bin (k, i, j): w / count * dout[k, c, i, j]

    ``dout`` (K, C, ph, pw). Returns ``(dx,)``. The taps are recomputed from the cached RoIs and
    scatter-added by a sort by pixel and ``np.add.reduceat`` (deterministic; several times
    faster here than ``np.bincount`` over one flat index per tap and channel, or ``np.add.at``).
    """
    shape, dtype, rois, output_size, spatial_scale, sampling_ratio, aligned = cache
    n, c, h, w = shape
    ph, pw = output_size
    k = rois.shape[0]
    check_dout(dout, (k, c, ph, pw), dtype)
    dplanes = np.zeros((c, n * h * w), dtype=dtype)              # dplanes[c, (n*H + y)*W + x]
    if k and c:
        grad = dout.transpose(1, 0, 2, 3).reshape(c, k * ph * pw)           # (C, bins)
        pixel, weight, source, count = [], [], [], 0
        for ids, pos, wts in _align_samples(rois, shape, output_size, spatial_scale,
                                            sampling_ratio, aligned):
            bins = (ids[:, None] * (ph * pw) + np.arange(ph * pw)).reshape(-1)  # (k, i, j) order
            pixel.append(pos.reshape(-1))
            weight.append(wts.reshape(-1))
            source.append(np.repeat(bins, pos.shape[1]))
            count += pos.size
            if count >= _TAPS_PER_SCATTER:            # bound the memory of the tap lists
                _scatter_add_columns(dplanes, np.concatenate(pixel), np.concatenate(weight),
                                     np.concatenate(source), grad)
                pixel, weight, source, count = [], [], [], 0
        if pixel:
            _scatter_add_columns(dplanes, np.concatenate(pixel), np.concatenate(weight),
                                 np.concatenate(source), grad)
    dx = np.ascontiguousarray(dplanes.reshape(c, n, h, w).transpose(1, 0, 2, 3))
    return (dx,)


# ------------------------------------------------------------------------------------- RoIPool

def _c_round(v):
    """Round half away from zero (C's ``round``; NumPy's ``round`` goes half to even)."""
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)


def _pool_bins(rois, shape, output_size, spatial_scale):
    """Bin windows ``[start, end)`` of every RoI on the map: rows (K, ph) and columns (K, pw)."""
    _, _, h, w = shape
    ph, pw = output_size
    corners = _c_round(rois[:, 1:] * spatial_scale).astype(np.int64)   # x1, y1, x2, y2
    x1, y1, x2, y2 = corners.T
    roi_w = np.maximum(x2 - x1 + 1, 1)
    roi_h = np.maximum(y2 - y1 + 1, 1)

    def windows(start, length, pooled, size):
        bin_size = length.astype(rois.dtype) / rois.dtype.type(pooled)
        p = np.arange(pooled + 1, dtype=rois.dtype)
        lo = np.floor(p[None, :-1] * bin_size[:, None]).astype(np.int64) + start[:, None]
        hi = np.ceil(p[None, 1:] * bin_size[:, None]).astype(np.int64) + start[:, None]
        return np.clip(lo, 0, size), np.clip(hi, 0, size)

    return windows(y1, roi_h, ph, h), windows(x1, roi_w, pw, w)


def roi_pool_forward(x, rois, output_size, spatial_scale=1.0):
    """RoIPool (torchvision.ops.roi_pool semantics).

    ``x`` (N, C, H, W), ``rois`` (K, 5) ``(batch_index, x1, y1, x2, y2)`` of x's dtype.
    Returns ``(out, cache)``, ``out`` (K, C, ph, pw)::

        out[k, c, i, j] = max_{y in rows_i, x in cols_j} x[n_k, c, y, x]     (0 if the bin is empty)

    with the quantised bins of the module docstring. Vectorized by a padded window gather:
    RoIs are grouped by their largest bin ``(Lh, Lw)``, each bin reads ``Lh * Lw`` pixel rows
    (positions outside its window read a row of ``-inf``), takes the maximum, and records
    the first position holding it (scan order) for the backward pass.
    """
    _check_rois(x, rois)
    output_size = pair(output_size, "output_size", minimum=1)
    spatial_scale = check_number(spatial_scale, "spatial_scale", low=0, low_open=True)
    n, c, h, w = x.shape
    ph, pw = output_size
    k = rois.shape[0]
    out = np.zeros((k, c, ph, pw), dtype=x.dtype)
    # where each maximum came from, as the flat index pixel * C + c of the channels-last map
    # (pixel = (n*H + y)*W + x); N*H*W*C (one past the end) for an empty bin: no gradient
    slot = n * h * w * c
    argmax = np.full((k, c, ph, pw), slot, dtype=np.int64)
    if k and c:
        outside = n * h * w                                  # the row of -inf
        rows = np.empty((outside + 1, c), dtype=x.dtype)
        rows[:outside] = _pixel_rows(x)
        rows[outside] = -np.inf
        (y_lo, y_hi), (x_lo, x_hi) = _pool_bins(rois, x.shape, output_size, spatial_scale)
        batch = rois[:, 0].astype(np.int64)
        window = np.stack([np.maximum(y_hi - y_lo, 0).max(axis=1),
                           np.maximum(x_hi - x_lo, 0).max(axis=1)], axis=1)
        for (lh, lw), group in _groups(window):
            if lh == 0 or lw == 0:                           # every bin empty: 0, no gradient
                continue
            size = lh * lw
            # rank[l] = size - l: the largest rank among the maxima marks the first one
            rank = np.arange(size, 0, -1, dtype=np.min_scalar_type(size))
            for ids in _chunks(group, ph * pw * size * c):
                m = ids.shape[0]
                ys = y_lo[ids, :, None] + np.arange(lh)              # (m, ph, Lh)
                xs = x_lo[ids, :, None] + np.arange(lw)              # (m, pw, Lw)
                inside = ((ys < y_hi[ids, :, None])[:, :, None, :, None]
                          & (xs < x_hi[ids, :, None])[:, None, :, None, :])
                pos = ((batch[ids, None, None, None, None] * h + ys[:, :, None, :, None]) * w
                       + xs[:, None, :, None, :])
                pos = np.where(inside, pos, outside).reshape(m * ph * pw, size)
                vals = np.take(rows, pos, axis=0)                    # (bins, Lh*Lw, C)
                best = vals.max(axis=1)                              # (bins, C)
                first = size - ((vals == best[:, None, :]) * rank[:, None]).max(axis=1)
                first = np.minimum(first, size - 1)                  # (NaN in x only)
                pixel = np.take_along_axis(pos, first, axis=1)       # (bins, C)
                source = pixel * c + np.arange(c)
                empty = pixel == outside                             # empty bin (or NaN)
                if empty.any():
                    best[empty], source[empty] = 0, slot
                out[ids] = best.reshape(m, ph, pw, c).transpose(0, 3, 1, 2)
                argmax[ids] = source.reshape(m, ph, pw, c).transpose(0, 3, 1, 2)
    return out, (x.shape, x.dtype, argmax)


def roi_pool_backward(dout, cache):
    """Gradient of RoIPool w.r.t. ``x``: each output's gradient goes to its argmax::

        dx[n_k, c, y, x] += dout[k, c, i, j]   for (y, x) = argmax of bin (k, c, i, j)

    (nothing for an empty bin). ``dout`` (K, C, ph, pw). Returns ``(dx,)``, summed with
    ``np.bincount`` over the cached flat indices into the channels-last map (deterministic);
    empty bins point one past the end, a slot that is dropped.
    """
    shape, dtype, argmax = cache
    n, c, h, w = shape
    check_dout(dout, argmax.shape, dtype)
    size = n * h * w * c
    dx = np.bincount(argmax.reshape(-1), weights=dout.reshape(-1), minlength=size + 1)[:size]
    dx = dx.astype(dtype, copy=False).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return (np.ascontiguousarray(dx),)
