"""RoIAlign and RoIPool kernels (mirror :mod:`npseg.ops.roi`, torchvision's rules).

Every kernel runs one thread per output element ``(k, c, i, j) = np.unravel_index(t, (K, C, ph,
pw))`` (grid-stride) and recomputes the geometry of its RoI ``k`` from the ``(K, 5)`` rows
``(batch_index, x1, y1, x2, y2)``: a few multiplications, cheaper than a table read. The geometry
is computed in the arrays' dtype, step by step in the NumPy op's order (a Python float such as
``spatial_scale`` is cast to the dtype first, NumPy's rule), so float32 runs make the same
discrete choices (sampling grid, pooling bins) as the CPU op.

RoIAlign, bin ``(i, j)`` of RoI ``k`` (see :mod:`npseg.ops.roi` for the full statement)::

    offset = 0.5 if aligned else 0;  y1' = y1 * scale - offset;  h = y2 * scale - offset - y1'
    h = max(h, 1) unless aligned;     bin_h = h / ph;  grid_h = sampling_ratio or ceil(bin_h)
    y = y1' + i * bin_h + (iy + 0.5) * bin_h / grid_h,      iy < grid_h   (x likewise)
    out[k, c, i, j] = sum over the samples and their 4 corners of w_y w_x / count * x[n, c, y, x]

with torchvision's bilinear rule per axis (:func:`bilinear_axis`): a sample outside
``[-1, size]`` contributes 0, one at ``y <= 0`` reads row 0, one at or past the last row reads
the last row alone; ``count = grid_h * grid_w`` (a RoI with an empty grid gives 0).

RoIPool quantises: corners rounded half away from zero after scaling (:func:`c_round`), region
``max(end - start + 1, 1)`` pixels per axis, bin ``i`` covering rows
``[floor(i * bin_h), ceil((i + 1) * bin_h))`` offset by the start and clipped to the map; the
output is the bin's maximum (the first one in row-major scan order wins ties) and the argmax is
the pixel row ``(n * H + y) * W + x`` (-1 and output 0 for an empty bin), as the NumPy op saves.

Backward passes:

* ``roi_align_backward_kernel`` **scatters with atomics** (``cuda.atomic.add``): the samples of
  different RoIs (and of neighbouring bins of one RoI) overlap arbitrarily, so an input pixel
  cannot tell cheaply which outputs read it. The only place the dense kernels could not gather;
  the order of the additions at a pixel (hence the sum's last bits) depends on thread timing.
* ``roi_pool_backward_kernel`` also scatters with ``cuda.atomic.add``: each output sends its
  gradient to its one argmax pixel, saved by the forward pass. A gather would make every input
  pixel search every RoI of its image (K times the work); collisions (bins sharing an argmax)
  are few, so the atomics seldom contend, and only where two gradients meet does the sum's
  order (its last bits) depend on timing.
"""

from __future__ import annotations

import math

from numba import cuda

from npseg_gpu.kernels._launch import float_signatures, kernel

_I64 = cuda.int64
_IDX4 = cuda.int64[:, :, :, ::1]


# --- shared geometry --------------------------------------------------------------------------

@cuda.jit(device=True)
def align_geometry(rois, k, spatial_scale, sampling_ratio, aligned, ph, pw):
    """``(n, y1, x1, bin_h, bin_w, grid_h, grid_w)`` of RoI ``k``, floats in the rois' dtype
    (``_align_samples`` of the NumPy op, line by line)."""
    f = rois.dtype.type
    scale = f(spatial_scale)
    offset = f(0.5) if aligned != 0 else f(0)
    x1 = rois[k, 1] * scale - offset
    y1 = rois[k, 2] * scale - offset
    roi_w = rois[k, 3] * scale - offset - x1
    roi_h = rois[k, 4] * scale - offset - y1
    if aligned == 0:                                 # legacy mode: regions of at least 1 pixel
        roi_w = max(roi_w, f(1))
        roi_h = max(roi_h, f(1))
    bin_w = roi_w / f(pw)
    bin_h = roi_h / f(ph)
    grid_h = sampling_ratio
    grid_w = sampling_ratio
    if sampling_ratio <= 0:                          # adaptive: about one sample per map pixel
        grid_h = int(math.ceil(bin_h))
        grid_w = int(math.ceil(bin_w))
    return int(rois[k, 0]), y1, x1, bin_h, bin_w, grid_h, grid_w


@cuda.jit(device=True)
def sample_coord(ref, start, index, bin_size, sample, grid):
    """``start + index * bin + (sample + 0.5) * bin / grid`` in ``ref``'s dtype (NumPy's
    ``_sample_coords``, same order of operations)."""
    f = ref.dtype.type
    return start + f(index) * bin_size + (f(sample) + f(0.5)) * bin_size / f(grid)


@cuda.jit(device=True)
def bilinear_axis(ref, v, size):
    """torchvision's bilinear rule along one axis of ``size`` pixels, for a sample at ``v``
    inside ``[-1, size]``: ``(low, high, w_low, w_high)`` in ``ref``'s dtype.

    ``v <= 0`` reads pixel 0; ``floor(v) >= size - 1`` reads the last pixel alone (weights 1
    and 0); otherwise ``low = floor(v)``, ``high = low + 1``, ``w_high = v - low``.
    """
    f = ref.dtype.type
    if v <= f(0):
        v = f(0)
    low = int(math.floor(v))
    if low >= size - 1:
        return size - 1, size - 1, f(1), f(0)
    frac = v - f(low)
    return low, low + 1, f(1) - frac, frac


@cuda.jit(device=True)
def outside(ref, v, size):
    """A sample at ``v`` lies outside ``[-1, size]`` and contributes nothing."""
    f = ref.dtype.type
    return v < f(-1) or v > f(size)


# --- RoIAlign ---------------------------------------------------------------------------------

@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, ::1], f[:, :, :, ::1], cuda.float64,
                                    _I64, _I64)))
def roi_align_kernel(x, rois, out, spatial_scale, sampling_ratio, aligned):
    """out[k, c, i, j] = the average of the bilinear samples of bin (i, j) of RoI k."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    n_rois, ph, pw = out.shape[0], out.shape[2], out.shape[3]
    total = n_rois * channels * ph * pw
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % pw
        i = (t // pw) % ph
        c = (t // (pw * ph)) % channels
        k = t // (pw * ph * channels)
        n, y1, x1, bin_h, bin_w, grid_h, grid_w = align_geometry(
            rois, k, spatial_scale, sampling_ratio, aligned, ph, pw)
        acc = out.dtype.type(0)
        if grid_h > 0 and grid_w > 0:
            count = out.dtype.type(grid_h * grid_w)
            for iy in range(grid_h):
                y = sample_coord(out, y1, i, bin_h, iy, grid_h)
                if outside(out, y, height):
                    continue
                y_low, y_high, hy, ly = bilinear_axis(out, y, height)
                for ix in range(grid_w):
                    xx = sample_coord(out, x1, j, bin_w, ix, grid_w)
                    if outside(out, xx, width):
                        continue
                    x_low, x_high, hx, lx = bilinear_axis(out, xx, width)
                    acc += hy * hx / count * x[n, c, y_low, x_low]
                    acc += hy * lx / count * x[n, c, y_low, x_high]
                    acc += ly * hx / count * x[n, c, y_high, x_low]
                    acc += ly * lx / count * x[n, c, y_high, x_high]
        out[k, c, i, j] = acc


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, ::1], f[:, :, :, ::1], cuda.float64,
                                    _I64, _I64)))
def roi_align_backward_kernel(dout, rois, dx, spatial_scale, sampling_ratio, aligned):
    """dx[n_k, c, y, x] += w / count * dout[k, c, i, j] for every tap (y, x, w) of bin (i, j),
    by ``cuda.atomic.add`` (``dx`` zeroed by the caller)."""
    channels = dx.shape[1]
    height, width = dx.shape[2], dx.shape[3]
    n_rois, ph, pw = dout.shape[0], dout.shape[2], dout.shape[3]
    total = n_rois * channels * ph * pw
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % pw
        i = (t // pw) % ph
        c = (t // (pw * ph)) % channels
        k = t // (pw * ph * channels)
        n, y1, x1, bin_h, bin_w, grid_h, grid_w = align_geometry(
            rois, k, spatial_scale, sampling_ratio, aligned, ph, pw)
        if grid_h <= 0 or grid_w <= 0:
            continue
        count = dx.dtype.type(grid_h * grid_w)
        g = dout[k, c, i, j]
        zero = dx.dtype.type(0)
        for iy in range(grid_h):
            y = sample_coord(dx, y1, i, bin_h, iy, grid_h)
            if outside(dx, y, height):
                continue
            y_low, y_high, hy, ly = bilinear_axis(dx, y, height)
            for ix in range(grid_w):
                xx = sample_coord(dx, x1, j, bin_w, ix, grid_w)
                if outside(dx, xx, width):
                    continue
                x_low, x_high, hx, lx = bilinear_axis(dx, xx, width)
                w = hy * hx / count
                if w != zero:
                    cuda.atomic.add(dx, (n, c, y_low, x_low), w * g)
                w = hy * lx / count
                if w != zero:
                    cuda.atomic.add(dx, (n, c, y_low, x_high), w * g)
                w = ly * hx / count
                if w != zero:
                    cuda.atomic.add(dx, (n, c, y_high, x_low), w * g)
                w = ly * lx / count
                if w != zero:
                    cuda.atomic.add(dx, (n, c, y_high, x_high), w * g)


# --- RoIPool ----------------------------------------------------------------------------------

@cuda.jit(device=True)
def c_round(v):
    """``v`` rounded half away from zero (C's ``round``), as an int."""
    a = abs(v)
    r = int(math.floor(a))
    if a - r >= 0.5:                                 # a - floor(a) is exact in any float type
        r += 1
    return -r if v < 0 else r


@cuda.jit(device=True)
def pool_bin(ref, index, bin_size, start, size):
    """Bin ``index``'s window ``[lo, hi)`` on one axis: ``floor(index * bin)`` and
    ``ceil((index + 1) * bin)`` offset by ``start``, clipped to ``[0, size]``."""
    f = ref.dtype.type
    lo = int(math.floor(f(index) * bin_size)) + start
    hi = int(math.ceil(f(index + 1) * bin_size)) + start
    return min(max(lo, 0), size), min(max(hi, 0), size)


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, ::1], f[:, :, :, ::1], _IDX4,
                                    cuda.float64)))
def roi_pool_kernel(x, rois, out, argmax, spatial_scale):
    """out[k, c, i, j] = max of x[n_k, c] over bin (i, j); argmax = its pixel row
    (n*H + y)*W + x (first maximum in row-major order), -1 and 0 for an empty bin. A NaN in
    the bin propagates (output NaN, argmax the bin's last NaN), as in the max-pooling kernel."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    n_rois, ph, pw = out.shape[0], out.shape[2], out.shape[3]
    total = n_rois * channels * ph * pw
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % pw
        i = (t // pw) % ph
        c = (t // (pw * ph)) % channels
        k = t // (pw * ph * channels)
        scale = rois.dtype.type(spatial_scale)
        n = int(rois[k, 0])
        x_start = c_round(rois[k, 1] * scale)
        y_start = c_round(rois[k, 2] * scale)
        x_end = c_round(rois[k, 3] * scale)
        y_end = c_round(rois[k, 4] * scale)
        roi_w = max(x_end - x_start + 1, 1)
        roi_h = max(y_end - y_start + 1, 1)
        bin_h = rois.dtype.type(roi_h) / rois.dtype.type(ph)
        bin_w = rois.dtype.type(roi_w) / rois.dtype.type(pw)
        h_lo, h_hi = pool_bin(rois, i, bin_h, y_start, height)
        w_lo, w_hi = pool_bin(rois, j, bin_w, x_start, width)
        best = out.dtype.type(0)
        best_index = -1
        for y in range(h_lo, h_hi):
            for xx in range(w_lo, w_hi):
                v = x[n, c, y, xx]
                if best_index < 0 or v > best or v != v:    # NaN wins: it propagates
                    best = v
                    best_index = (n * height + y) * width + xx
        out[k, c, i, j] = best
        argmax[k, c, i, j] = best_index


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], _IDX4, f[:, :, :, ::1])))
def roi_pool_backward_kernel(dout, argmax, dx):
    """dx[n, c, y, x] += dout[k, c, i, j] at the saved argmax pixel (n*H + y)*W + x, by
    ``cuda.atomic.add`` (``dx`` zeroed by the caller); nothing for an empty bin."""
    channels, height, width = dx.shape[1], dx.shape[2], dx.shape[3]
    n_rois, ph, pw = dout.shape[0], dout.shape[2], dout.shape[3]
    total = n_rois * channels * ph * pw
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % pw
        i = (t // pw) % ph
        c = (t // (pw * ph)) % channels
        k = t // (pw * ph * channels)
        p = argmax[k, c, i, j]
        if p >= 0:
            xx = p % width
            y = (p // width) % height
            n = p // (width * height)
            cuda.atomic.add(dx, (n, c, y, xx), dout[k, c, i, j])
