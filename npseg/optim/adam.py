"""Adam and AdamW, PyTorch's update rules.

For each parameter p with gradient g at step t (from 1), learning rate lr:

    g = g + weight_decay * p                  (Adam's L2 penalty, if weight_decay)
    p = p * (1 - lr * weight_decay)           (AdamW's decoupled decay, instead)
    m = m + (1 - beta1) * (g - m)             (= beta1 m + (1 - beta1) g)
    v = beta2 * v + (1 - beta2) * g^2
    v_max = max(v_max, v)                     (amsgrad: v_max replaces v below)
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""

from __future__ import annotations

import math

from npseg.ops._checks import check_number
from npseg.ops._threads import elementwise
from npseg.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False):
        check_number(lr, "lr", low=0)
        check_number(eps, "eps", low=0)
        check_number(weight_decay, "weight_decay", low=0)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        for i, beta in enumerate(betas):
            check_number(beta, f"betas[{i}]", low=0, high=1, high_open=True)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=bool(amsgrad)))

    def _update(self, p, grad, group, state):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay = group["weight_decay"]
        xp = p.xp
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        step = state["step"]
        if weight_decay:
            if self._decoupled:
                p.data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * p.data
        step_size = lr / (1 - beta1 ** step)
        bias_correction2 = math.sqrt(1 - beta2 ** step)
        moments = [state["exp_avg"], state["exp_avg_sq"]]
        if group["amsgrad"]:
            moments.append(state["max_exp_avg_sq"])

        def update(p, grad, work, m, v, v_max=None):
            # the formulas of the module docstring, in place, `work` holding each temporary
            xp.subtract(grad, m, out=work)
            work *= 1 - beta1
            m += work                                   # m += (1 - beta1) * (g - m)
            v *= beta2
            xp.multiply(grad, 1 - beta2, out=work)
            work *= grad
            v += work                                   # v = beta2 v + (1 - beta2) g^2
            if v_max is not None:
                v = xp.maximum(v_max, v, out=v_max)
            xp.sqrt(v, out=work)
            work /= bias_correction2
            work += eps                                 # sqrt(v) / sqrt(1 - beta2^t) + eps
            xp.divide(m, work, out=work)
            work *= step_size
            p -= work                                   # p -= step_size * m / denom

        # on npseg's threads for large parameters (elementwise, so the same numbers)
        elementwise(update, p.data, grad, xp.empty_like(p.data), *moments)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); default weight_decay 0.01."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
