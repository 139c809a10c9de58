"""Losses on the device (mirror :mod:`npseg.ops.loss`): softmax cross entropy, binary cross
entropy with logits, smooth L1.

Same arguments, checks, reductions and gradients as the NumPy ops. The per-element work is fused
in :mod:`npseg_gpu.kernels.loss` (cross entropy: one thread per element looping over the
classes, forward and backward); the reductions (a sum, a division) are CuPy.

    reduction="none" -> w_i l_i;  "sum" -> sum_i w_i l_i;  "mean" -> sum_i w_i l_i / normaliser
    normaliser: sum_i w_i for cross entropy, the number of elements for the other two.
"""

from __future__ import annotations

import math

import numpy as np

from npseg.ops.loss import (_check_bce_with_logits, _check_cross_entropy, _check_smooth_l1,
                            _reduce)
from npseg_gpu._device import xp
from npseg_gpu.kernels import loss as K
from npseg_gpu.kernels._launch import launch
from npseg_gpu.ops._dout import check_dout
from npseg_gpu.ops._util import contiguous, empty, require_device

__all__ = [
    "cross_entropy_forward", "cross_entropy_backward",
    "binary_cross_entropy_with_logits_forward", "binary_cross_entropy_with_logits_backward",
    "smooth_l1_loss_forward", "smooth_l1_loss_backward",
]


def _check_loss_dout(dout, reduction: str, shape, dtype):
    check_dout(dout, shape if reduction == "none" else (), dtype)
    require_device(dout, "dout")


def _upstream(dout, reduction: str, count: int):
    """dout, or dout / count for "mean", as a flat device array (1 element unless "none")."""
    if reduction == "mean" and count > 0:
        dout = dout / count
    return contiguous(dout).reshape(-1)


def _placeholder(dtype, ndim: int):
    """A 1-element stand-in for an absent optional array (the kernels ignore it)."""
    return xp().zeros((1,) * ndim, dtype=dtype)


# --- softmax cross entropy --------------------------------------------------------------------

def cross_entropy_forward(logits, target, weight=None, ignore_index=-100, reduction="mean",
                          pixel_weight=None):
    """Softmax cross entropy over axis 1, as :func:`npseg.ops.cross_entropy_forward`.

        l_i = log(sum_c exp(x_ic - m_i)) - (x_i,t_i - m_i),   m_i = max_c x_ic
        w_i = weight[t_i] * pixel_weight_i   (0 where t_i == ignore_index)

    Returns ``(loss, cache)``: w_i l_i ("none", ``target``'s shape), their sum, or their sum
    divided by sum_i w_i ("mean"; nan when every weight is 0).
    """
    n, classes, ignore_index, reduction = _check_cross_entropy(
        logits, target, weight, ignore_index, reduction, pixel_weight)
    for name, a in (("logits", logits), ("target", target), ("weight", weight),
                    ("pixel_weight", pixel_weight)):
        require_device(a, name)

    m = xp()
    positions = math.prod(logits.shape[2:])
    x = contiguous(logits).reshape(n, classes, positions)
    t = contiguous(target, np.int64).reshape(n, positions)
    counted = t != ignore_index
    out_of_range = counted & ((t < 0) | (t >= classes))
    if bool(out_of_range.any()):                               # one device-to-host sync
        bad = t[out_of_range]
        raise ValueError(f"target must hold class indices in [0, {classes}) or ignore_index "
                         f"({ignore_index}), got values from {int(bad.min())} to {int(bad.max())}")

    dtype = logits.dtype
    has_weight, has_pixel_weight = weight is not None, pixel_weight is not None
    w_arg = contiguous(weight) if has_weight else _placeholder(dtype, 1)
    pw_arg = (contiguous(pixel_weight).reshape(n, positions) if has_pixel_weight
              else _placeholder(dtype, 2))
    weighted, w, row_max, sum_exp = (empty((n, positions), dtype) for _ in range(4))
    launch(K.cross_entropy_kernel, n * positions, x, t, w_arg, pw_arg, ignore_index,
           int(has_weight), int(has_pixel_weight), weighted, w, row_max, sum_exp)

    if reduction == "none":
        out = weighted.reshape(target.shape)
        normaliser = None
    elif reduction == "sum":
        out = m.asarray(weighted.sum(), dtype=dtype)
        normaliser = None
    else:
        normaliser = w.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            out = m.asarray(weighted.sum() / normaliser, dtype=dtype)
    t_valid = m.where(counted, t, 0)
    cache = (x, t_valid, row_max, sum_exp, w, counted, normaliser, reduction,
             tuple(logits.shape), tuple(target.shape))
    return out, cache


def cross_entropy_backward(dout, cache):
    """dlogits_ic = g_i (softmax(x_i)_c - [c == t_i]), as
    :func:`npseg.ops.cross_entropy_backward`. Returns ``(dlogits,)``.

    g_i = dout_i w_i ("none"), dout w_i ("sum") or dout w_i / sum_j w_j ("mean"); 0 where
    ignored.
    """
    (x, t, row_max, sum_exp, w, counted, normaliser, reduction, logits_shape,
     target_shape) = cache
    _check_loss_dout(dout, reduction, target_shape, x.dtype)
    n, _, positions = x.shape
    upstream = dout.reshape(n, positions) if reduction == "none" else dout
    g = w * upstream
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            g = g / normaliser
    g = contiguous(xp().where(counted, g, 0).astype(x.dtype, copy=False))
    dx = empty(x.shape, x.dtype)
    launch(K.cross_entropy_backward_kernel, n * positions, x, t, row_max, sum_exp, g, dx)
    return (dx.reshape(logits_shape),)


# --- binary cross entropy with logits ---------------------------------------------------------

def binary_cross_entropy_with_logits_forward(logits, target, weight=None, reduction="mean"):
    """Binary cross entropy of sigmoid(logits), as
    :func:`npseg.ops.binary_cross_entropy_with_logits_forward`.

        l_i = max(x_i, 0) - x_i t_i + log(1 + exp(-|x_i|)), times w_i (broadcast ``weight``)

    Returns ``(loss, cache)``; "mean" divides by the number of elements.
    """
    reduction = _check_bce_with_logits(logits, target, weight, reduction)
    for name, a in (("logits", logits), ("target", target), ("weight", weight)):
        require_device(a, name)

    m = xp()
    x = contiguous(logits).reshape(-1)
    t = contiguous(target).reshape(-1)
    if weight is not None:
        w = contiguous(m.broadcast_to(weight, logits.shape)).reshape(-1)
    else:
        w = _placeholder(logits.dtype, 1)
    loss = empty(x.shape, logits.dtype)
    launch(K.bce_with_logits_kernel, x.size, x, t, w, int(weight is not None), loss)
    cache = (x, t, w, weight is not None, reduction, tuple(logits.shape))
    return _reduce(loss.reshape(logits.shape), reduction), cache


def binary_cross_entropy_with_logits_backward(dout, cache):
    """dlogits_i = upstream * w_i * (sigmoid(x_i) - t_i). Returns ``(dlogits,)``."""
    x, t, w, has_weight, reduction, shape = cache
    _check_loss_dout(dout, reduction, shape, x.dtype)
    upstream = _upstream(dout, reduction, x.size)
    dx = empty(x.shape, x.dtype)
    launch(K.bce_with_logits_backward_kernel, x.size, x, t, w, int(has_weight), upstream,
           int(reduction == "none"), dx)
    return (dx.reshape(shape),)


# --- smooth L1 --------------------------------------------------------------------------------

def smooth_l1_loss_forward(pred, target, beta=1.0, reduction="mean"):
    """Smooth L1 loss of d = pred - target, as :func:`npseg.ops.smooth_l1_loss_forward`.

        l_i = 0.5 d_i^2 / beta if |d_i| < beta else |d_i| - 0.5 beta    (beta = 0: |d_i|)

    Returns ``(loss, cache)``.
    """
    beta, reduction = _check_smooth_l1(pred, target, beta, reduction)
    require_device(pred, "pred")
    require_device(target, "target")

    p = contiguous(pred).reshape(-1)
    t = contiguous(target).reshape(-1)
    loss = empty(p.shape, pred.dtype)
    diff = empty(p.shape, pred.dtype)
    launch(K.smooth_l1_kernel, p.size, p, t, beta, loss, diff)
    return _reduce(loss.reshape(pred.shape), reduction), (diff, beta, reduction,
                                                          tuple(pred.shape))


def smooth_l1_loss_backward(dout, cache):
    """dpred_i = upstream * (d_i / beta if |d_i| < beta else sign(d_i)). Returns ``(dpred,)``."""
    diff, beta, reduction, shape = cache
    _check_loss_dout(dout, reduction, shape, diff.dtype)
    upstream = _upstream(dout, reduction, diff.size)
    dx = empty(diff.shape, diff.dtype)
    launch(K.smooth_l1_backward_kernel, diff.size, diff, beta, upstream,
           int(reduction == "none"), dx)
    return (dx.reshape(shape),)
