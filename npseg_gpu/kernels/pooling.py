"""Pooling kernels: max pooling with indices, max unpooling, average pooling, and backwards.

They mirror :mod:`npseg.ops.pooling` (same window geometry, tie and NaN rules, PyTorch's
divisor); where the NumPy op loops over the kH*kW window taps for all outputs at once, a kernel
runs one thread per output pixel and loops over that pixel's taps. Output (oh, ow) reads

    (oh*s_h - pad_h + i*d_h,  ow*s_w - pad_w + j*d_w)        i < kH, j < kW,

skipping taps outside the input (padding). Thread t handles the output pixel
``np.unravel_index(t, (N, C, H_out, W_out))`` (forward) or the input pixel
``np.unravel_index(t, (N, C, H, W))`` (backward).

The backward kernels *gather*: input pixel (h, w) visits the windows that contain it, window
row oh = (h + pad_h - i*d_h) / s_h for each tap row i where that division is exact and
0 <= oh < H_out (same for columns), so each thread writes only its own pixel: no atomics, and
the result does not depend on thread timing. Max unpooling forward is the one scatter (each
input value goes to its index); two values with the same index race and one is kept, as in
the NumPy op and PyTorch.
"""

from __future__ import annotations

from numba import cuda

from npseg_gpu.kernels._launch import float_signatures, kernel

_I64 = cuda.int64
_IDX4 = cuda.int64[:, :, :, ::1]


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, :, ::1], _IDX4) + (_I64,) * 8))
def max_pool2d_kernel(x, y, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    """y = max over the window's real pixels, indices = h*W + w of the first maximum.

    Mirrors ``npseg.ops.max_pool2d_forward``: taps in row-major order, a tap wins when it is
    the window's first real pixel or strictly greater than the running max (ties keep the first
    maximum); a NaN tap always wins (NaN propagates, the index is the window's last NaN).
    """
    n_batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    total = n_batch * channels * out_h * out_w
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = t % out_w
        oh = (t // out_w) % out_h
        c = (t // (out_w * out_h)) % channels
        n = t // (out_w * out_h * channels)
        best = y.dtype.type(0)
        best_index = -1
        for i in range(kh):
            h = oh * sh - ph + i * dh
            if h < 0 or h >= height:
                continue
            for j in range(kw):
                w = ow * sw - pw + j * dw
                if w < 0 or w >= width:
                    continue
                v = x[n, c, h, w]
                if best_index < 0 or v > best or v != v:
                    best = v
                    best_index = h * width + w
        y[n, c, oh, ow] = best
        indices[n, c, oh, ow] = best_index


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], _IDX4, f[:, :, :, ::1]) + (_I64,) * 8))
def max_pool2d_backward_kernel(dy, indices, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    """dx[n, c, h, w] = sum of dy over the windows containing (h, w) whose index is h*W + w."""
    n_batch, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    total = n_batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = t % width
        h = (t // width) % height
        c = (t // (width * height)) % channels
        n = t // (width * height * channels)
        me = h * width + w
        acc = dx.dtype.type(0)
        for i in range(kh):
            th = h + ph - i * dh
            if th < 0 or th % sh != 0 or th // sh >= out_h:
                continue
            oh = th // sh
            for j in range(kw):
                tw = w + pw - j * dw
                if tw < 0 or tw % sw != 0 or tw // sw >= out_w:
                    continue
                ow = tw // sw
                if indices[n, c, oh, ow] == me:
                    acc += dy[n, c, oh, ow]
        dx[n, c, h, w] = acc


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], _IDX4, f[:, :, :, ::1])))
def max_unpool2d_kernel(x, indices, out):
    """out[n, c].flat[indices[n, c, h, w]] = x[n, c, h, w] (``out`` zeroed by the caller)."""
    n_batch, channels, height, width = x.shape
    out_w = out.shape[3]
    total = n_batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = t % width
        h = (t // width) % height
        c = (t // (width * height)) % channels
        n = t // (width * height * channels)
        k = indices[n, c, h, w]
        out[n, c, k // out_w, k % out_w] = x[n, c, h, w]


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], _IDX4, f[:, :, :, ::1])))
def max_unpool2d_backward_kernel(dout, indices, dx):
    """dx[n, c, h, w] = dout[n, c].flat[indices[n, c, h, w]] (a gather)."""
    n_batch, channels, height, width = dx.shape
    out_w = dout.shape[3]
    total = n_batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = t % width
        h = (t // width) % height
        c = (t // (width * height)) % channels
        n = t // (width * height * channels)
        k = indices[n, c, h, w]
        dx[n, c, h, w] = dout[n, c, k // out_w, k % out_w]


@cuda.jit(device=True)
def avg_count(o, k, s, p, size, count_include_pad):
    """Pixels of window ``o`` along one axis that its divisor counts (``npseg.ops.pooling``'s
    ``_avg_divisor``): the window [o*s - p, o*s - p + k) clipped to the padded border
    size + p; with count_include_pad that many, else only the real pixels in it."""
    start = o * s - p
    end = min(start + k, size + p)
    if count_include_pad != 0:
        return end - start
    return min(end, size) - max(start, 0)


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, :, ::1]) + (_I64,) * 7))
def avg_pool2d_kernel(x, y, kh, kw, sh, sw, ph, pw, count_include_pad):
    """y = (sum of the window's real pixels) / D, D = avg_count(rows) * avg_count(columns)."""
    n_batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2], y.shape[3]
    total = n_batch * channels * out_h * out_w
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        ow = t % out_w
        oh = (t // out_w) % out_h
        c = (t // (out_w * out_h)) % channels
        n = t // (out_w * out_h * channels)
        acc = y.dtype.type(0)
        for i in range(kh):
            h = oh * sh - ph + i
            if h < 0 or h >= height:
                continue
            for j in range(kw):
                w = ow * sw - pw + j
                if 0 <= w < width:
                    acc += x[n, c, h, w]
        divisor = (avg_count(oh, kh, sh, ph, height, count_include_pad)
                   * avg_count(ow, kw, sw, pw, width, count_include_pad))
        y[n, c, oh, ow] = acc / y.dtype.type(divisor)


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, :, ::1]) + (_I64,) * 7))
def avg_pool2d_backward_kernel(dy, dx, kh, kw, sh, sw, ph, pw, count_include_pad):
    """dx[n, c, h, w] = sum of dy / D over the windows containing (h, w)."""
    n_batch, channels, height, width = dx.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    total = n_batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        w = t % width
        h = (t // width) % height
        c = (t // (width * height)) % channels
        n = t // (width * height * channels)
        acc = dx.dtype.type(0)
        for i in range(kh):
            th = h + ph - i
            if th < 0 or th % sh != 0 or th // sh >= out_h:
                continue
            oh = th // sh
            count_h = avg_count(oh, kh, sh, ph, height, count_include_pad)
            for j in range(kw):
                tw = w + pw - j
                if tw < 0 or tw % sw != 0 or tw // sw >= out_w:
                    continue
                ow = tw // sw
                divisor = count_h * avg_count(ow, kw, sw, pw, width, count_include_pad)
                acc += dy[n, c, oh, ow] / dx.dtype.type(divisor)
        dx[n, c, h, w] = acc
