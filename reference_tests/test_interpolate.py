"""Tests of bilinear / nearest resizing (npseg.ops.interpolate).

The forward pass is compared with a slow per-pixel loop written here from PyTorch's documented
source-index rules; the backward pass with central differences; optional comparisons with
PyTorch itself are marked ``torch``.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npseg import ops
from npseg.gradcheck import check_op


# ------------------------------------------------------------------------------------------
# slow reference: one loop per output pixel
# ------------------------------------------------------------------------------------------

def ref_source(o, n_in, n_out, align_corners):
    """Continuous source coordinate of output pixel o along one axis (bilinear)."""
    if align_corners:
        return o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return max((o + 0.5) * n_in / n_out - 0.5, 0.0)


def ref_bilinear(x, size, align_corners):
    N, C, H, W = x.shape
    y = np.zeros((N, C) + size)
    for oh in range(size[0]):
        for ow in range(size[1]):
            sh = ref_source(oh, H, size[0], align_corners)
            sw = ref_source(ow, W, size[1], align_corners)
            h0, w0 = min(math.floor(sh), H - 1), min(math.floor(sw), W - 1)
            h1, w1 = min(h0 + 1, H - 1), min(w0 + 1, W - 1)
            lh, lw = sh - h0, sw - w0
            y[:, :, oh, ow] = ((1 - lh) * ((1 - lw) * x[:, :, h0, w0] + lw * x[:, :, h0, w1])
                               + lh * ((1 - lw) * x[:, :, h1, w0] + lw * x[:, :, h1, w1]))
    return y


def ref_nearest(x, size):
    N, C, H, W = x.shape
    y = np.zeros((N, C) + size)
    for oh in range(size[0]):
        for ow in range(size[1]):
            h = min(math.floor(oh * H / size[0]), H - 1)
            w = min(math.floor(ow * W / size[1]), W - 1)
            y[:, :, oh, ow] = x[:, :, h, w]
    return y


# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------

@st.composite
def resize_configs(draw, max_in=6, max_out=9):
    mode = draw(st.sampled_from(["bilinear", "nearest"]))
    align_corners = draw(st.booleans()) if mode == "bilinear" else False
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 2)),
             draw(st.integers(1, max_in)), draw(st.integers(1, max_in)))
    size = (draw(st.integers(1, max_out)), draw(st.integers(1, max_out)))
    return dict(shape=shape, size=size, mode=mode, align_corners=align_corners)


def run(x, cfg):
    return ops.interpolate_forward(x, cfg["size"], cfg["mode"], cfg["align_corners"])


# ------------------------------------------------------------------------------------------
# values and gradients
# ------------------------------------------------------------------------------------------

@given(cfg=resize_configs(max_in=9, max_out=13), seed=st.integers(0, 2**16))
def test_forward_matches_reference(cfg, seed):
    x = np.random.default_rng(seed).standard_normal(cfg["shape"])
    y, _ = run(x, cfg)
    if cfg["mode"] == "bilinear":
        expected = ref_bilinear(x, cfg["size"], cfg["align_corners"])
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    else:
        # small sizes: float32 rounding of in/out (PyTorch's) cannot change floor here
        np.testing.assert_array_equal(y, ref_nearest(x, cfg["size"]))


@given(cfg=resize_configs(), seed=st.integers(0, 2**16))
def test_gradient(cfg, seed):
    x = np.random.default_rng(seed).standard_normal(cfg["shape"])
    check_op(ops.interpolate_forward, ops.interpolate_backward,
             [x, cfg["size"], cfg["mode"], cfg["align_corners"]], wrt=[0], seed=seed)


@given(cfg=resize_configs(), seed=st.integers(0, 2**16))
def test_backward_is_adjoint_of_forward(cfg, seed):
    """<resize(x), g> == <x, backward(g)> for every x, g: the backward is the transposed map."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["shape"])
    y, cache = run(x, cfg)
    g = rng.standard_normal(y.shape)
    (dx,) = ops.interpolate_backward(g, cache)
    assert np.vdot(y, g) == pytest.approx(np.vdot(x, dx), rel=1e-10, abs=1e-10)


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------

@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9),
                       st.integers(1, 9)),
       mode=st.sampled_from([("bilinear", True), ("bilinear", False), ("nearest", False)]),
       seed=st.integers(0, 2**16))
def test_same_size_is_identity(shape, mode, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    y, cache = ops.interpolate_forward(x, shape[2:], *mode)
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(ops.interpolate_backward(x, cache)[0], x, rtol=0, atol=1e-15)


@given(hw=st.tuples(st.integers(2, 8), st.integers(2, 8)),
       size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
       coef=st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3)))
def test_linear_ramp_stays_linear_with_align_corners(hw, size, coef):
    a, b, c = coef
    H, W = hw
    x = (a * np.arange(H)[:, None] + b * np.arange(W) + c)[None, None]
    y, _ = ops.interpolate_forward(x, size, "bilinear", True)
    src_h = np.arange(size[0]) * ((H - 1) / (size[0] - 1) if size[0] > 1 else 0.0)
    src_w = np.arange(size[1]) * ((W - 1) / (size[1] - 1) if size[1] > 1 else 0.0)
    np.testing.assert_allclose(y[0, 0], a * src_h[:, None] + b * src_w + c, atol=1e-12)


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 6),
                       st.integers(1, 6)),
       size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
       mode=st.sampled_from([("bilinear", True), ("bilinear", False), ("nearest", False)]),
       value=st.floats(-100, 100))
def test_constant_stays_constant(shape, size, mode, value):
    y, _ = ops.interpolate_forward(np.full(shape, value), size, *mode)
    np.testing.assert_allclose(y, value, rtol=1e-12, atol=1e-12)


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 8),
                       st.integers(1, 8)),
       seed=st.integers(0, 2**16))
def test_nearest_2x_repeats_pixels_and_half_takes_every_other(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    H, W = shape[2:]
    y, _ = ops.interpolate_forward(x, (2 * H, 2 * W), "nearest")
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))
    back, _ = ops.interpolate_forward(y, (H, W), "nearest")
    np.testing.assert_array_equal(back, x)


def test_nearest_copies_non_finite_values_exactly():
    x = np.array([[[[1.0, np.inf], [np.nan, -2.0]]]])
    y, _ = ops.interpolate_forward(x, (4, 4), "nearest")
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))


# ------------------------------------------------------------------------------------------
# dtypes, mutation, bad input
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", [("bilinear", True), ("bilinear", False), ("nearest", False)])
def test_dtype_is_kept(dtype, mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(dtype)
    y, cache = ops.interpolate_forward(x, (9, 4), *mode)
    assert y.dtype == dtype
    (dx,) = ops.interpolate_backward(np.ones_like(y), cache)
    assert dx.dtype == dtype and dx.shape == x.shape


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(0)
    for mode in [("bilinear", True), ("bilinear", False), ("nearest", False)]:
        x = rng.standard_normal((2, 3, 5, 7))
        x_before = x.copy()
        y, cache = ops.interpolate_forward(x, (8, 3), *mode)
        dy = rng.standard_normal(y.shape)
        dy_before = dy.copy()
        first = ops.interpolate_backward(dy, cache)[0]
        second = ops.interpolate_backward(dy, cache)[0]
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dy, dy_before)
        np.testing.assert_array_equal(first, second)


def test_bad_input():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match="x"):
        ops.interpolate_forward(np.zeros((2, 4, 4)), 8)
    with pytest.raises(TypeError, match="x"):
        ops.interpolate_forward(np.zeros((1, 2, 4, 4), np.int32), 8)
    with pytest.raises(ValueError, match="x"):
        ops.interpolate_forward(np.zeros((1, 2, 0, 4)), 8)
    with pytest.raises(ValueError, match="mode"):
        ops.interpolate_forward(x, 8, mode="bicubic")
    with pytest.raises(ValueError, match="size"):
        ops.interpolate_forward(x, 0)
    with pytest.raises(ValueError, match="size"):
        ops.interpolate_forward(x, (8, -1))
    with pytest.raises(TypeError, match="size"):
        ops.interpolate_forward(x, 2.5)
    with pytest.raises(TypeError, match="size"):
        ops.interpolate_forward(x, (8, 8, 8))
    with pytest.raises(ValueError, match="align_corners"):
        ops.interpolate_forward(x, 8, mode="nearest", align_corners=True)
    with pytest.raises(TypeError, match="align_corners"):
        ops.interpolate_forward(x, 8, align_corners="yes")
    y, cache = ops.interpolate_forward(x, (8, 6))
    with pytest.raises(ValueError, match="dy"):
        ops.interpolate_backward(np.zeros((1, 2, 6, 8)), cache)
    # align_corners=None means False, as in PyTorch
    np.testing.assert_array_equal(ops.interpolate_forward(x, 8, align_corners=None)[0],
                                  ops.interpolate_forward(x, 8)[0])
    np.testing.assert_array_equal(ops.interpolate_forward(x, 8, "nearest", None)[0],
                                  ops.interpolate_forward(x, 8, "nearest")[0])


# ------------------------------------------------------------------------------------------
# optional: PyTorch
# ------------------------------------------------------------------------------------------

def _torch_interpolate(torch, xt, cfg):
    align = cfg["align_corners"] if cfg["mode"] == "bilinear" else None
    return torch.nn.functional.interpolate(xt, size=cfg["size"], mode=cfg["mode"],
                                           align_corners=align)


@pytest.mark.torch
@settings(max_examples=15)
@given(cfg=resize_configs(max_in=12, max_out=30), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_matches_torch(cfg, seed, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg["shape"]).astype(dtype)
    y, cache = run(x, cfg)
    xt = torch.tensor(x, requires_grad=True)
    yt = _torch_interpolate(torch, xt, cfg)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    if cfg["mode"] == "nearest":
        np.testing.assert_array_equal(y, yt.detach().numpy())
    else:
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    dy = rng.standard_normal(y.shape).astype(dtype)
    if x.size:
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(ops.interpolate_backward(dy, cache)[0], xt.grad.numpy(),
                                   rtol=tol, atol=10 * tol)


@pytest.mark.torch
@pytest.mark.parametrize("n_in, n_out", [(2, 82), (3, 123), (4, 94), (3, 141), (7, 5)])
def test_nearest_rounds_like_torch(n_in, n_out):
    """PyTorch computes floor(o * (in / out)) in float32; for these sizes that differs from the
    exact floor(o * in / out) at some pixels, and npseg follows PyTorch."""
    torch = pytest.importorskip("torch")
    x = np.arange(n_in * n_in, dtype=np.float32).reshape(1, 1, n_in, n_in)
    y, _ = ops.interpolate_forward(x, (n_out, n_out), "nearest")
    expected = torch.nn.functional.interpolate(torch.tensor(x), size=(n_out, n_out),
                                               mode="nearest")
    np.testing.assert_array_equal(y, expected.numpy())
