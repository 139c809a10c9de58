"""Shared test set-up.

* Hypothesis profiles: ``ci`` (the default: derandomized, no deadline, few examples, so CI runs
  are repeatable) and ``dev`` (many random examples; ``HYPOTHESIS_PROFILE=dev pytest``).
* Numba's CUDA simulator is switched on here, before anything imports numba, unless a real GPU
  is usable through CuPy: the GPU parity tests then run every kernel on this machine.
* ``@pytest.mark.slow`` tests run only with ``--runslow``.
"""

import os

import pytest
from hypothesis import HealthCheck, settings


def _real_gpu() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _real_gpu():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])
settings.register_profile("ci", derandomize=True, max_examples=20, print_blob=True, **_common)
settings.register_profile("dev", max_examples=200, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
