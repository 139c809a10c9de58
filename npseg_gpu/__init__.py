"""npseg_gpu: the same ops as npseg.ops on the GPU (CuPy arrays, Numba CUDA kernels).

* :func:`device` says where the kernels run: ``"cuda"`` (CuPy arrays on a GPU) or ``"sim"``
  (Numba's CUDA simulator over NumPy arrays, ``NUMBA_ENABLE_CUDASIM=1``); it raises a
  ``RuntimeError`` saying how to install the GPU extra (``pip install -e ".[gpu]"``) when neither
  is usable.
* :func:`asarray` / :func:`asnumpy` move arrays to and from the device, :func:`xp` is the
  device's array module (``cupy`` or ``numpy``), :func:`synchronize` waits for queued work.
* ``npseg_gpu.ops``: every op of ``npseg.ops``, same names and signatures, on device arrays.
* ``npseg_gpu.random.default_rng(seed)``: the device's generator, for dropout.

Importing this package imports neither numba nor CuPy and touches no GPU; kernels compile on
their first launch.
"""

from npseg_gpu._device import asarray, asnumpy, device, synchronize, xp

__version__ = "0.1.0"
__all__ = ["device", "asarray", "asnumpy", "xp", "synchronize"]
