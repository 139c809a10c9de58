"""im2col / col2im: sliding windows as the columns of a matrix, and back.

A convolution is a matrix product once every window of the input is laid out as one column:

    cols[n, (c, p, q), (i, j)] = xpad[n, c, s_h*i + d_h*p, s_w*j + d_w*q]

with ``xpad`` the input zero-padded by ``padding`` on each side, ``(p, q)`` the kernel offset
(``0 <= p < kH``, ``0 <= q < kW``), ``(i, j)`` the window (output pixel) and

    H_out = floor((H + 2*pad_h - d_h*(kH - 1) - 1) / s_h) + 1        (same for W_out).

:func:`im2col` has the layout of ``torch.nn.functional.unfold``: ``(N, C*kH*kW, L)`` with
``L = H_out*W_out``, the row index running channel-major, then kernel row, then kernel column.
:func:`col2im` (``torch.nn.functional.fold``) is its adjoint: every column entry is added back
to the pixel it was read from, so pixels covered by several windows receive the sum.

No loop over pixels, images or channels: :func:`im2col` copies one strided view of the padded
batch, and :func:`col2im` loops over the ``kH*kW`` kernel offsets only, each offset one strided
slice-add over the whole batch (every image, channel and window at once).

The convolution ops use the private "pitched" helpers at the bottom of this module instead: the
same columns, but each row of windows padded to a fixed pitch so that every kernel offset is a
single contiguous slice (see :func:`_im2col_pitched`); their copies and adds run two to three
times faster than these strided ones.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._checks import check_float_array, conv_output_size, pair

__all__ = ["im2col", "col2im"]


def _window_params(kernel_size, stride, padding, dilation):
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    return kernel, stride, padding, dilation


def _windows_count(size_hw, kernel, stride, padding, dilation, name):
    """(H_out, W_out); a ValueError naming ``name`` when the kernel does not fit once."""
    out = tuple(conv_output_size(size_hw[k], kernel[k], stride[k], padding[k], dilation[k])
                for k in range(2))
    if min(out) < 1:
        span = tuple(dilation[k] * (kernel[k] - 1) + 1 for k in range(2))
        raise ValueError(
            f"{name}: the dilated kernel {span} is larger than the padded input "
            f"{tuple(size_hw[k] + 2 * padding[k] for k in range(2))}")
    return out


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Unfold the sliding windows of ``x`` into columns (``torch.nn.functional.unfold``).

    x: (N, C, H, W) float32/float64.  Returns ``cols`` (N, C*kH*kW, H_out*W_out) with

        cols[n, c*kH*kW + p*kW + q, i*W_out + j] = xpad[n, c, s_h*i + d_h*p, s_w*j + d_w*q]

    (``xpad``: ``x`` zero-padded by ``padding``). ``kernel_size``, ``stride``, ``padding`` and
    ``dilation`` are ints or (h, w) pairs.
    """
    check_float_array(x, "x", 4, "N, C, H, W")
    kernel, stride, padding, dilation = _window_params(kernel_size, stride, padding, dilation)
    N, C, H, W = x.shape
    Ho, Wo = _windows_count((H, W), kernel, stride, padding, dilation, "kernel_size")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation

    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    # A read-only view windows[n, c, p, q, i, j] = xpad[n, c, sh*i + dh*p, sw*j + dw*q]: stepping
    # p moves dh rows, stepping i moves sh rows (same for columns). The reshape copies it once.
    sn, sc, sy, sx = xpad.strides
    windows = as_strided(xpad, shape=(N, C, kh, kw, Ho, Wo),
                         strides=(sn, sc, dh * sy, dw * sx, sh * sy, sw * sx), writeable=False)
    return windows.reshape(N, C * kh * kw, Ho * Wo)


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Fold columns back into an image, summing overlaps (``torch.nn.functional.fold``).

    cols: (N, C*kH*kW, L) with ``L = H_out*W_out`` windows of an ``output_size = (H, W)`` image
    (unpadded size). Returns ``x`` (N, C, H, W), the adjoint of :func:`im2col`:

        x[n, c, y, x'] = sum of cols[n, (c, p, q), (i, j)] over all (p, q, i, j) with
                         s_h*i + d_h*p - pad_h = y  and  s_w*j + d_w*q - pad_w = x'

    so that ``<im2col(x), cols> == <x, col2im(cols)>``. One strided slice-add per kernel offset.
    """
    check_float_array(cols, "cols", 3, "N, C*kH*kW, L")
    H, W = pair(output_size, "output_size", 1)
    kernel, stride, padding, dilation = _window_params(kernel_size, stride, padding, dilation)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    N, CK, L = cols.shape
    if CK % (kh * kw):
        raise ValueError(f"cols: dimension 1 must be divisible by kH*kW = {kh * kw}, "
                         f"got shape {tuple(cols.shape)}")
    C = CK // (kh * kw)
    Ho, Wo = _windows_count((H, W), kernel, stride, padding, dilation, "kernel_size")
    if L != Ho * Wo:
        raise ValueError(f"cols: an output_size of {(H, W)} has {Ho}*{Wo} = {Ho * Wo} windows, "
                         f"but cols has L = {L} (shape {tuple(cols.shape)})")

    cols6 = cols.reshape(N, C, kh, kw, Ho, Wo)
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for p in range(kh):  # kH*kW slice-adds, each over the whole batch
        for q in range(kw):
            rows = slice(dh * p, dh * p + sh * (Ho - 1) + 1, sh)
            columns = slice(dw * q, dw * q + sw * (Wo - 1) + 1, sw)
            xpad[:, :, rows, columns] += cols6[:, :, p, q]
    return xpad[:, :, ph:ph + H, pw:pw + W].copy()


# --------------------------------------------------------------------------------------------
# Fast private helpers used by conv2d / conv_transpose2d: the "pitched" column layout.
#
# Padding x and splitting it into its s_h*s_w stride phases
#
#     phases[n, c, a, b, r, t] = xpad[n, c, s_h*r + a, s_w*t + b]
#
# turns window (i, j), kernel offset (p, q) into phase (a, b) = (d_h*p % s_h, d_w*q % s_w) at
# row i + d_h*p // s_h and column j + d_w*q // s_w. Flatten each phase plane with a row pitch
# of Wq = W_out + d_w*(kW - 1)//s_w and store the windows with that same pitch
# (column index i*Wq + j, the Wq - W_out "junk" columns j >= W_out included): one kernel offset
# is then ONE contiguous slice of length H_out*Wq of the flat phase plane, shifted by
# (d_h*p // s_h)*Wq + d_w*q // s_w. The slice copies/adds run at memory speed instead of
# looping over short rows, and the offsets that share a shift (up to s of them per axis) are
# copied/added in one NumPy operation over their phases (``_Pitch.offset_groups``); with stride
# 1, im2col copies all the offsets at once, as one overlapping strided view. The junk
# columns cost (Wq - W_out)/W_out extra work in the matrix products (a few percent on real
# images) and are dropped afterwards; col2im requires them zero.
# --------------------------------------------------------------------------------------------


class _Pitch:
    """Sizes of the pitched layout for an (H, W) image with (Ho, Wo) windows."""

    def __init__(self, image_hw, windows_hw, kernel, stride, padding, dilation):
        self.image_hw, self.windows_hw = tuple(image_hw), tuple(windows_hw)
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        (Ho, Wo), (kh, kw), (sh, sw), (dh, dw) = self.windows_hw, kernel, stride, dilation
        self.Hq = Ho + dh * (kh - 1) // sh       # phase-plane rows that windows touch
        self.Wq = Wo + dw * (kw - 1) // sw       # row pitch
        self.L = Ho * self.Wq                    # columns per image, junk included
        self.plane = (self.Hq + 1) * self.Wq     # one spare row: the last slices run past Hq
        # rows/columns of x inside the phase planes (the last ones may lie beyond every window)
        (H, W), (ph, pw) = self.image_hw, padding
        self.h_used = max(0, min(H, sh * (self.Hq + 1) - ph))
        self.w_used = max(0, min(W, sw * self.Wq - pw))

    def offset_groups(self):
        """The kernel offsets in groups that share one slice start: (p, q, a, b, start) with p, q
        slices of kernel rows and columns, a, b slices of the phases they read, for every group.

        Kernel row p reads phase row a = d_h*p % s_h shifted by d_h*p // s_h rows. Consecutive
        rows with the same shift form a group (with stride 1 every row is its own group), and
        their phases form a slice of step d_h, so the group is copied (im2col) or added (col2im)
        in one NumPy operation: a 16x16 kernel with stride 8 takes 2*2 operations, not 16*16.
        """
        rows = _shift_groups(self.kernel[0], self.stride[0], self.dilation[0])
        columns = _shift_groups(self.kernel[1], self.stride[1], self.dilation[1])
        for row_shift, p, a in rows:
            for column_shift, q, b in columns:
                yield p, q, a, b, row_shift * self.Wq + column_shift

    def phase_slices(self):
        """(a, b, phase rows, phase columns, x rows, x columns) for every stride phase (a, b).

        Phase (a, b) holds the pixels x[y, x'] with y + pad_h = s_h*r + a, x' + pad_w = s_w*t + b,
        i.e. x rows y0, y0 + s_h, ... at phase rows r0, r0 + 1, ... (columns alike). Only the
        rows/columns some window reads are kept (the last ones of x may lie beyond every window).
        """
        (sh, sw), (ph, pw), h, w = self.stride, self.padding, self.h_used, self.w_used
        for a in range(sh):
            y0 = (a - ph) % sh
            r0, nr = (y0 + ph) // sh, len(range(y0, h, sh))
            for b in range(sw):
                x0 = (b - pw) % sw
                t0, nt = (x0 + pw) // sw, len(range(x0, w, sw))
                yield (a, b, slice(r0, r0 + nr), slice(t0, t0 + nt),
                       slice(y0, h, sh), slice(x0, w, sw))

    def to_pitch(self, y):
        """(N, C, Ho, Wo) -> (C, N, Ho*Wq): channel-major (the layout of the convolutions'
        matrix products, see ``npseg.ops.conv``), with zero junk columns. A copy."""
        N, C, Ho, Wo = y.shape
        out = np.empty((C, N, Ho, self.Wq), dtype=y.dtype)
        out[..., Wo:] = 0
        out[..., :Wo] = y.swapaxes(0, 1)
        return out.reshape(C, N, self.L)

    def from_pitch(self, y):
        """(C, N, Ho*Wq) -> a view (N, C, Ho, Wo) without the junk columns."""
        C, N, _ = y.shape
        Ho, Wo = self.windows_hw
        return y.reshape(C, N, Ho, self.Wq)[..., :Wo].swapaxes(0, 1)


def _shift_groups(k, s, d):
    """Kernel taps 0..k-1 along one axis (stride s, dilation d) grouped by their shift d*p // s:
    [(shift, taps, phases)], taps a slice of p and phases the slice of their d*p % s.

    The phases of the group with shift r are the a in [0, s) with a = -r*s (mod d), cut short
    in the last group only. So two groups read the same phases, or disjoint ones, or (the last
    group) a part of another's: ``_col2im_pitched`` relies on it, a group's phases being all
    written already or none of them (in two dimensions too, ``offset_groups`` taking the row
    groups in the outer loop).
    """
    groups, start = [], 0
    while start < k:
        shift = d * start // s
        stop = start + 1
        while stop < k and d * stop // s == shift:
            stop += 1
        first = d * start - s * shift                       # the phase of tap `start`
        phases = slice(first, first + d * (stop - start - 1) + 1, d)
        groups.append((shift, slice(start, stop), phases))
        start = stop
    return groups


def _split_phases(x, pitch: _Pitch):
    """x (P, H, W) planes -> phases (P, s_h, s_w, (Hq + 1)*Wq): zero-padded, split by phase.

    phases[k, a, b, r*Wq + t] = xpad[k, s_h*r + a, s_w*t + b]; with stride 1 this is just the
    zero padding. Zeros, then x copied in: s_h*s_w strided slices (one with stride 1). Few
    NumPy calls rather than a zeroed border per side: the pieces of a convolution run on
    several threads, which take turns holding the GIL between calls.
    """
    (sh, sw), Hq, Wq = pitch.stride, pitch.Hq, pitch.Wq
    phases = np.zeros((x.shape[0], sh, sw, Hq + 1, Wq), dtype=x.dtype)
    for a, b, rows, columns, x_rows, x_columns in pitch.phase_slices():
        phases[:, a, b, rows, columns] = x[:, x_rows, x_columns]
    return phases.reshape(x.shape[0], sh, sw, pitch.plane)


def _merge_phases(phases, pitch: _Pitch, out):
    """Adjoint of :func:`_split_phases`: phases (P, s_h, s_w, plane) -> out (P, H, W)."""
    sh, sw = pitch.stride
    phases = phases.reshape(phases.shape[0], sh, sw, pitch.Hq + 1, pitch.Wq)
    for a, b, rows, columns, x_rows, x_columns in pitch.phase_slices():
        out[:, x_rows, x_columns] = phases[:, a, b, rows, columns]
    out[:, pitch.h_used:] = 0  # the last rows/columns of x, if no window reads them
    out[:, :, pitch.w_used:] = 0


def _im2col_pitched(x, pitch: _Pitch, out=None):
    """x (N, C, H, W) -> cols (N, C, kH, kW, Ho*Wq) in the pitched layout (into ``out``).

    cols[n, c, p, q, i*Wq + j] = xpad[n, c, s_h*i + d_h*p, s_w*j + d_w*q] for j < W_out
    (junk, finite values for j >= W_out).
    """
    N, C, H, W = x.shape
    kh, kw = pitch.kernel
    cols = np.empty((N, C, kh, kw, pitch.L), dtype=x.dtype) if out is None else out
    phases = _split_phases(x.reshape(N * C, H, W), pitch).reshape((N, C) + pitch.stride
                                                                   + (pitch.plane,))
    if pitch.stride == (1, 1):
        # One phase, and kernel offset (p, q) starts d_h*p*Wq + d_w*q further along it: all the
        # kH*kW slices form one strided (overlapping, read-only) view, copied in one call.
        # (np.ndarray over the planes' memory rather than as_strided: 3x less overhead per
        # call, and it checks that the view stays inside the buffer.)
        planes = phases.reshape(N, C, pitch.plane)
        (dh, dw), (sn, sc, sl) = pitch.dilation, planes.strides
        cols[...] = np.ndarray((N, C, kh, kw, pitch.L), planes.dtype, buffer=planes,
                               strides=(sn, sc, dh * pitch.Wq * sl, dw * sl, sl))
        return cols
    for p, q, a, b, start in pitch.offset_groups():  # a contiguous slice per kernel offset
        cols[:, :, p, q] = phases[:, :, a, b, start:start + pitch.L]
    return cols


def _col2im_pitched(cols, pitch: _Pitch, out=None):
    """Adjoint of :func:`_im2col_pitched`: cols (N, C, kH, kW, Ho*Wq) -> x (N, C, H, W).

    The junk columns of ``cols`` must be zero (they would land on neighbouring pixels).
    ``out`` (C-contiguous) receives x when given.
    """
    N, C, kh, kw, L = cols.shape
    (sh, sw), (H, W) = pitch.stride, pitch.image_hw
    phases = np.empty((N, C, sh, sw, pitch.plane), dtype=cols.dtype)
    written = np.zeros((sh, sw), dtype=bool)        # phases holding sums already
    for p, q, a, b, start in pitch.offset_groups():  # a contiguous slice-add per offset
        planes = phases[:, :, a, b]
        if written[a, b].any():  # then all of them (see _shift_groups)
            planes[..., start:start + L] += cols[:, :, p, q]
        else:  # the first offsets landing on these phases: a copy instead of adding to zeros
            planes[..., :start] = 0
            planes[..., start:start + L] = cols[:, :, p, q]
            planes[..., start + L:] = 0
            written[a, b] = True
    phases[:, :, ~written] = 0                      # no kernel offset lands on these phases
    x = np.empty((N, C, H, W), dtype=cols.dtype) if out is None else out
    _merge_phases(phases.reshape(N * C, sh, sw, pitch.plane), pitch, x.reshape(N * C, H, W))
    return x
