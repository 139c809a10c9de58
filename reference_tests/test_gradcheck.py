"""npseg.gradcheck itself: it passes true gradients and catches wrong ones, naming the input."""

import numpy as np
import pytest

from npseg.gradcheck import GradcheckError, check_op, compare_gradients


def _square_forward(x, w):
    return x * x * w, (x, w)


def _square_backward(dout, cache):
    x, w = cache
    return 2 * x * w * dout, x * x * dout


def _wrong_w_backward(dout, cache):
    dx, dw = _square_backward(dout, cache)
    return dx, dw * 1.01  # 1 % off


@pytest.mark.parametrize("mode", ["full", "random"])
def test_true_gradients_pass(mode):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert check_op(_square_forward, _square_backward, [x, w], wrt=[0, 1], mode=mode) < 1e-6


@pytest.mark.parametrize("mode", ["full", "random"])
def test_a_wrong_gradient_is_caught_and_named(mode):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    with pytest.raises(GradcheckError, match="argument 1"):
        check_op(_square_forward, _wrong_w_backward, [x, w], wrt=[0, 1], mode=mode)


def test_inputs_are_restored_and_float32_is_refused():
    x = np.random.default_rng(0).standard_normal(5)
    before = x.copy()
    compare_gradients(lambda xs: float(np.sum(xs[0] ** 2)), [x], [2 * x], mode="random")
    np.testing.assert_array_equal(x, before)
    with pytest.raises(TypeError, match="float64"):
        compare_gradients(lambda xs: 0.0, [x.astype(np.float32)], [x], mode="full")
    with pytest.raises(ValueError, match="mode"):
        compare_gradients(lambda xs: 0.0, [x], [x], mode="fast")
    with pytest.raises(GradcheckError, match="shape"):
        compare_gradients(lambda xs: 0.0, [x], [x[:2]], mode="full")
