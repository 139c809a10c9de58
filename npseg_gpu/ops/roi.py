"""RoIAlign and RoIPool on the device (mirror :mod:`npseg.ops.roi`, torchvision's rules).

Same arguments, checks (the NumPy module's own ``_check_rois`` and ``_checks.check_dout``, which
read the device arrays through their array module), outputs and caches as the NumPy ops:

* ``roi_align_forward`` -> ``(out, (x.shape, x.dtype, rois copy, output_size, spatial_scale,
  sampling_ratio, aligned))``; the backward recomputes the taps from the cached RoIs.
* ``roi_pool_forward`` -> ``(out, (x.shape, x.dtype, argmax))``, argmax (K, C, ph, pw) int64
  holding the pixel row ``(n * H + y) * W + x`` of each maximum, -1 for an empty bin.

The arithmetic runs in :mod:`npseg_gpu.kernels.roi`, one thread per output element. Both
backward passes scatter with ``cuda.atomic.add`` into a zeroed ``dx`` (RoIAlign: the samples of
different RoIs overlap arbitrarily; RoIPool: each output feeds its one argmax pixel), so where
several gradients meet at a pixel their summation order depends on thread timing.

The argument checks read the RoIs (finite, integral batch indices in range, ``x2 >= x1``):
a few device-to-host reads of a flag each, as every check of data must.
"""

from __future__ import annotations

import numpy as np

from npseg.ops._checks import check_bool, check_dout, check_int, check_number, pair
from npseg.ops.roi import _check_rois
from npseg_gpu.kernels import roi as K
from npseg_gpu.kernels._launch import launch
from npseg_gpu.ops._util import contiguous, empty, require_device, zeros

__all__ = ["roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward"]


def _inputs(x, rois):
    _check_rois(x, rois)
    require_device(x, "x")
    require_device(rois, "rois")


# --- RoIAlign ---------------------------------------------------------------------------------

def roi_align_forward(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign, as :func:`npseg.ops.roi_align_forward`: ``x`` (N, C, H, W), ``rois`` (K, 5)
    ``(batch_index, x1, y1, x2, y2)`` of x's dtype. Returns ``(out, cache)``, out (K, C, ph, pw)::

        out[k, c, i, j] = 1/count * sum_{samples of bin (i, j)} sum_{4 corners} w * x[n_k, c, y, x]
    """
    _inputs(x, rois)
    output_size = pair(output_size, "output_size", minimum=1)
    spatial_scale = check_number(spatial_scale, "spatial_scale", low=0, low_open=True)
    sampling_ratio = check_int(sampling_ratio, "sampling_ratio")
    aligned = check_bool(aligned, "aligned")
    ph, pw = output_size
    rois = contiguous(rois).copy()          # the cache's own copy (a caller may reuse rois)
    out = empty((rois.shape[0], x.shape[1], ph, pw), x.dtype)
    launch(K.roi_align_kernel, out.size, contiguous(x), rois, out, spatial_scale,
           sampling_ratio, int(aligned))
    cache = (tuple(x.shape), x.dtype, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return out, cache


def roi_align_backward(dout, cache):
    """Gradient of RoIAlign w.r.t. ``x``: every tap adds ``w / count * dout[k, c, i, j]`` to the
    pixel it read (atomics). ``dout`` (K, C, ph, pw). Returns ``(dx,)``."""
    shape, dtype, rois, output_size, spatial_scale, sampling_ratio, aligned = cache
    ph, pw = output_size
    check_dout(dout, (rois.shape[0], shape[1], ph, pw), dtype)
    require_device(dout, "dout")
    dx = zeros(shape, dtype)
    launch(K.roi_align_backward_kernel, dout.size, contiguous(dout), rois, dx, spatial_scale,
           sampling_ratio, int(aligned))
    return (dx,)


# --- RoIPool ----------------------------------------------------------------------------------

def roi_pool_forward(x, rois, output_size, spatial_scale=1.0):
    """RoIPool, as :func:`npseg.ops.roi_pool_forward`. Returns ``(out, cache)``, out
    (K, C, ph, pw)::

        out[k, c, i, j] = max_{y in rows_i, x in cols_j} x[n_k, c, y, x]     (0 if the bin is empty)
    """
    _inputs(x, rois)
    output_size = pair(output_size, "output_size", minimum=1)
    spatial_scale = check_number(spatial_scale, "spatial_scale", low=0, low_open=True)
    ph, pw = output_size
    shape = (rois.shape[0], x.shape[1], ph, pw)
    out = empty(shape, x.dtype)
    argmax = empty(shape, np.int64)
    launch(K.roi_pool_kernel, out.size, contiguous(x), contiguous(rois), out, argmax,
           spatial_scale)
    return out, (tuple(x.shape), x.dtype, argmax)


def roi_pool_backward(dout, cache):
    """Gradient of RoIPool w.r.t. ``x``: each output's gradient goes to its argmax (atomics);
    nothing for an empty bin. ``dout`` (K, C, ph, pw). Returns ``(dx,)``."""
    shape, dtype, argmax = cache
    check_dout(dout, argmax.shape, dtype)
    require_device(dout, "dout")
    dx = zeros(shape, dtype)
    launch(K.roi_pool_backward_kernel, dout.size, contiguous(dout), argmax, dx)
    return (dx,)
