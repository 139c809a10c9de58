"""Batch normalization: gradients (train and eval, 2-D/3-D/4-D), statistics, running stats."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npseg import ops
from npseg.gradcheck import check_op

seeds = st.integers(0, 2**32 - 1)


@st.composite
def bn_shapes(draw, min_values_per_channel=2):
    """(N, C), (N, C, L) or (N, C, H, W) with at least ``min_values_per_channel`` per channel."""
    ndim = draw(st.sampled_from([2, 3, 4]))
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 3))) + tuple(
        draw(st.integers(1, 3)) for _ in range(ndim - 2))
    values_per_channel = shape[0] * int(np.prod(shape[2:]))
    if values_per_channel < min_values_per_channel:
        shape = (shape[0] + min_values_per_channel,) + shape[1:]
    return shape


def make_inputs(shape, seed, dtype=np.float64):
    """x with well-separated values (a shuffled grid plus a per-channel offset), and parameters."""
    rng = np.random.default_rng(seed)
    channels = shape[1]
    per_channel = (1, channels) + (1,) * (len(shape) - 2)
    x = rng.permutation(np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape)
    x = x + rng.normal(0, 3, channels).reshape(per_channel)
    gamma = rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels)
    beta = rng.standard_normal(channels)
    running_mean = rng.standard_normal(channels)
    running_var = rng.uniform(0.5, 2.0, channels)
    return [a.astype(dtype) for a in (x, gamma, beta, running_mean, running_var)]


def channel_view(x):
    """(C, M): the M values of each channel in a row (an independent way to get the stats)."""
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


# --- gradient checks --------------------------------------------------------------------------

@given(shape=bn_shapes(), seed=seeds, momentum=st.sampled_from([0.1, 0.5]))
def test_batch_norm_gradient_training(shape, seed, momentum):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, seed)
    check_op(ops.batch_norm_forward, ops.batch_norm_backward,
             [x, gamma, beta, running_mean, running_var, True], wrt=[0, 1, 2],
             kwargs={"momentum": momentum})


@given(shape=bn_shapes(min_values_per_channel=1), seed=seeds, eps=st.sampled_from([1e-5, 0.1]))
def test_batch_norm_gradient_eval(shape, seed, eps):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, seed)
    check_op(ops.batch_norm_forward, ops.batch_norm_backward,
             [x, gamma, beta, running_mean, running_var, False], wrt=[0, 1, 2],
             kwargs={"eps": eps})


# --- properties -------------------------------------------------------------------------------

@given(shape=bn_shapes(min_values_per_channel=4), seed=seeds)
def test_training_output_has_zero_mean_and_unit_variance(shape, seed):
    x, _, _, running_mean, running_var = make_inputs(shape, seed)
    x = 10 * x                                         # variance >> eps
    ones, zeros = np.ones(shape[1]), np.zeros(shape[1])
    y, _ = ops.batch_norm_forward(x, ones, zeros, running_mean, running_var, True, eps=1e-12)
    rows = channel_view(y)
    assert np.allclose(rows.mean(axis=1), 0, atol=1e-10)
    assert np.allclose(rows.var(axis=1), 1, atol=1e-8)


@given(shape=bn_shapes(), seed=seeds, momentum=st.sampled_from([0.0, 0.1, 0.7, 1.0]))
def test_running_stats_follow_the_batch_with_unbiased_variance(shape, seed, momentum):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, seed)
    old_mean, old_var = running_mean.copy(), running_var.copy()
    ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, True, momentum=momentum)
    rows = channel_view(x)
    assert np.allclose(running_mean, (1 - momentum) * old_mean + momentum * rows.mean(axis=1))
    assert np.allclose(running_var,
                       (1 - momentum) * old_var + momentum * rows.var(axis=1, ddof=1))


@given(shape=bn_shapes(min_values_per_channel=1), seed=seeds)
def test_eval_uses_the_running_stats_and_leaves_them_alone(shape, seed):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, seed)
    old_mean, old_var = running_mean.copy(), running_var.copy()
    y, _ = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, False, eps=1e-3)
    expected = (channel_view(x) - old_mean[:, None]) / np.sqrt(old_var[:, None] + 1e-3)
    expected = gamma[:, None] * expected + beta[:, None]
    assert np.allclose(channel_view(y), expected)
    assert np.array_equal(running_mean, old_mean) and np.array_equal(running_var, old_var)


def test_training_normalises_with_the_batch_not_the_running_stats():
    x, gamma, beta, running_mean, running_var = make_inputs((5, 3, 2), 0)
    y1, _ = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, True)
    y2, _ = ops.batch_norm_forward(x, gamma, beta, running_mean + 100, running_var * 50, True)
    assert np.allclose(y1, y2)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_one_value_per_channel_in_training_is_an_error(shape):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, 0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, True)
    y, _ = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, False)  # eval: fine
    assert y.shape == shape


def test_empty_batch_leaves_the_running_stats_alone():
    _, gamma, beta, running_mean, running_var = make_inputs((2, 3, 4), 0)
    old_mean, old_var = running_mean.copy(), running_var.copy()
    x = np.zeros((0, 3, 4))
    y, cache = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, True)
    assert y.shape == (0, 3, 4)
    assert np.array_equal(running_mean, old_mean) and np.array_equal(running_var, old_var)
    dx, dgamma, dbeta = ops.batch_norm_backward(np.zeros((0, 3, 4)), cache)
    assert dx.shape == (0, 3, 4)
    assert np.array_equal(dgamma, np.zeros(3)) and np.array_equal(dbeta, np.zeros(3))


# --- dtype, mutation, bad input ---------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)])
def test_float32_in_float32_out(training, shape):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, 1, np.float32)
    y, cache = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, training)
    grads = ops.batch_norm_backward(np.ones_like(y), cache)
    assert y.dtype == np.float32 and running_mean.dtype == np.float32
    assert running_var.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    assert [g.shape for g in grads] == [x.shape, (3,), (3,)]


@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_relu"])
@pytest.mark.parametrize("training", [True, False])
def test_only_the_running_stats_are_mutated(training, op):
    forward, backward = getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")
    x, gamma, beta, running_mean, running_var = make_inputs((4, 3, 2, 2), 2)
    dout = np.random.default_rng(0).standard_normal(x.shape)
    before = [a.copy() for a in (x, gamma, beta, running_mean, running_var, dout)]
    _, cache = forward(x, gamma, beta, running_mean, running_var, training)
    backward(dout, cache)
    after = (x, gamma, beta, running_mean, running_var, dout)
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert changed == [False, False, False, training, training, False]


def test_backward_does_not_depend_on_later_parameter_updates():
    x, gamma, beta, running_mean, running_var = make_inputs((4, 3), 3)
    dout = np.ones_like(x)
    y, cache = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, True)
    expected = ops.batch_norm_backward(dout, cache)
    _, cache = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, True)
    gamma *= 3                                         # an optimizer step between the passes
    for a, b in zip(ops.batch_norm_backward(dout, cache), expected):
        assert np.array_equal(a, b)


def test_batch_norm_bad_input():
    x, gamma, beta, running_mean, running_var = make_inputs((4, 3, 2), 0)
    args = dict(x=x, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var,
                training=True)

    def call(**changes):
        return ops.batch_norm_forward(**{**args, **changes})

    with pytest.raises(TypeError, match="x"):
        call(x=x.astype(np.int64))
    with pytest.raises(ValueError, match="x"):
        call(x=np.ones(3))
    with pytest.raises(ValueError, match="x"):
        call(x=np.ones((2, 3, 2, 2, 2)))
    with pytest.raises(ValueError, match="gamma"):
        call(gamma=np.ones(4))
    with pytest.raises(ValueError, match="beta"):
        call(beta=np.ones((3, 1)))
    with pytest.raises(TypeError, match="running_mean"):
        call(running_mean=[0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="running_var"):
        call(running_var=running_var.astype(np.float32))
    with pytest.raises(TypeError, match="gamma"):
        call(gamma=None)
    with pytest.raises(TypeError, match="training"):
        call(training=1)
    frozen = running_var.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="running_var"):
        call(running_var=frozen)
    call(running_var=frozen, training=False)          # eval only reads it
    with pytest.raises(ValueError, match="momentum"):
        call(momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        call(eps=0.0)
    _, cache = call()
    with pytest.raises(ValueError, match="dout"):
        ops.batch_norm_backward(np.ones((4, 3)), cache)
    with pytest.raises(TypeError, match="dout"):
        ops.batch_norm_backward(np.ones((4, 3, 2), np.float32), cache)


# --- PyTorch ----------------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_matches_torch(training, shape, dtype):
    torch = pytest.importorskip("torch")
    x, gamma, beta, running_mean, running_var = make_inputs(shape, 4, dtype)
    dout = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    rm_t, rv_t = torch.tensor(running_mean), torch.tensor(running_var)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    yt = torch.nn.functional.batch_norm(xt, rm_t, rv_t, gt, bt, training=training, momentum=0.3,
                                        eps=1e-4)
    yt.backward(torch.tensor(dout))
    y, cache = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, training,
                                      momentum=0.3, eps=1e-4)
    grads = ops.batch_norm_backward(dout, cache)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(running_mean, rm_t.numpy(), **tol)
    np.testing.assert_allclose(running_var, rv_t.numpy(), **tol)
    for ours, theirs in zip(grads, (xt.grad, gt.grad, bt.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), **tol)


# --- batch norm + ReLU as one op ----------------------------------------------------------------

def _away_from_the_kink(x, gamma, beta, running_mean, running_var, training):
    """True when no batch-norm output lies within 1e-3 of ReLU's kink at 0 (central differences
    with a step of 1e-6 would straddle it)."""
    y, _ = ops.batch_norm_forward(x, gamma, beta, running_mean.copy(), running_var.copy(),
                                  training)
    return not (np.abs(y) < 1e-3).any()


@given(shape=bn_shapes(), seed=seeds, training=st.booleans())
def test_batch_norm_relu_gradient(shape, seed, training):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, seed)
    assume(_away_from_the_kink(x, gamma, beta, running_mean, running_var, training))
    check_op(ops.batch_norm_relu_forward, ops.batch_norm_relu_backward,
             [x, gamma, beta, running_mean, running_var, training], wrt=[0, 1, 2])


@given(shape=bn_shapes(), seed=seeds, training=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_batch_norm_relu_gives_the_numbers_of_batch_norm_then_relu(shape, seed, training, dtype):
    x, gamma, beta, running_mean, running_var = make_inputs(shape, seed, dtype)
    mean_2, var_2 = running_mean.copy(), running_var.copy()
    dout = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    y, bn_cache = ops.batch_norm_forward(x, gamma, beta, running_mean, running_var, training)
    z, relu_cache = ops.relu_forward(y)
    expected = ops.batch_norm_backward(ops.relu_backward(dout, relu_cache)[0], bn_cache)
    z_fused, cache = ops.batch_norm_relu_forward(x, gamma, beta, mean_2, var_2, training)
    assert z_fused.dtype == dtype and np.array_equal(z_fused, z)       # bit for bit
    assert np.array_equal(mean_2, running_mean) and np.array_equal(var_2, running_var)
    for got, want in zip(ops.batch_norm_relu_backward(dout, cache), expected, strict=True):
        assert got.dtype == dtype and np.array_equal(got, want)


def test_batch_norm_relu_bad_input():
    x, gamma, beta, running_mean, running_var = make_inputs((4, 3, 2), 0)
    with pytest.raises(TypeError, match="x"):
        ops.batch_norm_relu_forward(x.astype(np.int64), gamma, beta, running_mean, running_var,
                                    True)
    with pytest.raises(ValueError, match="beta"):
        ops.batch_norm_relu_forward(x, gamma, beta[:2], running_mean, running_var, True)
    _, cache = ops.batch_norm_relu_forward(x, gamma, beta, running_mean, running_var, True)
    with pytest.raises(ValueError, match="dout"):
        ops.batch_norm_relu_backward(np.ones((4, 3)), cache)
    with pytest.raises(TypeError, match="dout"):
        ops.batch_norm_relu_backward(np.ones((4, 3, 2), dtype=np.float32), cache)
