"""Interpolation kernels (mirror :mod:`npseg.ops.interpolate`), bilinear and nearest.

Both modes are separable: along each axis, output pixel o reads T input pixels ``index[o, a]``
with weights ``weight[o, a]`` (bilinear: T = 2 neighbours with 1 - l and l; nearest: T = 1 with
weight 1). These per-axis "taps" are small host tables built by :func:`linear_taps` /
:func:`nearest_taps` (NumPy, the same formulas as the NumPy op's interpolation matrices: row o
of A holds weight[o, a] at column index[o, a]). Then

    y[n, c, oh, ow] = sum_a weight_h[oh, a] * sum_b weight_w[ow, b] * x[n, c, index_h[oh, a],
                                                                          index_w[ow, b]]

one thread per output pixel ``np.unravel_index(t, (N, C, H_out, W_out))``. The backward pass is
the transposed map, dx = A_h^T dy A_w, computed by *gathering*: :func:`transpose_taps` turns
each axis's taps into, for every input pixel, the list of (output pixel, weight) that read it
(compressed rows: ``start[i]:start[i + 1]``), and one thread per input pixel sums over those
lists. No atomics, deterministic.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from npseg_gpu.kernels._launch import float_signatures, kernel

_TAB = cuda.int64[:, ::1]
_LIST = cuda.int64[::1]


def linear_taps(n_in: int, n_out: int, align_corners: bool):
    """Bilinear taps along one axis: index (n_out, 2) int64 and weight (n_out, 2) float64.

        src = o (in - 1) / (out - 1)                  align_corners (0 when out == 1)
        src = max((o + 0.5) in / out - 0.5, 0)        otherwise
        i0 = min(floor(src), in - 1), i1 = min(i0 + 1, in - 1), l = clip(src - i0, 0, 1)
    """
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = dst * scale
    else:
        src = np.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    return np.stack([i0, i1], axis=1), np.stack([1 - lam, lam], axis=1)


def nearest_taps(n_in: int, n_out: int):
    """Nearest taps along one axis: index (n_out, 1) and weight 1 (PyTorch's float32 rule,
    src = min(floor(o * float32(in / out)), in - 1))."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    src = np.minimum(src, n_in - 1)
    return src[:, None], np.ones((n_out, 1))


def transpose_taps(index, weight, n_in: int):
    """For every input pixel i the outputs that read it: ``(start (n_in + 1,), output, weight)``
    with the pairs of pixel i at ``start[i]:start[i + 1]``."""
    n_out, taps = index.shape
    flat = index.reshape(-1)
    order = np.argsort(flat, kind="stable")
    start = np.zeros(n_in + 1, dtype=np.int64)
    start[1:] = np.cumsum(np.bincount(flat, minlength=n_in))
    outputs = np.repeat(np.arange(n_out, dtype=np.int64), taps)[order]
    return start, outputs, weight.reshape(-1)[order]


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, :, ::1], _TAB, f[:, ::1], _TAB,
                                    f[:, ::1])))
def interpolate_kernel(x, y, index_h, weight_h, index_w, weight_w):
    """y[n, c, oh, ow] = sum_a wh[oh, a] sum_b ww[ow, b] x[n, c, ih[oh, a], iw[ow, b]]."""
    n_batch, channels = x.shape[0], x.shape[1]
    out_h, out_w = y.shape[2], y.shape[3]
    taps_h, taps_w = index_h.shape[1], index_w.shape[1]
    total = n_batch * channels * out_h * out_w
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = t % out_w
        oh = (t // out_w) % out_h
        c = (t // (out_w * out_h)) % channels
        n = t // (out_w * out_h * channels)
        acc = y.dtype.type(0)
        for a in range(taps_h):
            h = index_h[oh, a]
            row = y.dtype.type(0)
            for b in range(taps_w):
                row += weight_w[ow, b] * x[n, c, h, index_w[ow, b]]
            acc += weight_h[oh, a] * row
        y[n, c, oh, ow] = acc


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, :, ::1], _LIST, _LIST, f[::1],
                                    _LIST, _LIST, f[::1])))
def interpolate_backward_kernel(dy, dx, start_h, output_h, weight_h, start_w, output_w,
                                weight_w):
    """dx[n, c, h, w] = sum of wh * ww * dy[n, c, oh, ow] over the outputs (oh, ow) reading
    (h, w)."""
    n_batch, channels, height, width = dx.shape
    total = n_batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = t % width
        h = (t // width) % height
        c = (t // (width * height)) % channels
        n = t // (width * height * channels)
        acc = dx.dtype.type(0)
        for a in range(start_h[h], start_h[h + 1]):
            oh = output_h[a]
            row = dx.dtype.type(0)
            for b in range(start_w[w], start_w[w + 1]):
                row += weight_w[b] * dy[n, c, oh, output_w[b]]
            acc += weight_h[a] * row
        dx[n, c, h, w] = acc
