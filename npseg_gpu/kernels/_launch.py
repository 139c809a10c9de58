"""Declaring and launching kernels: grid sizes, streams and argument types in one place.

Every kernel of ``npseg_gpu.kernels`` is declared with :func:`kernel`, which records the argument
types it is launched with (its signatures, one per dtype) beside the code:

    @kernel(float_signatures(lambda f: (f[:, :, :, ::1], f[:, :, :, ::1], cuda.int64)))
    def scale(x, y, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):   # grid-stride loop
            ...

* Nothing compiles at import: ``cuda.jit(fn)`` without signatures compiles on the first launch,
  for the types of that launch. The signatures are for ``reference_tests/test_gpu_ptx.py``, which
  compiles every kernel for each of them to PTX (the simulator type-checks nothing), and for the
  simulator, where :func:`launch` checks each launch's argument types against them, so the PTX
  check compiles exactly what runs.
* :func:`launch` runs one thread per work item, grid-stride, so any grid is correct: on a GPU
  enough 256-thread blocks for the work (capped at 32 per multiprocessor), in the simulator a
  tiny grid (2 blocks of 16 threads: each simulated thread costs about 0.1 ms to start).
  :func:`launch_blocks` runs one block per work item (per-channel reductions in shared memory).
* On a GPU, kernels run on CuPy's current stream and read CuPy arrays through
  ``__cuda_array_interface__`` without synchronising (everything is queued on that one stream).
* Arguments: C-contiguous arrays, Python ints (typed ``int64``) and floats (``float64``); flags
  are ints 0/1. Integer and float scalars are converted here, so a NumPy scalar never makes a
  new specialisation.
* Inside a kernel, call helpers through the name ``cuda`` only (the simulator swaps it for a
  stand-in that has the helpers but no numba types): a type a kernel needs, e.g. the dtype of a
  shared array, is a module constant taken at import (``_F64 = cuda.float64``). Zeros and
  constants of the arrays' dtype are ``out.dtype.type(0)``, so float32 kernels stay float32.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from numba import cuda

from npseg_gpu._device import device

#: threads per block and the cap on blocks, on a GPU and in the simulator
CUDA_THREADS = 256
CUDA_BLOCKS_PER_SM = 32
SIM_THREADS = 16
SIM_BLOCKS = 2
#: threads per block of the one-block-per-item reductions (powers of 2, at most REDUCE_SHARED)
REDUCE_THREADS_CUDA = 256
REDUCE_THREADS_SIM = 8
#: size of the shared-memory buffer of a reduction block (a compile-time constant)
REDUCE_SHARED = 256


class Kernel:
    """A CUDA kernel compiled lazily on first launch, with the signatures it is launched with."""

    def __init__(self, fn, signatures):
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__
        self.signatures = tuple(tuple(sig) for sig in signatures)
        if not self.signatures:
            raise ValueError(f"kernel {fn.__module__}.{fn.__name__} declares no signatures")
        self.dispatcher = cuda.jit(fn)  # no signature given: nothing compiles until a launch

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.__name__}, {len(self.signatures)} signatures>"


def kernel(*signatures):
    """Decorator declaring a kernel and the argument types (tuples of numba types) it runs with.

    Each argument is a signature or a list of them (see :func:`float_signatures`).
    """
    flat = []
    for sig in signatures:
        if isinstance(sig, list):
            flat.extend(sig)
        else:
            flat.append(sig)

    def wrap(fn):
        return Kernel(fn, flat)

    return wrap


def float_signatures(make):
    """``[make(float32), make(float64)]``: one signature per float dtype."""
    return [make(cuda.float32), make(cuda.float64)]


# --- launching --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _max_blocks() -> int:
    import cupy

    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    return CUDA_BLOCKS_PER_SM * sms


@functools.lru_cache(maxsize=64)
def _numba_stream(ptr: int):
    """Numba's handle on the CuPy stream ``ptr`` (0: legacy default, 2: per-thread default)."""
    if ptr == 0:
        return cuda.legacy_default_stream()
    if ptr == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(ptr)


def _current_stream():
    import cupy

    return _numba_stream(cupy.cuda.get_current_stream().ptr)


def _scalar(value):
    if isinstance(value, bool):
        raise TypeError("kernel flags are passed as the ints 0/1, not as bools")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _launch_types(args):
    """The numba types of a simulator launch's arguments, as the GPU would see them."""
    import numba
    from numba.core import types

    result = []
    for a in args:
        t = numba.typeof(a)
        if isinstance(t, types.Array) and not t.mutable:
            t = t.copy(readonly=False)  # CuPy arrays are never read-only
        result.append(t)
    return tuple(result)


def _check_signature(k: Kernel, args):
    got = _launch_types(args)
    if got not in k.signatures:
        declared = "\n  ".join(map(str, k.signatures))
        raise TypeError(f"kernel {k.__module__}.{k.__name__} launched with argument types\n  "
                        f"{got}\nwhich are not among its declared signatures\n  {declared}")


def _run(k: Kernel, blocks: int, threads: int, args):
    args = tuple(_scalar(a) for a in args)
    if device() == "sim":
        _check_signature(k, args)
        # the simulator copies every array argument back after the launch: none may be read-only
        args = tuple(a.copy() if isinstance(a, np.ndarray) and not a.flags.writeable else a
                     for a in args)
        k.dispatcher[blocks, threads](*args)
        return
    args = tuple(cuda.as_cuda_array(a, sync=False) if hasattr(a, "__cuda_array_interface__")
                 else a for a in args)
    k.dispatcher[blocks, threads, _current_stream()](*args)


def launch(k: Kernel, n: int, *args) -> None:
    """Run ``k(*args)`` over ``n`` work items, one thread per item (grid-stride); n = 0: nothing."""
    if n <= 0:
        return
    if device() == "sim":
        threads = SIM_THREADS
        blocks = min(SIM_BLOCKS, math.ceil(n / threads))
    else:
        threads = CUDA_THREADS
        blocks = min(_max_blocks(), math.ceil(n / threads))
    _run(k, blocks, threads, args)


def reduce_threads() -> int:
    """Threads per block of :func:`launch_blocks` (a power of 2, at most REDUCE_SHARED)."""
    return REDUCE_THREADS_SIM if device() == "sim" else REDUCE_THREADS_CUDA


def launch_blocks(k: Kernel, n: int, *args) -> None:
    """Run ``k(*args)`` with one block per work item (block-stride over ``n`` items)."""
    if n <= 0:
        return
    if device() == "sim":
        blocks = min(SIM_BLOCKS, n)
    else:
        blocks = min(_max_blocks(), n)
    _run(k, blocks, reduce_threads(), args)
