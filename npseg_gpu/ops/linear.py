"""Fully connected layer on the device (mirror :mod:`npseg.ops.linear`): y = x w^T + b.

Same checks and formulas as the NumPy op; the products are CuPy matmuls (cuBLAS GEMMs):

    y = X @ w^T + b,   dX = dY @ w,   dw = dY^T @ X,   db = sum over rows of dY

with the leading dimensions of x flattened into the rows of X (M, in).
"""

from __future__ import annotations

from npseg.ops._checks import check_float_array, check_same_dtype, check_shape
from npseg.ops.linear import _check_linear
from npseg_gpu._device import xp
from npseg_gpu.ops._util import require_device

__all__ = ["linear_forward", "linear_backward"]


def linear_forward(x, w, b=None):
    """y = x @ w.T + b for x (..., in), w (out, in), b (out,) or None. Returns ``(y, cache)``."""
    _check_linear(x, w, b)
    for name, a in (("x", x), ("w", w), ("b", b)):
        require_device(a, name)
    y = xp().matmul(x.reshape(-1, w.shape[1]), w.T)  # (M, out), one GEMM
    if b is not None:
        y += b
    return y.reshape(tuple(x.shape[:-1]) + (w.shape[0],)), (x, w, b is not None)


def linear_backward(dout, cache):
    """Gradients of :func:`linear_forward`: ``(dx, dw, db)``, ``db`` None without bias."""
    x, w, has_bias = cache
    check_float_array(dout, "dout")
    check_same_dtype(x, "the forward input x", dout=dout)
    check_shape(dout, "dout", tuple(x.shape[:-1]) + (w.shape[0],))
    require_device(dout, "dout")
    matmul = xp().matmul
    d2 = dout.reshape(-1, w.shape[0])     # (M, out)
    x2 = x.reshape(-1, w.shape[1])        # (M, in)
    dx = matmul(d2, w).reshape(x.shape)
    dw = matmul(d2.T, x2)
    db = d2.sum(axis=0) if has_bias else None
    return dx, dw, db
