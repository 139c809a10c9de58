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

``batch_norm_relu_forward`` / ``_backward`` are batch norm followed by a ReLU, z = max(y, 0), as
one op: the same operations in the same order, so the same numbers as ``relu_forward`` after
``batch_norm_forward``, but the ReLU runs on each range of channels right after batch norm wrote
it (still in the CPU cache) and the threads are handed work once instead of twice. Networks
with a BN -> ReLU in every block (U-Net, SegNet, VGG-BN) use it through ``nn.Sequential``.

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
from npseg.ops._channels import spread
from npseg.ops._threads import map_pieces, ranges

__all__ = ["batch_norm_forward", "batch_norm_backward",
           "batch_norm_relu_forward", "batch_norm_relu_backward"]


def _rows(a):
    """``a`` (N, C), (N, C, L) or (N, C, H, W) as an (N, C, L) array (a view where possible).

    Batch norm works on these rows; the statistics are sums over axes 0 and 2.
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


def _by_channels(fn, *arrays):
    """``fn(channels, *views)`` for ranges of channels, on npseg's threads at once.

    ``arrays`` are (N, C, L); ``channels`` is a slice of C and each view ``a[:, channels]``.
    A channel's statistics lie within one piece, so the pieces need nothing from each other:
    one pass of threads per forward or backward. Their sums are matrix products (BLAS). The
    pieces are at least ``_threads.MIN_ELEMENTS_PER_PIECE`` elements, as for elementwise ops:
    below that, handing a piece to a thread and the turns at the GIL eat the gain (measured on
    the U-Net preset's batch norm layers too).
    """
    pieces = ranges(arrays[0].shape[1], arrays[0].size)
    map_pieces(lambda r: fn(slice(*r), *(a[:, r[0]:r[1]] for a in arrays)), pieces,
               uses_blas=True)


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
    return _batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum,
                               eps, relu=False)


def batch_norm_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                            eps=1e-5):
    """z = max(y, 0) with y = :func:`batch_norm_forward` (same arguments, same in-place update
    of the running statistics in training): batch norm and ReLU as one op.

    Returns ``(z, cache)``; the cache is batch norm's and the mask y > 0.
    """
    return _batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum,
                               eps, relu=True)


def _batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                        relu):
    """Batch norm's forward pass, then ReLU's when ``relu``."""
    training, momentum, eps, channels, count = _check_batch_norm(
        x, gamma, beta, running_mean, running_var, training, momentum, eps)
    batch_stats = training and count > 1
    dtype = x.dtype
    if batch_stats:
        mean, var = np.empty(channels, dtype=dtype), np.empty(channels, dtype=dtype)
    else:
        # Evaluation (or an empty training batch): the running statistics are constants.
        mean, var = running_mean, running_var
    inv_sigma = np.empty(channels, dtype=dtype)               # 1 / sigma, (C,)
    x3 = _rows(x)                                             # (N, C, L) view
    x_centered, y = np.empty_like(x3), np.empty_like(x3)      # x - mu, and the output
    positive = np.empty(x3.shape, dtype=bool) if relu else None   # y > 0, for ReLU's backward

    def piece(c, x, x_centered, y, positive=None):            # channels c, (N, c, L) views
        L = x.shape[2]
        if batch_stats:
            mean[c] = _channel_sum(x) / count
        np.subtract(x, spread(mean[c], L), out=x_centered)
        if batch_stats:
            var[c] = _channel_dot(x_centered, x_centered) / count   # biased: divides by M
        inv_sigma[c] = 1 / np.sqrt(var[c] + eps)
        np.multiply(x_centered, spread(gamma[c] * inv_sigma[c], L), out=y)
        y += spread(beta[c], L)                              # y = (x - mu) * gamma/sigma + beta
        if relu:  # ReLU on the rows just written, as relu_forward computes it: max(y, zeros)
            np.greater(y, 0, out=positive)
            np.maximum(y, np.zeros(y.shape[1:], dtype=dtype), out=y)

    _by_channels(piece, x3, x_centered, y, *((positive,) if relu else ()))
    if batch_stats:
        _update_running_stats(running_mean, running_var, mean, var, momentum, count)
    # The cache holds x - mu rather than xhat = (x - mu) / sigma: backward needs xhat only in
    # per-channel sums and products, where the factor 1/sigma goes onto the (C,) vectors.
    cache = (x_centered, x.shape, gamma.copy(), inv_sigma, batch_stats)
    return y.reshape(x.shape), ((cache, positive) if relu else cache)


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
    check_dout(dout, cache[1], cache[0].dtype)
    return _batch_norm_backward(_rows(dout), cache, positive=None)


def batch_norm_relu_backward(dout, cache):
    """Gradients of :func:`batch_norm_relu_forward`: ``(dx, dgamma, dbeta)``.

    ReLU's backward first, dy = dout where y > 0 else 0, then :func:`batch_norm_backward` of dy;
    both on each range of channels in turn.
    """
    bn_cache, positive = cache
    check_dout(dout, bn_cache[1], bn_cache[0].dtype)
    return _batch_norm_backward(_rows(dout), bn_cache, positive)


def _batch_norm_backward(dout, cache, positive):
    """Batch norm's backward pass for (N, C, L) ``dout``; ReLU's before it when ``positive``
    (the mask y > 0) is given."""
    x_centered, shape, gamma, inv_sigma, batch_stats = cache  # x - mu: (N, C, L)
    channels, dtype = x_centered.shape[1], x_centered.dtype
    count = x_centered.size // channels if channels else 0   # M
    dgamma, dbeta = np.empty(channels, dtype=dtype), np.empty(channels, dtype=dtype)
    dx = np.empty_like(x_centered)
    relu = positive is not None
    dy_relu = np.empty_like(x_centered) if relu else None    # ReLU's input gradient

    def piece(c, dy, x_centered, dx, positive=None, dy_relu=None):  # channels c, (N, c, L)
        if relu:  # ReLU's backward, as relu_backward computes it: dout times the mask
            dy = np.multiply(dy, positive, out=dy_relu)
        L = dy.shape[2]
        dbeta[c] = _channel_sum(dy)                           # sum(dy)
        dgamma[c] = _channel_dot(dy, x_centered) * inv_sigma[c]
        # sum(dy * xhat) = sum(dy * (x - mu)) / sigma
        scale = spread(gamma[c] * inv_sigma[c], L)           # gamma / sigma
        if not batch_stats:
            np.multiply(dy, scale, out=dx)
            return
        mean_dy = spread(dbeta[c] / count, L)                # mean(dy)
        # xhat * mean(dy * xhat) = (x - mu) * mean(dy * xhat) / sigma
        xc_factor = spread(-(dgamma[c] / count) * inv_sigma[c], L)
        # dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat))
        np.multiply(x_centered, xc_factor, out=dx)
        dx += dy
        dx -= mean_dy
        dx *= scale

    _by_channels(piece, dout, x_centered, dx, *((positive, dy_relu) if relu else ()))
    return dx.reshape(shape), dgamma, dbeta
