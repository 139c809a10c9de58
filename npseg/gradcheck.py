"""Numeric gradient checking by central differences, public so users can check their own layers.

For an output ``y = f(x)`` and a fixed random upstream gradient ``g`` (``dout``), the scalar
``L(x) = sum(g * f(x))`` has the gradient that a backward pass must return:
``dL/dx = backward(g)``. Central differences estimate it numerically:

    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)          ("full" mode, every element)
    <dL/dx, v> ~ (L(x + eps v) - L(x - eps v)) / (2 eps)            ("random" mode, directions v)

The random mode costs two forward passes per direction whatever the size of ``x``; the full mode
costs two per element. Both run in float64: in float32 the rounding error of the difference is
larger than the quantity measured.

Two entry points:

* :func:`check_op` for an op pair ``NAME_forward(*args, **kwargs) -> (out, cache)`` /
  ``NAME_backward(dout, cache) -> (d_arg, ...)``.
* :func:`gradcheck` for any function of :class:`npseg.autograd.Tensor` arguments.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["GradcheckError", "check_op", "gradcheck", "compare_gradients"]


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with its numeric estimate."""


def _first(out):
    """The differentiable output: ops such as max_pool2d return ``(y, indices)``."""
    return out[0] if isinstance(out, tuple) else out


def compare_gradients(loss: Callable[[list], float], inputs: list, analytic: list, *,
                      mode: str = "random", eps: float = 1e-6, atol: float = 1e-6,
                      rtol: float = 1e-4, n_directions: int = 8, seed: int = 0,
                      names: Sequence[str] | None = None) -> float:
    """Compare ``analytic[k]`` with the numeric gradient of ``loss`` w.r.t. ``inputs[k]``.

    ``loss(inputs)`` returns a float; ``inputs`` are float64 arrays that are perturbed in place
    and restored. Returns the largest absolute error; raises :class:`GradcheckError` when an
    error exceeds ``atol + rtol * |expected|``.

    In random mode every direction moves all inputs at once (two evaluations of ``loss`` per
    direction, however many inputs there are); only when that fails are the inputs checked one
    by one, so the error names the input whose gradient is wrong.
    """
    if mode not in ("random", "full"):
        raise ValueError(f"mode must be 'random' or 'full', got {mode!r}")
    names = list(names) if names is not None else [f"input {k}" for k in range(len(inputs))]
    for k, (x, grad) in enumerate(zip(inputs, analytic)):
        if x.dtype != np.float64:
            raise TypeError(f"{names[k]} must be float64 for a gradient check, got {x.dtype}")
        if grad is None:
            raise GradcheckError(f"backward returned None for {names[k]}")
        if tuple(grad.shape) != tuple(x.shape):
            raise GradcheckError(
                f"gradient of {names[k]} has shape {tuple(grad.shape)}, expected {tuple(x.shape)}")
    grads = [np.asarray(g, dtype=np.float64).reshape(-1) for g in analytic]
    if mode == "random":
        try:
            return _check_directions(loss, inputs, grads, list(range(len(inputs))), eps, atol,
                                     rtol, n_directions, np.random.default_rng(seed),
                                     "all inputs together")
        except GradcheckError as joint:
            for k in range(len(inputs)):  # find the culprit
                _check_directions(loss, inputs, grads, [k], eps, atol, rtol, n_directions,
                                  np.random.default_rng(seed), names[k])
            raise joint
    worst = 0.0
    for k, x in enumerate(inputs):
        flat = x.reshape(-1)  # a view: perturbing it perturbs x
        numeric = np.empty(x.size)
        for i in range(x.size):
            old = flat[i]
            flat[i] = old + eps
            plus = loss(inputs)
            flat[i] = old - eps
            minus = loss(inputs)
            flat[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        worst = max(worst, _assert_close(grads[k], numeric, atol, rtol, names[k], "element"))
    return worst


def _check_directions(loss, inputs, grads, which, eps, atol, rtol, n_directions, rng, name):
    """Directional derivatives along random directions that move the inputs in ``which``."""
    flats = [inputs[k].reshape(-1) for k in which]
    originals = [f.copy() for f in flats]
    expected = np.empty(n_directions)
    got = np.zeros(n_directions)
    for j in range(n_directions):
        directions = [rng.standard_normal(f.size) for f in flats]

        def loss_at(step):
            for f, o, v in zip(flats, originals, directions):
                f[:] = o + step * v
            return loss(inputs)

        plus, minus = loss_at(eps), loss_at(-eps)
        for f, o in zip(flats, originals):
            f[:] = o
        expected[j] = (plus - minus) / (2 * eps)
        got[j] = sum(float(grads[k] @ v) for k, v in zip(which, directions))
    return _assert_close(got, expected, atol, rtol, name, "direction")


def _assert_close(got, expected, atol, rtol, name, what) -> float:
    error = np.abs(got - expected)
    bad = error > atol + rtol * np.abs(expected)
    if bad.any():
        i = int(np.argmax(error - rtol * np.abs(expected)))
        raise GradcheckError(
            f"gradient of {name} is wrong ({int(bad.sum())} of {bad.size} {what}s fail): "
            f"{what} {i}: analytic {got[i]:.10g}, numeric {expected[i]:.10g}")
    return float(error.max()) if error.size else 0.0


def check_op(forward: Callable, backward: Callable, args: Sequence, wrt: Sequence[int],
             kwargs: dict | None = None, *, mode: str = "full", eps: float = 1e-6,
             atol: float = 1e-6, rtol: float = 1e-4, n_directions: int = 8,
             seed: int = 0) -> float:
    """Gradient-check an op pair.

    ``args`` are the forward's positional arguments; ``wrt`` lists the positions of the
    differentiable ones, in the order the backward returns their gradients. The arrays in
    ``args`` are not modified (the check works on float64 copies).

    >>> from npseg import ops
    >>> x = np.random.default_rng(0).standard_normal((2, 3))
    >>> w = np.random.default_rng(1).standard_normal((4, 3))
    >>> check_op(ops.linear_forward, ops.linear_backward, [x, w, None], wrt=[0, 1]) < 1e-6
    True
    """
    kwargs = dict(kwargs or {})
    args = list(args)
    for k in wrt:
        if not isinstance(args[k], np.ndarray) or args[k].dtype != np.float64:
            raise TypeError(f"argument {k} must be a float64 NumPy array for a gradient check")
        args[k] = args[k].copy()
    out, cache = forward(*args, **kwargs)
    y = _first(out)
    dout = np.random.default_rng(seed).standard_normal(np.shape(y))
    grads = backward(np.asarray(dout, dtype=y.dtype), cache)
    if not isinstance(grads, tuple):
        raise GradcheckError(f"backward must return a tuple, got {type(grads).__name__}")
    if len(grads) < len(wrt):
        raise GradcheckError(f"backward returned {len(grads)} gradients, expected {len(wrt)}")

    def loss(_inputs):
        return float(np.sum(dout * _first(forward(*args, **kwargs)[0])))

    return compare_gradients(loss, [args[k] for k in wrt], list(grads[:len(wrt)]), mode=mode,
                             eps=eps, atol=atol, rtol=rtol, n_directions=n_directions,
                             seed=seed + 1, names=[f"argument {k}" for k in wrt])


def gradcheck(fn: Callable, inputs: Sequence, *, mode: str = "random", eps: float = 1e-6,
              atol: float = 1e-6, rtol: float = 1e-4, n_directions: int = 8,
              seed: int = 0) -> float:
    """Gradient-check ``fn(*inputs)`` where ``inputs`` are float64 Tensors.

    The gradient of every input with ``requires_grad`` (and of nothing else) is checked against
    central differences of ``sum(g * fn(*inputs))`` for a fixed random ``g``. Works for any
    composition of npseg's functional ops, modules included (wrap the module call in ``fn``;
    its parameters are reached through ``inputs`` only if you pass them).
    """
    from npseg.autograd import Tensor

    inputs = list(inputs)
    for k, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"input {k} must be an npseg Tensor, got {type(t).__name__}")
    positions = [k for k, t in enumerate(inputs) if t.requires_grad]
    checked = [inputs[k] for k in positions]
    if not checked:
        raise ValueError("no input has requires_grad=True: nothing to check")
    for t in checked:
        t.grad = None
    out = fn(*inputs)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(dout.astype(out.data.dtype))
    analytic = [t.grad if t.grad is not None else np.zeros_like(t.data) for t in checked]

    def loss(_inputs):
        return float(np.sum(dout * fn(*inputs).data))

    return compare_gradients(loss, [t.data for t in checked], analytic, mode=mode, eps=eps,
                             atol=atol, rtol=rtol, n_directions=n_directions, seed=seed + 1,
                             names=[f"input {k}" for k in positions])
