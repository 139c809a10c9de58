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

__all__ = ["batch_norm_forward", "batch_norm_backward"]


def _channel_axes(x) -> tuple[int, ...]:
    """Every axis but the channel axis 1: the axes the statistics average over."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim: int):
    """A (C,) vector shaped (1, C, 1, ...) so that it broadcasts against an ndim-D input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _channel_dot(a, b):
    """sum(a * b) over every axis but 1, as a (C,) vector, without an (N, C, ...) temporary."""
    shape = a.shape[:2] + (math.prod(a.shape[2:]),)         # (N, C, L), L = 1 for 2-D input
    return np.einsum("ncl,ncl->c", a.reshape(shape), b.reshape(shape))


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
    batch_stats = training and count > 1

    if batch_stats:
        mean = x.mean(axis=_channel_axes(x))
        x_centered = x - _per_channel(mean, x.ndim)
        var = _channel_dot(x_centered, x_centered) / count    # biased: divides by M
        # The running statistics: the one permitted in-place update of an argument.
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / (count - 1))  # unbiased: divides by M - 1
    else:
        # Evaluation (or an empty training batch): the running statistics are constants.
        mean, var = running_mean, running_var
        x_centered = x - _per_channel(mean, x.ndim)

    inv_sigma = 1 / np.sqrt(var + eps)                        # 1 / sigma, (C,)
    x_hat = x_centered                                        # a new array: scale it in place
    x_hat *= _per_channel(inv_sigma, x.ndim)                  # xhat = (x - mu) / sigma
    y = x_hat * _per_channel(gamma, x.ndim)
    y += _per_channel(beta, x.ndim)                           # y = gamma * xhat + beta
    return y, (x_hat, gamma.copy(), inv_sigma, batch_stats)


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
    x_hat, gamma, inv_sigma, batch_stats = cache
    check_dout(dout, x_hat.shape, x_hat.dtype)
    ndim = x_hat.ndim
    dbeta = dout.sum(axis=_channel_axes(dout))
    dgamma = _channel_dot(dout, x_hat)
    scale = _per_channel(gamma * inv_sigma, ndim)             # gamma / sigma
    if not batch_stats:
        return dout * scale, dgamma, dbeta
    count = x_hat.size // x_hat.shape[1]                      # M
    mean_dy = _per_channel(dbeta / count, ndim)               # mean(dy)
    mean_dy_xhat = _per_channel(dgamma / count, ndim)         # mean(dy * xhat)
    # dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat)), in place on one new array:
    dx = x_hat * -mean_dy_xhat
    dx += dout
    dx -= mean_dy
    dx *= scale
    return dx, dgamma, dbeta
