"""Gradient-check your own layer with npseg.gradcheck.

    python examples/gradcheck_your_layer.py

Two ways, both in float64 with central differences:

1. An op pair in the npseg style (``forward -> (out, cache)``, ``backward(dout, cache)``):
   ``check_op`` compares the backward with numeric derivatives of the forward.
2. Any function of Tensors (a layer built from npseg.functional, a whole Module):
   ``gradcheck``.

The example layer is a "scaled softplus", y = log(1 + exp(a x)) / a, with a learnable a.
A deliberately wrong backward shows what a failure looks like.
"""

import numpy as np

from npseg import Tensor
from npseg import functional as F
from npseg.gradcheck import GradcheckError, check_op, gradcheck


def softplus_forward(x, a):
    """y = log(1 + exp(a x)) / a; x (N, D), a (D,)."""
    ax = x * a
    y = (np.maximum(ax, 0) + np.log1p(np.exp(-np.abs(ax)))) / a
    return y, (x, a, y)


def softplus_backward(dout, cache):
    """dy/dx = sigmoid(a x); dy/da = (x sigmoid(a x) - y) / a."""
    x, a, y = cache
    s = 1 / (1 + np.exp(-x * a))
    dx = dout * s
    da = np.sum(dout * (x * s - y) / a, axis=0)
    return dx, da


def wrong_backward(dout, cache):
    dx, da = softplus_backward(dout, cache)
    return dx, 2 * da  # a classic slip: a factor too many


rng = np.random.default_rng(0)
x, a = rng.standard_normal((4, 3)), rng.uniform(0.5, 2.0, 3)
print("op pair, full mode:  max error", check_op(softplus_forward, softplus_backward, [x, a], wrt=[0, 1]))
try:
    check_op(softplus_forward, wrong_backward, [x, a], wrt=[0, 1])
except GradcheckError as error:
    print("the wrong backward is caught:", error)

# A layer built from functional ops, checked through autograd (random directions: cheap)
w = Tensor(rng.standard_normal((5, 3)), requires_grad=True)
inputs = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
layer = lambda x, w: F.tanh(F.linear(x, w)) * F.sigmoid(F.linear(x, w))  # noqa: E731
print("Tensor function, random mode: max error", gradcheck(layer, [inputs, w]))
