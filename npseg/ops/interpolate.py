"""Resizing feature maps: bilinear and nearest interpolation (PyTorch's ``F.interpolate``).

Both modes are *separable*: resizing along H and along W are independent 1-D linear maps, so
for every plane x[n, c] of shape (H_in, W_in)

    y[n, c] = A_h @ x[n, c] @ A_w^T          A_h: (H_out, H_in),  A_w: (W_out, W_in)

where row ``o`` of an interpolation matrix holds the weights output ``o`` gives the input pixels.
Bilinear: two neighbours,

    src = o (in - 1) / (out - 1)                            align_corners=True (0 when out == 1)
    src = max((o + 0.5) in / out - 0.5, 0)                  align_corners=False
    i0 = min(floor(src), in - 1),  i1 = min(i0 + 1, in - 1),  l = src - i0
    A[o, i0] += 1 - l,   A[o, i1] += l

Nearest (PyTorch's legacy ``'nearest'``): one neighbour with weight 1,

    src = min(floor(o * in / out), in - 1)                  (in / out and the product in float32,
                                                             exactly as PyTorch rounds them)

The forward pass is linear in x, so the backward pass is the transposed map:

    dx[n, c] = A_h^T @ dy[n, c] @ A_w

two small matrix products (BLAS), no scatter. The cost is O(in * out) per line instead of
O(out), which is what segmentation heads need (upsampling small maps).
"""

from __future__ import annotations

import numpy as np

from npseg.ops._checks import check_bool, check_choice, check_float_array, check_shape, pair

__all__ = ["interpolate_forward", "interpolate_backward"]

MODES = ("bilinear", "nearest")


def _linear_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """Bilinear weights along one axis, (n_out, n_in) float64: each row sums to 1."""
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = dst * scale
    else:
        src = np.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    columns = np.arange(n_in)
    return ((1 - lam)[:, None] * (columns == i0[:, None])
            + lam[:, None] * (columns == i1[:, None]))


def _nearest_source(n_in: int, n_out: int) -> np.ndarray:
    """Source pixel of every output pixel along one axis (PyTorch's float32 arithmetic)."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def _resize(x, a_h, a_w):
    """``a_h @ x[n, c] @ a_w^T`` for every plane of x (N, C, H, W): two BLAS products."""
    N, C, H, W = x.shape
    rows = x.reshape(N * C * H, W) @ a_w.T                    # resize along W: (N*C*H, W_out)
    rows = rows.reshape(N * C, H, a_w.shape[0])
    return np.matmul(a_h, rows).reshape(N, C, a_h.shape[0], a_w.shape[0])  # then along H


def _check_interpolate(x, size, mode, align_corners):
    """The arguments of :func:`interpolate_forward` (shared with the GPU twin):
    ``((H_out, W_out), mode, align_corners)``."""
    check_float_array(x, "x", 4, "N, C, H, W")
    out_h, out_w = pair(size, "size", 1)
    mode = check_choice(mode, "mode", MODES)
    if align_corners is None:
        align_corners = False
    align_corners = check_bool(align_corners, "align_corners")
    if mode == "nearest" and align_corners:
        raise ValueError("align_corners can only be set with mode='bilinear', got "
                         "align_corners=True with mode='nearest'")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have a non-empty spatial size, got shape {tuple(x.shape)}")
    return (out_h, out_w), mode, align_corners


def interpolate_forward(x, size, mode="bilinear", align_corners=False):
    """Resize x (N, C, H_in, W_in) to ``size`` = (H_out, W_out) (int: square).

    mode "bilinear" (align_corners True/False, None means False) or "nearest" (align_corners must
    be False or None, as PyTorch refuses it). Formulas in the module docstring:
    y[n, c] = A_h @ x[n, c] @ A_w^T. Returns ``(y, cache)``, y (N, C, H_out, W_out) of x's dtype.

    Nearest copies pixels exactly (a gather). Bilinear is a matrix product, so a NaN or inf in a
    row of x spreads to the whole output row (0 * inf = NaN), where PyTorch spreads it only to
    the neighbours that use it; finite inputs are unaffected.
    """
    (out_h, out_w), mode, align_corners = _check_interpolate(x, size, mode, align_corners)
    N, C, H, W = x.shape

    if mode == "nearest":
        src_h, src_w = _nearest_source(H, out_h), _nearest_source(W, out_w)
        y = x.take(src_h, axis=2).take(src_w, axis=3)
        a_h = (np.arange(H) == src_h[:, None]).astype(x.dtype)   # for the backward pass
        a_w = (np.arange(W) == src_w[:, None]).astype(x.dtype)
    else:
        a_h = _linear_matrix(H, out_h, align_corners).astype(x.dtype)
        a_w = _linear_matrix(W, out_w, align_corners).astype(x.dtype)
        y = _resize(x, a_h, a_w)
    return y, dict(a_h=a_h, a_w=a_w, x_shape=x.shape)


def interpolate_backward(dy, cache):
    """Gradient of the resize: the transposed map, dx[n, c] = A_h^T @ dy[n, c] @ A_w.

    Returns ``(dx,)``, dx (N, C, H_in, W_in).
    """
    a_h, a_w = cache["a_h"], cache["a_w"]
    N, C = cache["x_shape"][:2]
    check_shape(dy, "dy", (N, C, a_h.shape[0], a_w.shape[0]))
    dx = _resize(dy.astype(a_h.dtype, copy=False), a_h.T, a_w.T)
    return (dx,)
