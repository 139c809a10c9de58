"""The ``Optimizer`` base: parameter groups, ``zero_grad``, ``step``, state saving, devices.

An optimizer holds references to Parameters (in ``param_groups``, each group a dict of its
parameters and hyper-parameters such as ``lr``) and a per-parameter ``state`` dict (momentum
buffers, Adam moments). ``step()`` updates ``p.data`` **in place** from ``p.grad``: updating
parameters is the optimizer's job, never an op's.
"""

from __future__ import annotations

import copy

import numpy as np

from npseg._device import check_device
from npseg.autograd import Tensor, to_device

__all__ = ["Optimizer"]


def _is_array(value) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "shape") and not isinstance(value, Tensor)


class Optimizer:
    """Base class: subclasses define ``_update(p, grad, group, state)`` for one parameter."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict = {}  # Parameter -> dict (Tensors hash by identity)
        self.param_groups: list = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Parameters (or of dicts), "
                            "not a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add ``{"params": [...], "lr": ..., ...}``; missing hyper-parameters take the defaults."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{i}] must be a Parameter, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"params[{i}] does not require grad: an optimizer can only "
                                 f"update tensors with requires_grad=True")
            if id(p) in seen:
                raise ValueError(f"params[{i}] appears in more than one parameter group")
            seen.add(id(p))
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = p.grad * 0

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, p.grad, group, self.state.setdefault(p, {}))

    def _update(self, p, grad, group: dict, state: dict) -> None:
        raise NotImplementedError

    # --- saving -------------------------------------------------------------------------
    def _indexed_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """``{"state": {index: {name: value}}, "param_groups": [{..., "params": [index]}]}``,
        parameters numbered across groups in order; arrays are host NumPy copies."""
        index = {id(p): i for i, p in enumerate(self._indexed_params())}
        state = {}
        for p, values in self.state.items():
            if id(p) in index and values:
                state[index[id(p)]] = {
                    k: (np.array(to_device(v, "cpu"), copy=True) if _is_array(v)
                        else copy.deepcopy(v))
                    for k, v in values.items()}
        groups = []
        for group in self.param_groups:
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by :meth:`state_dict` (from an optimizer
        over parameters of the same shapes, in the same order)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the saved state has {len(groups)} parameter groups, this "
                             f"optimizer {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {i} has {len(group['params'])} parameters, "
                                 f"the saved one {len(saved['params'])}")
        by_index = {}
        for saved, group in zip(groups, self.param_groups):
            for saved_index, p in zip(saved["params"], group["params"]):
                by_index[int(saved_index)] = p
        new_state = {}
        for key, values in state_dict["state"].items():
            p = by_index.get(int(key))
            if p is None:
                raise ValueError(f"the saved state names parameter {key}, which no group holds")
            restored = {}
            for name, value in values.items():
                if _is_array(value):
                    value = np.asarray(to_device(value, "cpu"))
                    if value.ndim and tuple(value.shape) != p.shape:
                        raise ValueError(f"state {name!r} of parameter {key} has shape "
                                         f"{tuple(value.shape)}, the parameter {p.shape}")
                    if value.dtype.kind == "f":
                        value = value.astype(p.dtype)
                    value = to_device(np.array(value, copy=True), p.device)
                else:
                    value = copy.deepcopy(value)
                restored[name] = value
            new_state[p] = restored
        self.state = new_state
        for saved, group in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    group[k] = tuple(v) if k == "betas" else copy.deepcopy(v)

    def to(self, device: str) -> "Optimizer":
        """Move the state arrays to ``device`` (after ``model.to(device)``)."""
        check_device(device)
        for values in self.state.values():
            for k, v in values.items():
                if _is_array(v):
                    values[k] = to_device(v, device)
        return self

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines + [")"])
