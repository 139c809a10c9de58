"""Pooling on the device (mirror :mod:`npseg.ops.pooling`): max pooling with indices, max
unpooling, average pooling, each with its backward pass.

The window geometry (argument checks, PyTorch's output sizes and padding rule) is the NumPy
module's own ``_geometry``; the arithmetic runs in :mod:`npseg_gpu.kernels.pooling`: one thread
per output pixel forward, and backward one thread per input pixel gathering from the windows
that contain it (no atomics). Max unpooling forward scatters each value to its index.
"""

from __future__ import annotations

import numpy as np

from npseg.ops._checks import (check_bool, check_float_array, check_int_array, check_shape,
                               pair)
from npseg.ops.pooling import _geometry
from npseg_gpu.kernels import pooling as K
from npseg_gpu.kernels._launch import launch
from npseg_gpu.ops._util import contiguous, empty, require_device, zeros

__all__ = [
    "max_pool2d_forward", "max_pool2d_backward",
    "max_unpool2d_forward", "max_unpool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
]


def _window_args(g, with_dilation=True):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g["k"], g["s"], g["p"], g["d"]
    return (kh, kw, sh, sw, ph, pw) + ((dh, dw) if with_dilation else ())


# --- max pooling ------------------------------------------------------------------------------

def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """2-D max pooling with flat per-plane indices, as :func:`npseg.ops.max_pool2d_forward`.

    Returns ``((y, indices), cache)``: y (N, C, H_out, W_out) of x's dtype, indices int64.
    """
    g = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    require_device(x, "x")
    N, C = x.shape[:2]
    y = empty((N, C) + g["out"], x.dtype)
    indices = empty((N, C) + g["out"], np.int64)
    launch(K.max_pool2d_kernel, y.size, contiguous(x), y, indices, *_window_args(g))
    cache = dict(indices=indices, x_shape=tuple(x.shape), dtype=x.dtype, g=g)
    return (y, indices), cache


def max_pool2d_backward(dy, cache):
    """Each input pixel gathers dy from the windows that took it as their maximum.

    Returns ``(dx,)``, dx (N, C, H, W).
    """
    indices, shape, g = cache["indices"], cache["x_shape"], cache["g"]
    check_shape(dy, "dy", indices.shape)
    require_device(dy, "dy")
    dx = empty(shape, cache["dtype"])
    launch(K.max_pool2d_backward_kernel, dx.size, contiguous(dy, cache["dtype"]), indices, dx,
           *_window_args(g))
    return (dx,)


# --- max unpooling ----------------------------------------------------------------------------

def max_unpool2d_forward(x, indices, output_size):
    """Put each value of x back at its flat per-plane index, as
    :func:`npseg.ops.max_unpool2d_forward`. Returns ``(out, cache)``, out (N, C, H_out, W_out).

    Two values with the same index race for it; one of them is kept (as in PyTorch).
    """
    check_float_array(x, "x", 4, "N, C, H, W")
    check_int_array(indices, "indices", shape=x.shape)
    require_device(x, "x")
    require_device(indices, "indices")
    Ho, Wo = pair(output_size, "output_size", 1)
    if indices.size:
        low, high = int(indices.min()), int(indices.max())   # one device-to-host sync
        if low < 0 or high >= Ho * Wo:
            raise ValueError(f"indices must lie in [0, {Ho * Wo}) for output_size ({Ho}, {Wo}), "
                             f"got values in [{low}, {high}]")
    N, C = x.shape[:2]
    idx = contiguous(indices, np.int64)
    out = zeros((N, C, Ho, Wo), x.dtype)
    launch(K.max_unpool2d_kernel, x.size, contiguous(x), idx, out)
    return out, dict(indices=idx, x_shape=tuple(x.shape), out_shape=(N, C, Ho, Wo))


def max_unpool2d_backward(dout, cache):
    """dx[n, c, h, w] = dout[n, c].flat[indices[n, c, h, w]]. Returns ``(dx,)``."""
    check_shape(dout, "dout", cache["out_shape"])
    require_device(dout, "dout")
    dx = empty(cache["x_shape"], dout.dtype)
    launch(K.max_unpool2d_backward_kernel, dx.size, contiguous(dout), cache["indices"], dx)
    return (dx,)


# --- average pooling --------------------------------------------------------------------------

def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True):
    """2-D average pooling, as :func:`npseg.ops.avg_pool2d_forward` (PyTorch's divisor).

    Returns ``(y, cache)``, y (N, C, H_out, W_out).
    """
    g = _geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    require_device(x, "x")
    N, C = x.shape[:2]
    y = empty((N, C) + g["out"], x.dtype)
    launch(K.avg_pool2d_kernel, y.size, contiguous(x), y, *_window_args(g, False),
           int(count_include_pad))
    return y, dict(g=g, count_include_pad=count_include_pad, x_shape=tuple(x.shape),
                   dtype=x.dtype)


def avg_pool2d_backward(dy, cache):
    """Each input pixel gathers dy / D from the windows containing it. Returns ``(dx,)``."""
    g, shape = cache["g"], cache["x_shape"]
    N, C = shape[:2]
    check_shape(dy, "dy", (N, C) + g["out"])
    require_device(dy, "dy")
    dx = empty(shape, cache["dtype"])
    launch(K.avg_pool2d_backward_kernel, dx.size, contiguous(dy, cache["dtype"]), dx,
           *_window_args(g, False), int(cache["count_include_pad"]))
    return (dx,)
