"""Which array module and which ops package serve an array or a device.

npseg never imports npseg_gpu (or CuPy) at module load: the GPU side is looked up here, on first
use. Two devices exist: ``"cpu"`` (NumPy arrays, ``npseg.ops``) and ``"cuda"`` (CuPy arrays on a
GPU, or NumPy arrays in Numba's CUDA simulator; ``npseg_gpu.ops`` in both cases).
"""

from __future__ import annotations

import numpy as np

DEVICES = ("cpu", "cuda")


def array_module(x):
    """``cupy`` for a CuPy array, ``numpy`` for anything else; never imports CuPy needlessly."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def check_device(device) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    return device


def ops_for(device: str):
    """The ops package of ``device``: ``npseg.ops`` or ``npseg_gpu.ops``."""
    check_device(device)
    if device == "cpu":
        from npseg import ops

        return ops
    import npseg_gpu.ops

    return npseg_gpu.ops


def ops_for_array(x):
    """The ops package for a bare array: ``npseg_gpu.ops`` for CuPy arrays, else ``npseg.ops``."""
    return ops_for("cuda" if array_module(x) is not np else "cpu")
