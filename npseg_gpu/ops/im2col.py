"""im2col / col2im on the device (mirror :mod:`npseg.ops.im2col`, layout of
``torch.nn.functional.unfold`` / ``fold``).

    cols[n, c*kH*kW + p*kW + q, i*W_out + j] = xpad[n, c, s_h*i + d_h*p, s_w*j + d_w*q]

:func:`im2col` runs :func:`npseg_gpu.kernels.im2col.im2col_kernel` (one thread per entry of
``cols``), :func:`col2im` runs ``col2im_kernel``, which gathers: one thread per image pixel sums
the entries read from it (no atomics). The convolutions use :func:`unfold` / :func:`fold`, the
same kernels with the window counts given explicitly.
"""

from __future__ import annotations

from npseg.ops._checks import check_float_array, pair
from npseg.ops.im2col import _window_params, _windows_count
from npseg_gpu.kernels import im2col as K
from npseg_gpu.kernels._launch import launch
from npseg_gpu.ops._util import contiguous, empty, require_device

__all__ = ["im2col", "col2im"]


def _flat(kernel, stride, padding, dilation):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    return kh, kw, sh, sw, ph, pw, dh, dw


def unfold(x, windows, kernel, stride, padding, dilation):
    """cols (N, C*kH*kW, H_out*W_out) of a contiguous device x, for ``windows`` = (H_out, W_out)."""
    N, C = x.shape[:2]
    cols = empty((N, C * kernel[0] * kernel[1], windows[0] * windows[1]), x.dtype)
    launch(K.im2col_kernel, cols.size, x, cols, windows[0], windows[1],
           *_flat(kernel, stride, padding, dilation))
    return cols


def fold(cols, image_hw, windows, kernel, stride, padding, dilation):
    """The adjoint of :func:`unfold`: x (N, C, H, W) for ``image_hw`` = (H, W)."""
    N, CK = cols.shape[:2]
    C = CK // (kernel[0] * kernel[1])
    img = empty((N, C) + tuple(image_hw), cols.dtype)
    launch(K.col2im_kernel, img.size, cols, img, windows[0], windows[1],
           *_flat(kernel, stride, padding, dilation))
    return img


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Unfold the sliding windows of ``x`` (N, C, H, W) into ``cols`` (N, C*kH*kW, L).

    Same arguments, checks and result as :func:`npseg.ops.im2col`, on device arrays.
    """
    check_float_array(x, "x", 4, "N, C, H, W")
    require_device(x, "x")
    kernel, stride, padding, dilation = _window_params(kernel_size, stride, padding, dilation)
    windows = _windows_count(x.shape[2:], kernel, stride, padding, dilation, "kernel_size")
    return unfold(contiguous(x), windows, kernel, stride, padding, dilation)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Fold ``cols`` (N, C*kH*kW, L) back into an ``output_size`` image, summing overlaps.

    Same arguments, checks and result as :func:`npseg.ops.col2im`, on device arrays.
    """
    check_float_array(cols, "cols", 3, "N, C*kH*kW, L")
    require_device(cols, "cols")
    H, W = pair(output_size, "output_size", 1)
    kernel, stride, padding, dilation = _window_params(kernel_size, stride, padding, dilation)
    (kh, kw) = kernel
    N, CK, L = cols.shape
    if CK % (kh * kw):
        raise ValueError(f"cols: dimension 1 must be divisible by kH*kW = {kh * kw}, "
                         f"got shape {tuple(cols.shape)}")
    Ho, Wo = _windows_count((H, W), kernel, stride, padding, dilation, "kernel_size")
    if L != Ho * Wo:
        raise ValueError(f"cols: an output_size of {(H, W)} has {Ho}*{Wo} = {Ho * Wo} windows, "
                         f"but cols has L = {L} (shape {tuple(cols.shape)})")
    return fold(contiguous(cols), (H, W), (Ho, Wo), kernel, stride, padding, dilation)
