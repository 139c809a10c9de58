"""im2col and col2im kernels (mirror :func:`npseg.ops.im2col.im2col` / ``col2im``).

Layout of ``torch.nn.functional.unfold``: ``cols`` is (N, C*kH*kW, L), L = H_out*W_out, and

    cols[n, c*kH*kW + p*kW + q, i*W_out + j] = x[n, c, s_h*i - pad_h + d_h*p, s_w*j - pad_w + d_w*q]

(0 where that position is in the zero padding). :func:`im2col_kernel` runs one thread per
entry of ``cols``; :func:`col2im_kernel` runs one thread per pixel of the image and *gathers*
the entries read from that pixel (no atomics, deterministic): pixel y is read by kernel row p of
window row i exactly when y + pad_h - d_h*p = s_h*i with 0 <= i < H_out (same for columns).

Thread index -> element: ``np.unravel_index(t, (N, C*kH*kW, L))`` for im2col (then
``row -> (c, p, q)`` over (C, kH, kW) and ``col -> (i, j)`` over (H_out, W_out)), and
``np.unravel_index(t, (N, C, H, W))`` for col2im: C order, the last axis fastest, so
neighbouring threads touch neighbouring memory.
"""

from __future__ import annotations

from numba import cuda

from npseg_gpu.kernels._launch import float_signatures, kernel


_I64 = cuda.int64
_WINDOW_ARGS = (_I64,) * 8  # kH, kW, s_h, s_w, pad_h, pad_w, d_h, d_w


@kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, ::1], _I64, _I64) + _WINDOW_ARGS))
def im2col_kernel(x, cols, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw):
    """cols[n, (c, p, q), (i, j)] = x[n, c, s_h*i - pad_h + d_h*p, s_w*j - pad_w + d_w*q] or 0."""
    n_batch, channels, height, width = x.shape
    rows = channels * kh * kw
    length = out_h * out_w
    total = n_batch * rows * length
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        col = t % length
        row = (t // length) % rows
        n = t // (length * rows)
        i = col // out_w
        j = col % out_w
        c = row // (kh * kw)
        p = (row // kw) % kh
        q = row % kw
        y = i * sh - ph + p * dh
        xx = j * sw - pw + q * dw
        if 0 <= y < height and 0 <= xx < width:
            cols[n, row, col] = x[n, c, y, xx]
        else:
            cols[n, row, col] = 0


@kernel(float_signatures(lambda f: (f[:, :, ::1], f[:, :, :, ::1], _I64, _I64) + _WINDOW_ARGS))
def col2im_kernel(cols, img, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw):
    """img[n, c, y, x] = sum of the cols entries read from (y, x) (the adjoint of im2col)."""
    n_batch, channels, height, width = img.shape
    total = n_batch * channels * height * width
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = t % width
        y = (t // width) % height
        c = (t // (width * height)) % channels
        n = t // (width * height * channels)
        acc = img.dtype.type(0)
        for p in range(kh):
            ty = y + ph - p * dh          # = s_h * i for the window row i that reads y with p
            if ty < 0 or ty % sh != 0 or ty // sh >= out_h:
                continue
            i = ty // sh
            for q in range(kw):
                tx = xx + pw - q * dw
                if tx < 0 or tx % sw != 0 or tx // sw >= out_w:
                    continue
                acc += cols[n, (c * kh + p) * kw + q, i * out_w + tx // sw]
        img[n, c, y, xx] = acc
