"""RoIAlign and RoIPool (npseg.ops.roi): gradients, semantics, properties, bad input.

The semantic reference is a scalar re-statement of torchvision's rules written here loop by
loop (``_align_taps``, ``_pool_reference``), small enough to read against the docstring of
npseg/ops/roi.py; the optional torch tests compare with torchvision itself.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npseg.gradcheck import check_op
from npseg.ops import roi_align_backward, roi_align_forward, roi_pool_backward, roi_pool_forward

SCALES = [1.0, 0.25, 1 / 16]


# ------------------------------------------------------------------------- scalar references

def _align_taps(shape, rois, ph, pw, scale, sampling_ratio, aligned):
    """``M`` (K*C*ph*pw, N*C*H*W) with ``out = M @ x.ravel()``, one bilinear tap at a time."""
    n, c, h, w = shape
    k_count = rois.shape[0]
    m = np.zeros((k_count * c * ph * pw, n * c * h * w))

    def axis_taps(v, size):
        if v < -1.0 or v > size:
            return []
        v = max(v, 0.0)
        low = int(v)
        if low >= size - 1:
            return [(size - 1, 1.0)]
        return [(low, 1.0 - (v - low)), (low + 1, v - low)]

    for k in range(k_count):
        b = int(rois[k, 0])
        off = 0.5 if aligned else 0.0
        x1, y1 = rois[k, 1] * scale - off, rois[k, 2] * scale - off
        rw, rh = rois[k, 3] * scale - off - x1, rois[k, 4] * scale - off - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for i in range(ph):
            for j in range(pw):
                for iy in range(gh):
                    y = y1 + i * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = x1 + j * bw + (ix + 0.5) * bw / gw
                        if not (-1.0 <= y <= h and -1.0 <= xx <= w):
                            continue
                        for yy, wy in axis_taps(y, h):
                            for xc, wx in axis_taps(xx, w):
                                for ch in range(c):
                                    row = ((k * c + ch) * ph + i) * pw + j
                                    col = ((b * c + ch) * h + yy) * w + xc
                                    m[row, col] += wy * wx / count
    return m


def _c_round(v):
    t = math.trunc(v)
    if abs(v - t) >= 0.5:
        t += 1 if v > 0 else -1
    return t


def _pool_reference(x, rois, ph, pw, scale):
    """Output and argmax (flat index into x, -1 for an empty bin), by loops."""
    n, c, h, w = x.shape
    out = np.zeros((rois.shape[0], c, ph, pw))
    arg = np.full(out.shape, -1)
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        sx, sy, ex, ey = (_c_round(v * scale) for v in rois[k, 1:])
        rw, rh = max(ex - sx + 1, 1), max(ey - sy + 1, 1)
        for i in range(ph):
            hs = min(max(math.floor(i * rh / ph) + sy, 0), h)
            he = min(max(math.ceil((i + 1) * rh / ph) + sy, 0), h)
            for j in range(pw):
                ws = min(max(math.floor(j * rw / pw) + sx, 0), w)
                we = min(max(math.ceil((j + 1) * rw / pw) + sx, 0), w)
                for ch in range(c):
                    best, where = -np.inf, -1
                    for yy in range(hs, he):
                        for xx in range(ws, we):
                            if x[b, ch, yy, xx] > best:
                                best, where = x[b, ch, yy, xx], ((b * c + ch) * h + yy) * w + xx
                    out[k, ch, i, j] = best if where >= 0 else 0.0
                    arg[k, ch, i, j] = where
    return out, arg


# ---------------------------------------------------------------------------------- strategies

@st.composite
def roi_cases(draw, max_side=6, max_rois=3):
    """A feature map shape, RoIs of every kind (inside, spilling over, sub-pixel), a scale."""
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 2))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    scale = draw(st.sampled_from(SCALES))
    rows = []
    for _ in range(draw(st.integers(0, max_rois))):
        kind = draw(st.sampled_from(["inside", "spill", "subpixel"]))
        box = []
        for size in (w, h):                                   # map units, then image pixels
            if kind == "inside":
                lo = draw(st.floats(0, size - 1))
                hi = lo + draw(st.floats(0, size - 1 - lo))
            elif kind == "spill":
                lo = draw(st.floats(-3, size + 1))
                hi = lo + draw(st.floats(0, size + 4))
            else:
                lo = draw(st.floats(-0.5, size - 0.5))
                hi = lo + draw(st.floats(0, 0.99))
            box.append((lo, hi))
        (x1, x2), (y1, y2) = box
        rows.append([draw(st.integers(0, n - 1)), x1 / scale, y1 / scale, x2 / scale, y2 / scale])
    rois = np.array(rows, dtype=np.float64).reshape(-1, 5)
    output_size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2**16))
    return (n, c, h, w), rois, output_size, scale, seed


def _distinct_map(shape, seed):
    """Tie-free values (a permutation, spacing 1): max has no kink within the check's eps."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).astype(np.float64).reshape(shape) - 10.0


# --------------------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@settings(max_examples=8)
@given(case=roi_cases())
def test_roi_align_gradient(case, sampling_ratio, aligned):
    shape, rois, output_size, scale, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    check_op(roi_align_forward, roi_align_backward, [x, rois, output_size], wrt=[0],
             kwargs=dict(spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned),
             mode="full")


@given(case=roi_cases())
def test_roi_pool_gradient(case):
    shape, rois, output_size, scale, seed = case
    x = _distinct_map(shape, seed)
    check_op(roi_pool_forward, roi_pool_backward, [x, rois, output_size], wrt=[0],
             kwargs=dict(spatial_scale=scale), mode="full")


# ------------------------------------------------------------------- semantics (scalar spec)

@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 3])
@settings(max_examples=5)
@given(case=roi_cases(max_side=7, max_rois=4))
def test_roi_align_matches_scalar_rules(case, sampling_ratio, aligned):
    shape, rois, output_size, scale, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out, cache = roi_align_forward(x, rois, output_size, scale, sampling_ratio, aligned)
    m = _align_taps(shape, rois, *output_size, scale, sampling_ratio, aligned)
    np.testing.assert_allclose(out.ravel(), m @ x.ravel(), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    (dx,) = roi_align_backward(dout, cache)
    np.testing.assert_allclose(dx.ravel(), m.T @ dout.ravel(), rtol=1e-12, atol=1e-12)


@settings(max_examples=15)
@given(case=roi_cases(max_side=7, max_rois=4))
def test_roi_pool_matches_scalar_rules(case):
    shape, rois, output_size, scale, seed = case
    x = _distinct_map(shape, seed)
    out, cache = roi_pool_forward(x, rois, output_size, scale)
    ref, arg = _pool_reference(x, rois, *output_size, scale)
    np.testing.assert_array_equal(out, ref)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    (dx,) = roi_pool_backward(dout, cache)
    expected = np.bincount(arg[arg >= 0], weights=dout[arg >= 0], minlength=x.size)
    np.testing.assert_allclose(dx.ravel(), expected, rtol=0, atol=1e-12)


def test_roi_pool_first_maximum_wins_ties():
    x = np.zeros((1, 1, 3, 3))                   # every pixel ties: the first in scan order wins
    rois = np.array([[0, 0, 0, 2, 2]], dtype=np.float64)
    out, cache = roi_pool_forward(x, rois, 1)
    (dx,) = roi_pool_backward(np.ones_like(out), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(dx, expected)


# -------------------------------------------------------------------------------- properties

@given(case=roi_cases(max_side=6, max_rois=4), sampling_ratio=st.sampled_from([-1, 1, 2]),
       aligned=st.sampled_from([True, False]), value=st.floats(-5, 5))
def test_roi_align_of_constant_map_is_constant_inside(case, sampling_ratio, aligned, value):
    (n, c, h, w), _, output_size, scale, seed = case
    rng = np.random.default_rng(seed)
    # RoIs of positive size inside the map (on the map: [0, W-1] x [0, H-1], then in pixels)
    lo = rng.uniform(0, 1, (4, 2)) * [w - 1, h - 1]
    hi = lo + rng.uniform(0.1, 1, (4, 2)) * ([w - 1, h - 1] - lo + 0.01)
    rois = np.concatenate([rng.integers(0, n, (4, 1)), lo / scale, hi / scale], axis=1)
    x = np.full((n, c, h, w), value)
    out, _ = roi_align_forward(x, rois, output_size, scale, sampling_ratio, aligned)
    np.testing.assert_allclose(out, value, rtol=1e-12, atol=1e-12)


def test_roi_align_aligned_integer_box_reads_pixels():
    """aligned=True, one sample per bin, an integer box: bin (i, j) samples pixel centre
    (y1 + i, x1 + j) exactly, i.e. the pixel value itself (offset 0.5 then +0.5 in the bin)."""
    x = np.arange(2 * 3 * 6 * 7, dtype=np.float64).reshape(2, 3, 6, 7) ** 1.5
    rois = np.array([[1, 2, 1, 5, 4]], dtype=np.float64)          # x 2..5, y 1..4: 3x3 pixels
    out, _ = roi_align_forward(x, rois, 3, 1.0, 1, True)
    np.testing.assert_allclose(out[0], x[1, :, 1:4, 2:5], rtol=1e-12)
    # same box without alignment: samples at pixel corners (y1 + i + 0.5, x1 + j + 0.5),
    # the mean of the 4 surrounding pixels
    out, _ = roi_align_forward(x, rois, 3, 1.0, 1, False)
    expected = (x[1, :, 1:4, 2:5] + x[1, :, 2:5, 2:5] + x[1, :, 1:4, 3:6] + x[1, :, 2:5, 3:6]) / 4
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)
    # on a stride-4 map: the same box in image pixels, scaled by 1/4
    out, _ = roi_align_forward(x, rois * [1, 4, 4, 4, 4], 3, 0.25, 1, True)
    np.testing.assert_allclose(out[0], x[1, :, 1:4, 2:5], rtol=1e-12)


@pytest.mark.parametrize("centre, expected", [
    (4.0, lambda m: m[3, 3]),                    # y = H exactly: still read, clamped to H - 1
    (-1.0, lambda m: m[0, 0]),                   # y = -1 exactly: read, moved to 0
    (4.0 + 1 / 64, lambda m: 0.0),               # beyond H: contributes 0
    (-1.0 - 1 / 64, lambda m: 0.0),              # below -1: contributes 0
    (3.5, lambda m: m[3, 3]),                    # y_low = H - 1: the last row alone
    (2.5, lambda m: m[2:4, 2:4].mean()),         # ordinary bilinear: 4 equal weights
    (-0.5, lambda m: m[0, 0]),                   # in (-1, 0]: moved to 0
])
def test_roi_align_boundary_rules(centre, expected):
    """One sample (sampling_ratio 1, 1x1 output, not aligned) at (centre, centre) of a 4x4 map."""
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4))
    rois = np.array([[0, centre - 0.5, centre - 0.5, centre + 0.5, centre + 0.5]])
    out, cache = roi_align_forward(x, rois, 1, 1.0, 1, False)
    np.testing.assert_allclose(out[0, 0, 0, 0], expected(x[0, 0]), rtol=1e-12, atol=1e-15)


def test_roi_pool_quadrants():
    x = np.random.default_rng(0).permutation(32).astype(np.float64).reshape(2, 1, 4, 4)
    rois = np.array([[1, 0, 0, 3, 3]], dtype=np.float64)          # the whole 4x4 map of image 1
    out, _ = roi_pool_forward(x, rois, 2)
    quadrants = x[1, 0].reshape(2, 2, 2, 2).max(axis=(1, 3))
    np.testing.assert_array_equal(out[0, 0], quadrants)


@pytest.mark.parametrize("op", ["align", "pool"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_roi_set(op, dtype):
    x = np.ones((2, 3, 5, 5), dtype=dtype)
    rois = np.zeros((0, 5), dtype=dtype)
    fwd, bwd = ((roi_align_forward, roi_align_backward) if op == "align"
                else (roi_pool_forward, roi_pool_backward))
    out, cache = fwd(x, rois, (2, 4))
    assert out.shape == (0, 3, 2, 4) and out.dtype == dtype
    (dx,) = bwd(out, cache)
    assert dx.shape == x.shape and dx.dtype == dtype and not dx.any()


@pytest.mark.parametrize("op", ["align", "pool"])
def test_float32_in_float32_out_and_batch_routing(op):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    rois = np.array([[2, 1.5, 0.5, 6.25, 7.0], [0, 0, 0, 3, 3]], dtype=np.float32)
    fwd, bwd = ((roi_align_forward, roi_align_backward) if op == "align"
                else (roi_pool_forward, roi_pool_backward))
    out, cache = fwd(x, rois, 2)
    (dx,) = bwd(np.ones_like(out), cache)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert not dx[1].any() and dx[0].any() and dx[2].any()      # image 1 is never read
    changed = x.copy()
    changed[1] = 100.0
    np.testing.assert_array_equal(fwd(changed, rois, 2)[0], out)
    out64, _ = fwd(x.astype(np.float64), rois.astype(np.float64), 2)
    np.testing.assert_allclose(out, out64, rtol=1e-5, atol=1e-5)


def test_results_do_not_depend_on_chunking(monkeypatch):
    """Work is split in chunks of RoIs and of taps; tiny chunks must give the same answer."""
    import npseg.ops.roi as roi_module

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 12, 10))
    corner = rng.uniform(-2, 9, (30, 2))
    rois = np.concatenate([rng.integers(0, 2, (30, 1)), corner,
                           corner + rng.uniform(0, 8, (30, 2))], axis=1)
    results = []
    for chunk, taps in [(1 << 22, 1 << 21), (50, 7)]:
        monkeypatch.setattr(roi_module, "_CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(roi_module, "_TAPS_PER_SCATTER", taps)
        out_a, cache_a = roi_align_forward(x, rois, (3, 2), 1.0, -1, True)
        out_p, cache_p = roi_pool_forward(x, rois, (3, 2), 1.0)
        dout = np.random.default_rng(0).standard_normal(out_a.shape)
        results.append([out_a, roi_align_backward(dout, cache_a)[0],
                        out_p, roi_pool_backward(dout, cache_p)[0]])
    for big, small in zip(*results):
        np.testing.assert_allclose(small, big, rtol=1e-12, atol=1e-12)


def test_inputs_not_mutated():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6))
    rois = np.array([[1, 0.5, 1.0, 4.0, 5.5], [0, -2, -1, 8, 3]])
    for fwd, bwd, kwargs in [(roi_align_forward, roi_align_backward,
                              dict(spatial_scale=1.0, sampling_ratio=2, aligned=True)),
                             (roi_pool_forward, roi_pool_backward, dict(spatial_scale=1.0))]:
        x0, r0 = x.copy(), rois.copy()
        out, cache = fwd(x, rois, 3, **kwargs)
        dout = rng.standard_normal(out.shape)
        d0 = dout.copy()
        bwd(dout, cache)
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(rois, r0)
        np.testing.assert_array_equal(dout, d0)


# ---------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("fwd", [roi_align_forward, roi_pool_forward])
def test_bad_input(fwd):
    x = np.zeros((2, 3, 5, 5))
    good = np.array([[0, 0, 0, 2, 2]], dtype=np.float64)
    with pytest.raises(ValueError, match="rois"):
        fwd(x, np.array([[0, np.nan, 0, 2, 2]]), 2)
    with pytest.raises(ValueError, match="rois"):
        fwd(x, np.array([[0, 0, 0, 2, np.inf]]), 2)
    with pytest.raises(ValueError, match="x2 >= x1"):
        fwd(x, np.array([[0, 3, 0, 2, 2]], dtype=np.float64), 2)
    with pytest.raises(ValueError, match="x2 >= x1 and y2 >= y1"):
        fwd(x, np.array([[0, 0, 3, 2, 2]], dtype=np.float64), 2)
    with pytest.raises(ValueError, match="rois"):
        fwd(x, np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match="rois"):
        fwd(x, np.zeros(5), 2)
    with pytest.raises(ValueError, match=r"batch index.*\[0, 2\)"):
        fwd(x, np.array([[2, 0, 0, 2, 2]], dtype=np.float64), 2)
    with pytest.raises(ValueError, match="batch index"):
        fwd(x, np.array([[-1, 0, 0, 2, 2]], dtype=np.float64), 2)
    with pytest.raises(ValueError, match="batch index.*integers"):
        fwd(x, np.array([[0.5, 0, 0, 2, 2]], dtype=np.float64), 2)
    with pytest.raises(TypeError, match="rois"):
        fwd(x, good.astype(np.int64), 2)
    with pytest.raises(TypeError, match="rois"):
        fwd(x, good.astype(np.float32), 2)                 # dtype of x required
    with pytest.raises(ValueError, match="x"):
        fwd(x[0], good, 2)
    with pytest.raises(TypeError, match="x"):
        fwd(x.astype(np.int32), good, 2)
    with pytest.raises(ValueError, match="output_size"):
        fwd(x, good, 0)
    with pytest.raises(TypeError, match="output_size"):
        fwd(x, good, 2.5)
    with pytest.raises(ValueError, match="spatial_scale"):
        fwd(x, good, 2, 0.0)
    with pytest.raises(ValueError, match="spatial_scale"):
        fwd(x, good, 2, float("nan"))


def test_bad_align_options_and_dout():
    x = np.zeros((1, 2, 4, 4))
    rois = np.array([[0, 0, 0, 2, 2]], dtype=np.float64)
    with pytest.raises(TypeError, match="sampling_ratio"):
        roi_align_forward(x, rois, 2, 1.0, 1.5)
    with pytest.raises(TypeError, match="aligned"):
        roi_align_forward(x, rois, 2, 1.0, 2, "yes")
    for fwd, bwd in [(roi_align_forward, roi_align_backward),
                     (roi_pool_forward, roi_pool_backward)]:
        out, cache = fwd(x, rois, 2)
        with pytest.raises(ValueError, match="dout"):
            bwd(np.zeros((1, 2, 3, 2)), cache)
        with pytest.raises(TypeError, match="dout"):
            bwd(out.astype(np.float32), cache)


# ------------------------------------------------------------------------------ torchvision

def _torch_pair(fwd_name, x, rois, output_size, dout, *args):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    xt = torch.from_numpy(x).requires_grad_()
    out = getattr(ops, fwd_name)(xt, torch.from_numpy(rois), output_size, *args)
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), xt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@settings(max_examples=6)
@given(case=roi_cases(max_side=9, max_rois=6))
def test_roi_align_matches_torchvision(case, sampling_ratio, aligned):
    pytest.importorskip("torchvision")
    shape, rois, output_size, scale, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out, cache = roi_align_forward(x, rois, output_size, scale, sampling_ratio, aligned)
    dout = rng.standard_normal(out.shape)
    (dx,) = roi_align_backward(dout, cache)
    t_out, t_dx = _torch_pair("roi_align", x, rois, output_size, dout, scale, sampling_ratio,
                              aligned)
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@settings(max_examples=15)
@given(case=roi_cases(max_side=9, max_rois=6))
def test_roi_pool_matches_torchvision(case):
    pytest.importorskip("torchvision")
    shape, rois, output_size, scale, seed = case
    x = _distinct_map(shape, seed)
    out, cache = roi_pool_forward(x, rois, output_size, scale)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    (dx,) = roi_pool_backward(dout, cache)
    t_out, t_dx = _torch_pair("roi_pool", x, rois, output_size, dout, scale)
    np.testing.assert_array_equal(out, t_out)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_float32_detector_sized_case_matches_torchvision(op):
    pytest.importorskip("torchvision")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 16, 25, 25)).astype(np.float32)
    size = rng.uniform(16, 300, (64, 2))
    corner = rng.uniform(-20, 400, (64, 2))
    rois = np.concatenate([rng.integers(0, 2, (64, 1)), corner, corner + size], 1)
    rois = rois.astype(np.float32)
    dout = rng.standard_normal((64, 16, 7, 7)).astype(np.float32)
    if op == "roi_align":
        args = (1 / 16, 2, True)
        out, cache = roi_align_forward(x, rois, 7, *args)
        (dx,) = roi_align_backward(dout, cache)
    else:
        args = (1 / 16,)
        out, cache = roi_pool_forward(x, rois, 7, *args)
        (dx,) = roi_pool_backward(dout, cache)
    t_out, t_dx = _torch_pair(op, x, rois, 7, dout, *args)
    np.testing.assert_allclose(out, t_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, t_dx, rtol=1e-4, atol=1e-4)
