"""The CPU threads the NumPy ops run on.

NumPy runs every copy and every ufunc on one thread; only its matrix products (OpenBLAS) use
several. Work that splits into independent pieces -- the image blocks of a convolution, the rows
of an elementwise op -- runs here on T threads instead: the calling thread and a pool of T - 1,
each taking pieces one by one. NumPy releases the GIL inside its loops, so the pieces really run
side by side. The caller works rather than waits because waking a sleeping thread is slow (10-20
microseconds on a 2-vCPU VM): it starts on its first piece at once, and only T - 1 threads wait
to be woken.

While pieces that multiply matrices run, OpenBLAS is set to one thread (and back afterwards), so
T pieces use T cores, not T times OpenBLAS's threads.
Where NumPy uses another BLAS, whose thread count npseg cannot set, such pieces run one after the
other on the calling thread, with the BLAS multithreaded as usual; see :func:`map_pieces`.

Results never depend on timing: every piece writes its own part of the output, and values that
pieces return (partial sums) come back in piece order, to be added in that order. How the work
is cut depends on the thread count, so runs with different counts can differ in the last bits
of a sum; runs with the same count are bit-identical.

The count is ``npseg.set_num_threads(n)``; by default the environment variable
``NPSEG_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the number of CPUs this process may use.
1 turns the pool off: everything runs on the calling thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import itertools
import os
import threading

import numpy as np

__all__ = ["get_num_threads", "set_num_threads", "map_pieces", "map_rows", "elementwise",
           "ranges", "sum_in_order"]

# A piece of an elementwise op must be worth handing to a thread: dispatching two pieces costs
# about 20 microseconds (measured on a 2-vCPU VM), and small NumPy calls on two threads take
# turns at the GIL. Below about half a million elements one thread is as fast (measured on the
# training steps); hence a quarter million per piece.
MIN_ELEMENTS_PER_PIECE = 1 << 18

_state = threading.local()          # .worker: in a pool thread, or a caller taking pieces
_lock = threading.Lock()            # guards the making of the pool
_pool: _Pool | None = None
_num_threads: int | None = None     # set_num_threads, or the environment's count once read


def _default_threads() -> int:
    value = os.environ.get("NPSEG_NUM_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"the environment variable NPSEG_NUM_THREADS must be an integer "
                             f">= 1, got {value!r}")
        return int(value)
    value = os.environ.get("OMP_NUM_THREADS", "").strip()   # may be a list, as "4,2": skip it
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """The number of threads npseg's CPU ops use (see the module docstring)."""
    global _num_threads
    if _num_threads is None:  # read from the environment once, on first use
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (an int >= 1) for npseg's CPU ops from now on; 1 turns threading off."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    _num_threads = int(n)


# ------------------------------------------------------------------------------------ OpenBLAS

def _find_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy uses, or None.

    NumPy's wheels bundle OpenBLAS under a prefixed name (``scipy_openblas_..64_``); other
    builds export the plain names. None where NumPy uses another BLAS.
    """
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = (os.path.join(root, "numpy.libs", "*openblas*"),       # Linux and Windows wheels
                os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*"))  # macOS
    names = [(f"{prefix}openblas_get_num_threads{suffix}",
              f"{prefix}openblas_set_num_threads{suffix}")
             for prefix in ("scipy_", "") for suffix in ("64_", "")]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in names:
                getter = getattr(library, get_name, None)
                setter = getattr(library, set_name, None)
                if getter is not None and setter is not None:
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    return getter, setter
    return None


_openblas = None
_openblas_probed = False


def _blas_controls():
    """OpenBLAS's (get, set) thread-count functions, looked up once, on first use; or None."""
    global _openblas, _openblas_probed
    if not _openblas_probed:
        _openblas, _openblas_probed = _find_openblas(), True
    return _openblas


@contextlib.contextmanager
def _single_threaded_blas():
    """OpenBLAS on one thread per caller while the pieces run, then as it was.

    The count is global to the process, so the calling thread's pieces run on one thread too.
    """
    get, set_ = _blas_controls()
    before = get()
    if before != 1:
        set_(1)
    try:
        yield
    finally:
        if before != 1:
            set_(before)


def _init_worker(number):
    """Mark the thread as a pool thread and bind it to a CPU of its own (Linux).

    Unbound, the scheduler often wakes a pool thread on the CPU of the thread that woke it, and
    the two then share one core for many milliseconds (measured: every piece at single-thread
    speed in about half the runs after a pause). Pool thread ``number`` (0, 1, ...) runs on the
    (number + 2)-th CPU this process may use, leaving the first to the calling thread, which
    also takes pieces (it stays unbound: it is the user's thread); with more threads than CPUs,
    threads stay unbound.
    """
    _state.worker = True
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if get_num_threads() <= len(cpus):
            os.sched_setaffinity(0, {cpus[(number + 1) % len(cpus)]})


class _Helper:
    """A pool thread that runs the jobs it is handed, one at a time.

    Two locks, used as binary semaphores, hand a job over and report it done: the cheapest
    wake-up CPython offers (a ``ThreadPoolExecutor`` and its futures cost about 15 microseconds
    more per call, measured). A daemon thread: it holds no state worth finishing at exit.
    """

    def __init__(self, number):
        self._job, self._error = None, None
        self._started = threading.Lock()
        self._started.acquire()                 # released: a job is waiting
        self._finished = threading.Lock()
        self._finished.acquire()                # released: the job has returned or raised
        threading.Thread(target=self._serve, args=(number,), name=f"npseg-{number}",
                         daemon=True).start()

    def start(self, job):
        self._job = job
        self._started.release()

    def wait(self):
        """Wait for the job started last; returns the exception it raised, or None."""
        self._finished.acquire()
        error, self._job, self._error = self._error, None, None
        return error

    def stop(self):
        """End the thread once it is idle (its pool is being replaced)."""
        self.start(None)

    def _serve(self, number):
        _init_worker(number)
        while True:
            self._started.acquire()
            if self._job is None:
                return
            try:
                self._job()
            except BaseException as error:  # handed to the caller by wait()
                self._error = error
            self._finished.release()


class _Pool:
    """``size`` helper threads and the lock that gives them to one caller at a time."""

    def __init__(self, size):
        self.size = size
        self.pid = os.getpid()
        self.helpers = [_Helper(number) for number in range(size)]
        self.busy = threading.Lock()
        self.stopped = False                    # replaced: its helpers have ended


def _get_pool(size: int) -> _Pool:
    """The pool of ``size`` threads; a new one after a fork (the child has no pool threads)."""
    global _pool
    with _lock:
        if _pool is None or (_pool.pid, _pool.size) != (os.getpid(), size):
            if _pool is not None and _pool.pid == os.getpid():
                with _pool.busy:                # once its caller, if any, is done with it
                    for helper in _pool.helpers:
                        helper.stop()
                    _pool.stopped = True
            _pool = _Pool(size)
        return _pool


# ------------------------------------------------------------------------------------ mapping

def map_pieces(fn, pieces, uses_blas=False):
    """``[fn(p) for p in pieces]``, the calls running on npseg's threads at once.

    ``min(get_num_threads(), len(pieces))`` threads -- the calling thread and pool threads --
    take pieces one by one; the list comes back in the order of ``pieces``, and an exception in
    any piece is raised here once every piece has stopped. Runs on the calling thread alone
    when there is one piece or one thread, inside a piece (no nesting), or when ``uses_blas``
    and OpenBLAS's thread count cannot be set. ``fn`` must write only its own part of any
    shared output.
    """
    pieces = list(pieces)
    threads = min(get_num_threads(), len(pieces))
    if (threads < 2 or getattr(_state, "worker", False)
            or (uses_blas and _blas_controls() is None)):
        return [fn(p) for p in pieces]
    results = [None] * len(pieces)
    counter = itertools.count()             # next() on it is atomic: each index is taken once

    def take_pieces():
        for index in iter(counter.__next__, None):
            if index >= len(pieces):
                return
            results[index] = fn(pieces[index])

    pool = _get_pool(get_num_threads() - 1)
    if not pool.busy.acquire(blocking=False):  # another thread of the user's has the pool
        return [fn(p) for p in pieces]
    if pool.stopped:                        # replaced by another thread since _get_pool
        pool.busy.release()
        return [fn(p) for p in pieces]
    try:
        with _single_threaded_blas() if uses_blas else contextlib.nullcontext():
            helpers = pool.helpers[:threads - 1]
            for helper in helpers:
                helper.start(take_pieces)
            errors = [_run_as_worker(take_pieces)]
            errors += [helper.wait() for helper in helpers]
    finally:
        pool.busy.release()
    for error in errors:
        if error is not None:
            raise error
    return results


def _run_as_worker(fn):
    """``fn()`` on the calling thread marked as a worker (so that a nested ``map_pieces`` runs
    inline); returns the exception it raised, or None."""
    _state.worker = True
    try:
        fn()
    except BaseException as error:  # raised by map_pieces once the helpers have stopped
        return error
    finally:
        _state.worker = False
    return None


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into ``min(parts, n)`` contiguous (start, stop) ranges (at least one)
    whose sizes differ by at most one, so that no thread waits long for another's last piece."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def ranges(n: int, size: int, min_elements: int = MIN_ELEMENTS_PER_PIECE):
    """``split(n, parts)`` for work on ``size`` elements spread over ``n`` rows (or channels):
    one part per thread, but no part of fewer than ``min_elements`` elements (so small work is
    one part, run on the calling thread)."""
    return split(n, min(get_num_threads(), size // max(1, min_elements)))


def map_rows(fn, *arrays, min_elements=MIN_ELEMENTS_PER_PIECE, uses_blas=False):
    """Cut every array along axis 0 into the same pieces and call ``fn(*pieces)`` on each.

    All arrays must have the same length along axis 0; a piece holds at least ``min_elements``
    elements of the first array (so small arrays make one piece, run on the calling thread).
    ``uses_blas``: ``fn`` multiplies matrices (see :func:`map_pieces`). Returns the list of what
    ``fn`` returned, in row order.
    """
    pieces = ranges(len(arrays[0]), arrays[0].size, min_elements)
    if len(pieces) < 2:
        return [fn(*arrays)]
    return map_pieces(lambda r: fn(*(a[r[0]:r[1]] for a in arrays)), pieces, uses_blas)


def elementwise(fn, *arrays):
    """``fn(*arrays)`` on pieces of the flattened arrays, in parallel; returns None.

    For elementwise work written in place: every array has the same shape, ``fn`` reads some of
    them and writes the others (``out=`` or in-place operators) position by position, so each
    piece is computed on its own. Arrays that are not NumPy or not C-contiguous go to ``fn``
    whole, and so do small ones (one piece, see :func:`map_rows`).
    """
    if (arrays[0].size < 2 * MIN_ELEMENTS_PER_PIECE    # one piece (see ranges)
            or not all(type(a) is np.ndarray and a.flags.c_contiguous for a in arrays)):
        fn(*arrays)                 # one piece: the arrays as they are
        return
    map_rows(fn, *(a.reshape(-1) for a in arrays))


def sum_in_order(parts, shape, dtype):
    """The pieces' partial sums added in piece order (deterministic); zeros when there are none."""
    total = np.zeros(shape, dtype=dtype)
    for part in parts:
        total += part
    return total
