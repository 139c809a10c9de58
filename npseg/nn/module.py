"""``Module`` and ``Parameter``: the PyTorch habits, on npseg Tensors.

A Module finds its parts by attribute assignment: ``self.conv = Conv2d(...)`` registers a
sub-module, ``self.weight = Parameter(...)`` a parameter, and ``register_buffer(name, array)``
a buffer (state that is saved but not trained, e.g. BatchNorm's running statistics). From that
registry come ``parameters()``, ``state_dict()`` (dotted names, as in PyTorch),
``load_state_dict()``, ``train()`` / ``eval()`` and ``to(device)``.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from npseg._device import check_device
from npseg.autograd import Tensor, to_device

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict"]


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (``requires_grad=True`` by default)."""

    def __init__(self, data, requires_grad: bool = True, device: str | None = None, dtype=None):
        super().__init__(data, requires_grad=False, device=device, dtype=dtype)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model: subclasses set parts in ``__init__`` and define
    ``forward``; calling the module calls ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration ---------------------------------------------------------------------
    def _registries(self):
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning parameters, buffers or modules") from None

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            params, buffers, modules = self._registries()
            for registry in (params, buffers, modules):
                registry.pop(name, None)
            self.__dict__.pop(name, None)
            (params if isinstance(value, Parameter) else modules)[name] = value
            return
        params = self.__dict__.get("_parameters", {})
        buffers = self.__dict__.get("_buffers", {})
        modules = self.__dict__.get("_modules", {})
        if name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(a Parameter or None is expected)")
            params[name] = None
        elif name in buffers:
            buffers[name] = None if value is None else self._as_buffer(value, buffers[name])
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as sub-module {name!r} "
                                f"(a Module or None is expected)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only called when normal lookup fails: look in the registries
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(registry, {}):
                del self.__dict__[registry][name]
                self.__dict__["_non_persistent"].discard(name)
                return
        object.__delattr__(self, name)

    @staticmethod
    def _as_buffer(value, old=None) -> Tensor:
        if isinstance(value, Tensor):
            return Tensor(value.data, device=value.device)
        device = old.device if isinstance(old, Tensor) else None
        return Tensor(value if device is None else to_device(value, device), device=device)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """A saved, untrained array (a Tensor, array or None); ``persistent=False`` keeps it out
        of ``state_dict``."""
        params, buffers, modules = self._registries()
        if name in params or name in modules or (name in self.__dict__ and name not in buffers):
            raise KeyError(f"attribute {name!r} already exists")
        buffers[name] = None if tensor is None else self._as_buffer(tensor)
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter {name!r}")
        params, buffers, modules = self._registries()
        buffers.pop(name, None)
        modules.pop(name, None)
        params[name] = param

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"module name must be a non-empty string without '.', got {name!r}")
        params, buffers, modules = self._registries()
        params.pop(name, None)
        buffers.pop(name, None)
        modules[name] = module

    # --- traversal --------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = ""):
        """``(dotted name, module)`` for this module and every descendant, each once."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, prefix: str, recurse: bool):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """``(dotted name, Parameter)``, each shared parameter once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # --- state ------------------------------------------------------------------------------
    def _state_items(self):
        """``(dotted name, Tensor)`` for every parameter and persistent buffer, in PyTorch's
        order (a module's own parameters, then its buffers, then its children's)."""
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    yield dot + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield dot + name, b

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Dotted name -> host NumPy copy of every parameter and persistent buffer."""
        return OrderedDict((name, np.array(t.numpy(), copy=True))
                           for name, t in self._state_items())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (or Tensors) from ``state_dict`` into the parameters and buffers.

        Keys missing from ``state_dict`` and keys it has that the module lacks are errors when
        ``strict``; a shape mismatch is always an error. Nothing is copied unless every check
        passes. Returns ``(missing_keys, unexpected_keys)``.
        """
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        for key, target in own.items():
            if key in state_dict:
                value = state_dict[key]
                shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
                if shape != target.shape:
                    problems.append(f"size mismatch for {key}: the checkpoint has shape {shape}, "
                                    f"the model {target.shape}")
        if strict:
            if missing:
                problems.append("missing keys: " + ", ".join(missing))
            if unexpected:
                problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise RuntimeError(f"error loading state_dict into {type(self).__name__}:\n  "
                           + "\n  ".join(problems))
        for key, target in own.items():
            if key in state_dict:
                value = state_dict[key]
                value = value.data if isinstance(value, Tensor) else value
                value = np.asarray(to_device(value, "cpu"))
                target.data = to_device(value.astype(target.dtype, copy=True), target.device)
        return IncompatibleKeys(missing, unexpected)

    # --- modes, gradients, devices -------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (batch statistics in BatchNorm, dropout on) for this and every child."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = p.grad * 0

    def to(self, device=None, dtype=None) -> "Module":
        """Move parameters and buffers to ``device`` ("cpu"/"cuda") and/or cast floating ones to
        ``dtype``, in place (the Parameter objects stay the same, so optimizers keep working).
        ``to("cuda")``, ``to(np.float64)`` and ``to(device=..., dtype=...)`` all work."""
        if device is not None and not isinstance(device, str):
            device, dtype = None, device
        if device is not None:
            check_device(device)
        dtype = None if dtype is None else np.dtype(dtype)
        for t in list(self.parameters()) + list(self.buffers()):
            if dtype is not None and t.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                if t.grad is not None:
                    t.grad = t.grad.astype(dtype)
            if device is not None and device != t.device:
                t.data = to_device(t.data, device)
                if t.grad is not None:
                    t.grad = to_device(t.grad, device)
                t.device = device
        return self

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    def double(self) -> "Module":
        return self.to(dtype=np.float64)

    def apply(self, fn) -> "Module":
        """``fn(module)`` for every descendant, then for this module (PyTorch's order)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # --- calling ----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- printing ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of ``repr`` (override in layers)."""
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}({extra}" if extra else f"{type(self).__name__}("
        if extra:
            head += ","
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules called one after the other: ``Sequential(a, b, c)(x) == c(b(a(x)))``; names
    "0", "1", ... or those of an ``OrderedDict`` argument."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def append(self, module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        """Each module on the output of the one before. A ``BatchNorm2d`` directly followed by
        a ``ReLU`` runs as one fused op (``BatchNorm2d.forward_relu``): the same numbers as the
        two modules one after the other, with fewer passes over memory."""
        from npseg.nn.layers import BatchNorm2d, ReLU  # layers imports this module

        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            if (type(modules[i]) is BatchNorm2d and i + 1 < len(modules)
                    and type(modules[i + 1]) is ReLU):
                x = modules[i].forward_relu(x)
                i += 2
            else:
                x = modules[i](x)
                i += 1
        return x


class ModuleList(Module):
    """A list of modules, registered under "0", "1", ... (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        values = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(values[index])
        return values[index]

    def __setitem__(self, index, module):
        index = range(len(self))[index]
        self.add_module(str(index), module)

    def _renumber(self, values):
        self._modules.clear()
        for i, module in enumerate(values):
            self.add_module(str(i), module)

    def __delitem__(self, index):
        values = list(self._modules.values())
        del values[index]
        self._renumber(values)

    def append(self, module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module) -> None:
        values = list(self._modules.values())
        values.insert(index, module)
        self._renumber(values)


class ModuleDict(Module):
    """A dict of modules, registered under their keys (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules) -> None:
        items = modules.items() if hasattr(modules, "items") else modules
        for key, module in items:
            self.add_module(key, module)
