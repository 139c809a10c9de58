"""Numba CUDA kernels of npseg_gpu, one module per kernel family.

Each kernel is declared with :func:`npseg_gpu.kernels._launch.kernel`, with the argument types
it is launched with beside its code, and mirrors the ``npseg.ops`` function (or the small
NumPy helper next to it) named in its docstring. Nothing compiles at import.

:func:`all_kernels` lists every kernel of every module: ``reference_tests/test_gpu_ptx.py``
compiles each for each of its signatures to PTX.
"""

from __future__ import annotations

import importlib
import pkgutil

try:
    from numba import cuda as _cuda  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the install
    from npseg_gpu._device import INSTALL_HINT as _HINT

    raise ImportError(f"npseg_gpu.kernels needs numba-cuda: {_HINT}") from _error


def kernel_modules():
    """Every kernel module of this package (imported), by name."""
    return [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
            if not info.name.startswith("_")]


def all_kernels():
    """``{"module.kernel_name": Kernel}`` over every kernel module."""
    from npseg_gpu.kernels._launch import Kernel

    found = {}
    for module in kernel_modules():
        for name, obj in vars(module).items():
            if isinstance(obj, Kernel) and obj.__module__ == module.__name__:
                found[f"{module.__name__.rsplit('.', 1)[1]}.{name}"] = obj
    return found
