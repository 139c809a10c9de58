"""Stochastic gradient descent with momentum, PyTorch's update rule.

For each parameter p with gradient g, learning rate lr:

    g   = g + weight_decay * p                          (L2 penalty, if weight_decay)
    buf = g                                             (first step)
    buf = momentum * buf + (1 - dampening) * g          (later steps)
    g   = g + momentum * buf   (nesterov)   or   g = buf
    p   = p - lr * g
"""

from __future__ import annotations

from npseg.ops._checks import check_number
from npseg.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False):
        check_number(lr, "lr", low=0)
        check_number(momentum, "momentum", low=0)
        check_number(dampening, "dampening")
        check_number(weight_decay, "weight_decay", low=0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=bool(nesterov)))

    def _update(self, p, grad, group, state):
        lr, momentum = group["lr"], group["momentum"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= lr * grad
