"""Every Numba CUDA kernel of npseg_gpu compiles to PTX for every signature it declares.

Numba's CUDA simulator runs kernels as Python, so it catches indexing errors but no typing
errors (a float64 written where an int is needed, an unsupported call, a variable whose type
changes). This test compiles each kernel with ``numba.cuda.compile_ptx`` -- the real CUDA
target: NVVM from the CUDA toolkit wheels that ``numba-cuda[cu12]`` installs, no GPU or driver
needed -- for each of its declared signatures (float32 and float64 arrays, int64 indices).

It runs in a subprocess whose environment has ``NUMBA_ENABLE_CUDASIM`` unset, since this test
process has numba in simulator mode. Set-up the subprocess needs on a machine without a driver:
``compile_ptx`` is given the compute capability (``CC``) explicitly, and device functions
(``cuda.jit(device=True)``), which numba compiles for "the current device", get a stand-in
device of that compute capability instead of asking the driver.

The subprocess also imports ``npseg_gpu.ops`` without the simulator: importing must compile
nothing and touch no GPU. Kernels are found through ``npseg_gpu.kernels.all_kernels()``; a
kernel made with a bare ``cuda.jit`` (no declared signatures) fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba", reason="npseg_gpu needs numba-cuda (pip install -e '.[test]')")
pytest.importorskip("numba.cuda", reason="npseg_gpu needs numba-cuda (pip install -e '.[test]')")

from npseg_gpu.kernels import all_kernels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CC = (7, 5)          # a Turing-class target; the check is about typing, not the target
MARKER = "NPSEG-PTX-REPORT "
KERNELS = sorted(all_kernels())

_SCRIPT = r"""
import json, sys, traceback
cc = tuple(json.loads(sys.argv[1]))
report = {"import_error": None, "raw": [], "kernels": {}, "toolkit": None}
try:
    import npseg_gpu.ops  # noqa: F401  (must neither compile nor touch a GPU)
    from numba import cuda
    from numba.cuda import dispatcher
    from npseg_gpu.kernels import all_kernels, kernel_modules

    class _Device:  # device functions are compiled "for the current device": no driver here
        compute_capability = cc

    dispatcher.get_current_device = lambda: _Device()
except Exception:
    report["import_error"] = traceback.format_exc()
    print("NPSEG-PTX-REPORT " + json.dumps(report))
    sys.exit(0)

for module in kernel_modules():
    for name, obj in vars(module).items():
        if isinstance(obj, dispatcher.CUDADispatcher) and not obj.targetoptions.get("device"):
            report["raw"].append(module.__name__ + "." + name)
for name, k in all_kernels().items():
    errors, float_types = [], set()
    for sig in k.signatures:
        float_types.update(str(t.dtype) for t in sig if hasattr(t, "dtype"))
        try:
            ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=cc)
            if report["toolkit"] is None:
                report["toolkit"] = [l for l in ptx.splitlines() if "compilation tools" in l]
        except Exception as error:
            errors.append(str(sig) + ": " + type(error).__name__ + ": " + str(error)[-1500:])
    report["kernels"][name] = {"signatures": len(k.signatures), "errors": errors,
                               "dtypes": sorted(float_types)}
print("NPSEG-PTX-REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(CC)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert proc.returncode == 0 and lines, (
        f"the PTX compile subprocess failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len(MARKER):])
    assert result["import_error"] is None, (
        "importing npseg_gpu without the simulator failed (numba-cuda's CUDA target, or an "
        "import that touches the GPU):\n" + result["import_error"])
    return result


def test_kernels_are_found():
    assert len(KERNELS) >= 20, KERNELS


def test_no_kernel_without_declared_signatures(report):
    assert not report["raw"], (f"kernels made with a bare cuda.jit: declare them with "
                               f"npseg_gpu.kernels._launch.kernel(signatures): {report['raw']}")


def test_subprocess_sees_the_same_kernels(report):
    assert sorted(report["kernels"]) == KERNELS


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_compiles_to_ptx(report, name):
    result = report["kernels"][name]
    assert result["signatures"] >= 1
    assert not result["errors"], "\n\n".join(result["errors"])
    # every kernel is written for both float dtypes
    assert {"float32", "float64"} <= set(result["dtypes"]), result["dtypes"]
