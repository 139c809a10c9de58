"""Fused loss kernels (mirror :mod:`npseg.ops.loss`).

Softmax cross entropy works on logits viewed as (N, C, D), D positions per sample, one thread
per element ``(n, d) = np.unravel_index(t, (N, D))`` looping over the C classes: the max, the
sum of exp(x - max), the loss and the weight in one pass over the logits (the NumPy op builds
(N, C, D) temporaries for each step), and in backward the softmax is recomputed from the saved
max and sum instead of being stored. The elementwise losses (binary cross entropy with logits,
smooth L1) run one thread per flat element and fuse the weighting and the upstream gradient.
"""

from __future__ import annotations

import math

from numba import cuda

from npseg_gpu.kernels._launch import float_signatures, kernel

_I64 = cuda.int64


@kernel(float_signatures(lambda f: (f[:, :, ::1], cuda.int64[:, ::1], f[::1], f[:, ::1], _I64,
                                    _I64, _I64, f[:, ::1], f[:, ::1], f[:, ::1], f[:, ::1])))
def cross_entropy_kernel(x, target, weight, pixel_weight, ignore_index, has_weight,
                         has_pixel_weight, weighted, w_out, row_max, sum_exp):
    """Per element i = (n, d) with target class t (0 stands in for an ignored element):

        m = max_c x[n, c, d];  s = sum_c exp(x[n, c, d] - m);  l = log(s) - (x[n, t, d] - m)
        w = weight[t] * pixel_weight[n, d] (factors absent: 1), 0 when ignored
        weighted = w * l (0 when ignored);  w_out = w;  row_max = m;  sum_exp = s
    """
    n_batch, classes, positions = x.shape
    total = n_batch * positions
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        n = i // positions
        d = i % positions
        m = x[n, 0, d]
        for c in range(1, classes):
            m = max(m, x[n, c, d])
        s = x.dtype.type(0)
        for c in range(classes):
            s += math.exp(x[n, c, d] - m)
        t = target[n, d]
        counted = t != ignore_index
        if not counted:
            t = 0
        loss = math.log(s) - (x[n, t, d] - m)
        w = weight[t] if has_weight != 0 else x.dtype.type(1)
        if has_pixel_weight != 0:
            w = w * pixel_weight[n, d]
        if counted:
            w_out[n, d] = w
            weighted[n, d] = w * loss
        else:
            w_out[n, d] = 0
            weighted[n, d] = 0
        row_max[n, d] = m
        sum_exp[n, d] = s


@kernel(float_signatures(lambda f: (f[:, :, ::1], cuda.int64[:, ::1], f[:, ::1], f[:, ::1],
                                    f[:, ::1], f[:, :, ::1])))
def cross_entropy_backward_kernel(x, target, row_max, sum_exp, g, dx):
    """dx[n, c, d] = g[n, d] * (softmax_c - [c == t]), softmax_c = exp(x - m) / s.

    ``target`` holds valid classes only (ignored elements have g = 0 and any class).
    """
    n_batch, classes, positions = x.shape
    total = n_batch * positions
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        n = i // positions
        d = i % positions
        m = row_max[n, d]
        s = sum_exp[n, d]
        gi = g[n, d]
        t = target[n, d]
        for c in range(classes):
            v = math.exp(x[n, c, d] - m) / s * gi
            if c == t:
                v -= gi
            dx[n, c, d] = v


@kernel(float_signatures(lambda f: (f[::1], f[::1], f[::1], _I64, f[::1])))
def bce_with_logits_kernel(x, target, weight, has_weight, loss):
    """loss = (max(x, 0) - x t + log(1 + exp(-|x|))) * w  (w = 1 without a weight)."""
    zero = loss.dtype.type(0)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        l = max(v, zero) - v * target[i] + math.log1p(math.exp(-abs(v)))
        if has_weight != 0:
            l = l * weight[i]
        loss[i] = l


@kernel(float_signatures(lambda f: (f[::1], f[::1], f[::1], _I64, f[::1], _I64, f[::1])))
def bce_with_logits_backward_kernel(x, target, weight, has_weight, upstream, per_element, dx):
    """dx = (sigmoid(x) - t) * w * u, u = upstream[i] (per_element) or upstream[0].

    sigmoid without overflow, as ``npseg.ops.activation._sigmoid``: with e = exp(-|x|),
    1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0.
    """
    one = dx.dtype.type(1)
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        e = math.exp(-abs(v))
        s = one / (one + e) if v >= 0 else e / (one + e)
        g = s - target[i]
        if has_weight != 0:
            g = g * weight[i]
        dx[i] = g * (upstream[i] if per_element != 0 else upstream[0])


@kernel(float_signatures(lambda f: (f[::1], f[::1], cuda.float64, f[::1], f[::1])))
def smooth_l1_kernel(pred, target, beta, loss, diff):
    """d = pred - target;  loss = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta (beta = 0:
    |d|);  diff = d (saved for backward)."""
    b = loss.dtype.type(beta)         # the NumPy op computes in the arrays' dtype
    half = loss.dtype.type(0.5)
    for i in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
        d = pred[i] - target[i]
        a = abs(d)
        if beta == 0:
            loss[i] = a
        elif a < b:
            loss[i] = half * d * d / b
        else:
            loss[i] = a - half * b
        diff[i] = d


@kernel(float_signatures(lambda f: (f[::1], cuda.float64, f[::1], _I64, f[::1])))
def smooth_l1_backward_kernel(diff, beta, upstream, per_element, dx):
    """dx = (d / beta if |d| < beta else sign(d)) * u, u = upstream[i] or upstream[0]."""
    b = dx.dtype.type(beta)
    one = dx.dtype.type(1)
    for i in range(cuda.grid(1), diff.size, cuda.gridsize(1)):
        d = diff[i]
        if beta != 0 and abs(d) < b:
            g = d / b
        elif d > 0:
            g = one
        elif d < 0:
            g = -one
        else:
            g = d - d  # sign(0) = 0 (and NaN stays NaN), as np.sign
        dx[i] = g * (upstream[i] if per_element != 0 else upstream[0])
