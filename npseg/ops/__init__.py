"""npseg.ops: arrays in, arrays out. Every differentiable op is a pair

    NAME_forward(...)        -> (out, cache)
    NAME_backward(dout, cache) -> (d_input, ...)

with its formula and shapes in its docstring (see ../shared/DESIGN.md for the contract).
Each public module of this package lists its ops in ``__all__``; they are re-exported here,
and ``OPS`` (name -> function) is the registry the parity tests enumerate.
"""

import importlib as _importlib
import pkgutil as _pkgutil

__all__ = []
OPS = {}
for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    _module = _importlib.import_module(f"{__name__}.{_info.name}")
    for _name in _module.__all__:
        if _name in OPS:
            raise ImportError(f"npseg.ops: {_name} is defined twice")
        OPS[_name] = globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
__all__.append("OPS")
