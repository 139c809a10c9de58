"""conv2d and conv_transpose2d on the device (mirror :mod:`npseg.ops.conv`).

The same algebra as the NumPy ops, with the columns built by the im2col kernel and the matrix
products done by CuPy (cuBLAS batched GEMMs, one per image and group):

    conv2d:            cols = im2col(x);  out[n, g] = W[g] @ cols[n, g]
                       dW[g] = sum_n dout[n, g] @ cols[n, g]^T
                       dx = col2im(W[g]^T @ dout[n, g])              (col2im gathers: no atomics)
    conv_transpose2d:  out = col2im(W[g]^T @ x[n, g])                (the adjoint of conv2d)
                       dcols = im2col(dout);  dx[n, g] = W[g] @ dcols[n, g]
                       dW[g] = sum_n x[n, g] @ dcols[n, g]^T

Argument checks and output sizes are the NumPy module's own functions. As there, the cache keeps
x (not the column matrix, which the backward pass rebuilds), so x must not change before
backward.
"""

from __future__ import annotations

from npseg.ops._checks import pair
from npseg.ops.conv import _check_conv, _check_dout, _transposed_output_size
from npseg.ops.im2col import _windows_count
from npseg_gpu._device import xp
from npseg_gpu.ops._util import contiguous, require_device
from npseg_gpu.ops.im2col import fold, unfold

__all__ = ["conv2d_forward", "conv2d_backward",
           "conv_transpose2d_forward", "conv_transpose2d_backward"]


def _on_device(**arrays):
    for name, a in arrays.items():
        require_device(a, name)


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, as :func:`npseg.ops.conv2d_forward`: returns ``(out, cache)``.

    x (N, C_in, H, W); w (C_out, C_in/groups, kH, kW); b (C_out,) or None;
    out (N, C_out, H_out, W_out) = b + W @ im2col(x) per image and group.
    """
    stride, padding, dilation, G, C_out = _check_conv(x, w, b, stride, padding, dilation,
                                                      groups, transposed=False)
    _on_device(x=x, w=w, b=b)
    N, C_in, H, W = x.shape
    kernel = tuple(w.shape[2:])
    windows = _windows_count((H, W), kernel, stride, padding, dilation, "w")
    geometry = (kernel, stride, padding, dilation)
    K = C_in // G * kernel[0] * kernel[1]
    L = windows[0] * windows[1]

    cols = unfold(contiguous(x), windows, *geometry).reshape(N, G, K, L)
    out = xp().matmul(w.reshape(G, C_out // G, K), cols)      # (N, G, C_out/G, L)
    del cols
    out = out.reshape((N, C_out) + windows)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out, (x, w, b is not None, geometry, windows, G)


def conv2d_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`conv2d_forward`: ``(dx, dw, db)``, ``db`` None without bias;
    ``need_dx=False`` skips the input gradient (``dx`` None)."""
    x, w, has_bias, geometry, windows, G = cache
    N, C_in, H, W = x.shape
    C_out = w.shape[0]
    _check_dout(dout, x, (N, C_out) + windows)
    require_device(dout, "dout")
    kernel = geometry[0]
    K = C_in // G * kernel[0] * kernel[1]
    L = windows[0] * windows[1]
    matmul = xp().matmul

    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dout_g = contiguous(dout).reshape(N, G, C_out // G, L)
    cols = unfold(contiguous(x), windows, *geometry).reshape(N, G, K, L)
    dw = matmul(dout_g, cols.swapaxes(-1, -2)).sum(axis=0).reshape(w.shape)
    del cols
    if not need_dx:
        return None, dw, db
    dcols = matmul(w.reshape(G, C_out // G, K).swapaxes(-1, -2), dout_g)   # (N, G, K, L)
    dx = fold(dcols.reshape(N, G * K, L), (H, W), windows, *geometry)
    return dx, dw, db


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                             groups=1):
    """Transposed 2-D convolution, as :func:`npseg.ops.conv_transpose2d_forward`.

    x (N, C_in, H, W); w (C_in, C_out/groups, kH, kW); b (C_out,) or None. Returns
    ``(out, cache)``, out (N, C_out, H_out, W_out) = col2im(W^T @ x) + b.
    """
    stride, padding, dilation, G, C_out = _check_conv(x, w, b, stride, padding, dilation,
                                                      groups, transposed=True)
    output_padding = pair(output_padding, "output_padding", 0)
    _on_device(x=x, w=w, b=b)
    N, C_in, H, W = x.shape
    kernel = tuple(w.shape[2:])
    size = _transposed_output_size((H, W), kernel, stride, padding, output_padding, dilation)
    geometry = (kernel, stride, padding, dilation)
    K = C_out // G * kernel[0] * kernel[1]

    x_g = contiguous(x).reshape(N, G, C_in // G, H * W)
    cols = xp().matmul(w.reshape(G, C_in // G, K).swapaxes(-1, -2), x_g)   # (N, G, K, H*W)
    # the conv2d this op is the adjoint of: image `size` (the output here), windows (H, W)
    out = fold(cols.reshape(N, G * K, H * W), size, (H, W), *geometry)
    del cols
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out, (x, w, b is not None, geometry, size, G)


def conv_transpose2d_backward(dout, cache):
    """Gradients of :func:`conv_transpose2d_forward`: ``(dx, dw, db)``, ``db`` None without
    bias."""
    x, w, has_bias, geometry, size, G = cache
    N, C_in, H, W = x.shape
    C_out = w.shape[1] * G
    _check_dout(dout, x, (N, C_out) + tuple(size))
    require_device(dout, "dout")
    kernel = geometry[0]
    K = C_out // G * kernel[0] * kernel[1]
    matmul = xp().matmul

    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dcols = unfold(contiguous(dout), (H, W), *geometry).reshape(N, G, K, H * W)
    dx = matmul(w.reshape(G, C_in // G, K), dcols).reshape(N, C_in, H, W)
    x_g = contiguous(x).reshape(N, G, C_in // G, H * W)
    dw = matmul(x_g, dcols.swapaxes(-1, -2)).sum(axis=0).reshape(w.shape)
    return dx, dw, db
