"""linear: gradients, formula, dtypes, bad input, PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npseg import ops
from npseg.gradcheck import check_op


@st.composite
def linear_case(draw):
    lead = tuple(draw(st.lists(st.integers(0, 3), min_size=0, max_size=3)))
    n_in, n_out = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (n_in,))
    w = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out) if bias else None
    return x, w, b, seed


@given(linear_case())
def test_linear_gradients(case):
    x, w, b, seed = case
    wrt = [0, 1, 2] if b is not None else [0, 1]
    check_op(ops.linear_forward, ops.linear_backward, [x, w, b], wrt=wrt, mode="full", seed=seed)
    y, cache = ops.linear_forward(x, w, b)
    dx, dw, db = ops.linear_backward(np.ones_like(y), cache)
    assert dx.shape == x.shape and dw.shape == w.shape and (db is None) == (b is None)


@given(linear_case())
def test_linear_formula(case):
    x, w, b, _ = case
    y, _ = ops.linear_forward(x, w, b)
    expected = np.einsum("...k,ok->...o", x, w) + (0 if b is None else b)
    assert y.shape == x.shape[:-1] + (w.shape[0],)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_linear_zero_rows_give_zero_gradients():
    x, w = np.zeros((0, 4)), np.ones((3, 4))
    y, cache = ops.linear_forward(x, w, np.ones(3))
    assert y.shape == (0, 3)
    dx, dw, db = ops.linear_backward(y, cache)
    assert dx.shape == (0, 4)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


def test_linear_float32_and_no_mutation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 7)).astype(np.float32)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    copies = [a.copy() for a in (x, w, b)]
    y, cache = ops.linear_forward(x, w, b)
    assert y.dtype == np.float32
    dout = np.ones_like(y)
    grads = ops.linear_backward(dout, cache)
    assert all(g.dtype == np.float32 for g in grads)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(dout, 1)
    y64, _ = ops.linear_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, error, match", [
    ((np.ones((2, 3)), np.ones((4, 2)), None), ValueError, "w must have in = 3"),
    ((np.ones((2, 3)), np.ones(3), None), ValueError, "w must be 2-D"),
    ((np.ones((2, 3)), np.ones((4, 3)), np.ones(3)), ValueError, "b must have shape"),
    ((np.ones((2, 3)), np.ones((4, 3), np.float32), None), TypeError, "w must have the dtype"),
    ((np.ones((2, 3)), np.ones((4, 3)), np.ones(4, np.float32)), TypeError,
     "b must have the dtype"),
    (([[1.0, 2.0]], np.ones((4, 2)), None), TypeError, "x must be an array"),
    ((np.ones((2, 3), int), np.ones((4, 3)), None), TypeError, "x must be float32"),
    ((np.float64(1.0), np.ones((4, 1)), None), ValueError, "x must have at least one"),
])
def test_linear_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        ops.linear_forward(*args)


def test_linear_backward_bad_dout():
    y, cache = ops.linear_forward(np.ones((2, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="dout must have shape"):
        ops.linear_backward(np.ones((2, 3)), cache)
    with pytest.raises(TypeError, match="dout must have the dtype"):
        ops.linear_backward(np.ones((2, 4), np.float32), cache)


@pytest.mark.torch
@given(linear_case())
def test_linear_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, seed = case
    y, cache = ops.linear_forward(x, w, b)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    ref = torch.nn.functional.linear(xt, wt, bt)
    np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(seed).standard_normal(y.shape)
    ref.backward(torch.tensor(dout))
    dx, dw, db = ops.linear_backward(dout, cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    if b is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-12, atol=1e-12)
