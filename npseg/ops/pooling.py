"""Pooling: max pooling with indices, max unpooling (SegNet's decoder), average pooling.

Shapes (NCHW): ``x`` is ``(N, C, H, W)``; a pooling output is ``(N, C, H_out, W_out)`` with, per
axis (PyTorch's rule, see :func:`npseg.ops._checks.conv_output_size`),

    H_out = floor((H + 2p - d (k - 1) - 1) / s) + 1          (ceil instead of floor with ceil_mode,
                                                              the last window starting inside the
                                                              input or its left padding)

Output ``(oh, ow)`` looks at the window of input positions

    (oh s - p + i d,  ow s - p + j d)        i = 0 .. kH-1,  j = 0 .. kW-1.

How the code computes it: instead of one loop per output pixel, it loops over the ``kH * kW``
*window offsets* ``(i, j)``. For a fixed offset, the inputs that all outputs read form one
strided slice of the padded input,

    x_pad[:, :, i d : i d + s (H_out - 1) + 1 : s,  j d : ... : s]   -- shape (N, C, H_out, W_out),

so a pooling is ``kH * kW`` vectorized elementwise steps over output-sized arrays (a running max,
or a running sum), with no copy of the windows.
"""

from __future__ import annotations

import numpy as np

from npseg.ops._checks import (check_bool, check_float_array, check_int_array, check_shape,
                               conv_output_size, pair)

__all__ = [
    "max_pool2d_forward", "max_pool2d_backward",
    "max_unpool2d_forward", "max_unpool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
]


# --------------------------------------------------------------------------------------------
# shared geometry
# --------------------------------------------------------------------------------------------

def _geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Check the arguments of a pooling and return its geometry as a dict of (h, w) pairs."""
    check_float_array(x, "x", 4, "N, C, H, W")
    k = pair(kernel_size, "kernel_size", 1)
    s = k if stride is None else pair(stride, "stride", 1)
    p = pair(padding, "padding", 0)
    d = pair(dilation, "dilation", 1)
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size (PyTorch's rule), got "
                         f"padding={padding!r} with kernel_size={kernel_size!r}")
    size = tuple(x.shape[2:])
    out = tuple(conv_output_size(size[a], k[a], s[a], p[a], d[a], ceil_mode) for a in (0, 1))
    if min(out) < 1:
        raise ValueError(f"kernel_size={kernel_size!r} (dilation={dilation!r}, "
                         f"padding={padding!r}) does not fit in the input of spatial size {size}: "
                         f"the output would be {out}")
    # Each window must see at least one input pixel. PyTorch's padding rule ensures it, except
    # for a dilated window whose taps straddle a tiny input (e.g. k=2, d=3, p=1 on H=2).
    first = []
    for a in (0, 1):
        taps = _taps(out[a], k[a], s[a], p[a], d[a])            # (out, k) input coordinates
        inside = (taps >= 0) & (taps < size[a])
        if not inside.any(axis=1).all():
            raise ValueError(f"dilation={dilation!r} with padding={padding!r} puts a whole "
                             f"pooling window in the padding for spatial size {size}")
        first.append(taps[np.arange(out[a]), inside.argmax(axis=1)])
    # padding on the low side is p; on the high side as much as the last window needs
    # (ceil_mode can let it run past the right padding)
    extent = tuple((out[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 for a in (0, 1))
    high = tuple(max(0, extent[a] - size[a] - p[a]) for a in (0, 1))
    return dict(size=size, out=out, k=k, s=s, p=p, d=d, high=high, first=tuple(first))


def _taps(out, k, s, p, d):
    """Input coordinate of tap ``i`` of window ``o`` along one axis: ``o s - p + i d``."""
    return (np.arange(out) * s - p)[:, None] + np.arange(k) * d


def _pad(x, g, value):
    """``x`` padded with ``value`` (low side ``p``, high side as the windows need); no copy
    when nothing needs padding."""
    (ph, pw), (qh, qw) = g["p"], g["high"]
    if ph == pw == qh == qw == 0:
        return x
    N, C, H, W = x.shape
    xp = np.full((N, C, H + ph + qh, W + pw + qw), value, dtype=x.dtype)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp


def _window_tap(xp, g, i, j):
    """The strided view of ``xp`` holding tap ``(i, j)`` of every window: (N, C, H_out, W_out)."""
    (Ho, Wo), (sh, sw), (dh, dw) = g["out"], g["s"], g["d"]
    return xp[:, :, i * dh:i * dh + sh * (Ho - 1) + 1:sh, j * dw:j * dw + sw * (Wo - 1) + 1:sw]


def _plane_offsets(shape, plane_size):
    """``(n C + c) * plane_size`` shaped (N, C, 1, 1): turns per-plane flat indices into indices
    into the whole flattened array."""
    N, C = shape[:2]
    return (np.arange(N * C, dtype=np.int64) * plane_size).reshape(N, C, 1, 1)


# --------------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------------

def _running_max(xp, g, nan_aware):
    """Max over the window taps and the number of the first tap that holds it.

    Taps are scanned in row-major window order; a tap replaces the running max only when it is
    strictly greater (ties keep the first maximum, as PyTorch does). With ``nan_aware`` a NaN tap
    also replaces it (PyTorch's rule: the last NaN of a window is the index returned).
    """
    kh, kw = g["k"]
    y = _window_tap(xp, g, 0, 0).copy()
    arg = np.zeros(y.shape, dtype=np.min_scalar_type(kh * kw - 1))
    for t in range(1, kh * kw):
        v = _window_tap(xp, g, t // kw, t % kw)
        better = v > y
        if nan_aware:
            better |= np.isnan(v)
        np.maximum(y, v, out=y)                      # NaN propagates, like PyTorch
        # taps come in increasing order, so the newest winner has the largest tap number
        np.maximum(arg, better * arg.dtype.type(t), out=arg)
    return y, arg


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """2-D max pooling with PyTorch's ``return_indices`` semantics.

        y[n, c, oh, ow]   = max_{i, j} x_pad[n, c, oh s - p + i d, ow s - p + j d]
        idx[n, c, oh, ow] = h * W + w  of that maximum in the (unpadded) H*W plane of x

    Padded positions act as -inf and are never selected (a window whose real pixels are all -inf
    returns its first real pixel). Ties pick the first maximum in row-major window order. NaN
    propagates: the output is NaN and the index points at the window's last NaN (as PyTorch).

    x: (N, C, H, W) float32/float64. kernel_size, stride (None: = kernel_size), padding,
    dilation: int or (h, w) pair; padding <= kernel_size // 2 (PyTorch's rule).
    Returns ``((y, indices), cache)``: y (N, C, H_out, W_out) of x's dtype, indices int64.
    """
    g = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    W, (Ho, Wo) = g["size"][1], g["out"]
    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = g["s"], g["p"], g["d"], g["k"]
    xp = _pad(x, g, -np.inf)
    y, arg = _running_max(xp, g, nan_aware=False)
    if np.isnan(y).any():                            # rare: redo with PyTorch's NaN rule
        y, arg = _running_max(xp, g, nan_aware=True)

    # flat index = (oh s - p + i d) * W + (ow s - p + j d)  for the winning tap t = (i, j)
    window_start = ((np.arange(Ho) * sh - ph) * W)[:, None] + (np.arange(Wo) * sw - pw)
    tap_offset = (np.arange(kh) * dh * W)[:, None] + np.arange(kw) * dw
    indices = window_start + tap_offset.reshape(-1)[arg]
    if xp is not x:
        # An all -inf window may have "won" on a padded tap: PyTorch returns the window's first
        # real pixel there. Only windows whose maximum is -inf can be affected.
        all_inf = np.isneginf(y)
        if all_inf.any():
            first_real = g["first"][0][:, None] * W + g["first"][1]
            indices = np.where(all_inf, first_real, indices)
    cache = dict(indices=indices, x_shape=x.shape, dtype=x.dtype, k=g["k"], s=g["s"], d=g["d"])
    return (y, indices), cache


def max_pool2d_backward(dy, cache):
    """Gradient of max pooling: each output's gradient goes to the input pixel it took.

        dx.flat_plane[n, c, idx[n, c, oh, ow]] += dy[n, c, oh, ow]

    Overlapping windows can pick the same pixel: the contributions add up (``np.bincount`` over
    the flat indices). When windows cannot overlap (stride >= dilated kernel extent on both
    axes) every pixel receives at most one gradient and a plain scatter does.
    Returns ``(dx,)``, dx (N, C, H, W).
    """
    indices, shape = cache["indices"], cache["x_shape"]
    check_shape(dy, "dy", indices.shape)
    H, W = shape[2:]
    flat = (indices + _plane_offsets(shape, H * W)).reshape(-1)
    disjoint = all(s >= d * (k - 1) + 1 for k, s, d in zip(cache["k"], cache["s"], cache["d"]))
    if disjoint:
        dx = np.zeros(int(np.prod(shape)), dtype=cache["dtype"])
        dx[flat] = dy.reshape(-1)
    else:
        dx = np.bincount(flat, weights=dy.reshape(-1), minlength=int(np.prod(shape)))
    return (dx.reshape(shape).astype(cache["dtype"], copy=False),)


# --------------------------------------------------------------------------------------------
# max unpooling
# --------------------------------------------------------------------------------------------

def max_unpool2d_forward(x, indices, output_size):
    """Partial inverse of max pooling (SegNet's upsampling): put each value back at its index.

        out = 0 (N, C, H_out, W_out);   out.flat_plane[n, c, indices[n, c, h, w]] = x[n, c, h, w]

    x: (N, C, H, W) float; indices: integer array of x's shape, flat within each
    H_out * W_out plane (as returned by :func:`max_pool2d_forward`); output_size: int or
    (H_out, W_out). If two values share an index, one of them is kept (as in PyTorch).
    Returns ``(out, cache)``.
    """
    check_float_array(x, "x", 4, "N, C, H, W")
    check_int_array(indices, "indices", shape=x.shape)
    Ho, Wo = pair(output_size, "output_size", 1)
    if indices.size and (indices.min() < 0 or indices.max() >= Ho * Wo):
        raise ValueError(f"indices must lie in [0, {Ho * Wo}) for output_size ({Ho}, {Wo}), "
                         f"got values in [{indices.min()}, {indices.max()}]")
    N, C = x.shape[:2]
    flat = (indices.astype(np.int64, copy=False) + _plane_offsets(x.shape, Ho * Wo)).reshape(-1)
    out = np.zeros(N * C * Ho * Wo, dtype=x.dtype)
    out[flat] = x.reshape(-1)
    return out.reshape(N, C, Ho, Wo), dict(flat=flat, x_shape=x.shape, dtype=x.dtype,
                                              out_shape=(N, C, Ho, Wo))


def max_unpool2d_backward(dout, cache):
    """Gradient of max unpooling: gather the output gradient at the indices.

        dx[n, c, h, w] = dout.flat_plane[n, c, indices[n, c, h, w]]

    Returns ``(dx,)``, dx of x's shape.
    """
    check_shape(dout, "dout", cache["out_shape"])
    dx = dout.reshape(-1)[cache["flat"]].reshape(cache["x_shape"])
    return (dx.astype(cache["dtype"], copy=False),)


# --------------------------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------------------------

def _avg_divisor(g, count_include_pad, dtype):
    """PyTorch's divisor for every window, (H_out, W_out); a product of one count per axis.

    Along an axis, window o covers [start, start + k) with start = o s - p. Its end is clipped
    to size + p (the padded border; ceil_mode windows can run past it): with count_include_pad
    the count is ``min(start + k, size + p) - start``; without, only real pixels count:
    ``min(start + k, size) - max(start, 0)``.
    """
    counts = []
    for a in (0, 1):
        n, k, s, p = g["size"][a], g["k"][a], g["s"][a], g["p"][a]
        start = np.arange(g["out"][a]) * s - p
        end = np.minimum(start + k, n + p)
        if count_include_pad:
            counts.append(end - start)
        else:
            counts.append(np.minimum(end, n) - np.maximum(start, 0))
    return np.multiply.outer(counts[0], counts[1]).astype(dtype)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True):
    """2-D average pooling (PyTorch semantics).

        y[n, c, oh, ow] = sum_{i, j} x_pad[n, c, oh s - p + i, ow s - p + j] / D[oh, ow]

    with zero padding and D from :func:`_avg_divisor` (count_include_pad: padded pixels count,
    pixels past the padded border do not; else only real pixels count).

    x: (N, C, H, W) float32/float64; kernel_size, stride (None: = kernel_size), padding: int or
    (h, w) pair, padding <= kernel_size // 2. Returns ``(y, cache)``, y (N, C, H_out, W_out).
    """
    g = _geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    xp = _pad(x, g, 0)
    kh, kw = g["k"]
    y = _window_tap(xp, g, 0, 0).copy()
    for t in range(1, kh * kw):
        y += _window_tap(xp, g, t // kw, t % kw)
    divisor = _avg_divisor(g, count_include_pad, x.dtype)
    y /= divisor
    return y, dict(g=g, divisor=divisor, x_shape=x.shape, dtype=x.dtype)


def avg_pool2d_backward(dy, cache):
    """Gradient of average pooling: every pixel of a window gets dy / D of that window.

        dx_pad[n, c, oh s - p + i, ow s - p + j] += dy[n, c, oh, ow] / D[oh, ow]

    one strided add per window tap (i, j); the padding is cut off at the end.
    Returns ``(dx,)``, dx (N, C, H, W).
    """
    g, shape = cache["g"], cache["x_shape"]
    N, C, H, W = shape
    check_shape(dy, "dy", (N, C) + g["out"])
    (ph, pw), (qh, qw), (kh, kw) = g["p"], g["high"], g["k"]
    share = dy / cache["divisor"]
    dxp = np.zeros((N, C, H + ph + qh, W + pw + qw), dtype=cache["dtype"])
    for t in range(kh * kw):
        tap = _window_tap(dxp, g, t // kw, t % kw)       # a view: adding to it adds to dxp
        tap += share
    if dxp.shape == shape:
        return (dxp,)
    return (np.ascontiguousarray(dxp[:, :, ph:ph + H, pw:pw + W]),)
