"""Learning-rate schedules, PyTorch's conventions.

A scheduler sets ``group["lr"]`` of every parameter group from the group's initial learning
rate ``base_lr`` and a counter ``last_epoch`` (epochs or iterations, as you call it): call
``scheduler.step()`` once after each ``optimizer.step()`` (or each epoch). Constructing a
scheduler applies the rate of step 0. Every rate here is a closed form of the counter, so
``state_dict()`` / ``load_state_dict()`` resume exactly.

    StepLR             base_lr * gamma ** (t // step_size)
    MultiStepLR        base_lr * gamma ** (number of milestones <= t)
    CosineAnnealingLR  eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2
    PolynomialLR       base_lr * (1 - min(t, total_iters) / total_iters) ** power
    WarmupMultiStepLR  MultiStepLR times a warm-up factor (Detectron2):
                       linear: warmup_factor * (1 - t / warmup_iters) + t / warmup_iters
                       constant: warmup_factor, for t < warmup_iters; 1 afterwards
    WarmupCosineLR     the warm-up factor times (1 + cos(pi * t / max_iters)) / 2
"""

from __future__ import annotations

import bisect
import math

from npseg.ops._checks import check_choice, check_int, check_number

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "CosineAnnealingLR", "PolynomialLR",
           "WarmupMultiStepLR", "WarmupCosineLR"]


class LRScheduler:
    """Base class: subclasses define ``_lr(base_lr, t)`` (the rate at step ``t``)."""

    def __init__(self, optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise KeyError("resuming a schedule (last_epoch != -1) needs 'initial_lr' in every "
                           "parameter group: load the optimizer's state first")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr = [g["lr"] for g in optimizer.param_groups]
        self.step()

    def _lr(self, base_lr: float, t: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> list:
        """The rates of the current step ``last_epoch``."""
        return [self._lr(base, self.last_epoch) for base in self.base_lrs]

    def get_last_lr(self) -> list:
        """The rates last set on the optimizer."""
        return list(self._last_lr)

    def step(self) -> None:
        self.last_epoch += 1
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def state_dict(self) -> dict:
        """Every attribute but the optimizer (plain numbers and lists)."""
        return {k: (list(v) if isinstance(v, (list, tuple)) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: (list(v) if isinstance(v, (list, tuple)) else v)
                              for k, v in state_dict.items()})


class StepLR(LRScheduler):
    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = check_number(gamma, "gamma")
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, t):
        return base_lr * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
        self.milestones = sorted(check_int(m, "milestones", 0) for m in milestones)
        self.gamma = check_number(gamma, "gamma")
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, t):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)


class CosineAnnealingLR(LRScheduler):
    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max = check_int(T_max, "T_max", 1)
        self.eta_min = check_number(eta_min, "eta_min")
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, t):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class PolynomialLR(LRScheduler):
    """The "poly" policy of FCN/DeepLab."""

    def __init__(self, optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1):
        self.total_iters = check_int(total_iters, "total_iters", 1)
        self.power = check_number(power, "power")
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, t):
        return base_lr * (1 - min(t, self.total_iters) / self.total_iters) ** self.power


def _warmup_factor(method: str, t: int, warmup_iters: int, warmup_factor: float) -> float:
    if t >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    alpha = t / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


class _Warmup(LRScheduler):
    def _set_warmup(self, warmup_factor, warmup_iters, warmup_method):
        self.warmup_factor = check_number(warmup_factor, "warmup_factor", 0)
        self.warmup_iters = check_int(warmup_iters, "warmup_iters", 0)
        self.warmup_method = check_choice(warmup_method, "warmup_method", ("linear", "constant"))

    def _factor(self, t):
        return _warmup_factor(self.warmup_method, t, self.warmup_iters, self.warmup_factor)


class WarmupMultiStepLR(_Warmup):
    """Linear (or constant) warm-up, then steps at ``milestones`` (Detectron2's default)."""

    def __init__(self, optimizer, milestones, gamma: float = 0.1, warmup_factor: float = 0.001,
                 warmup_iters: int = 1000, warmup_method: str = "linear", last_epoch: int = -1):
        self.milestones = sorted(check_int(m, "milestones", 0) for m in milestones)
        self.gamma = check_number(gamma, "gamma")
        self._set_warmup(warmup_factor, warmup_iters, warmup_method)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, t):
        return base_lr * self._factor(t) * self.gamma ** bisect.bisect_right(self.milestones, t)


class WarmupCosineLR(_Warmup):
    """Linear (or constant) warm-up, then a cosine decay to 0 at ``max_iters``."""

    def __init__(self, optimizer, max_iters: int, warmup_factor: float = 0.001,
                 warmup_iters: int = 1000, warmup_method: str = "linear", last_epoch: int = -1):
        self.max_iters = check_int(max_iters, "max_iters", 1)
        self._set_warmup(warmup_factor, warmup_iters, warmup_method)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base_lr, t):
        return base_lr * self._factor(t) * (1 + math.cos(math.pi * min(t, self.max_iters)
                                                         / self.max_iters)) / 2
