"""2-D convolution and transposed convolution (NCHW, PyTorch semantics), as matrix products.

conv2d
------
x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW), b (C_out,) or None. With stride s, padding
pad, dilation d (each per axis) and G = groups, output channel o belongs to group
g = o // (C_out/G) and sees only that group's input channels:

    out[n, o, i, j] = b[o] + sum_{c < C_in/G, p < kH, q < kW}
                      w[o, c, p, q] * xpad[n, g*C_in/G + c, s_h*i + d_h*p, s_w*j + d_w*q]

where xpad is x zero-padded by pad on each side (so xpad[.., y, x'] = x[.., y - pad_h,
x' - pad_w]), and

    H_out = floor((H + 2*pad_h - d_h*(kH - 1) - 1) / s_h) + 1            (W_out alike).

As matrices: with cols = im2col(x), per image n and group g,

    out[n, g] = W[g] @ cols[n, g]        W[g]: (C_out/G, C_in/G*kH*kW),  cols: (C_in/G*kH*kW, L)

and the backward pass is two more products and the adjoint of im2col:

    dW[g]        = sum_n dout[n, g] @ cols[n, g]^T
    dcols[n, g]  = W[g]^T @ dout[n, g],          dx = col2im(dcols)
    db[o]        = sum_{n, i, j} dout[n, o, i, j]

conv_transpose2d
----------------
x (N, C_in, H, W), w (C_in, C_out/groups, kH, kW), b (C_out,) or None. The transposed
convolution is the adjoint (matrix transpose) of conv2d with the same w, stride, padding,
dilation and groups: conv2d maps an (H_out, W_out) image with C_out channels to the (H, W)
x, and for every x and y

    < conv2d(y, w), x > = < y, conv_transpose2d(x, w) >          (without bias).

Written out, each input pixel scatters its kernel-weighted copy into the output:

    out[n, g*C_out/G + o, s_h*i + d_h*p - pad_h, s_w*j + d_w*q - pad_w]
        += sum_{c < C_in/G} w[g*C_in/G + c, o, p, q] * x[n, g*C_in/G + c, i, j]   (+ b)

    H_out = (H - 1)*s_h - 2*pad_h + d_h*(kH - 1) + output_padding_h + 1        (W_out alike)

output_padding (< stride or < dilation, as in PyTorch) only picks which of the s possible sizes
the output has (several output sizes give the same conv2d output size). So the forward pass is
conv2d's input gradient, cols = W^T @ x then col2im, and its backward pass uses im2col:

    dcols = im2col(dout),  dx[n, g] = W[g] @ dcols[n, g],  dW[g] = sum_n x[n, g] @ dcols[n, g]^T

Implementation notes: the column matrices use the pitched layout of ``npseg.ops.im2col`` (each
kernel offset one contiguous slice; a few junk columns per row of windows, dropped after the
products). The batch is processed in blocks of images whose column matrix fits in the CPU cache
(see ``_image_blocks``); the column matrix of one block is the only large temporary. It is
channel-major, (C*kH*kW, n*L) for n images of L columns, so that each product is one BLAS GEMM
per group for the whole block: the weights are packed once per block, not once per image, which
matters where an image has few columns (a 7x7 kernel on a 2x2 map: 4x faster than per image). The
backward pass rebuilds it from the cached x (rather than keeping a 9x-larger copy of every
layer's input alive between forward and backward) and writes dcols over it; with stride 1 it
builds only the columns of dout, which give dx as a convolution of dout and dW both. The cache
keeps a reference to x, so x must not be modified before backward.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ._channels import spread
from ._checks import check_float_array, check_int, check_same_dtype, check_shape, pair
from ._threads import get_num_threads, map_pieces, split, sum_in_order
from .im2col import _col2im_pitched, _im2col_pitched, _Pitch, _windows_count

__all__ = ["conv2d_forward", "conv2d_backward",
           "conv_transpose2d_forward", "conv_transpose2d_backward"]


# ---------------------------------------------------------------------------------- checks

def _check_conv(x, w, b, stride, padding, dilation, groups, transposed):
    """Validate the arguments of both convolutions; returns the normalized parameters."""
    check_float_array(x, "x", 4, "N, C_in, H, W")
    layout = "C_in, C_out/groups, kH, kW" if transposed else "C_out, C_in/groups, kH, kW"
    check_float_array(w, "w", 4, layout)
    check_same_dtype(x, "x", w=w, b=b)
    stride = pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    groups = check_int(groups, "groups", 1)

    N, C_in, H, W = x.shape
    if C_in < 1 or H < 1 or W < 1:
        raise ValueError(f"x must have at least one channel and one pixel, got shape {x.shape}")
    if min(w.shape) < 1:
        raise ValueError(f"w must have no empty dimension ({layout}), got shape {w.shape}")
    if C_in % groups:
        raise ValueError(f"groups ({groups}) must divide the {C_in} input channels of x")
    if transposed:
        if w.shape[0] != C_in:
            raise ValueError(f"w must have C_in = {C_in} (the channels of x) in dimension 0 "
                             f"({layout}), got shape {w.shape}")
        C_out = w.shape[1] * groups
    else:
        C_out = w.shape[0]
        if C_out % groups:
            raise ValueError(f"groups ({groups}) must divide the {C_out} output channels "
                             f"(dimension 0) of w")
        if w.shape[1] != C_in // groups:
            raise ValueError(f"w must have C_in/groups = {C_in}/{groups} = {C_in // groups} "
                             f"channels in dimension 1 ({layout}) for x of shape {x.shape}, "
                             f"got shape {w.shape}")
    if b is not None:
        check_float_array(b, "b", 1, "C_out")
        check_shape(b, "b", (C_out,))
    return stride, padding, dilation, groups, C_out


def _check_dout(dout, cache_x, shape):
    check_float_array(dout, "dout", 4, "N, C_out, H_out, W_out")
    check_same_dtype(cache_x, "the forward input x", dout=dout)
    check_shape(dout, "dout", shape)


# ---------------------------------------------------------------------------------- blocks

# The batch goes through im2col -> GEMM -> col2im in blocks of images whose column matrix
# takes about this many bytes (at least one image); the block count is a multiple of the thread
# count, and the blocks differ by one image at most, so that every thread has the same work. This
# loop is cache blocking and threading, not per-item work: a block's columns are written,
# multiplied and read back while they are still in the CPU cache (about twice as fast as one
# column matrix for the whole batch, and it bounds the temporary memory), and the blocks run on
# npseg's threads at once, each with a single-threaded BLAS (see ``npseg.ops._threads``).
_BLOCK_BYTES = 4 << 20


def _image_blocks(N, channels, pitch, dtype):
    """[(start, stop), ...]: blocks of images covering the N images of the batch, whose column
    matrix has ``channels`` * kH * kW rows of ``pitch.L`` columns per image."""
    kh, kw = pitch.kernel
    cols_bytes_per_image = channels * kh * kw * pitch.L * np.dtype(dtype).itemsize
    threads = get_num_threads()
    count = math.ceil(N * cols_bytes_per_image / _BLOCK_BYTES)   # blocks within the budget
    return split(N, threads * max(1, math.ceil(count / threads)))


# Each thread keeps its column buffer from one call to the next (fresh memory from the OS costs a
# page fault per 4 KiB), unless it is larger than this: one image's columns can be far larger
# than a block, and that memory is given back at once.
_KEEP_BYTES = 2 * _BLOCK_BYTES
_workspaces = threading.local()


def _workspace(shape, dtype):
    """An uninitialised array of ``shape``: the calling thread's reusable column buffer."""
    size = math.prod(shape)
    nbytes = size * np.dtype(dtype).itemsize
    if nbytes > _KEEP_BYTES:
        return np.empty(shape, dtype=dtype)
    buffer = getattr(_workspaces, "buffer", None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = _workspaces.buffer = np.empty(_KEEP_BYTES, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def _run_blocks(block, blocks):
    """``block(start, stop)`` for every (start, stop) block of images, on npseg's threads at
    once; the results in block order."""
    return map_pieces(lambda bounds: block(*bounds), blocks, uses_blas=True)


# ---------------------------------------------------------------------------------- conv2d

def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    x: (N, C_in, H, W); w: (C_out, C_in/groups, kH, kW); b: (C_out,) or None; stride, padding,
    dilation: int or (h, w). Returns ``(out, cache)`` with out (N, C_out, H_out, W_out):

        out[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q]
                          * x[n, g*C_in/G + c, s_h*i + d_h*p - pad_h, s_w*j + d_w*q - pad_w]

    (g = o // (C_out/G), x is zero outside the image; see the module docstring.)
    """
    stride, padding, dilation, G, C_out = _check_conv(x, w, b, stride, padding, dilation,
                                                      groups, transposed=False)
    N, C_in, H, W = x.shape
    kernel = w.shape[2:]
    Ho, Wo = _windows_count((H, W), kernel, stride, padding, dilation, "w")
    pitch = _Pitch((H, W), (Ho, Wo), kernel, stride, padding, dilation)

    out = np.empty((N, C_out, Ho, Wo), dtype=x.dtype)
    blocks = _image_blocks(N, C_in, pitch, x.dtype)
    _run_blocks(lambda start, stop: _conv2d_block(x[start:stop], w, b, G, pitch,
                                                  out[start:stop]), blocks)
    return out, (x, w, b is not None, pitch, G)


def _block_columns(shape_c_k, n, pitch, dtype):
    """The calling thread's column buffer for a block of n images, channel-major:
    (C, kH, kW, n, L), i.e. a (C*kH*kW, n*L) matrix. Returns ``(buffer, view)``, the view
    (n, C, kH, kW, L) being the layout ``_im2col_pitched`` and ``_col2im_pitched`` index."""
    cols = _workspace(tuple(shape_c_k) + (n, pitch.L), dtype)
    return cols, cols.transpose(3, 0, 1, 2, 4)


def _conv2d_block(x, w, b, G, pitch, out):
    """out = conv2d(x, w, b) for one block of images: im2col into the thread's workspace, one
    GEMM per group for the whole block, the junk columns dropped. ``pitch`` describes x's
    windows."""
    n, C_in = x.shape[:2]
    C_out, kernel = w.shape[0], w.shape[2:]
    K = C_in // G * kernel[0] * kernel[1]  # rows of the column matrix of one group
    cols, cols_nc = _block_columns((C_in,) + kernel, n, pitch, x.dtype)
    _im2col_pitched(x, pitch, out=cols_nc)
    # out[g] = W[g] @ cols[g]: (C_out/G, K) @ (K, n*L), then drop the junk columns
    out_p = np.matmul(w.reshape(G, C_out // G, K), cols.reshape(G, K, n * pitch.L))
    products = pitch.from_pitch(out_p.reshape(C_out, n, pitch.L))
    if b is None:
        out[...] = products
    else:  # the bias added on the way, spread along the rows (see npseg.ops._channels)
        np.add(products, spread(b, out.shape[3])[:, None, :], out=out)


def conv2d_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`conv2d_forward`: ``(dx, dw, db)``, ``db`` None without bias.

    ``need_dx=False`` skips the input gradient (``dx`` is then None): about half the work when
    x is data that needs no gradient, as for a network's first layer.

    dW[g] = sum_n dout[n, g] @ cols[n, g]^T,  dx = col2im(W[g]^T @ dout[n, g]),
    db[o] = sum_{n, i, j} dout[n, o, i, j].

    With stride 1 (and padding <= d*(k - 1)), dx is computed as the equivalent convolution
    dx = conv2d(dout, flip(W)^T, padding=d*(k - 1) - padding) instead, and dW from that
    convolution's columns of dout (see :func:`_input_gradient_as_conv2d`).
    """
    x, w, has_bias, pitch, G = cache
    N, C_in = x.shape[:2]
    C_out = w.shape[0]
    _check_dout(dout, x, (N, C_out) + pitch.windows_hw)
    K = C_in // G * w.shape[2] * w.shape[3]

    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    as_conv2d = _input_gradient_as_conv2d(w, G, pitch) if need_dx else None
    if as_conv2d is not None:
        return _conv2d_backward_as_conv2d(dout, x, w, G, *as_conv2d) + (db,)
    w_g = w.reshape(G, C_out // G, K)
    dx = np.empty_like(x, order="C") if need_dx else None

    def block(start, stop):
        n = stop - start
        dout_p = pitch.to_pitch(dout[start:stop]).reshape(G, C_out // G, n * pitch.L)
        cols, cols_nc = _block_columns((C_in,) + w.shape[2:], n, pitch, x.dtype)
        _im2col_pitched(x[start:stop], pitch, out=cols_nc)             # cols, then dcols
        cols_g = cols.reshape(G, K, n * pitch.L)
        dw = np.matmul(dout_p, cols_g.swapaxes(-1, -2))  # this block's sum over its images
        if need_dx:
            np.matmul(w_g.swapaxes(-1, -2), dout_p, out=cols_g)  # dcols[g] = W[g]^T @ dout[g]
            _col2im_pitched(cols_nc, pitch, out=dx[start:stop])
        return dw

    blocks = _image_blocks(N, C_in, pitch, x.dtype)
    dw = sum_in_order(_run_blocks(block, blocks), (G, C_out // G, K), x.dtype)
    return dx, dw.reshape(w.shape), db


def _conv2d_backward_as_conv2d(dout, x, w, G, w_t, pitch_t):
    """``(dx, dw)`` of a stride-1 conv2d from the columns of dout alone (no columns of x).

    dx = conv2d(dout, w_t) over the windows ``pitch_t`` (x's pixels), and with the same
    columns, dcols_t = im2col(dout) of that convolution, the weight gradient: its row
    (o, p', q') at x's pixel (y, x') holds dout[o, y + d_h*p' - pad'_h, x' + d_w*q' - pad'_w],
    which is the dout entry that kernel offset (kH - 1 - p', kW - 1 - q') links to x[c, y, x'], so

        dW[g, o, c, p, q] = dW_t[g, c, o, kH - 1 - p, kW - 1 - q],
        dW_t[g] = sum_n x[n, g] @ dcols_t[n, g]^T

    This is conv_transpose2d's backward pass for dout -> dx (:func:`_transposed_backward_block`).
    One im2col per block instead of two (x's and dout's): the columns of x are not needed.
    """
    N, C_in = x.shape[:2]
    C_out, _, kh, kw = w.shape
    w_t_g = w_t.reshape(G, C_in // G, C_out // G * kh * kw)
    dx = np.empty_like(x, order="C")
    blocks = _image_blocks(N, C_out, pitch_t, x.dtype)
    dw_t = sum_in_order(
        _run_blocks(lambda start, stop: _transposed_backward_block(
            dout[start:stop], x[start:stop], w_t_g, G, pitch_t, dx[start:stop]), blocks),
        w_t_g.shape, x.dtype)
    dw = dw_t.reshape(G, C_in // G, C_out // G, kh, kw)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    return dx, np.ascontiguousarray(dw).reshape(w.shape)


def _input_gradient_as_conv2d(w, G, pitch):
    """``(w_t, pitch_t)`` such that dx = conv2d(dout, w_t) over the windows ``pitch_t``, or None.

    With stride 1, output pixel i reads input pixel y = i + d*p - pad through kernel offset p, so

        dx[y] = sum_p W[p]^T dout[y + pad - d*p] = sum_p' W[k-1-p']^T dout[y - pad' + d*p']

    with p' = k - 1 - p and pad' = d*(k - 1) - pad: a convolution of dout with the kernel
    flipped in both axes and its two channel axes swapped (within each group),

        w_t[g*C_in/G + c, o, p', q'] = w[g*C_out/G + o, c, kH - 1 - p', kW - 1 - q'],

    dilation d and padding pad' (valid when pad' >= 0). The backward pass then needs one column
    matrix per block, dout's (C_out*kH*kW rows), for dx and dW both (see
    :func:`_conv2d_backward_as_conv2d`), where the col2im path builds x's columns for dW and
    then dcols = W^T @ dout (C_in*kH*kW rows each), which col2im adds up slice by slice.
    Measured on 16 images, 2 threads: 1.5-2.2x faster when C_out <= C_in, as fast at
    C_out = 2*C_in, slower beyond (1.1-1.7x at C_out = 4*C_in). None (the col2im path) for
    strides > 1, paddings > d*(k - 1) or C_out > 2*C_in.
    """
    (kh, kw), (dh, dw), (ph, pw) = pitch.kernel, pitch.dilation, pitch.padding
    pad_t = (dh * (kh - 1) - ph, dw * (kw - 1) - pw)
    C_out, C_in_g = w.shape[:2]
    if pitch.stride != (1, 1) or min(pad_t) < 0 or C_out > 2 * C_in_g * G:
        return None
    flipped = w.reshape(G, C_out // G, C_in_g, kh, kw)[..., ::-1, ::-1]
    w_t = np.ascontiguousarray(flipped.transpose(0, 2, 1, 3, 4)).reshape(
        G * C_in_g, C_out // G, kh, kw)
    # dout (H_out, W_out) is the image; its windows are x's pixels (H, W)
    pitch_t = _Pitch(pitch.windows_hw, pitch.image_hw, pitch.kernel, (1, 1), pad_t,
                     pitch.dilation)
    return w_t, pitch_t


# ------------------------------------------------------------------------- conv_transpose2d

def _transposed_output_size(x_hw, kernel, stride, padding, output_padding, dilation):
    for k in range(2):
        if output_padding[k] >= max(stride[k], dilation[k]):
            raise ValueError(
                f"output_padding must be smaller than either stride or dilation, got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}")
    size = tuple((x_hw[k] - 1) * stride[k] - 2 * padding[k] + dilation[k] * (kernel[k] - 1)
                 + output_padding[k] + 1 for k in range(2))
    if min(size) < 1:
        raise ValueError(f"padding {padding} is too large: conv_transpose2d of an input of "
                         f"size {tuple(x_hw)} would give an output of size {size}")
    return size


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                             groups=1):
    """Transposed 2-D convolution (``torch.nn.functional.conv_transpose2d``).

    x: (N, C_in, H, W); w: (C_in, C_out/groups, kH, kW); b: (C_out,) or None. Returns
    ``(out, cache)``, out (N, C_out, H_out, W_out) with

        H_out = (H - 1)*s_h - 2*pad_h + d_h*(kH - 1) + output_padding_h + 1   (W_out alike)

        out[n, g*C_out/G + o, s_h*i + d_h*p - pad_h, s_w*j + d_w*q - pad_w]
            += sum_c w[g*C_in/G + c, o, p, q] * x[n, g*C_in/G + c, i, j]         (+ b[o])

    i.e. the adjoint of :func:`conv2d_forward` with the same w: out = col2im(W^T @ x).
    """
    stride, padding, dilation, G, C_out = _check_conv(x, w, b, stride, padding, dilation,
                                                      groups, transposed=True)
    output_padding = pair(output_padding, "output_padding", 0)
    N, C_in, H, W = x.shape
    kernel = w.shape[2:]
    size = _transposed_output_size((H, W), kernel, stride, padding, output_padding, dilation)
    # the conv2d this op is the adjoint of: image `size` (the output here), windows (H, W)
    pitch = _Pitch(size, (H, W), kernel, stride, padding, dilation)

    K = C_out // G * kernel[0] * kernel[1]
    w_g = w.reshape(G, C_in // G, K)
    out = np.empty((N, C_out) + tuple(size), dtype=x.dtype)

    def block(start, stop):
        n = stop - start
        x_p = pitch.to_pitch(x[start:stop]).reshape(G, C_in // G, n * pitch.L)  # junk zero
        cols, cols_nc = _block_columns((C_out,) + kernel, n, pitch, x.dtype)
        # cols[g] = W[g]^T @ x[g]: (K, C_in/G) @ (C_in/G, n*L), one GEMM per group
        np.matmul(w_g.swapaxes(-1, -2), x_p, out=cols.reshape(G, K, n * pitch.L))
        _col2im_pitched(cols_nc, pitch, out=out[start:stop])
        if b is not None:
            out[start:stop] += spread(b, size[1])[:, None, :]

    _run_blocks(block, _image_blocks(N, C_out, pitch, x.dtype))
    return out, (x, w, b is not None, pitch, G)


def conv_transpose2d_backward(dout, cache):
    """Gradients of :func:`conv_transpose2d_forward`: ``(dx, dw, db)``, ``db`` None without bias.

    dcols = im2col(dout),  dx[n, g] = W[g] @ dcols[n, g],  dW[g] = sum_n x[n, g] @ dcols[n, g]^T,
    db[o] = sum_{n, y, x'} dout[n, o, y, x'].
    """
    x, w, has_bias, pitch, G = cache
    N, C_in = x.shape[:2]
    C_out = w.shape[1] * G
    _check_dout(dout, x, (N, C_out) + pitch.image_hw)
    K = C_out // G * w.shape[2] * w.shape[3]

    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    w_g = w.reshape(G, C_in // G, K)
    dx = np.empty_like(x, order="C")

    def block(start, stop):
        return _transposed_backward_block(dout[start:stop], x[start:stop], w_g, G, pitch,
                                          dx[start:stop])

    blocks = _image_blocks(N, C_out, pitch, x.dtype)
    dw = sum_in_order(_run_blocks(block, blocks), (G, C_in // G, K), x.dtype)
    return dx, dw.reshape(w.shape), db


def _transposed_backward_block(dout, x, w_g, G, pitch, dx):
    """One block of images of conv_transpose2d's backward pass: dcols = im2col(dout) in the
    thread's workspace, dx[g] = W[g] @ dcols[g] (the junk columns dropped, into ``dx``), and
    returns this block's part of dW[g] = sum_n x[n, g] @ dcols[n, g]^T. ``pitch`` describes
    dout's windows (x's pixels); w_g is (G, C_in/G, C_out/G*kH*kW)."""
    n, C_out = dout.shape[:2]
    C_in, K = x.shape[1], w_g.shape[2]
    dcols, dcols_nc = _block_columns((C_out,) + pitch.kernel, n, pitch, x.dtype)
    _im2col_pitched(dout, pitch, out=dcols_nc)
    dcols = dcols.reshape(G, K, n * pitch.L)
    dx_p = np.matmul(w_g, dcols)  # dx[g] = W[g] @ dcols[g]
    dx[...] = pitch.from_pitch(dx_p.reshape(C_in, n, pitch.L))
    x_p = pitch.to_pitch(x).reshape(G, C_in // G, n * pitch.L)  # junk zero
    return np.matmul(x_p, dcols.swapaxes(-1, -2))  # this block's part of dW
