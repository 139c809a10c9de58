"""Which device npseg_gpu runs on, and moving arrays to and from it.

Three cases, decided without touching a GPU unless CuPy says one is there:

* ``"sim"``: ``NUMBA_ENABLE_CUDASIM=1`` is set, so Numba's CUDA simulator runs every kernel in
  Python over NumPy arrays (slow, ~0.1 ms per simulated thread, but it runs on any machine: the
  parity tests use it where there is no GPU). "Device arrays" are then plain NumPy arrays.
  The flag must be set before numba is first imported; it wins over a real GPU, since numba
  then only knows the simulator.
* ``"cuda"``: CuPy is installed and sees a usable GPU (``cupy.cuda.is_available()``). Device
  arrays are CuPy arrays; Numba kernels read them through ``__cuda_array_interface__``.
  (``numba.cuda.is_available()`` is not asked: it is true in the simulator too.)
* otherwise :func:`device` raises a ``RuntimeError`` that says how to install the GPU extra.

Nothing here imports numba or CuPy at module load.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

SIM_FLAG = "NUMBA_ENABLE_CUDASIM"
INSTALL_HINT = (
    'install the GPU extra (CuPy and numba-cuda for CUDA 12): pip install -e ".[gpu]" '
    "(needs an NVIDIA GPU and driver), or set NUMBA_ENABLE_CUDASIM=1 before numba is imported "
    "to run the kernels in Numba's CUDA simulator on NumPy arrays"
)


def _sim_flag() -> bool:
    """NUMBA_ENABLE_CUDASIM set to a non-zero integer (numba's own reading of the flag)."""
    value = os.environ.get(SIM_FLAG, "").strip()
    try:
        return int(value) != 0
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def _cupy_gpu() -> bool:
    """CuPy is installed and sees at least one usable GPU (asked once per process)."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # a broken CUDA install is "no GPU", not a crash
        return False


def _numba_cuda_simulating() -> bool | None:
    """What an already imported numba.cuda decided (None when numba.cuda is not imported yet)."""
    import sys

    if "numba.cuda" not in sys.modules:
        return None
    try:
        from numba.cuda.core import config
    except ImportError:  # older numba-cuda
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


_decided: tuple | None = None  # (the flag's value, the device) of the last successful answer


def device() -> str:
    """``"cuda"`` (a real GPU through CuPy) or ``"sim"`` (Numba's CUDA simulator).

    Raises ``RuntimeError`` when neither is usable, saying how to install the GPU extra, and when
    numba was imported before ``NUMBA_ENABLE_CUDASIM`` was changed (numba reads it only once).
    Every op asks, so the answer is remembered for as long as the flag keeps its value.
    """
    global _decided
    flag = os.environ.get(SIM_FLAG)
    if _decided is not None and _decided[0] == flag:
        return _decided[1]
    simulating = _numba_cuda_simulating()
    if simulating is None and (importlib.util.find_spec("numba") is None
                               or importlib.util.find_spec("numba.cuda") is None):
        raise RuntimeError(f"npseg_gpu needs numba-cuda, which is not installed: {INSTALL_HINT}")
    sim = _sim_flag()
    if not sim and not _cupy_gpu():
        raise RuntimeError(f"npseg_gpu found no usable GPU (CuPy sees none, or CuPy is not "
                           f"installed) and the simulator is off: {INSTALL_HINT}")
    if simulating is not None and simulating != sim:
        raise RuntimeError(f"numba.cuda was imported with {SIM_FLAG}={'1' if simulating else '0'}"
                           f" but it is now {'1' if sim else '0'}: set it before numba is "
                           f"first imported")
    result = "sim" if sim else "cuda"
    if simulating is not None:  # numba.cuda is loaded: the answer cannot change any more
        _decided = (flag, result)
    return result


def xp():
    """The array module of the device: ``cupy`` on ``"cuda"``, ``numpy`` in the simulator."""
    if device() == "cuda":
        import cupy

        return cupy
    return np


def asarray(x, dtype=None):
    """``x`` on the device: a CuPy array on ``"cuda"``, a fresh NumPy copy in the simulator.

    Like a host-to-device transfer, the result never shares memory with a NumPy input.
    """
    if device() == "cuda":
        import cupy

        return cupy.array(x, dtype=dtype, copy=True)
    return np.array(x, dtype=dtype, copy=True)


def asnumpy(y):
    """A device array (or anything array-like) as a new NumPy array on the host."""
    if device() == "cuda":
        import cupy

        if isinstance(y, cupy.ndarray):
            return cupy.asnumpy(y)
    return np.array(y, copy=True)


def synchronize() -> None:
    """Wait for the work queued on CuPy's current stream (nothing to wait for in the simulator)."""
    if device() == "cuda":
        import cupy

        cupy.cuda.get_current_stream().synchronize()
