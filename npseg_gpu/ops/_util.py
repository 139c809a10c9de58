"""Small helpers shared by the GPU ops: the array module, device-array checks, buffers."""

from __future__ import annotations

import numpy as np

from npseg_gpu._device import device, xp


def require_device(x, name: str):
    """``x`` must live on the device: a CuPy array on a GPU (NumPy in the simulator)."""
    if x is None:
        return x
    if device() == "cuda":
        import cupy

        if not isinstance(x, cupy.ndarray):
            raise TypeError(f"{name} must be a device array (cupy.ndarray; move it with "
                            f"npseg_gpu.asarray), got {type(x).__module__}.{type(x).__name__}")
    return x


def contiguous(x, dtype=None):
    """``x`` as a C-contiguous device array (no copy when it already is one)."""
    return xp().ascontiguousarray(x, dtype=dtype)


def empty(shape, dtype):
    return xp().empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return xp().zeros(shape, dtype=dtype)


def upload(a: np.ndarray):
    """A small host array (taps, tables) on the device."""
    return xp().asarray(a) if device() == "cuda" else np.ascontiguousarray(a)
