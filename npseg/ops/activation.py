"""Elementwise activations: ReLU, leaky ReLU, sigmoid, tanh.

Every op maps each element on its own, so ``y``, ``dout`` and ``dx`` all have ``x``'s shape and
dtype. The code goes through the array module of its input (``xp``: NumPy, or CuPy on the GPU),
so ``npseg_gpu`` reuses these functions on device arrays unchanged.

    relu(x)        = max(x, 0)                       relu'(x)  = 1 if x > 0 else 0
    leaky_relu(x)  = x if x > 0 else a * x           leaky'(x) = 1 if x > 0 else a
    sigmoid(x)     = 1 / (1 + exp(-x))               sigmoid'  = s * (1 - s)
    tanh(x)                                          tanh'     = 1 - tanh(x)^2

At the kink x = 0 the derivative taken is the one of the branch ``x > 0`` is false for (0 for
ReLU, ``a`` for leaky ReLU), as in PyTorch.
"""

from __future__ import annotations

import contextlib

import numpy as np

from npseg._device import array_module
from npseg.ops._checks import check_dout, check_float_array, check_number
from npseg.ops._threads import elementwise

__all__ = [
    "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
]


def _quiet_overflow(xp):
    """NumPy's errstate(over="ignore"): exp(-x) may overflow to inf, which is then correct."""
    return xp.errstate(over="ignore") if xp is np else contextlib.nullcontext()


def _sigmoid_into(x, y):
    """y = 1 / (1 + exp(-x)), in place in ``y``.

    For x < -88 (float32; -709 in float64) exp(-x) overflows to inf and y = 1/inf = 0, where the
    true value is below 1e-38 (1e-308): that is the only loss, and no branch or ``where`` (which
    is slow on random signs) is needed. For x > 0 exp(-x) < 1 cannot overflow, and everywhere
    else the three operations are each correctly rounded, so y has a relative error of a few
    units in the last place.
    """
    xp = array_module(x)
    with _quiet_overflow(xp):
        xp.negative(x, out=y)
        xp.exp(y, out=y)
    y += 1
    xp.reciprocal(y, out=y)


def _sigmoid(x):
    """sigmoid(x) as a new array (computed in parallel pieces on the CPU)."""
    y = array_module(x).empty_like(x)
    elementwise(_sigmoid_into, x, y)
    return y


def _times(dout, factor):
    """dout * factor as a new array (in parallel pieces on the CPU): the backward of ReLU and
    leaky ReLU, whose caches hold the local derivative."""
    xp = array_module(dout)
    dx = xp.empty_like(dout, order="C")
    elementwise(lambda dout, factor, dx: xp.multiply(dout, factor, out=dx), dout, factor, dx)
    return dx


# --- ReLU -------------------------------------------------------------------------------------

def _relu_into(x, y, positive):
    xp = array_module(x)
    xp.greater(x, 0, out=positive)
    # y = max(x, 0), with an array of zeros (y itself, zeroed first) as the second operand:
    # NumPy's loop for np.maximum(x, 0) with a scalar is 2.5x slower. NaN stays NaN.
    y.fill(0)
    xp.maximum(x, y, out=y)


def relu_forward(x):
    """y = max(x, 0). Returns ``(y, cache)``; the cache is the mask x > 0."""
    check_float_array(x, "x")
    xp = array_module(x)
    y, positive = xp.empty_like(x), xp.empty(x.shape, dtype=bool)
    elementwise(_relu_into, x, y, positive)
    return y, (positive, x.dtype)


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0. Returns ``(dx,)``."""
    positive, dtype = cache
    check_dout(dout, positive.shape, dtype)
    return (_times(dout, positive),)


# --- leaky ReLU -------------------------------------------------------------------------------

def leaky_relu_forward(x, negative_slope=0.01):
    """y = x if x > 0 else negative_slope * x. Returns ``(y, cache)``.

    Written without a branch: with the slope s = 1 where x > 0 and ``negative_slope`` elsewhere,
    y = s * x and dx = s * dout; the cache is s.
    """
    check_float_array(x, "x")
    negative_slope = check_number(negative_slope, "negative_slope")
    xp = array_module(x)
    y, slope = xp.empty_like(x), xp.empty_like(x)

    def piece(x, y, slope):
        xp.greater(x, 0, out=slope)                    # [x > 0] as 1.0 / 0.0
        slope *= 1 - negative_slope
        slope += negative_slope                        # s = 1 or negative_slope
        xp.multiply(x, slope, out=y)

    elementwise(piece, x, y, slope)
    return y, (slope,)


def leaky_relu_backward(dout, cache):
    """dx = dout where x > 0, else negative_slope * dout. Returns ``(dx,)``."""
    (slope,) = cache
    check_dout(dout, slope.shape, slope.dtype)
    return (_times(dout, slope),)


# --- sigmoid ----------------------------------------------------------------------------------

def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), computed without overflow. Returns ``(y, cache)``; cache is y."""
    check_float_array(x, "x")
    y = _sigmoid(x)
    return y, y


def sigmoid_backward(dout, cache):
    """dx = dout * y * (1 - y) with y = sigmoid(x). Returns ``(dx,)``."""
    y = cache
    check_dout(dout, y.shape, y.dtype)
    xp = array_module(y)
    dx = xp.empty_like(y)

    def piece(dout, y, dx):
        xp.subtract(1, y, out=dx)                      # 1 - y
        dx *= y
        dx *= dout

    elementwise(piece, dout, y, dx)
    return (dx,)


# --- tanh -------------------------------------------------------------------------------------

def tanh_forward(x):
    """y = tanh(x). Returns ``(y, cache)``; cache is y."""
    check_float_array(x, "x")
    xp = array_module(x)
    y = xp.empty_like(x)
    elementwise(lambda x, y: xp.tanh(x, out=y), x, y)
    return y, y


def tanh_backward(dout, cache):
    """dx = dout * (1 - y^2) with y = tanh(x). Returns ``(dx,)``."""
    y = cache
    check_dout(dout, y.shape, y.dtype)
    xp = array_module(y)
    dx = xp.empty_like(y)

    def piece(dout, y, dx):
        xp.multiply(y, y, out=dx)
        xp.subtract(1, dx, out=dx)                     # 1 - y^2
        dx *= dout

    elementwise(piece, dout, y, dx)
    return (dx,)
