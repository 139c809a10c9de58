"""npseg.ops: arrays in, arrays out. Every differentiable op is a pair

    NAME_forward(...)        -> (out, cache)
    NAME_backward(dout, cache) -> (d_input, ...)

with its formula and shapes in its docstring (see ../shared/DESIGN.md for the contract).
Each public module of this package lists its ops in ``__all__``; they are re-exported here,
and ``OPS`` (name -> function) is the registry the parity tests enumerate.

Importing this package tunes glibc's ``malloc`` to keep freed memory for reuse (one page fault
less per 4 KiB of every temporary array; see ``npseg.ops._memory``).
"""

from npseg.ops._memory import keep_freed_memory as _keep_freed_memory
from npseg.ops._registry import collect_ops as _collect_ops

_keep_freed_memory()

OPS, __all__ = _collect_ops(__name__, __path__, globals())
