"""Resizing on the device (mirror :mod:`npseg.ops.interpolate`): bilinear and nearest.

Same arguments, checks and results as the NumPy op. Where it multiplies by dense interpolation
matrices, the kernels of :mod:`npseg_gpu.kernels.interpolate` read only the (at most two) taps
per output pixel, and the backward pass gathers into each input pixel from the outputs that read
it. The per-axis tap tables are built on the host once per (size, mode, dtype) and kept on the
device.
"""

from __future__ import annotations

import functools

import numpy as np

from npseg.ops._checks import check_shape
from npseg.ops.interpolate import _check_interpolate
from npseg_gpu._device import device
from npseg_gpu.kernels import interpolate as K
from npseg_gpu.kernels._launch import launch
from npseg_gpu.ops._util import contiguous, empty, require_device, upload

__all__ = ["interpolate_forward", "interpolate_backward"]


@functools.lru_cache(maxsize=256)
def _axis_tables(n_in, n_out, mode, align_corners, dtype, where):
    """Device tables of one axis: forward taps (index, weight) and the transposed lists."""
    if mode == "nearest":
        index, weight = K.nearest_taps(n_in, n_out)
    else:
        index, weight = K.linear_taps(n_in, n_out, align_corners)
    weight = weight.astype(dtype)
    start, outputs, out_weight = K.transpose_taps(index, weight, n_in)
    return tuple(upload(a) for a in (index, weight, start, outputs, out_weight))


def interpolate_forward(x, size, mode="bilinear", align_corners=False):
    """Resize x (N, C, H_in, W_in) to ``size`` = (H_out, W_out), as
    :func:`npseg.ops.interpolate_forward`. Returns ``(y, cache)``.
    """
    (out_h, out_w), mode, align_corners = _check_interpolate(x, size, mode, align_corners)
    N, C, H, W = x.shape
    require_device(x, "x")

    dtype = np.dtype(x.dtype)
    rows = _axis_tables(H, out_h, mode, align_corners, dtype, device())
    columns = _axis_tables(W, out_w, mode, align_corners, dtype, device())
    y = empty((N, C, out_h, out_w), x.dtype)
    launch(K.interpolate_kernel, y.size, contiguous(x), y, rows[0], rows[1], columns[0],
           columns[1])
    return y, dict(rows=rows, columns=columns, x_shape=tuple(x.shape), dtype=dtype)


def interpolate_backward(dy, cache):
    """Gradient of the resize, dx = A_h^T dy A_w (gathered per input pixel). Returns ``(dx,)``."""
    rows, columns, shape = cache["rows"], cache["columns"], cache["x_shape"]
    N, C = shape[:2]
    check_shape(dy, "dy", (N, C, rows[0].shape[0], columns[0].shape[0]))
    require_device(dy, "dy")
    dx = empty(shape, cache["dtype"])
    launch(K.interpolate_backward_kernel, dx.size, contiguous(dy, cache["dtype"]), dx,
           rows[2], rows[3], rows[4], columns[2], columns[3], columns[4])
    return (dx,)
