"""Activations (ReLU, leaky ReLU, sigmoid, tanh) and dropout: gradients, properties, bad input."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npseg import ops
from npseg.gradcheck import check_op

ACTIVATIONS = {
    "relu": (ops.relu_forward, ops.relu_backward),
    "leaky_relu": (ops.leaky_relu_forward, ops.leaky_relu_backward),
    "sigmoid": (ops.sigmoid_forward, ops.sigmoid_backward),
    "tanh": (ops.tanh_forward, ops.tanh_backward),
}

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def away_from_zero(rng, shape):
    """Random values with |x| in [0.1, 3]: no element within a finite-difference step of a kink."""
    magnitude = rng.uniform(0.1, 3.0, shape)
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)


# --- gradient checks --------------------------------------------------------------------------

@given(shape=shapes, seed=seeds)
def test_relu_gradient(shape, seed):
    x = away_from_zero(np.random.default_rng(seed), shape)
    check_op(ops.relu_forward, ops.relu_backward, [x], wrt=[0])


@given(shape=shapes, seed=seeds, slope=st.sampled_from([0.0, 0.01, 0.2, 1.5, -0.3]))
def test_leaky_relu_gradient(shape, seed, slope):
    x = away_from_zero(np.random.default_rng(seed), shape)
    check_op(ops.leaky_relu_forward, ops.leaky_relu_backward, [x], wrt=[0],
             kwargs={"negative_slope": slope})


@given(shape=shapes, seed=seeds, scale=st.sampled_from([0.5, 3.0, 20.0]))
def test_sigmoid_gradient(shape, seed, scale):
    x = scale * np.random.default_rng(seed).standard_normal(shape)
    check_op(ops.sigmoid_forward, ops.sigmoid_backward, [x], wrt=[0])


@given(shape=shapes, seed=seeds, scale=st.sampled_from([0.5, 3.0]))
def test_tanh_gradient(shape, seed, scale):
    x = scale * np.random.default_rng(seed).standard_normal(shape)
    check_op(ops.tanh_forward, ops.tanh_backward, [x], wrt=[0])


# --- properties -------------------------------------------------------------------------------

def test_relu_and_leaky_relu_values():
    x = np.array([-2.0, -0.5, 0.0, 0.25, 3.0])
    assert np.array_equal(ops.relu_forward(x)[0], [0.0, 0.0, 0.0, 0.25, 3.0])
    assert np.allclose(ops.leaky_relu_forward(x, 0.1)[0], [-0.2, -0.05, 0.0, 0.25, 3.0])
    # The derivative at the kink x = 0 is the x <= 0 branch's (as in PyTorch).
    dout = np.ones_like(x)
    assert np.array_equal(ops.relu_backward(dout, ops.relu_forward(x)[1])[0], [0, 0, 0, 1, 1])
    dx = ops.leaky_relu_backward(dout, ops.leaky_relu_forward(x, 0.1)[1])[0]
    assert np.allclose(dx, [0.1, 0.1, 0.1, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_and_leaky_relu_of_infinities_and_nan(dtype):
    """As in PyTorch: relu(-inf) = 0 (not 0 * -inf), NaN stays NaN."""
    x = np.array([-np.inf, np.inf, np.nan, -1.0, 2.0], dtype=dtype)
    np.testing.assert_array_equal(ops.relu_forward(x)[0], [0, np.inf, np.nan, 0, 2])
    np.testing.assert_array_equal(ops.leaky_relu_forward(x, 0.5)[0],
                                  [-np.inf, np.inf, np.nan, -0.5, 2])


@given(seed=seeds)
def test_sigmoid_matches_the_textbook_formula_and_is_symmetric(seed):
    x = 5 * np.random.default_rng(seed).standard_normal(50)
    y = ops.sigmoid_forward(x)[0]
    assert np.allclose(y, 1 / (1 + np.exp(-x)), rtol=1e-13, atol=0)
    assert np.allclose(ops.sigmoid_forward(-x)[0], 1 - y, rtol=0, atol=1e-15)
    # tanh(x) = 2 sigmoid(2x) - 1
    assert np.allclose(ops.tanh_forward(x)[0], 2 * ops.sigmoid_forward(2 * x)[0] - 1, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_of_huge_inputs_is_exact_and_warning_free(dtype):
    x = np.array([-1e30, -1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4, 1e30], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y, cache = ops.sigmoid_forward(x)
        (dx,) = ops.sigmoid_backward(np.ones_like(x), cache)
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0] == 0 and y[-1] == 1 and y[4] == 0.5
    assert np.all(np.diff(y) >= 0)
    assert dx[0] == 0 and dx[-1] == 0 and dx[4] == 0.25


# --- dtype, mutation, bad input ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_keeps_dtype_and_does_not_mutate(name, dtype):
    forward, backward = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    dout = rng.standard_normal((2, 3, 4)).astype(dtype)
    x0, dout0 = x.copy(), dout.copy()
    y, cache = forward(x)
    (dx,) = backward(dout, cache)
    assert y.dtype == dtype and dx.dtype == dtype
    assert y.shape == x.shape and dx.shape == x.shape
    assert np.array_equal(x, x0) and np.array_equal(dout, dout0)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_bad_input(name):
    forward, backward = ACTIVATIONS[name]
    with pytest.raises(TypeError, match="x"):
        forward(np.arange(4))                       # integers
    with pytest.raises(TypeError, match="x"):
        forward([0.5, 1.0])                          # not an array
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    _, cache = forward(x)
    with pytest.raises(ValueError, match="dout"):
        backward(np.ones((3, 2)), cache)
    with pytest.raises(TypeError, match="dout"):
        backward(np.ones((2, 3), np.float32), cache)


def test_leaky_relu_bad_slope():
    with pytest.raises(TypeError, match="negative_slope"):
        ops.leaky_relu_forward(np.ones(3), "0.1")
    with pytest.raises(ValueError, match="negative_slope"):
        ops.leaky_relu_forward(np.ones(3), float("nan"))


# --- dropout ----------------------------------------------------------------------------------

@given(shape=shapes, seed=seeds, p=st.sampled_from([0.1, 0.5, 0.8]))
def test_dropout_gradient(shape, seed, p):
    x = np.random.default_rng(seed).standard_normal(shape)

    def forward(x):  # the same mask on every call: a fresh generator with one seed
        return ops.dropout_forward(x, p, True, np.random.default_rng(seed + 1))

    check_op(forward, ops.dropout_backward, [x], wrt=[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_keeps_the_expectation(dtype, p):
    x = np.full(200_000, 1.5, dtype=dtype)
    y, cache = ops.dropout_forward(x, p, True, np.random.default_rng(1))
    assert y.dtype == dtype
    kept = y != 0
    # Kept units are scaled by 1 / (1 - p); about a fraction p is dropped; E[y] = x.
    assert np.allclose(y[kept], 1.5 / (1 - p), rtol=1e-6)
    assert abs(1 - kept.mean() - p) < 0.01
    assert abs(y.mean() - 1.5) < 0.02
    (dx,) = ops.dropout_backward(np.ones_like(x), cache)
    assert dx.dtype == dtype
    assert np.array_equal(dx != 0, kept)
    assert np.allclose(dx[kept], 1 / (1 - p), rtol=1e-6)


def test_dropout_draw_is_the_documented_one():
    """keep = rng.random(x.shape) >= p, one draw per call: what npseg_gpu reproduces."""
    x = np.random.default_rng(5).standard_normal((3, 4, 5))
    y, _ = ops.dropout_forward(x, 0.3, True, np.random.default_rng(7))
    keep = np.random.default_rng(7).random(x.shape) >= 0.3
    assert np.array_equal(y != 0, keep)
    assert np.allclose(y[keep], x[keep] / 0.7)


@pytest.mark.parametrize("training, p", [(False, 0.5), (False, 0.0), (True, 0.0)])
def test_dropout_identity_in_eval_or_p0(training, p):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    y, cache = ops.dropout_forward(x, p, training, rng)
    assert rng.bit_generator.state == state            # nothing drawn
    assert np.array_equal(y, x) and y is not x and y.dtype == x.dtype
    dout = np.ones_like(x)
    (dx,) = ops.dropout_backward(dout, cache)
    assert np.array_equal(dx, dout) and dx is not dout


def test_dropout_p1_gives_zeros():
    x = np.random.default_rng(0).standard_normal((4, 5))
    y, cache = ops.dropout_forward(x, 1.0, True, np.random.default_rng(0))
    assert np.array_equal(y, np.zeros_like(x))
    assert np.array_equal(ops.dropout_backward(np.ones_like(x), cache)[0], np.zeros_like(x))


def test_dropout_does_not_mutate():
    x = np.random.default_rng(0).standard_normal((4, 5))
    dout = np.random.default_rng(1).standard_normal((4, 5))
    x0, dout0 = x.copy(), dout.copy()
    _, cache = ops.dropout_forward(x, 0.5, True, np.random.default_rng(0))
    ops.dropout_backward(dout, cache)
    assert np.array_equal(x, x0) and np.array_equal(dout, dout0)


def test_dropout_bad_input():
    x = np.ones((2, 3))
    rng = np.random.default_rng(0)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p"):
            ops.dropout_forward(x, p, True, rng)
    with pytest.raises(TypeError, match="p"):
        ops.dropout_forward(x, None, True, rng)
    for bad_rng in (None, 0, np.random, "rng"):
        with pytest.raises(TypeError, match="rng"):
            ops.dropout_forward(x, 0.5, True, bad_rng)
    with pytest.raises(TypeError, match="rng"):                      # checked in eval too
        ops.dropout_forward(x, 0.5, False, None)
    with pytest.raises(TypeError, match="training"):
        ops.dropout_forward(x, 0.5, "yes", rng)
    with pytest.raises(TypeError, match="x"):
        ops.dropout_forward(np.ones((2, 3), np.int64), 0.5, True, rng)
    _, cache = ops.dropout_forward(x, 0.5, True, rng)
    with pytest.raises(ValueError, match="dout"):
        ops.dropout_backward(np.ones((3, 2)), cache)


# --- PyTorch ----------------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_match_torch(name, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    forward, backward = ACTIVATIONS[name]
    rng = np.random.default_rng(0)
    x = (4 * rng.standard_normal((3, 4, 5))).astype(dtype)
    x.flat[:3] = [0.0, 60.0, -60.0]
    dout = rng.standard_normal(x.shape).astype(dtype)
    kwargs = {"negative_slope": 0.07} if name == "leaky_relu" else {}
    torch_fn = {"relu": F.relu, "leaky_relu": F.leaky_relu, "sigmoid": torch.sigmoid,
                "tanh": torch.tanh}[name]
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(xt, **kwargs)
    yt.backward(torch.tensor(dout))
    y, cache = forward(x, **kwargs)
    (dx,) = backward(dout, cache)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
