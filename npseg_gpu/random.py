"""The device's random generator, for dropout on device arrays.

``default_rng(seed)`` has the interface the ops use (``rng.random(shape)`` returning uniform
floats in [0, 1) as a device array, float64 by default): ``cupy.random.default_rng`` on a GPU,
``numpy.random.default_rng`` in the simulator (whose device arrays are NumPy arrays).
``npseg.random.generator("cuda")`` builds its generator through this function.

The two streams differ: a CuPy generator and a NumPy generator with the same seed draw different
numbers. Tests that compare dropout on both devices hand both the same uniforms instead.
"""

from __future__ import annotations

import numpy as np

from npseg_gpu._device import device

__all__ = ["default_rng"]


def default_rng(seed=None):
    """A new generator on the device: ``rng.random(shape, dtype=float64)`` gives device arrays."""
    if device() == "cuda":
        import cupy

        return cupy.random.default_rng(seed)
    return np.random.default_rng(seed)
