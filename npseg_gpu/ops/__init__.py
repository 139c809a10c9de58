"""npseg_gpu.ops: every op of ``npseg.ops`` on device arrays, same names and signatures.

Each public module here mirrors the ``npseg.ops`` module of the same name and lists its ops in
``__all__``; they are re-exported here and ``OPS`` (name -> function) is the registry that
``reference_tests/test_gpu_parity.py`` compares with ``npseg.ops.OPS`` name for name.

Ops whose NumPy code is written for any array module (activations, dropout) are the very same
functions as in ``npseg.ops``; the others are CuPy glue (matrix products through cuBLAS, small
reductions) around the Numba CUDA kernels of ``npseg_gpu.kernels``. Validation is the CPU ops'
own (``npseg.ops._checks`` and the CPU modules' argument checks read only shapes and dtypes).

Importing this package needs numba-cuda but compiles nothing and touches no GPU.
"""

from npseg.ops._registry import collect_ops as _collect_ops

try:
    import numba.cuda as _numba_cuda  # noqa: F401  (fail here, clearly, without numba-cuda)
except ImportError as _error:
    from npseg_gpu._device import INSTALL_HINT as _HINT

    raise ImportError(f"npseg_gpu.ops needs numba-cuda: {_HINT}") from _error

OPS, __all__ = _collect_ops(__name__, __path__, globals())
