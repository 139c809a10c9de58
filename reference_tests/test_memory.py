"""npseg.ops keeps freed memory for reuse (glibc malloc tuning, ``npseg.ops._memory``).

Measured by behaviour in a fresh process: allocating and freeing a step's arrays again and
again costs page faults (a fresh page each 4 KiB) on every step with glibc's defaults, and
almost none once ``npseg.ops`` is imported.
"""

import os
import platform
import subprocess
import sys

import pytest

from npseg.ops import _memory

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the malloc tuning applies to glibc only")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# page faults of 10 "training steps" after two warm-up steps; each step allocates arrays of
# 1..8 MiB (36 MiB, 9216 pages), all alive at once, then frees them
_FAULTS = """
import resource
import numpy as np
import npseg.ops
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    arrays = [np.ones(k << 18, np.float32) for k in range(1, 9)]
    del arrays
for _ in range(2):
    step()
before = faults()
for _ in range(10):
    step()
print(faults() - before)
"""


def _run(code, keep):
    env = dict(os.environ, NPSEG_KEEP_FREED_MEMORY=keep, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@glibc
def test_freed_arrays_are_reused_without_page_faults():
    kept = _run(_FAULTS, "1")
    assert kept.returncode == 0, kept.stderr
    assert int(kept.stdout) < 500

    default = _run(_FAULTS, "0")             # glibc's defaults: the pages go back to the OS
    assert default.returncode == 0, default.stderr
    assert int(default.stdout) > 5000        # 12560 on the development machine


@glibc
def test_keep_freed_memory_reports_what_it_did(monkeypatch):
    monkeypatch.setenv("NPSEG_KEEP_FREED_MEMORY", "0")
    assert _memory.keep_freed_memory() is False
    monkeypatch.setenv("NPSEG_KEEP_FREED_MEMORY", "1")
    assert _memory.keep_freed_memory() is True


@pytest.mark.parametrize("bad", ["yes", "2", "-1"])
def test_a_bad_environment_value_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("NPSEG_KEEP_FREED_MEMORY", bad)
    with pytest.raises(ValueError, match=f"NPSEG_KEEP_FREED_MEMORY must be 0 or 1, got '{bad}'"):
        _memory.keep_freed_memory()
