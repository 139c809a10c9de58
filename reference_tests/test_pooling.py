"""Tests of max pooling (with indices), max unpooling and average pooling (npseg.ops.pooling).

The forward passes are compared with a slow, obvious loop over output pixels written here
from PyTorch's documented semantics; the backward passes with central differences; optional
comparisons with PyTorch itself are marked ``torch``.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npseg import ops
from npseg.gradcheck import check_op


# ------------------------------------------------------------------------------------------
# slow references: one Python loop per output pixel
# ------------------------------------------------------------------------------------------

def out_len(n, k, s, p, d, ceil_mode):
    """PyTorch's pooling output length (floor or ceil of span / s, plus one; with ceil_mode the
    last window must start inside the input or its left padding)."""
    span = n + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = math.ceil(span / s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return out


def ref_max_pool(x, k, s, p, d, ceil_mode):
    """(y, indices), or None when some window has no real pixel (npseg refuses those)."""
    N, C, H, W = x.shape
    Ho, Wo = out_len(H, k[0], s[0], p[0], d[0], ceil_mode), out_len(W, k[1], s[1], p[1], d[1],
                                                                     ceil_mode)
    if Ho < 1 or Wo < 1:
        return None
    y = np.empty((N, C, Ho, Wo), x.dtype)
    idx = np.empty((N, C, Ho, Wo), np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(Ho):
                for ow in range(Wo):
                    best, where = None, None
                    for i in range(k[0]):
                        for j in range(k[1]):
                            r, q = oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1]
                            if not (0 <= r < H and 0 <= q < W):
                                continue                      # padding: never selected
                            v = x[n, c, r, q]
                            # first real pixel starts; strictly greater or NaN replaces
                            if best is None or v > best or np.isnan(v):
                                best, where = v, r * W + q
                    if best is None:
                        return None
                    y[n, c, oh, ow], idx[n, c, oh, ow] = best, where
    return y, idx


def ref_avg_pool(x, k, s, p, ceil_mode, count_include_pad):
    N, C, H, W = x.shape
    Ho, Wo = out_len(H, k[0], s[0], p[0], 1, ceil_mode), out_len(W, k[1], s[1], p[1], 1, ceil_mode)
    if Ho < 1 or Wo < 1:
        return None
    y = np.zeros((N, C, Ho, Wo))
    for oh in range(Ho):
        for ow in range(Wo):
            total, real, padded = 0.0, 0, 0
            for i in range(k[0]):
                for j in range(k[1]):
                    r, q = oh * s[0] - p[0] + i, ow * s[1] - p[1] + j
                    if -p[0] <= r < H + p[0] and -p[1] <= q < W + p[1]:
                        padded += 1                 # inside the padded image
                    if 0 <= r < H and 0 <= q < W:
                        real += 1
                        total = total + x[:, :, r, q]
            if real == 0:
                return None
            y[:, :, oh, ow] = total / (padded if count_include_pad else real)
    return y


# ------------------------------------------------------------------------------------------
# hypothesis strategies
# ------------------------------------------------------------------------------------------

@st.composite
def pool_configs(draw, max_extra=4, dilation=True):
    """A pooling geometry. The spatial size is the smallest one the dilated kernel fits in
    (padding included) plus 0..max_extra, so most draws are valid and some are tiny."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        stride = None
        s = (kh, kw)
    else:
        s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        stride = s
    p = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    smallest = [max(1, d[a] * (k - 1) + 1 - 2 * p[a]) for a, k in enumerate((kh, kw))]
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             smallest[0] + draw(st.integers(0, max_extra)),
             smallest[1] + draw(st.integers(0, max_extra)))
    return dict(shape=shape, k=(kh, kw), stride=stride, s=s, p=p, d=d, ceil_mode=ceil_mode)


def tie_free(shape, seed, dtype=np.float64):
    """A random permutation of well separated values: no two equal, so max has no kinks."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) - n / 2).reshape(shape).astype(dtype) / 4


def max_args(cfg):
    return (cfg["k"], cfg["stride"], cfg["p"], cfg["d"], cfg["ceil_mode"])


def avg_args(cfg, count_include_pad):
    return (cfg["k"], cfg["stride"], cfg["p"], cfg["ceil_mode"], count_include_pad)


# ------------------------------------------------------------------------------------------
# max pooling
# ------------------------------------------------------------------------------------------

@given(cfg=pool_configs(), seed=st.integers(0, 2**16), ties=st.booleans())
def test_max_pool_matches_reference(cfg, seed, ties):
    x = tie_free(cfg["shape"], seed)
    if ties:
        x = np.round(x / 3)                       # many equal values: first maximum wins
    ref = ref_max_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"])
    if ref is None:
        with pytest.raises(ValueError, match="kernel_size|dilation"):
            ops.max_pool2d_forward(x, *max_args(cfg))
        return
    (y, idx), _ = ops.max_pool2d_forward(x, *max_args(cfg))
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(y, ref[0])
    np.testing.assert_array_equal(idx, ref[1])


def test_max_pool_special_values():
    """-inf everywhere in a padded window picks its first real pixel; NaN propagates and the
    index is the window's last NaN (PyTorch's rules)."""
    x = np.full((1, 1, 3, 4), -np.inf)
    x[0, 0, 2, 3] = 1.0
    (y, idx), _ = ops.max_pool2d_forward(x, 3, 1, 1)
    ref = ref_max_pool(x, (3, 3), (1, 1), (1, 1), (1, 1), False)
    np.testing.assert_array_equal(y, ref[0])
    np.testing.assert_array_equal(idx, ref[1])
    x = tie_free((1, 2, 5, 6), 3)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 1, 4, 5] = np.nan
    (y, idx), _ = ops.max_pool2d_forward(x, 3, 2, 1, ceil_mode=True)
    ref = ref_max_pool(x, (3, 3), (2, 2), (1, 1), (1, 1), True)
    assert np.isnan(y).sum() == np.isnan(ref[0]).sum() > 0
    np.testing.assert_array_equal(y, ref[0])
    np.testing.assert_array_equal(idx, ref[1])


def _sweep_configs(count, seed):
    """Seeded random geometries, larger than the hypothesis draws, invalid ones included."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, v // 2 + 1)) for v in k)
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        shape = (2, 3) + tuple(int(v) for v in rng.integers(1, 13, 2))
        yield dict(shape=shape, k=k, stride=s, s=s, p=p, d=d, ceil_mode=bool(rng.integers(2)))


def test_sweep_against_reference():
    """Max and average pooling on 60 seeded geometries with ties, -inf and NaN inputs."""
    rng = np.random.default_rng(7)
    for cfg in _sweep_configs(60, 0):
        x = tie_free(cfg["shape"], int(rng.integers(2**16)))
        special = rng.integers(4)
        if special == 1:
            x = np.round(x / 5)
        elif special == 2:
            x[rng.random(x.shape) < 0.5] = -np.inf
        elif special == 3:
            x[rng.random(x.shape) < 0.1] = np.nan
        ref = ref_max_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"])
        if ref is None:
            with pytest.raises(ValueError, match="kernel_size|dilation"):
                ops.max_pool2d_forward(x, *max_args(cfg))
        else:
            (y, idx), _ = ops.max_pool2d_forward(x, *max_args(cfg))
            np.testing.assert_array_equal(y, ref[0], err_msg=str(cfg))
            np.testing.assert_array_equal(idx, ref[1], err_msg=str(cfg))
        include = bool(rng.integers(2))
        x = np.where(np.isfinite(x), x, 1.5)
        ref = ref_avg_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["ceil_mode"], include)
        if ref is None:
            with pytest.raises(ValueError, match="kernel_size"):
                ops.avg_pool2d_forward(x, *avg_args(cfg, include))
        else:
            y, _ = ops.avg_pool2d_forward(x, *avg_args(cfg, include))
            np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12, err_msg=str(cfg))


@given(cfg=pool_configs(max_extra=3), seed=st.integers(0, 2**16))
def test_max_pool_gradient(cfg, seed):
    x = tie_free(cfg["shape"], seed)
    if ref_max_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"]) is None:
        return                                    # geometry refused; covered above
    check_op(ops.max_pool2d_forward, ops.max_pool2d_backward, [x, *max_args(cfg)], wrt=[0],
             seed=seed)


def test_max_pool_backward_accumulates_overlapping_windows():
    x = tie_free((1, 1, 5, 5), 0)
    x[0, 0, 2, 2] = 100.0                         # the maximum of all nine 3x3 windows
    (y, _), cache = ops.max_pool2d_forward(x, 3, 1)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    (dx,) = ops.max_pool2d_backward(dy, cache)
    assert dx[0, 0, 2, 2] == pytest.approx(dy.sum())
    assert np.count_nonzero(dx) == 1


@given(cfg=pool_configs(), seed=st.integers(0, 2**16))
def test_max_pool_indices_point_at_returned_values_inside_their_window(cfg, seed):
    x = tie_free(cfg["shape"], seed)
    if ref_max_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"]) is None:
        return
    (y, idx), _ = ops.max_pool2d_forward(x, *max_args(cfg))
    N, C, H, W = x.shape
    picked = np.take_along_axis(x.reshape(N, C, -1), idx.reshape(N, C, -1), axis=2)
    np.testing.assert_array_equal(picked.reshape(y.shape), y)
    rows, cols = np.divmod(idx, W)
    oh = np.arange(y.shape[2])[:, None]
    ow = np.arange(y.shape[3])
    ti, ri = np.divmod(rows - (oh * cfg["s"][0] - cfg["p"][0]), cfg["d"][0])
    tj, rj = np.divmod(cols - (ow * cfg["s"][1] - cfg["p"][1]), cfg["d"][1])
    assert (ri == 0).all() and (rj == 0).all()
    assert ((0 <= ti) & (ti < cfg["k"][0]) & (0 <= tj) & (tj < cfg["k"][1])).all()


# ------------------------------------------------------------------------------------------
# max unpooling
# ------------------------------------------------------------------------------------------

def unique_indices(shape, out_hw, seed):
    """Per plane, H*W distinct positions of the H_out*W_out output plane."""
    N, C, H, W = shape
    keys = np.random.default_rng(seed).random((N, C, out_hw[0] * out_hw[1]))
    return np.argsort(keys, axis=2)[:, :, :H * W].reshape(shape)


@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=st.integers(0, 2**16))
def test_max_unpool_gradient_and_placement(n, c, h, w, extra, seed):
    out_hw = (h + extra[0], w + extra[1])
    x = np.random.default_rng(seed).standard_normal((n, c, h, w))
    idx = unique_indices(x.shape, out_hw, seed)
    out, _ = ops.max_unpool2d_forward(x, idx, out_hw)
    assert out.shape == (n, c) + out_hw
    for a in range(n):
        for b in range(c):
            plane = np.zeros(out_hw[0] * out_hw[1])
            plane[idx[a, b].ravel()] = x[a, b].ravel()
            np.testing.assert_array_equal(out[a, b].ravel(), plane)
    check_op(ops.max_unpool2d_forward, ops.max_unpool2d_backward, [x, idx, out_hw], wrt=[0],
             seed=seed)


@given(cfg=pool_configs(max_extra=5, dilation=False), seed=st.integers(0, 2**16))
def test_unpool_of_pool_restores_maxima(cfg, seed):
    x = tie_free(cfg["shape"], seed)
    args = max_args(cfg)
    if ref_max_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"]) is None:
        return
    (y, idx), _ = ops.max_pool2d_forward(x, *args)
    out, _ = ops.max_unpool2d_forward(y, idx, x.shape[2:])
    N, C, H, W = x.shape
    chosen = np.zeros((N, C, H * W), bool)
    np.put_along_axis(chosen, idx.reshape(N, C, -1), True, axis=2)
    chosen = chosen.reshape(x.shape)
    np.testing.assert_array_equal(out, np.where(chosen, x, 0.0))
    # every chosen pixel is the maximum of some window
    assert np.isin(x[chosen], y).all()


# ------------------------------------------------------------------------------------------
# average pooling
# ------------------------------------------------------------------------------------------

@given(cfg=pool_configs(dilation=False), include=st.booleans(), seed=st.integers(0, 2**16))
def test_avg_pool_matches_reference(cfg, include, seed):
    x = np.random.default_rng(seed).standard_normal(cfg["shape"])
    ref = ref_avg_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["ceil_mode"], include)
    if ref is None:
        with pytest.raises(ValueError, match="kernel_size"):
            ops.avg_pool2d_forward(x, *avg_args(cfg, include))
        return
    y, _ = ops.avg_pool2d_forward(x, *avg_args(cfg, include))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@given(cfg=pool_configs(max_extra=3, dilation=False), include=st.booleans(),
       seed=st.integers(0, 2**16))
def test_avg_pool_gradient(cfg, include, seed):
    x = np.random.default_rng(seed).standard_normal(cfg["shape"])
    if ref_avg_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["ceil_mode"], include) is None:
        return
    check_op(ops.avg_pool2d_forward, ops.avg_pool2d_backward, [x, *avg_args(cfg, include)],
             wrt=[0], seed=seed)


@given(cfg=pool_configs(dilation=False), value=st.floats(-10, 10))
def test_avg_pool_of_constant_is_constant_without_padding_count(cfg, value):
    x = np.full(cfg["shape"], value)
    if ref_avg_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["ceil_mode"], False) is None:
        return
    y, _ = ops.avg_pool2d_forward(x, *avg_args(cfg, False))
    np.testing.assert_allclose(y, value, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# dtypes, mutation, bad input
# ------------------------------------------------------------------------------------------

def _run_all(x, dy_seed=0):
    """Forward and backward of the three ops on x; returns every output array."""
    rng = np.random.default_rng(dy_seed)
    (y, idx), c1 = ops.max_pool2d_forward(x, 3, 2, 1, ceil_mode=True)
    dy = rng.standard_normal(y.shape).astype(x.dtype)
    (dx1,) = ops.max_pool2d_backward(dy, c1)
    (y2, idx2), _ = ops.max_pool2d_forward(x, 2)
    out, c2 = ops.max_unpool2d_forward(y2, idx2, x.shape[2:])
    dout = rng.standard_normal(out.shape).astype(x.dtype)
    (dx2,) = ops.max_unpool2d_backward(dout, c2)
    a, c3 = ops.avg_pool2d_forward(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    da = rng.standard_normal(a.shape).astype(x.dtype)
    (dx3,) = ops.avg_pool2d_backward(da, c3)
    return dict(y=y, dx1=dx1, out=out, dx2=dx2, a=a, dx3=dx3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    outputs = _run_all(tie_free((2, 3, 7, 6), 0, dtype))
    for name, arr in outputs.items():
        assert arr.dtype == dtype, name


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(0)
    x = tie_free((2, 3, 7, 6), 1)
    (y, idx), cache = ops.max_pool2d_forward(x, 3, 1, 1)
    dy = rng.standard_normal(y.shape)
    out, ucache = ops.max_unpool2d_forward(y, idx, (7, 6))
    dout = rng.standard_normal(out.shape)
    a, acache = ops.avg_pool2d_forward(x, 3, 2, 1, ceil_mode=True)
    da = rng.standard_normal(a.shape)
    arrays = [x, y, idx, dy, dout, da]
    before = [arr.copy() for arr in arrays]
    ops.max_pool2d_forward(x, 3, 1, 1)
    ops.max_pool2d_backward(dy, cache)
    ops.max_unpool2d_forward(y, idx, (7, 6))
    ops.max_unpool2d_backward(dout, ucache)
    ops.avg_pool2d_forward(x, 3, 2, 1, ceil_mode=True)
    ops.avg_pool2d_backward(da, acache)
    for arr, copy in zip(arrays, before):
        np.testing.assert_array_equal(arr, copy)
    # a second backward through the same cache gives the same result
    np.testing.assert_array_equal(ops.max_pool2d_backward(dy, cache)[0],
                                  ops.max_pool2d_backward(dy, cache)[0])


def test_bad_input():
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match="x"):
        ops.max_pool2d_forward(np.zeros((2, 6, 6)), 2)
    with pytest.raises(TypeError, match="x"):
        ops.avg_pool2d_forward(np.zeros((1, 2, 6, 6), np.int64), 2)
    with pytest.raises(ValueError, match="kernel_size"):
        ops.max_pool2d_forward(x, 7)
    with pytest.raises(ValueError, match="kernel_size"):
        ops.avg_pool2d_forward(x, (2, 7))
    with pytest.raises(ValueError, match="padding"):
        ops.max_pool2d_forward(x, 3, padding=2)
    with pytest.raises(ValueError, match="padding"):
        ops.avg_pool2d_forward(x, 2, padding=(0, 2))
    with pytest.raises(ValueError, match="stride"):
        ops.max_pool2d_forward(x, 2, stride=0)
    with pytest.raises(TypeError, match="kernel_size"):
        ops.max_pool2d_forward(x, 2.0)
    with pytest.raises(ValueError, match="dilation"):
        ops.max_pool2d_forward(x, 2, dilation=0)
    with pytest.raises(ValueError, match="dilation"):          # a window all in the padding
        ops.max_pool2d_forward(np.zeros((1, 1, 2, 2)), 2, 1, 1, 3)
    with pytest.raises(TypeError, match="ceil_mode"):
        ops.max_pool2d_forward(x, 2, ceil_mode=1)
    with pytest.raises(TypeError, match="count_include_pad"):
        ops.avg_pool2d_forward(x, 2, count_include_pad="yes")
    (y, idx), cache = ops.max_pool2d_forward(x, 2)
    with pytest.raises(ValueError, match="dy"):
        ops.max_pool2d_backward(np.zeros((1, 2, 3, 4)), cache)
    with pytest.raises(ValueError, match="indices"):
        ops.max_unpool2d_forward(y, idx + 30, (6, 6))
    with pytest.raises(ValueError, match="indices"):
        ops.max_unpool2d_forward(y, idx - 1 - idx, (6, 6))
    with pytest.raises(ValueError, match="indices"):
        ops.max_unpool2d_forward(y, idx[:, :, :2], (6, 6))
    with pytest.raises(TypeError, match="indices"):
        ops.max_unpool2d_forward(y, idx.astype(np.float64), (6, 6))
    with pytest.raises(ValueError, match="output_size"):
        ops.max_unpool2d_forward(y, idx, (0, 6))
    out, cache = ops.max_unpool2d_forward(y, idx, 6)
    with pytest.raises(ValueError, match="dout"):
        ops.max_unpool2d_backward(np.zeros((1, 2, 6, 5)), cache)


# ------------------------------------------------------------------------------------------
# optional: PyTorch
# ------------------------------------------------------------------------------------------

@pytest.mark.torch
@settings(max_examples=15)
@given(cfg=pool_configs(max_extra=6), seed=st.integers(0, 2**16), ties=st.booleans())
def test_max_pool_and_unpool_match_torch(cfg, seed, ties):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = tie_free(cfg["shape"], seed)
    if ties:
        x = np.round(x / 3)
    if ref_max_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"]) is None:
        return                    # PyTorch returns out-of-range indices there; npseg refuses
    (y, idx), cache = ops.max_pool2d_forward(x, *max_args(cfg))
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, cfg["k"], cfg["s"], cfg["p"], cfg["d"], cfg["ceil_mode"],
                          return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(ops.max_pool2d_backward(dy, cache)[0], xt.grad.numpy(),
                               rtol=1e-12, atol=1e-12)
    if not ties:                  # unpool: indices unique per plane only without overlaps
        yt2 = torch.tensor(y, requires_grad=True)
        out_t = torch.ops.aten.max_unpool2d(yt2, it, list(x.shape[2:]))
        out, ucache = ops.max_unpool2d_forward(y, idx, x.shape[2:])
        np.testing.assert_array_equal(out, out_t.detach().numpy())
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
        out_t.backward(torch.tensor(dout))
        np.testing.assert_array_equal(ops.max_unpool2d_backward(dout, ucache)[0],
                                      yt2.grad.numpy())


@pytest.mark.torch
@settings(max_examples=15)
@given(cfg=pool_configs(max_extra=6, dilation=False), include=st.booleans(),
       seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]))
def test_avg_pool_matches_torch(cfg, include, seed, dtype):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(seed).standard_normal(cfg["shape"]).astype(dtype)
    if ref_avg_pool(x, cfg["k"], cfg["s"], cfg["p"], cfg["ceil_mode"], include) is None:
        return
    y, cache = ops.avg_pool2d_forward(x, *avg_args(cfg, include))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, cfg["k"], cfg["s"], cfg["p"], cfg["ceil_mode"],
                                        include)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(ops.avg_pool2d_backward(dy, cache)[0], xt.grad.numpy(),
                               rtol=tol, atol=tol)
