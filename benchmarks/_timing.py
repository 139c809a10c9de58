"""Wall-clock timing shared by the benchmark scripts (each reports medians, in milliseconds)."""

from __future__ import annotations

import time

import numpy as np


def median_ms(step, repeat, sync=None, warmup=False):
    """Median wall time in ms of ``repeat`` calls of ``step()``.

    ``warmup``: one untimed call first (first-touch allocations, lazy initialisation, kernel
    compilation). ``sync`` (a device synchronize) runs before and after each timed call, so that
    the GPU's asynchronous work is counted and nothing from before is.
    """
    if warmup:
        step()
    times = []
    for _ in range(repeat):
        if sync is not None:
            sync()
        start = time.perf_counter()
        step()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def median_ms_interleaved(steps, repeat):
    """:func:`median_ms` of each of ``steps``, after one warm-up call each, their timed calls
    taking turns, so that a machine shared with other work slows them alike."""
    for step in steps:
        step()
    times = [[] for _ in steps]
    for _ in range(repeat):
        for step, spent in zip(steps, times):
            start = time.perf_counter()
            step()
            spent.append(time.perf_counter() - start)
    return [1e3 * float(np.median(spent)) for spent in times]
