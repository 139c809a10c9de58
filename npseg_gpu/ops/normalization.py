"""Batch normalization on the device (mirror :mod:`npseg.ops.normalization`).

Same formulas, arguments, checks and in-place update of the running statistics as the NumPy op;
x is viewed as (N, C, L) (L = 1 for (N, C) input). The per-channel sums run in
:mod:`npseg_gpu.kernels.batchnorm` (one block per channel, a shared-memory reduction), the
normalisation and the input gradient in elementwise kernels; the (C,)-sized glue (running
statistics, 1/sigma) is CuPy. ``batch_norm_relu`` is batch norm then the device's ReLU op (the
NumPy op fuses them to save passes over CPU memory; on the GPU they stay two kernels apart).
"""

from __future__ import annotations

import math

from npseg.ops.normalization import _check_batch_norm, _update_running_stats
from npseg_gpu._device import xp
from npseg_gpu.kernels import batchnorm as K
from npseg_gpu.kernels._launch import launch, launch_blocks
from npseg_gpu.ops._dout import check_dout
from npseg_gpu.ops._util import contiguous, empty, require_device
from npseg_gpu.ops.activation import relu_backward, relu_forward

__all__ = ["batch_norm_forward", "batch_norm_backward",
           "batch_norm_relu_forward", "batch_norm_relu_backward"]


def _as_ncl(a):
    """(N, C, ...) -> contiguous (N, C, L) view or copy."""
    return contiguous(a).reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                       eps=1e-5):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta per channel, as
    :func:`npseg.ops.batch_norm_forward` (training updates the running statistics in place).

    Returns ``(y, cache)``.
    """
    training, momentum, eps, channels, count = _check_batch_norm(
        x, gamma, beta, running_mean, running_var, training, momentum, eps)
    for name, v in (("x", x), ("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        require_device(v, name)
    x3 = _as_ncl(x)
    batch_stats = training and count > 1
    if batch_stats:
        mean = empty((channels,), x.dtype)
        var = empty((channels,), x.dtype)
        launch_blocks(K.channel_mean_var_kernel, channels, x3, mean, var)
        _update_running_stats(running_mean, running_var, mean, var, momentum, count)
    else:
        mean, var = running_mean, running_var

    inv_sigma = 1 / xp().sqrt(var + eps)                       # (C,)
    x_hat = empty(x3.shape, x.dtype)
    y = empty(x3.shape, x.dtype)
    launch(K.normalize_kernel, x3.size, x3, contiguous(mean), contiguous(inv_sigma),
           contiguous(gamma), contiguous(beta), x_hat, y)
    cache = (x_hat, gamma.copy(), inv_sigma, batch_stats, tuple(x.shape))
    return y.reshape(x.shape), cache


def batch_norm_backward(dout, cache):
    """Gradients of batch norm: ``(dx, dgamma, dbeta)``, as :func:`npseg.ops.batch_norm_backward`.

        dbeta = sum(dy), dgamma = sum(dy * xhat)                    (per channel)
        dx = (gamma / sigma) * (dy - mean(dy) - xhat * mean(dy * xhat))   (training)
        dx = (gamma / sigma) * dy                                         (evaluation)
    """
    x_hat, gamma, inv_sigma, batch_stats, shape = cache
    check_dout(dout, shape, x_hat.dtype)
    require_device(dout, "dout")
    channels = shape[1]
    dy = _as_ncl(dout)
    dbeta = empty((channels,), x_hat.dtype)
    dgamma = empty((channels,), x_hat.dtype)
    if x_hat.size:
        launch_blocks(K.channel_grad_sums_kernel, channels, dy, x_hat, dbeta, dgamma)
    else:
        dbeta[...] = 0
        dgamma[...] = 0
    scale = gamma * inv_sigma                                  # gamma / sigma, (C,)
    if not batch_stats:
        return dout * scale.reshape((1, -1) + (1,) * (len(shape) - 2)), dgamma, dbeta
    count = x_hat.size // channels                             # M
    dx = empty(x_hat.shape, x_hat.dtype)
    launch(K.batch_grad_kernel, dx.size, dy, x_hat, contiguous(scale),
           contiguous(dbeta / count), contiguous(dgamma / count), dx)
    return dx.reshape(shape), dgamma, dbeta


def batch_norm_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                            eps=1e-5):
    """z = max(batch_norm(x), 0), as :func:`npseg.ops.batch_norm_relu_forward`. Returns
    ``(z, cache)``."""
    y, bn_cache = batch_norm_forward(x, gamma, beta, running_mean, running_var, training,
                                     momentum, eps)
    z, relu_cache = relu_forward(y)
    return z, (bn_cache, relu_cache)


def batch_norm_relu_backward(dout, cache):
    """Gradients of :func:`batch_norm_relu_forward`: ReLU's backward, then batch norm's;
    ``(dx, dgamma, dbeta)``."""
    bn_cache, relu_cache = cache
    (dy,) = relu_backward(dout, relu_cache)
    return batch_norm_backward(dy, bn_cache)
