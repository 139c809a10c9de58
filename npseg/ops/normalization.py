"""Batch normalization over the channel axis (axis 1) of (N, C), (N, C, L) or (N, C, H, W) input.

For each channel c, over the M = N * L (or N * H * W) values x_i of that channel:

    mu      = mean(x_i)                        batch mean
    var     = mean((x_i - mu)^2)               biased batch variance (used to normalise)
    sigma   = sqrt(var + eps)
    xhat_i  = (x_i - mu) / sigma
    y_i     = gamma * xhat_i + beta

In training the batch statistics normalise, and the running statistics follow them:

    running_mean <- (1 - momentum) * running_mean + momentum * mu
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)   (unbiased)

In evaluation ``running_mean`` and ``running_var`` take the place of mu and var, and are constants.
(PyTorch's ``momentum=None``, a cumulative average, is not supported: momentum is a number.)

**Mutation.** The training forward updates ``running_mean`` and ``running_var`` *in place* (as
PyTorch does). This is the only place in the whole library where an op writes into an argument;
everything else, ``x``, ``gamma`` and ``beta`` included, is never modified.
"""

from __future__ import annotations

import math

import numpy as np

from npseg.ops._checks import (check_bool, check_float_array, check_number, check_same_dtype,
                               check_shape)
from npseg.ops._checks import check_dout
from npseg.ops._threads import map_rows, sum_in_order

__all__ = ["batch_norm_forward", "batch_norm_backward"]


def _rows(a):
    """``a`` (N, C), (N, C, L) or (N, C, H, W) as an (N, C, L) array (a view where possible).

    Batch norm works on these rows; the statistics are sums over axes 0 and 2, and the pieces
    computed in parallel (``map_rows``) are blocks of images along axis 0.
    """
    return a.reshape(a.shape[:2] + (math.prod(a.shape[2:]),))


def _channel_sum(a):
    """sum(a) over axes 0 and 2 of an (N, C, L) array, as a (C,) vector.

    The sums over L are a matrix-vector product with a vector of ones (BLAS, 2-4x faster than
    ``a.sum(axis=(0, 2))``), then the N rows are added.
    """
    return (a @ np.ones(a.shape[2], dtype=a.dtype)).sum(axis=0)


def _channel_dot(a, b):
    """sum(a * b) over axes 0 and 2 of (N, C, L) arrays, as a (C,) vector, with no temporary:
    one dot product of length L per (n, c), as a batched (1 x L) @ (L x 1) matrix product."""
    return np.matmul(a[:, :, None, :], b[:, :, :, None]).sum(axis=(0, 2, 3))


def _map(fn, *arrays):
    """``map_rows`` for batch norm's pieces, whose sums are matrix products (BLAS)."""
    return map_rows(fn, *arrays, uses_blas=True)


def _check_batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """Validate the arguments of :func:`batch_norm_forward` (both devices use it); returns
    ``(training, momentum, eps, channels, count)``, count = M, the values per channel."""
    check_float_array(x, "x")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"x must be 2-D (N, C), 3-D (N, C, L) or 4-D (N, C, H, W), "
                         f"got shape {tuple(x.shape)}")
    channels = x.shape[1]
    for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        check_float_array(v, name)
        check_shape(v, name, (channels,))
    check_same_dtype(x, "x", gamma=gamma, beta=beta, running_mean=running_mean,
                     running_var=running_var)
    training = check_bool(training, "training")
    momentum = check_number(momentum, "momentum", low=0.0, high=1.0)
    eps = check_number(eps, "eps", low=0.0, low_open=True)
    if training:
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            if not getattr(getattr(v, "flags", None), "writeable", True):
                raise ValueError(f"{name} must be writeable: training updates it in place")

    count = x.size // channels if channels else 0          # M: values per channel
    if training and count == 1:
        raise ValueError(f"x must have more than 1 value per channel when training, "
                         f"got shape {tuple(x.shape)}")
    return training, momentum, eps, channels, count


def _update_running_stats(running_mean, running_var, mean, var, momentum, count):
    """The running statistics follow the batch's, in place: the one permitted in-place update
    of an argument (both devices use it)."""
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * (count / (count - 1))  # unbiased: divides by M - 1


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                       eps=1e-5):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, per channel (axis 1).

    Shapes: ``x`` (N, C), (N, C, L) or (N, C, H, W); ``gamma``, ``beta``, ``running_mean`` and
    ``running_var`` (C,), all of ``x``'s dtype; ``y`` has ``x``'s shape and dtype.

    ``training=True``: mu and var are the mean and the biased variance of the batch over every
    axis but 1, and ``running_mean`` / ``running_var`` are updated **in place** with ``momentum``
    (the running variance with the unbiased batch variance, as in PyTorch). A batch with a single
    value per channel (N * L == 1) raises ``ValueError``: its variance is undefined. An empty
    batch returns an empty output and leaves the running statistics alone.
    ``training=False``: mu and var are ``running_mean`` and ``running_var`` (left unchanged).

    Returns ``(y, cache)``.
    """
    training, momentum, eps, channels, count = _check_batch_norm(
        x, gamma, beta, running_mean, running_var, training, momentum, eps)
    batch_stats = training and count > 1
    x3 = _rows(x)                                             # (N, C, L) view
    x_centered = np.empty_like(x3)                            # x - mu
    if batch_stats:
        mean = sum_in_order(_map(_channel_sum, x3), channels, x.dtype) / count

        def center(x, x_centered):                            # x - mu, and sum((x - mu)^2)
            np.subtract(x, mean[:, None], out=x_centered)
            return _channel_dot(x_centered, x_centered)

        var = sum_in_order(_map(center, x3, x_centered), channels, x.dtype) / count
        # (biased: divides by M)
        _update_running_stats(running_mean, running_var, mean, var, momentum, count)
    else:
        # Evaluation (or an empty training batch): the running statistics are constants.
        mean, var = running_mean, running_var
        _map(lambda x, xc: np.subtract(x, mean[:, None], out=xc), x3, x_centered)
    inv_sigma = 1 / np.sqrt(var + eps)                        # 1 / sigma, (C,)
    scale = (gamma * inv_sigma)[:, None]                      # gamma / sigma, (C, 1)
    y = np.empty_like(x3)

    def normalize(x_centered, y):                             # y = gamma * xhat + beta
        np.multiply(x_centered, scale, out=y)                 #   = (x - mu) * gamma/sigma + beta
        y += beta[:, None]

    _map(normalize, x_centered, y)
    # The cache holds x - mu rather than xhat = (x - mu) / sigma: backward needs xhat only in
    # per-channel sums and products, where the factor 1/sigma goes onto the (C,) vectors.
    return y.reshape(x.shape), (x_centered, x.shape, gamma.copy(), inv_sigma, batch_stats)


def batch_norm_backward(dout, cache):
    """Gradients of batch norm: returns ``(dx, dgamma, dbeta)``.

    With dy = ``dout`` and means over the M values of each channel:

        dbeta  = sum(dy)
        dgamma = sum(dy * xhat)
        dx     = (gamma / sigma) * (dy - mean(dy) - xhat * mean(dy * xhat))     (training)
        dx     = (gamma / sigma) * dy                                           (evaluation)

    In training mu and sigma depend on x, which gives the two mean terms (the compact form of
    the chain rule through mu and var); note mean(dy) = dbeta / M and mean(dy * xhat) = dgamma / M.
    In evaluation mu and sigma are the running statistics, constants, and x -> y is affine.
    """
    x_centered, shape, gamma, inv_sigma, batch_stats = cache  # x - mu: (N, C, L)
    check_dout(dout, shape, x_centered.dtype)
    dy = _rows(dout)
    channels, dtype = x_centered.shape[1], x_centered.dtype
    sums = _map(lambda dy, xc: (_channel_sum(dy), _channel_dot(dy, xc)), dy, x_centered)
    dbeta = sum_in_order([s[0] for s in sums], channels, dtype)        # sum(dy)
    dgamma = sum_in_order([s[1] for s in sums], channels, dtype) * inv_sigma
    # sum(dy * xhat) = sum(dy * (x - mu)) / sigma
    scale = (gamma * inv_sigma)[:, None]                      # gamma / sigma, (C, 1)
    dx = np.empty_like(x_centered)
    if not batch_stats:
        _map(lambda dy, dx: np.multiply(dy, scale, out=dx), dy, dx)
        return dx.reshape(shape), dgamma, dbeta
    count = x_centered.size // channels                       # M
    mean_dy = (dbeta / count)[:, None]                        # mean(dy)
    # xhat * mean(dy * xhat) = (x - mu) * mean(dy * xhat) / sigma
    xc_factor = (-(dgamma / count) * inv_sigma)[:, None]

    def input_gradient(dy, x_centered, dx):
        # dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat))
        np.multiply(x_centered, xc_factor, out=dx)
        dx += dy
        dx -= mean_dy
        dx *= scale

    _map(input_gradient, dy, x_centered, dx)
    return dx.reshape(shape), dgamma, dbeta
