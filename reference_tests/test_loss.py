"""Losses: cross entropy, binary cross entropy with logits, smooth L1."""

import contextlib
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import log_softmax

from npseg import ops
from npseg.gradcheck import check_op

seeds = st.integers(0, 2**32 - 1)
reductions = st.sampled_from(["none", "sum", "mean"])


@contextlib.contextmanager
def no_warnings():
    """A context in which any warning (overflow, invalid value, ...) is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- cross entropy: inputs ---------------------------------------------------------------------

@st.composite
def ce_inputs(draw):
    """logits (N, C, d...), target (N, d...) with some ignored elements, weights, options."""
    n, classes = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    rng = np.random.default_rng(draw(seeds))
    ignore_index = draw(st.sampled_from([-100, 255, 0]))
    logits = 2 * rng.standard_normal((n, classes) + spatial)
    target = rng.integers(0, classes, (n,) + spatial)
    if draw(st.booleans()):
        target[rng.random(target.shape) < 0.3] = ignore_index
    weight = rng.uniform(0.2, 2.0, classes) if draw(st.booleans()) else None
    pixel_weight = rng.uniform(0.1, 3.0, target.shape) if draw(st.booleans()) else None
    reduction = draw(reductions)
    return logits, target, dict(weight=weight, ignore_index=ignore_index, reduction=reduction,
                                pixel_weight=pixel_weight)


def element_weights(target, weight, ignore_index, pixel_weight):
    """w_i = weight[t_i] * pixel_weight_i, 0 where ignored (computed here, independently)."""
    counted = target != ignore_index
    safe = np.where(counted, target, 0)
    w = weight[safe] if weight is not None else np.ones(target.shape)
    if pixel_weight is not None:
        w = w * pixel_weight
    return np.where(counted, w, 0.0)


def neg_log_softmax_at_target(logits, target, ignore_index):
    """-log softmax(logits)[t] per element with scipy (0 where ignored)."""
    counted = target != ignore_index
    safe = np.where(counted, target, 0)
    picked = np.take_along_axis(log_softmax(logits, axis=1), safe[:, None], axis=1)[:, 0]
    return np.where(counted, -picked, 0.0)


# --- cross entropy: gradients and properties ----------------------------------------------------

@given(case=ce_inputs())
def test_cross_entropy_gradient(case):
    logits, target, kwargs = case
    if kwargs["reduction"] == "mean":
        assume((element_weights(target, kwargs["weight"], kwargs["ignore_index"],
                                kwargs["pixel_weight"]) > 0).any())
    check_op(ops.cross_entropy_forward, ops.cross_entropy_backward, [logits, target], wrt=[0],
             kwargs=kwargs)


@given(case=ce_inputs())
def test_cross_entropy_is_weighted_negative_log_softmax(case):
    logits, target, kwargs = case
    w = element_weights(target, kwargs["weight"], kwargs["ignore_index"], kwargs["pixel_weight"])
    per_element = w * neg_log_softmax_at_target(logits, target, kwargs["ignore_index"])
    loss, _ = ops.cross_entropy_forward(logits, target, **kwargs)
    expected = {"none": per_element, "sum": per_element.sum(),
                "mean": per_element.sum() / w.sum() if w.sum() > 0 else np.nan}
    assert loss.shape == (target.shape if kwargs["reduction"] == "none" else ())
    np.testing.assert_allclose(loss, expected[kwargs["reduction"]], rtol=1e-12, atol=1e-12)


@given(case=ce_inputs())
def test_cross_entropy_gradient_sums_to_zero_over_classes_and_skips_ignored(case):
    logits, target, kwargs = case
    loss, cache = ops.cross_entropy_forward(logits, target, **kwargs)
    (dlogits,) = ops.cross_entropy_backward(np.ones_like(loss), cache)
    if not np.isfinite(loss).all():
        return                                          # "mean" of nothing: checked elsewhere
    assert np.allclose(dlogits.sum(axis=1), 0, atol=1e-12)
    ignored = target == kwargs["ignore_index"]
    assert np.all(np.moveaxis(dlogits, 1, -1)[ignored] == 0)


@pytest.mark.parametrize("reduction, factor", [("mean", 1.0), ("sum", 2.5)])
def test_uniform_class_weights_change_nothing_but_the_sum(reduction, factor):
    rng = np.random.default_rng(0)
    logits, target = rng.standard_normal((3, 4, 5)), rng.integers(0, 4, (3, 5))
    plain, cache = ops.cross_entropy_forward(logits, target, reduction=reduction)
    weighted, wcache = ops.cross_entropy_forward(logits, target, weight=np.full(4, 2.5),
                                                 reduction=reduction)
    assert np.isclose(weighted, factor * plain, rtol=1e-13)
    g, wg = (ops.cross_entropy_backward(np.ones(()), c)[0] for c in (cache, wcache))
    assert np.allclose(wg, factor * g, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_of_huge_logits_is_finite(dtype):
    logits = np.array([[1e30, -1e30, 0.0], [-1e30, 1e30, 1e30]], dtype=dtype)
    target = np.array([0, 0])
    with no_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        per_element, cache = ops.cross_entropy_forward(logits, target, reduction="none")
        (dlogits,) = ops.cross_entropy_backward(np.ones(2, dtype), cache)
    assert per_element.dtype == dtype and dlogits.dtype == dtype
    # Row 0: the target holds the max, loss 0. Row 1: loss = (1e30 + log 2) - (-1e30) = 2e30.
    np.testing.assert_allclose(per_element, [0.0, 2e30], rtol=1e-6)
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [-1, 0.5, 0.5]], atol=1e-7)


def test_cross_entropy_ignore_index_and_all_ignored():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4))
    target = np.array([[0, 255, 2, 1], [255, 255, 1, 0]], dtype=np.uint8)
    loss, _ = ops.cross_entropy_forward(logits, target, ignore_index=255)
    kept = target != 255
    expected = neg_log_softmax_at_target(logits, target.astype(np.int64), 255)[kept].mean()
    assert np.isclose(loss, expected, rtol=1e-13)
    # Everything ignored: "mean" is 0/0 = nan (PyTorch), its gradient 0; "sum" is 0. No warnings.
    everything = np.full((2, 4), 255, dtype=np.uint8)
    with no_warnings():
        mean, cache = ops.cross_entropy_forward(logits, everything, ignore_index=255)
        (dlogits,) = ops.cross_entropy_backward(np.ones(()), cache)
        total, _ = ops.cross_entropy_forward(logits, everything, ignore_index=255,
                                             reduction="sum")
    assert np.isnan(mean) and np.array_equal(dlogits, np.zeros_like(logits)) and total == 0


def test_cross_entropy_ignored_elements_may_have_infinite_logits():
    logits = np.array([[-np.inf, 0.0, 1.0], [2.0, -np.inf, 0.5]])   # a masked-out class
    target = np.array([-100, 0])
    with no_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, cache = ops.cross_entropy_forward(logits, target, reduction="none")
        (dlogits,) = ops.cross_entropy_backward(np.ones(2), cache)
    expected = neg_log_softmax_at_target(logits[1:], target[1:], -100)[0]
    assert loss[0] == 0 and np.isclose(loss[1], expected)
    assert np.array_equal(dlogits[0], [0, 0, 0]) and np.all(np.isfinite(dlogits))


def test_cross_entropy_accepts_any_integer_target_dtype():
    rng = np.random.default_rng(2)
    logits, target = rng.standard_normal((2, 3, 5)), rng.integers(0, 3, (2, 5))
    expected, _ = ops.cross_entropy_forward(logits, target)
    for dtype in (np.uint8, np.int32, np.int16):
        loss, _ = ops.cross_entropy_forward(logits, target.astype(dtype))
        assert loss == expected


def test_cross_entropy_empty_batch():
    logits, target = np.zeros((0, 3, 2)), np.zeros((0, 2), np.int64)
    with no_warnings():
        mean, cache = ops.cross_entropy_forward(logits, target)
        total, _ = ops.cross_entropy_forward(logits, target, reduction="sum")
    assert np.isnan(mean) and total == 0
    assert ops.cross_entropy_backward(np.ones(()), cache)[0].shape == (0, 3, 2)


# --- binary cross entropy with logits ---------------------------------------------------------

@st.composite
def bce_inputs(draw):
    shape = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 4))))
    rng = np.random.default_rng(draw(seeds))
    logits = 3 * rng.standard_normal(shape)
    target = rng.random(shape)
    weight = None
    if draw(st.booleans()):                   # a shape that broadcasts to logits' shape
        keep = draw(st.integers(0, len(shape)))
        weight_shape = tuple(s if draw(st.booleans()) else 1 for s in shape[len(shape) - keep:])
        weight = rng.uniform(0.1, 2.0, weight_shape)
    return logits, target, dict(weight=weight, reduction=draw(reductions))


@given(case=bce_inputs())
def test_bce_gradient(case):
    logits, target, kwargs = case
    check_op(ops.binary_cross_entropy_with_logits_forward,
             ops.binary_cross_entropy_with_logits_backward, [logits, target], wrt=[0],
             kwargs=kwargs)


@given(case=bce_inputs())
def test_bce_is_the_textbook_formula_with_torch_reductions(case):
    logits, target, kwargs = case
    s = 1 / (1 + np.exp(-logits))
    per_element = -(target * np.log(s) + (1 - target) * np.log(1 - s))
    if kwargs["weight"] is not None:
        per_element = per_element * kwargs["weight"]
    # "mean" divides by the number of elements whatever the weights.
    expected = {"none": per_element, "sum": per_element.sum(),
                "mean": per_element.sum() / per_element.size}[kwargs["reduction"]]
    loss, _ = ops.binary_cross_entropy_with_logits_forward(logits, target, **kwargs)
    np.testing.assert_allclose(loss, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_of_huge_logits_is_finite(dtype):
    logits = np.array([1e30, 1e30, -1e30, -1e30, 1e30], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0, 0.5], dtype=dtype)
    with no_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, cache = ops.binary_cross_entropy_with_logits_forward(logits, target,
                                                                   reduction="none")
        (dlogits,) = ops.binary_cross_entropy_with_logits_backward(np.ones(5, dtype), cache)
    np.testing.assert_allclose(loss, [0, 1e30, 0, 1e30, 0.5e30], rtol=1e-6)
    np.testing.assert_allclose(dlogits, [0, 1, 0, -1, 0.5])


# --- smooth L1 --------------------------------------------------------------------------------

@st.composite
def smooth_l1_inputs(draw):
    """pred = target + d with every |d| at least 0.05 away from beta and from 0 (the kinks)."""
    shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
    beta = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    rng = np.random.default_rng(draw(seeds))
    inside = rng.uniform(0.05, max(beta - 0.05, 0.05), shape)
    outside = rng.uniform(beta + 0.05, beta + 3.0, shape)
    magnitude = np.where((rng.random(shape) < 0.5) & (beta > 0.1), inside, outside)
    d = np.where(rng.random(shape) < 0.5, -magnitude, magnitude)
    target = rng.standard_normal(shape)
    return target + d, target, dict(beta=beta, reduction=draw(reductions))


@given(case=smooth_l1_inputs())
def test_smooth_l1_gradient(case):
    pred, target, kwargs = case
    check_op(ops.smooth_l1_loss_forward, ops.smooth_l1_loss_backward, [pred, target], wrt=[0],
             kwargs=kwargs)


@given(case=smooth_l1_inputs())
def test_smooth_l1_is_huber_divided_by_beta(case):
    pred, target, kwargs = case
    beta = kwargs["beta"]
    d = np.abs(pred - target)
    if beta == 0:
        expected = d                                        # exactly L1
    else:
        huber = np.where(d <= beta, 0.5 * d**2, beta * (d - 0.5 * beta))
        expected = huber / beta
    expected = {"none": expected, "sum": expected.sum(),
                "mean": expected.mean()}[kwargs["reduction"]]
    loss, _ = ops.smooth_l1_loss_forward(pred, target, **kwargs)
    np.testing.assert_allclose(loss, expected, rtol=1e-12, atol=1e-12)


def test_smooth_l1_beta_zero_is_exactly_l1_including_its_gradient():
    pred = np.array([-2.0, -0.5, 0.0, 0.25, 3.0])
    target = np.zeros(5)
    loss, cache = ops.smooth_l1_loss_forward(pred, target, beta=0.0, reduction="none")
    assert np.array_equal(loss, np.abs(pred))
    (dpred,) = ops.smooth_l1_loss_backward(np.ones(5), cache)
    assert np.array_equal(dpred, [-1, -1, 0, 1, 1])


def test_smooth_l1_is_continuous_at_beta():
    beta = 0.7
    pred = beta + np.array([-1e-9, 1e-9])
    loss, cache = ops.smooth_l1_loss_forward(pred, np.zeros(2), beta=beta, reduction="none")
    assert np.isclose(loss[0], loss[1], atol=1e-8) and np.isclose(loss[0], beta / 2)
    (dpred,) = ops.smooth_l1_loss_backward(np.ones(2), cache)
    assert np.allclose(dpred, 1.0, atol=1e-8)


# --- every loss: dtype, mutation, bad input ---------------------------------------------------

def loss_cases(dtype):
    """(forward, backward, args, kwargs) for every loss, with weights, in ``dtype``."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    target = rng.integers(0, 3, (2, 4, 5))
    target[0, 0] = -100
    probabilities = rng.random((2, 3, 4, 5)).astype(dtype)
    return [
        (ops.cross_entropy_forward, ops.cross_entropy_backward, (logits, target),
         dict(weight=rng.random(3).astype(dtype),
              pixel_weight=rng.random((2, 4, 5)).astype(dtype))),
        (ops.binary_cross_entropy_with_logits_forward,
         ops.binary_cross_entropy_with_logits_backward, (logits, probabilities),
         dict(weight=rng.random((3, 1, 1)).astype(dtype))),
        (ops.smooth_l1_loss_forward, ops.smooth_l1_loss_backward, (logits, probabilities),
         dict(beta=0.5)),
    ]


CASE_NAMES = ["cross_entropy", "bce_with_logits", "smooth_l1"]


@pytest.mark.parametrize("index", range(3), ids=CASE_NAMES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_keeps_dtype_and_does_not_mutate(index, reduction, dtype):
    forward, backward, args, kwargs = loss_cases(dtype)[index]
    arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    loss, cache = forward(*args, **kwargs, reduction=reduction)
    dout = np.random.default_rng(0).standard_normal(loss.shape).astype(dtype)
    dout_before = dout.copy()
    (grad,) = backward(dout, cache)
    assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == args[0].shape
    assert isinstance(loss, np.ndarray)                 # a 0-d array, not a NumPy scalar
    assert loss.shape == (() if reduction != "none" else args[1].shape)
    assert all(np.array_equal(a, b) for a, b in zip(before, arrays))
    assert np.array_equal(dout, dout_before)


@pytest.mark.parametrize("index", range(3), ids=CASE_NAMES)
def test_loss_bad_reduction_and_dout(index):
    forward, backward, args, kwargs = loss_cases(np.float64)[index]
    with pytest.raises(ValueError, match="reduction"):
        forward(*args, **kwargs, reduction="avg")
    _, cache = forward(*args, **kwargs)
    with pytest.raises(ValueError, match="dout"):
        backward(np.ones(1), cache)                      # "mean" wants a 0-d dout
    with pytest.raises(TypeError, match="dout"):
        backward(np.ones((), np.float32), cache)
    _, cache = forward(*args, **kwargs, reduction="none")
    with pytest.raises(ValueError, match="dout"):
        backward(np.ones(()), cache)


def test_cross_entropy_bad_input():
    rng = np.random.default_rng(4)
    logits, target = rng.standard_normal((2, 3, 4)), rng.integers(0, 3, (2, 4))
    with pytest.raises(ValueError, match="target"):
        ops.cross_entropy_forward(logits, target[:, :3])
    with pytest.raises(ValueError, match="target"):
        ops.cross_entropy_forward(logits, target[0])
    with pytest.raises(TypeError, match="target"):
        ops.cross_entropy_forward(logits, target.astype(np.float64))
    for bad in (3, -1, 7):
        wrong = target.copy()
        wrong[1, 2] = bad
        with pytest.raises(ValueError, match=r"target.*\[0, 3\)"):
            ops.cross_entropy_forward(logits, wrong)
    wrong = target.copy()
    wrong[0, 0] = 255                                    # not the ignore_index: an error
    with pytest.raises(ValueError, match="target"):
        ops.cross_entropy_forward(logits, wrong)
    ops.cross_entropy_forward(logits, wrong, ignore_index=255)  # the ignore_index: fine
    with pytest.raises(TypeError, match="logits"):
        ops.cross_entropy_forward(logits.astype(np.int64), target)
    with pytest.raises(ValueError, match="logits"):
        ops.cross_entropy_forward(logits[0, :, 0], target[0, 0])
    with pytest.raises(ValueError, match="weight"):
        ops.cross_entropy_forward(logits, target, weight=np.ones(4))
    with pytest.raises(TypeError, match="weight"):
        ops.cross_entropy_forward(logits, target, weight=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="pixel_weight"):
        ops.cross_entropy_forward(logits, target, pixel_weight=np.ones((2, 3)))
    with pytest.raises(TypeError, match="pixel_weight"):
        ops.cross_entropy_forward(logits, target, pixel_weight=np.ones((2, 4), np.int64))
    with pytest.raises(TypeError, match="ignore_index"):
        ops.cross_entropy_forward(logits, target, ignore_index=1.5)


def test_bce_and_smooth_l1_bad_input():
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((2, 3, 4)), rng.random((2, 3, 4))
    bce = ops.binary_cross_entropy_with_logits_forward
    with pytest.raises(ValueError, match="target"):
        bce(x, t[0])                                     # no broadcasting of the target
    with pytest.raises(TypeError, match="target"):
        bce(x, t.astype(np.float32))
    with pytest.raises(TypeError, match="target"):
        bce(x, (t > 0.5).astype(np.int64))
    with pytest.raises(ValueError, match="weight"):
        bce(x, t, weight=np.ones(3))                     # (3,) does not broadcast to (2, 3, 4)
    with pytest.raises(ValueError, match="weight"):
        bce(x, t, weight=np.ones((5, 2, 3, 4)))          # would make the output bigger
    with pytest.raises(TypeError, match="weight"):
        bce(x, t, weight=np.ones(4, np.float32))
    sl1 = ops.smooth_l1_loss_forward
    with pytest.raises(ValueError, match="beta"):
        sl1(x, t, beta=-0.1)
    with pytest.raises(TypeError, match="beta"):
        sl1(x, t, beta=None)
    with pytest.raises(ValueError, match="target"):
        sl1(x, t[:, :2])
    with pytest.raises(TypeError, match="target"):
        sl1(x, t.astype(np.float32))
    with pytest.raises(TypeError, match="pred"):
        sl1(x.astype(np.int32), t)


# --- PyTorch ----------------------------------------------------------------------------------

def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5), (2, 4, 3, 5)])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(dtype, reduction, shape, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.integers(0, shape[1], shape[:1] + shape[2:])
    target.flat[::4] = 7                                 # ignored
    weight = rng.uniform(0.2, 2, shape[1]).astype(dtype) if weighted else None
    dout = rng.standard_normal(target.shape if reduction == "none" else ()).astype(dtype)
    lt = torch.tensor(logits, requires_grad=True)
    out_t = torch.nn.functional.cross_entropy(
        lt, torch.tensor(target), weight=None if weight is None else torch.tensor(weight),
        ignore_index=7, reduction=reduction)
    out_t.backward(torch.tensor(dout))
    out, cache = ops.cross_entropy_forward(logits, target, weight=weight, ignore_index=7,
                                           reduction=reduction)
    (dlogits,) = ops.cross_entropy_backward(dout, cache)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), **_tol(dtype))


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_cross_entropy_pixel_weight_matches_torch_composition(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((2, 3, 4, 5))
    target = rng.integers(0, 3, (2, 4, 5))
    target[0, 0] = -100
    weight, pixel_weight = rng.uniform(0.2, 2, 3), rng.uniform(0.1, 3, (2, 4, 5))
    lt = torch.tensor(logits, requires_grad=True)
    per_t = torch.nn.functional.cross_entropy(lt, torch.tensor(target), weight=torch.tensor(weight),
                                              reduction="none") * torch.tensor(pixel_weight)
    w_t = torch.tensor(weight)[torch.tensor(target).clamp(min=0)] * torch.tensor(pixel_weight)
    w_t = w_t * torch.tensor(target != -100)
    out_t = {"none": per_t, "sum": per_t.sum(), "mean": per_t.sum() / w_t.sum()}[reduction]
    dout = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.tensor(dout))
    out, cache = ops.cross_entropy_forward(logits, target, weight=weight, reduction=reduction,
                                           pixel_weight=pixel_weight)
    (dlogits,) = ops.cross_entropy_backward(dout, cache)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weight_shape", [None, (2, 3, 4, 5), (3, 1, 1), (5,)])
def test_bce_matches_torch(dtype, reduction, weight_shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    logits = (5 * rng.standard_normal((2, 3, 4, 5))).astype(dtype)
    logits.flat[:2] = [80.0, -80.0]
    target = rng.random(logits.shape).astype(dtype)
    weight = None if weight_shape is None else rng.uniform(0.1, 2, weight_shape).astype(dtype)
    dout = rng.standard_normal(logits.shape if reduction == "none" else ()).astype(dtype)
    lt = torch.tensor(logits, requires_grad=True)
    out_t = torch.nn.functional.binary_cross_entropy_with_logits(
        lt, torch.tensor(target), weight=None if weight is None else torch.tensor(weight),
        reduction=reduction)
    out_t.backward(torch.tensor(dout))
    out, cache = ops.binary_cross_entropy_with_logits_forward(logits, target, weight=weight,
                                                              reduction=reduction)
    (dlogits,) = ops.binary_cross_entropy_with_logits_backward(dout, cache)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(dlogits, lt.grad.numpy(), **_tol(dtype))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_smooth_l1_matches_torch(dtype, reduction, beta):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    pred = (2 * rng.standard_normal((3, 4, 5))).astype(dtype)
    target = rng.standard_normal((3, 4, 5)).astype(dtype)
    dout = rng.standard_normal(pred.shape if reduction == "none" else ()).astype(dtype)
    pt = torch.tensor(pred, requires_grad=True)
    out_t = torch.nn.functional.smooth_l1_loss(pt, torch.tensor(target), beta=beta,
                                               reduction=reduction)
    out_t.backward(torch.tensor(dout))
    out, cache = ops.smooth_l1_loss_forward(pred, target, beta=beta, reduction=reduction)
    (dpred,) = ops.smooth_l1_loss_backward(dout, cache)
    np.testing.assert_allclose(out, out_t.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(dpred, pt.grad.numpy(), **_tol(dtype))
