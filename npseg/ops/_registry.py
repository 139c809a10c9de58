"""The op registry: both ``npseg.ops`` and ``npseg_gpu.ops`` are built by :func:`collect_ops`."""

from __future__ import annotations

import importlib
import pkgutil


def collect_ops(package_name: str, package_path, namespace: dict):
    """Import every public module of a package and re-export the names in its ``__all__``.

    Puts each op into ``namespace`` (the package's globals) and returns ``(OPS, __all__)``:
    ``OPS`` maps name -> function, the registry the parity tests enumerate. A name defined by
    two modules is an ImportError.
    """
    ops, names = {}, []
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package_name}.{info.name}")
        for name in module.__all__:
            if name in ops:
                raise ImportError(f"{package_name}: {name} is defined twice")
            ops[name] = namespace[name] = getattr(module, name)
            names.append(name)
    return ops, names + ["OPS"]
