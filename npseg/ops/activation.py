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

from npseg._device import array_module
from npseg.ops._checks import check_dout, check_float_array, check_number

__all__ = [
    "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
]


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow for any x.

    With e = exp(-|x|), which lies in (0, 1] and cannot overflow:
    x >= 0: 1 / (1 + exp(-x)) = 1 / (1 + e);   x < 0: exp(x) / (1 + exp(x)) = e / (1 + e).
    """
    xp = array_module(x)
    e = xp.abs(x)
    xp.negative(e, out=e)
    xp.exp(e, out=e)                       # e = exp(-|x|), in place: one temporary in all
    y = xp.where(x >= 0, x.dtype.type(1), e)
    e += 1
    y /= e
    return y


# --- ReLU -------------------------------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0). Returns ``(y, cache)``; the cache is the mask x > 0."""
    check_float_array(x, "x")
    xp = array_module(x)
    return xp.maximum(x, 0), (x > 0, x.dtype)


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0. Returns ``(dx,)``."""
    positive, dtype = cache
    check_dout(dout, positive.shape, dtype)
    return (dout * positive,)


# --- leaky ReLU -------------------------------------------------------------------------------

def leaky_relu_forward(x, negative_slope=0.01):
    """y = x if x > 0 else negative_slope * x. Returns ``(y, cache)``."""
    check_float_array(x, "x")
    negative_slope = check_number(negative_slope, "negative_slope")
    xp = array_module(x)
    positive = x > 0
    y = xp.where(positive, x, x * negative_slope)
    return y, (positive, negative_slope, x.dtype)


def leaky_relu_backward(dout, cache):
    """dx = dout where x > 0, else negative_slope * dout. Returns ``(dx,)``."""
    positive, negative_slope, dtype = cache
    check_dout(dout, positive.shape, dtype)
    xp = array_module(dout)
    return (xp.where(positive, dout, dout * negative_slope),)


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
    dx = 1 - y
    dx *= y
    dx *= dout
    return (dx,)


# --- tanh -------------------------------------------------------------------------------------

def tanh_forward(x):
    """y = tanh(x). Returns ``(y, cache)``; cache is y."""
    check_float_array(x, "x")
    xp = array_module(x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dout, cache):
    """dx = dout * (1 - y^2) with y = tanh(x). Returns ``(dx,)``."""
    y = cache
    check_dout(dout, y.shape, y.dtype)
    return (dout * (1 - y * y),)
