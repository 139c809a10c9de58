"""Parity of npseg_gpu.ops with npseg.ops: same names, same signatures, same results.

Every case of ``_gpu_registry.REGISTRY`` runs forward (and backward on a random ``dout``) on
hypothesis-drawn tiny inputs on both devices; results agree to a relative 1e-10 in float64 and
1e-4 in float32 (relative to the largest magnitude of the array compared, at least 1), indices
exactly, and
bad inputs raise the same error. Where there is no GPU the kernels run in Numba's CUDA simulator
(``conftest.py`` switches it on before numba is imported); on a machine with a GPU the same
tests run on it. Also: coverage (an op of ``npseg.ops`` without a twin or a case fails), the
device helpers, and a small conv-bn-relu-pool-conv-CE training step on both devices.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings

pytest.importorskip("numba", reason="npseg_gpu needs numba-cuda (pip install -e '.[test]')")
pytest.importorskip("numba.cuda", reason="npseg_gpu needs numba-cuda (pip install -e '.[test]')")

import npseg.ops as cpu_ops  # noqa: E402
import npseg_gpu  # noqa: E402
import npseg_gpu.ops as gpu_ops  # noqa: E402
from _gpu_registry import REGISTRY, Call, Uniforms  # noqa: E402

DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
EXAMPLES = max(1, settings.default.max_examples // 2)  # per op and dtype (10 in CI)


def _base_name(op_name: str) -> str:
    for suffix in ("_forward", "_backward"):
        if op_name.endswith(suffix):
            return op_name[: -len(suffix)]
    return op_name


CPU_NAMES = sorted(cpu_ops.OPS)
CPU_BASES = sorted({_base_name(n) for n in cpu_ops.OPS})


# --- coverage and signatures ------------------------------------------------------------------

@pytest.mark.parametrize("name", CPU_NAMES)
def test_every_cpu_op_has_a_gpu_twin_with_its_signature(name):
    if name not in gpu_ops.OPS:
        pytest.fail(f"npseg_gpu.ops has no twin of npseg.ops.{name}")
    cpu_sig = inspect.signature(cpu_ops.OPS[name])
    gpu_sig = inspect.signature(gpu_ops.OPS[name])
    assert list(cpu_sig.parameters) == list(gpu_sig.parameters), name
    for p_cpu, p_gpu in zip(cpu_sig.parameters.values(), gpu_sig.parameters.values()):
        assert (p_cpu.kind, p_cpu.default) == (p_gpu.kind, p_gpu.default), (name, p_cpu.name)


def test_gpu_ops_has_nothing_npseg_ops_lacks():
    extra = sorted(set(gpu_ops.OPS) - set(cpu_ops.OPS))
    assert not extra, f"npseg_gpu.ops has ops npseg.ops lacks: {extra}"


@pytest.mark.parametrize("base", CPU_BASES)
def test_every_cpu_op_has_a_parity_case(base):
    if base not in REGISTRY:
        pytest.fail(f"reference_tests/_gpu_registry.py has no parity case for npseg.ops.{base}")


def test_registry_names_only_existing_ops():
    unknown = sorted(set(REGISTRY) - set(CPU_BASES))
    assert not unknown, f"parity cases for ops npseg.ops does not have: {unknown}"
    for name, case in REGISTRY.items():
        if case.kind == "pair":
            assert f"{name}_forward" in cpu_ops.OPS and f"{name}_backward" in cpu_ops.OPS, name
        else:
            assert name in cpu_ops.OPS, name


# --- comparing results ------------------------------------------------------------------------

def _host(a):
    if isinstance(a, tuple):
        return tuple(_host(v) for v in a)
    if a is None or isinstance(a, (int, float, str, bool)):
        return a
    return npseg_gpu.asnumpy(a)


def _assert_same(expected, got, what: str):
    """CPU result ``expected`` vs GPU result ``got`` (already on the host)."""
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected), what
        for k, (e, g) in enumerate(zip(expected, got)):
            _assert_same(e, g, f"{what}[{k}]")
        return
    if expected is None:
        assert got is None, f"{what}: expected None, got {type(got).__name__}"
        return
    expected = np.asarray(expected)
    assert isinstance(got, np.ndarray), f"{what}: not an array ({type(got).__name__})"
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(got, expected, err_msg=what)
        return
    rtol = RTOL[expected.dtype]
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    # relative to the array's largest magnitude, at least 1 (inputs are O(1)): results that
    # cancel to ~0 (a batch-norm gradient over two values) carry rounding noise of that size
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * max(scale, 1.0),
                               err_msg=what)


class _DeviceUniforms:
    """The GPU side's generator in the tests: draws with NumPy, hands out device arrays, so
    both devices see the same uniforms (a CuPy generator draws a different stream)."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def random(self, size=None, dtype=np.float64):
        return npseg_gpu.asarray(self._rng.random(size, dtype=dtype))


def _materialize(value, side: str):
    """A registry value as the ``side`` ("cpu"/"gpu") gets it: fresh copies, on its device."""
    if isinstance(value, Uniforms):
        return np.random.default_rng(value.seed) if side == "cpu" else _DeviceUniforms(value.seed)
    if isinstance(value, np.ndarray):
        return value.copy() if side == "cpu" else npseg_gpu.asarray(value)
    return value


def _sides(call: Call, side: str):
    args = [_materialize(a, side) for a in call.args]
    kwargs = {k: _materialize(v, side) for k, v in call.kwargs.items()}
    return args, kwargs


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _run_case(name: str, call: Call):
    case = REGISTRY[name]
    forward = f"{name}_forward" if case.kind == "pair" else name
    cpu_args, cpu_kwargs = _sides(call, "cpu")
    gpu_args, gpu_kwargs = _sides(call, "gpu")

    try:
        expected = cpu_ops.OPS[forward](*cpu_args, **cpu_kwargs)
    except (ValueError, TypeError) as error:   # bad input: the GPU op must refuse it alike
        with pytest.raises(type(error)) as caught:
            gpu_ops.OPS[forward](*gpu_args, **gpu_kwargs)
        assert str(caught.value) == str(error)
        return
    got = gpu_ops.OPS[forward](*gpu_args, **gpu_kwargs)

    if case.kind == "function":
        _assert_same(expected, _host(got), f"{name}")
        return
    (out_cpu, cache_cpu), (out_gpu, cache_gpu) = expected, got
    _assert_same(out_cpu, _host(out_gpu), f"{forward} output")
    for k, original in enumerate(call.args):
        if not isinstance(original, np.ndarray):
            continue
        if k in case.mutated:
            _assert_same(cpu_args[k], _host(gpu_args[k]), f"{forward} argument {k} (updated)")
        else:
            assert np.array_equal(_host(gpu_args[k]), original, equal_nan=True), \
                f"{forward} modified its argument {k}"

    y = _first(out_cpu)
    rng = np.random.default_rng(call.seed)
    dout = np.asarray(rng.standard_normal(y.shape), dtype=y.dtype)
    grads_cpu = cpu_ops.OPS[f"{name}_backward"](dout, cache_cpu)
    grads_gpu = gpu_ops.OPS[f"{name}_backward"](npseg_gpu.asarray(dout), cache_gpu)
    _assert_same(tuple(grads_cpu), _host(tuple(grads_gpu)), f"{name}_backward")


# --- parity of every registered op ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_parity(name, dtype):
    @settings(max_examples=EXAMPLES)
    @given(call=REGISTRY[name].inputs(np.dtype(dtype)))
    def check(call):
        _run_case(name, call)

    check()


def test_conv2d_backward_without_dx_matches_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 2, 3, 2))
    kwargs = dict(stride=(1, 2), padding=1, groups=2)
    out, cache_cpu = cpu_ops.conv2d_forward(x, w, None, **kwargs)
    _, cache_gpu = gpu_ops.conv2d_forward(npseg_gpu.asarray(x), npseg_gpu.asarray(w), None,
                                          **kwargs)
    dout = rng.standard_normal(out.shape)
    expected = cpu_ops.conv2d_backward(dout, cache_cpu, need_dx=False)
    got = gpu_ops.conv2d_backward(npseg_gpu.asarray(dout), cache_gpu, need_dx=False)
    assert expected[0] is None and expected[2] is None
    _assert_same(tuple(expected), _host(tuple(got)), "conv2d_backward(need_dx=False)")


# --- devices ----------------------------------------------------------------------------------

def test_device_is_sim_or_cuda():
    import os

    expected = "sim" if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0") else "cuda"
    assert npseg_gpu.device() == expected
    assert npseg_gpu.xp() is (np if expected == "sim" else __import__("cupy"))


def test_asarray_and_asnumpy_copy():
    x = np.arange(6.0).reshape(2, 3)
    d = npseg_gpu.asarray(x)
    x[0, 0] = 100.0
    back = npseg_gpu.asnumpy(d)
    assert isinstance(back, np.ndarray) and back[0, 0] == 0.0 and back.shape == (2, 3)
    back[0, 1] = -1.0
    assert float(npseg_gpu.asnumpy(d)[0, 1]) == 1.0
    assert npseg_gpu.asarray(x, dtype=np.float32).dtype == np.float32


def test_no_device_raises_with_install_hint(monkeypatch):
    import npseg_gpu._device as dev

    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(dev, "_cupy_gpu", lambda: False)
    monkeypatch.setattr(dev, "_decided", None)
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[gpu\]"'):
        npseg_gpu.device()


def test_simulator_flag_changed_after_numba_import_is_refused(monkeypatch):
    import npseg_gpu._device as dev

    if npseg_gpu.device() != "sim":
        pytest.skip("runs in the simulator")
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    monkeypatch.setattr(dev, "_cupy_gpu", lambda: True)
    monkeypatch.setattr(dev, "_decided", None)
    with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM"):
        npseg_gpu.device()


def test_device_random_generator():
    import npseg_gpu.random

    a = npseg_gpu.random.default_rng(3).random((2, 5))
    b = npseg_gpu.random.default_rng(3).random((2, 5))
    a, b = npseg_gpu.asnumpy(a), npseg_gpu.asnumpy(b)
    assert a.shape == (2, 5) and a.dtype == np.float64
    assert np.array_equal(a, b) and ((0 <= a) & (a < 1)).all() and len(np.unique(a)) == 10
    # dropout takes it: same interface as a numpy Generator
    x = npseg_gpu.asarray(np.ones((4, 4)))
    (y, _) = gpu_ops.dropout_forward(x, 0.5, True, npseg_gpu.random.default_rng(0))
    y = npseg_gpu.asnumpy(y)
    assert set(np.unique(y)) <= {0.0, 2.0}


def test_launch_refuses_undeclared_argument_types():
    from npseg_gpu.kernels import im2col as kernels
    from npseg_gpu.kernels._launch import launch

    if npseg_gpu.device() != "sim":
        pytest.skip("the launch-type check runs in the simulator")
    x = np.zeros((1, 1, 2, 2), dtype=np.int32)        # no int32 signature declared
    cols = np.zeros((1, 1, 4), dtype=np.int32)
    with pytest.raises(TypeError, match="not among its declared signatures"):
        launch(kernels.im2col_kernel, cols.size, x, cols, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1)


def test_gpu_ops_refuse_host_arrays_on_a_gpu():
    if npseg_gpu.device() != "cuda":
        pytest.skip("device arrays are NumPy arrays in the simulator")
    with pytest.raises(TypeError, match="device array"):
        gpu_ops.max_pool2d_forward(np.zeros((1, 1, 2, 2)), 2)


# --- a small training step, op by op ----------------------------------------------------------

def _train_steps(ops, to_device, params, x, target, steps=2, lr=0.1):
    """conv -> bn -> relu -> max pool -> conv -> cross entropy, backward, SGD; ``steps`` times.

    Returns the losses and the parameters after the last step (on the host)."""
    params = {k: to_device(v) for k, v in params.items()}
    x, target = to_device(x), to_device(target)
    losses = []
    for _ in range(steps):
        h1, c1 = ops.conv2d_forward(x, params["w1"], params["b1"], padding=1)
        h2, c2 = ops.batch_norm_forward(h1, params["gamma"], params["beta"], params["mean"],
                                        params["var"], True)
        h3, c3 = ops.relu_forward(h2)
        (h4, _), c4 = ops.max_pool2d_forward(h3, 2)
        logits, c5 = ops.conv2d_forward(h4, params["w2"], None, stride=1, padding=0)
        loss, c6 = ops.cross_entropy_forward(logits, target)
        losses.append(npseg_gpu.asnumpy(loss))

        (dlogits,) = ops.cross_entropy_backward(to_device(np.ones((), loss.dtype)), c6)
        dh4, dw2, _ = ops.conv2d_backward(dlogits, c5)
        (dh3,) = ops.max_pool2d_backward(dh4, c4)
        (dh2,) = ops.relu_backward(dh3, c3)
        dh1, dgamma, dbeta = ops.batch_norm_backward(dh2, c2)
        _, dw1, db1 = ops.conv2d_backward(dh1, c1)
        for key, grad in (("w1", dw1), ("b1", db1), ("gamma", dgamma), ("beta", dbeta),
                          ("w2", dw2)):
            params[key] = params[key] - lr * grad
    return losses, {k: npseg_gpu.asnumpy(v) for k, v in params.items()}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_training_steps_match_cpu(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    target = rng.integers(0, 3, (2, 2, 2))
    params = dict(w1=0.5 * rng.standard_normal((4, 2, 3, 3)), b1=0.1 * rng.standard_normal(4),
                  gamma=1 + 0.1 * rng.standard_normal(4), beta=0.1 * rng.standard_normal(4),
                  mean=np.zeros(4), var=np.ones(4), w2=0.5 * rng.standard_normal((3, 4, 2, 2)))
    params = {k: v.astype(dtype) for k, v in params.items()}
    losses_cpu, params_cpu = _train_steps(cpu_ops, np.copy, params, x, target)
    losses_gpu, params_gpu = _train_steps(gpu_ops, npseg_gpu.asarray, params, x, target)
    assert losses_cpu[1] < losses_cpu[0]  # the step is a real training step
    for k, (a, b) in enumerate(zip(losses_cpu, losses_gpu)):
        _assert_same(np.asarray(a), np.asarray(b), f"loss of step {k}")
    for key in params:
        _assert_same(params_cpu[key], params_gpu[key], f"{key} after the steps")
