"""Losses: softmax cross entropy, binary cross entropy with logits, smooth L1.

Each loss computes per-element losses l_i and per-element weights w_i, then reduces them:

    reduction="none"  ->  w_i * l_i, one per element (the target's shape)
    reduction="sum"   ->  sum_i w_i * l_i                                       (a 0-d array)
    reduction="mean"  ->  sum_i w_i * l_i / normaliser                          (a 0-d array)

The normaliser follows PyTorch: for cross entropy it is sum_i w_i (the weights of the counted
elements); for binary cross entropy and smooth L1 it is the number of elements, whatever the
weights. The backward takes ``dout`` of the forward output's shape (0-d for "sum" and "mean").

Binary cross entropy and smooth L1 are elementwise and go through the array module of their
input (``xp``), so ``npseg_gpu`` can reuse them on CuPy arrays. Cross entropy is NumPy.
"""

from __future__ import annotations

import math

import numpy as np

from npseg._device import array_module
from npseg.ops._checks import (check_float_array, check_int, check_int_array, check_number,
                               check_reduction, check_same_dtype, check_shape)
from npseg.ops._checks import check_dout
from npseg.ops._threads import elementwise
from npseg.ops.activation import _sigmoid

__all__ = [
    "cross_entropy_forward", "cross_entropy_backward",
    "binary_cross_entropy_with_logits_forward", "binary_cross_entropy_with_logits_backward",
    "smooth_l1_loss_forward", "smooth_l1_loss_backward",
]


def _reduce(loss, reduction: str):
    """Per-element ``loss`` -> itself ("none"), its sum or its mean over all elements (0-d)."""
    if reduction == "none":
        return loss
    xp = array_module(loss)
    if reduction == "mean" and loss.size == 0:
        return xp.asarray(math.nan, dtype=loss.dtype)     # the mean of nothing, as in PyTorch
    total = loss.sum()
    if reduction == "mean":
        total = total / loss.size
    return xp.asarray(total, dtype=loss.dtype)


def _check_loss_dout(dout, reduction: str, shape, dtype):
    """``dout`` has the forward output's shape: ``shape`` for "none", () otherwise."""
    check_dout(dout, shape if reduction == "none" else (), dtype)


def _upstream(dout, reduction: str, count: int):
    """d(output)/d(l_i) times dout, for unit weights: dout, or dout / count for "mean"."""
    if reduction == "mean" and count > 0:
        return dout / count
    return dout


# --- softmax cross entropy --------------------------------------------------------------------

def _check_classes(t, counted, classes: int, ignore_index: int):
    """Every counted target is a class index in [0, classes)."""
    if t.size == 0 or (t.min() >= 0 and t.max() < classes):
        return                                   # the common case, checked in two reductions
    bad = counted & ((t < 0) | (t >= classes))
    if bad.any():
        raise ValueError(f"target must hold class indices in [0, {classes}) or ignore_index "
                         f"({ignore_index}), got values from {t[bad].min()} to {t[bad].max()}")


def _check_cross_entropy(logits, target, weight, ignore_index, reduction, pixel_weight):
    """Validate the arguments of :func:`cross_entropy_forward` (both devices use it); returns
    ``(n, classes, ignore_index, reduction)``."""
    check_float_array(logits, "logits")
    if logits.ndim < 2:
        raise ValueError(f"logits must be (N, C) or (N, C, d1, ...), "
                         f"got shape {tuple(logits.shape)}")
    n, classes = logits.shape[:2]
    if classes == 0:
        raise ValueError(f"logits must have at least one class (axis 1), "
                         f"got shape {tuple(logits.shape)}")
    check_int_array(target, "target", shape=(n,) + tuple(logits.shape[2:]))
    ignore_index = check_int(ignore_index, "ignore_index")
    reduction = check_reduction(reduction)
    if weight is not None:
        check_float_array(weight, "weight")
        check_shape(weight, "weight", (classes,))
    if pixel_weight is not None:
        check_float_array(pixel_weight, "pixel_weight")
        check_shape(pixel_weight, "pixel_weight", target.shape)
    check_same_dtype(logits, "logits", weight=weight, pixel_weight=pixel_weight)
    return n, classes, ignore_index, reduction


def cross_entropy_forward(logits, target, weight=None, ignore_index=-100, reduction="mean",
                          pixel_weight=None):
    """Softmax cross entropy over the classes on axis 1. Returns ``(loss, cache)``.

    Shapes: ``logits`` (N, C) or (N, C, d1, d2, ...); ``target`` (N,) or (N, d1, d2, ...),
    integer class indices in [0, C) or ``ignore_index``; ``weight`` (C,) per class;
    ``pixel_weight`` of ``target``'s shape, per element (e.g. U-Net's weight map). Float
    arguments share ``logits``' dtype, which is also the loss's dtype.

    For each element i (a sample and a position) with target class t_i:

        l_i = -log softmax(x_i)[t_i] = log(sum_c exp(x_ic - m_i)) - (x_i,t_i - m_i),
              with m_i = max_c x_ic (subtracting the max keeps exp from overflowing)
        w_i = weight[t_i] * pixel_weight_i      (each factor 1 when absent)
        w_i = 0                                 where t_i == ignore_index

    "none" gives w_i * l_i in ``target``'s shape (0 where ignored), "sum" gives sum w_i l_i and
    "mean" gives sum w_i l_i / sum w_i. As in PyTorch, "mean" is 0/0 = nan when every element is
    ignored (or all weights are 0).
    """
    n, classes, ignore_index, reduction = _check_cross_entropy(
        logits, target, weight, ignore_index, reduction, pixel_weight)

    # Work on (N, C, D) with D the number of positions (1 for (N, C) logits): the class axis in
    # the middle, one target per (n, d).
    positions = math.prod(logits.shape[2:])
    x = logits.reshape(n, classes, positions)
    t = target.reshape(n, positions).astype(np.intp, copy=False)
    counted = t != ignore_index
    all_counted = bool(counted.all())
    _check_classes(t, counted, classes, ignore_index)
    if not all_counted:
        t = np.where(counted, t, 0)      # any valid class for ignored elements: their w_i is 0

    # Flat index of x[n, t_nd, d] in x.ravel() (as np.take reads it): picks the target logit of
    # every element, and in backward subtracts the one-hot without an (N, C, D) one-hot array.
    target_index = (np.arange(n)[:, None] * classes + t) * positions + np.arange(positions)

    shifted = x - x.max(axis=1, keepdims=True)               # x - m, every entry <= 0
    shifted_target = np.take(shifted, target_index)          # x_t - m, (N, D)
    exp = np.exp(shifted, out=shifted)                       # exp(x - m), in shifted's memory
    sum_exp = exp.sum(axis=1)                                # (N, D), >= 1: the max gives exp(0)
    loss = np.log(sum_exp) - shifted_target                  # l = logsumexp(x) - x_t
    if not all_counted:
        loss[~counted] = 0               # ignored: l_i = 0 (the class-0 stand-in may be inf)

    w = counted.astype(logits.dtype)                         # w_i: 1, or 0 where ignored,
    if weight is not None:
        w *= weight[t]                                       # times weight[t_i]
    if pixel_weight is not None:
        w *= pixel_weight.reshape(n, positions)              # times pixel_weight_i
    weighted = w * loss
    if reduction == "none":
        out = weighted.reshape(target.shape)
        normaliser = None
    elif reduction == "sum":
        out = np.asarray(weighted.sum(), dtype=logits.dtype)
        normaliser = None
    else:
        normaliser = w.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.asarray(weighted.sum() / normaliser, dtype=logits.dtype)
    cache = (exp, sum_exp, target_index, w, counted, normaliser, reduction, logits.shape,
             target.shape)
    return out, cache


def cross_entropy_backward(dout, cache):
    """dlogits_ic = g_i * (softmax(x_i)_c - [c == t_i]). Returns ``(dlogits,)``.

    g_i = dout_i * w_i ("none"), dout * w_i ("sum") or dout * w_i / sum_j w_j ("mean"); ignored
    elements get g_i = 0 (even when the "mean" normaliser is 0, as in PyTorch).
    softmax(x_i)_c = exp(x_ic - m_i) / sum_exp_i comes from the forward's cache.
    """
    (exp, sum_exp, target_index, w, counted, normaliser, reduction, logits_shape,
     target_shape) = cache
    _check_loss_dout(dout, reduction, target_shape, exp.dtype)
    n, _, positions = exp.shape
    upstream = dout.reshape(n, positions) if reduction == "none" else dout
    g = w * upstream
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            g = g / normaliser
    g = np.where(counted, g, 0)                              # (N, D)
    dlogits = exp * (g / sum_exp)[:, None, :]                # g * softmax
    dlogits.reshape(-1)[target_index] -= g                   # g * (softmax - onehot)
    return (dlogits.reshape(logits_shape),)


# --- binary cross entropy with logits ---------------------------------------------------------

def _bce_with_logits_into(x, t, loss):
    """loss = max(x, 0) - x * t + log(1 + exp(-|x|)), in place in ``loss``.

    exp(-|x|) lies in (0, 1], so nothing overflows. ``log(1 + e)`` instead of ``log1p(e)``:
    NumPy's log1p is about ten times slower than its log, and the difference is below one unit
    in the last place of 1 (PyTorch computes it with log, too).
    """
    xp = array_module(x)
    xp.abs(x, out=loss)
    xp.negative(loss, out=loss)
    xp.exp(loss, out=loss)                                   # e = exp(-|x|)
    loss += 1
    xp.log(loss, out=loss)                                   # log(1 + e)
    loss += xp.maximum(x, 0)
    loss -= x * t


def _check_bce_with_logits(logits, target, weight, reduction):
    """Validate the arguments of :func:`binary_cross_entropy_with_logits_forward` (both devices
    use it); returns ``reduction``."""
    check_float_array(logits, "logits")
    check_float_array(target, "target")
    check_shape(target, "target", logits.shape)
    check_same_dtype(logits, "logits", target=target, weight=weight)
    if weight is not None:
        try:
            broadcast = np.broadcast_shapes(weight.shape, logits.shape)
        except ValueError:
            broadcast = None
        if broadcast != tuple(logits.shape):
            raise ValueError(f"weight must broadcast to the shape of logits {tuple(logits.shape)}, "
                             f"got shape {tuple(weight.shape)}")
    reduction = check_reduction(reduction)
    return reduction


def binary_cross_entropy_with_logits_forward(logits, target, weight=None, reduction="mean"):
    """Binary cross entropy of sigmoid(logits) against ``target``. Returns ``(loss, cache)``.

    Shapes: ``logits`` any shape; ``target`` exactly ``logits``' shape (no broadcasting),
    probabilities in [0, 1] of ``logits``' dtype; ``weight`` any shape that broadcasts to
    ``logits``' shape (as in PyTorch: a per-channel weight of shape (C, 1, 1), ...).

        l_i = -[t_i log s(x_i) + (1 - t_i) log(1 - s(x_i))]
            = max(x_i, 0) - x_i t_i + log(1 + exp(-|x_i|))        (stable for any x_i)

    "none" gives w_i * l_i (``logits``' shape), "sum" sum w_i l_i, "mean" sum w_i l_i / (number
    of elements): as in PyTorch, the weights do not change the divisor.
    """
    reduction = _check_bce_with_logits(logits, target, weight, reduction)
    loss = array_module(logits).empty_like(logits)
    elementwise(_bce_with_logits_into, logits, target, loss)
    if weight is not None:
        loss *= weight
    return _reduce(loss, reduction), (logits, target, weight, reduction)


def binary_cross_entropy_with_logits_backward(dout, cache):
    """dlogits_i = upstream * w_i * (sigmoid(x_i) - t_i). Returns ``(dlogits,)``.

    upstream = dout_i ("none"), dout ("sum") or dout / (number of elements) ("mean").
    """
    logits, target, weight, reduction = cache
    _check_loss_dout(dout, reduction, logits.shape, logits.dtype)
    grad = _sigmoid(logits)
    grad -= target
    if weight is not None:
        grad *= weight
    grad *= _upstream(dout, reduction, logits.size)
    return (grad,)


# --- smooth L1 --------------------------------------------------------------------------------

def _check_smooth_l1(pred, target, beta, reduction):
    """Validate the arguments of :func:`smooth_l1_loss_forward` (both devices use it); returns
    ``(beta, reduction)``."""
    check_float_array(pred, "pred")
    check_float_array(target, "target")
    check_shape(target, "target", pred.shape)
    check_same_dtype(pred, "pred", target=target)
    beta = check_number(beta, "beta", low=0.0)
    reduction = check_reduction(reduction)
    return beta, reduction


def smooth_l1_loss_forward(pred, target, beta=1.0, reduction="mean"):
    """Smooth L1 (Huber-like) loss of d = pred - target. Returns ``(loss, cache)``.

    Shapes: ``pred`` any shape; ``target`` exactly ``pred``'s shape and dtype.

        l_i = 0.5 * d_i^2 / beta     if |d_i| < beta
              |d_i| - 0.5 * beta     otherwise

    ``beta`` >= 0; beta = 0 is exactly the L1 loss |d_i| (as in PyTorch). "mean" divides by the
    number of elements. ``target`` is a constant: only ``pred`` gets a gradient.
    """
    beta, reduction = _check_smooth_l1(pred, target, beta, reduction)
    xp = array_module(pred)
    slope, loss = xp.empty_like(pred), xp.empty_like(pred)

    def piece(pred, target, slope, loss):
        # Without a branch, through the derivative u = dl/dd = clip(d / beta, -1, 1) (which is
        # d / beta for |d| < beta and sign(d) otherwise):  l = u * (d - beta * u / 2),  i.e.
        # 0.5 d^2 / beta for |d| < beta and |d| - 0.5 beta otherwise. u is also the cache.
        d = xp.subtract(pred, target)
        if beta == 0:                                        # the L1 loss; u = sign(d)
            xp.sign(d, out=slope)
            xp.abs(d, out=loss)
            return
        xp.divide(d, beta, out=slope)
        xp.clip(slope, -1, 1, out=slope)                     # u
        xp.multiply(slope, -0.5 * beta, out=loss)
        loss += d                                            # d - beta * u / 2
        loss *= slope

    elementwise(piece, pred, target, slope, loss)
    return _reduce(loss, reduction), (slope, reduction)


def smooth_l1_loss_backward(dout, cache):
    """dpred_i = upstream * (d_i / beta if |d_i| < beta else sign(d_i)). Returns ``(dpred,)``.

    upstream = dout_i ("none"), dout ("sum") or dout / (number of elements) ("mean"); with
    beta = 0 the derivative is sign(d_i) (0 at d_i = 0, as in PyTorch). The forward pass left
    u_i = clip(d_i / beta, -1, 1) (sign(d_i) for beta = 0) in the cache: dpred_i = upstream * u_i.
    """
    slope, reduction = cache
    _check_loss_dout(dout, reduction, slope.shape, slope.dtype)
    return (slope * _upstream(dout, reduction, slope.size),)
