"""Inverted dropout.

In training each element is kept with probability 1 - p and kept elements are scaled by
1 / (1 - p), so that E[y] = x and evaluation needs no rescaling:

    keep_i = (u_i >= p),  u_i ~ Uniform[0, 1)
    y_i    = x_i * keep_i / (1 - p)            (y = 0 when p = 1)
    dx_i   = dout_i * keep_i / (1 - p)

In evaluation, or with p = 0, dropout is the identity (and draws nothing from ``rng``).

**The random draw** (so that ``npseg_gpu`` can reproduce the same mask from the same generator
state): exactly one call ``u = rng.random(x.shape)`` (default float64 dtype) per training
forward with p > 0, and ``keep = u >= p``.
"""

from __future__ import annotations

import types

from npseg.ops._checks import check_bool, check_float_array, check_number
from npseg.ops._checks import check_dout

__all__ = ["dropout_forward", "dropout_backward"]


def _check_rng(rng):
    """A random generator: anything with a ``random(shape)`` method (a ``numpy.random.Generator``
    here, CuPy's generator on the GPU), but not a module such as ``numpy.random`` itself."""
    if isinstance(rng, types.ModuleType) or not callable(getattr(rng, "random", None)):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)) "
                        f"or the device's generator, got {type(rng).__name__}")
    return rng


def dropout_forward(x, p, training, rng):
    """y = x * keep / (1 - p) with keep = rng.random(x.shape) >= p. Returns ``(y, cache)``.

    ``x``: any shape, float32/float64; ``p`` in [0, 1]; ``training``: bool; ``rng``: a
    ``numpy.random.Generator`` (or the device's generator), checked even when unused.
    ``y`` has ``x``'s shape and dtype; it is a new array (a copy of ``x`` when dropout is the
    identity).
    """
    check_float_array(x, "x")
    p = check_number(p, "p", low=0.0, high=1.0)
    training = check_bool(training, "training")
    _check_rng(rng)
    if not training or p == 0:
        return x.copy(), (None, 1.0, x.shape, x.dtype)
    keep = rng.random(x.shape) >= p
    scale = 1 / (1 - p) if p < 1 else 0.0
    y = x * keep * scale
    return y, (keep, scale, x.shape, x.dtype)


def dropout_backward(dout, cache):
    """dx = dout * keep / (1 - p) (dx = dout for the identity). Returns ``(dx,)``."""
    keep, scale, shape, dtype = cache
    check_dout(dout, shape, dtype)
    if keep is None:
        return (dout.copy(),)
    return (dout * keep * scale,)
