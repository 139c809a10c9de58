"""Fully connected layer (``torch.nn.functional.linear``): y = x w^T + b.

x (..., in), w (out, in), b (out,) or None; y (..., out):

    y[..., o] = b[o] + sum_k x[..., k] w[o, k]

Backward, with the leading dimensions of x flattened into rows (X: (M, in), dY: (M, out)):

    dX = dY @ w        dw = dY^T @ X        db = sum over rows of dY
"""

from __future__ import annotations

import numpy as np

from ._checks import check_float_array, check_same_dtype, check_shape

__all__ = ["linear_forward", "linear_backward"]


def _check_linear(x, w, b):
    """The arguments of :func:`linear_forward` (shared with the GPU twin)."""
    check_float_array(x, "x")
    check_float_array(w, "w", 2, "out, in")
    check_same_dtype(x, "x", w=w, b=b)
    if x.ndim < 1:
        raise ValueError(f"x must have at least one dimension (..., in), got shape {x.shape}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"w must have in = {x.shape[-1]} (the last dimension of x) columns "
                         f"(out, in), got shape {w.shape}")
    if b is not None:
        check_float_array(b, "b", 1, "out")
        check_shape(b, "b", (w.shape[0],))


def linear_forward(x, w, b=None):
    """y = x @ w.T + b for x (..., in), w (out, in), b (out,) or None. Returns ``(y, cache)``."""
    _check_linear(x, w, b)
    y = np.matmul(x.reshape(-1, w.shape[1]), w.T)  # (M, out), one GEMM
    if b is not None:
        y += b
    return y.reshape(x.shape[:-1] + (w.shape[0],)), (x, w, b is not None)


def linear_backward(dout, cache):
    """Gradients of :func:`linear_forward`: ``(dx, dw, db)``, ``db`` None without bias."""
    x, w, has_bias = cache
    check_float_array(dout, "dout")
    check_same_dtype(x, "the forward input x", dout=dout)
    check_shape(dout, "dout", x.shape[:-1] + (w.shape[0],))
    d2 = dout.reshape(-1, w.shape[0])     # (M, out)
    x2 = x.reshape(-1, w.shape[1])        # (M, in)
    dx = np.matmul(d2, w).reshape(x.shape)
    dw = np.matmul(d2.T, x2)
    db = d2.sum(axis=0) if has_bias else None
    return dx, dw, db
