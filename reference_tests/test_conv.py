"""conv2d, conv_transpose2d, im2col, col2im: gradients, formulas, adjoints, bad input, PyTorch."""

import importlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from npseg import ops
from npseg.gradcheck import check_op

conv_module = importlib.import_module("npseg.ops.conv")

# ------------------------------------------------------------------------------ strategies


@st.composite
def conv_configs(draw, transposed=False, max_groups=3):
    """A random geometry: odd and non-square sizes, kernels, strides, dilations, groups."""
    G = draw(st.integers(1, max_groups))
    cin_g, cout_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    N = draw(st.integers(1, 2))
    if transposed:
        size = (draw(st.integers(1, 4)), draw(st.integers(1, 5)))
        output_padding = tuple(draw(st.integers(0, max(stride[k], dilation[k]) - 1))
                               for k in range(2))
        # the output size (n-1)s - 2p + d(k-1) + op + 1 must stay >= 1
        padding = tuple(draw(st.integers(0, min(2, ((size[k] - 1) * stride[k] + dilation[k]
                                                    * (kernel[k] - 1) + output_padding[k]) // 2)))
                        for k in range(2))
    else:
        output_padding = (0, 0)
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        # smallest input the dilated kernel fits in once, plus up to 5 more (odd sizes included)
        size = tuple(max(1, dilation[k] * (kernel[k] - 1) + 1 - 2 * padding[k])
                     + draw(st.integers(0, 5)) for k in range(2))
    bias = draw(st.booleans())
    return dict(N=N, G=G, cin_g=cin_g, cout_g=cout_g, kernel=kernel, stride=stride,
                padding=padding, dilation=dilation, size=size, output_padding=output_padding,
                bias=bias)


def make_conv(cfg, seed, dtype=np.float64):
    """x, w, b, kwargs for conv2d from a config."""
    rng = np.random.default_rng(seed)
    G = cfg["G"]
    x = rng.standard_normal((cfg["N"], G * cfg["cin_g"]) + cfg["size"]).astype(dtype)
    w = rng.standard_normal((G * cfg["cout_g"], cfg["cin_g"]) + cfg["kernel"]).astype(dtype)
    b = rng.standard_normal(G * cfg["cout_g"]).astype(dtype) if cfg["bias"] else None
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                  groups=G)
    return x, w, b, kwargs


def make_conv_t(cfg, seed, dtype=np.float64):
    """x, w, b, kwargs for conv_transpose2d: w is (C_in, C_out/groups, kH, kW)."""
    rng = np.random.default_rng(seed)
    G = cfg["G"]
    x = rng.standard_normal((cfg["N"], G * cfg["cin_g"]) + cfg["size"]).astype(dtype)
    w = rng.standard_normal((G * cfg["cin_g"], cfg["cout_g"]) + cfg["kernel"]).astype(dtype)
    b = rng.standard_normal(G * cfg["cout_g"]).astype(dtype) if cfg["bias"] else None
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"],
                  output_padding=cfg["output_padding"], dilation=cfg["dilation"], groups=G)
    return x, w, b, kwargs


# ----------------------------------------------------------------- oracles from the formulas


def naive_conv2d(x, w, b, stride, padding, dilation, groups):
    """out[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] xpad[n, g*Cg + c, s*i + d*p, s*j + d*q]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((N, O, Ho, Wo))
    for g in range(groups):
        for p in range(kh):
            for q in range(kw):
                rows = slice(dh * p, dh * p + sh * (Ho - 1) + 1, sh)
                cols = slice(dw * q, dw * q + sw * (Wo - 1) + 1, sw)
                patch = xp[:, g * Cg:(g + 1) * Cg, rows, cols]
                out[:, g * Og:(g + 1) * Og] += np.einsum(
                    "oc,nchw->nohw", w[g * Og:(g + 1) * Og, :, p, q], patch)
    if b is not None:
        out += b[None, :, None, None]
    return out


def naive_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Scatter: out[n, g*Og + o, s*i + d*p - pad, s*j + d*q - pad]
                    += sum_c w[g*Cg + c, o, p, q] x[n, g*Cg + c, i, j]."""
    (sh, sw), (ph, pw), (dh, dw), (oh, ow) = stride, padding, dilation, output_padding
    N, C, H, W = x.shape
    _, Og, kh, kw = w.shape
    Cg = C // groups
    Ho = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1
    Wo = (W - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1
    big = np.zeros((N, Og * groups, Ho + 2 * ph, Wo + 2 * pw))
    for g in range(groups):
        for p in range(kh):
            for q in range(kw):
                rows = slice(dh * p, dh * p + sh * (H - 1) + 1, sh)
                cols = slice(dw * q, dw * q + sw * (W - 1) + 1, sw)
                big[:, g * Og:(g + 1) * Og, rows, cols] += np.einsum(
                    "co,nchw->nohw", w[g * Cg:(g + 1) * Cg, :, p, q], x[:, g * Cg:(g + 1) * Cg])
    out = big[:, :, ph:ph + Ho, pw:pw + Wo]
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def naive_conv2d_dw(x, dout, w_shape, stride, padding, dilation, groups):
    """dw[o, c, p, q] = sum_{n,i,j} dout[n, o, i, j] xpad[n, g*Cg + c, s*i + d*p, s*j + d*q]."""
    (sh, sw), (ph, pw), (dh, dw_) = stride, padding, dilation
    O, Cg, kh, kw = w_shape
    Og, (Ho, Wo) = O // groups, dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dw = np.zeros(w_shape)
    for g in range(groups):
        for p in range(kh):
            for q in range(kw):
                rows = slice(dh * p, dh * p + sh * (Ho - 1) + 1, sh)
                cols = slice(dw_ * q, dw_ * q + sw * (Wo - 1) + 1, sw)
                patch = xp[:, g * Cg:(g + 1) * Cg, rows, cols]
                dw[g * Og:(g + 1) * Og, :, p, q] = np.einsum(
                    "nohw,nchw->oc", dout[:, g * Og:(g + 1) * Og], patch)
    return dw


def naive_im2col(x, kernel, stride, padding, dilation):
    """One element at a time:
    cols[n, c*kH*kW + p*kW + q, i*W_out + j] = xpad[n, c, s*i + d*p, s*j + d*q]."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    N, C, H, W = x.shape
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.zeros((N, C * kh * kw, Ho * Wo))
    for n in range(N):
        for c in range(C):
            for p in range(kh):
                for q in range(kw):
                    for i in range(Ho):
                        for j in range(Wo):
                            y, xx = sh * i + dh * p - ph, sw * j + dw * q - pw
                            if 0 <= y < H and 0 <= xx < W:
                                cols[n, c * kh * kw + p * kw + q, i * Wo + j] = x[n, c, y, xx]
    return cols


# ---------------------------------------------------------------------- gradient checks

# Network-like geometries that every run checks, whatever hypothesis draws.
CONV_EXAMPLES = [
    dict(N=2, G=1, cin_g=2, cout_g=2, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
         dilation=(1, 1), size=(7, 6), output_padding=(0, 0), bias=True),
    dict(N=1, G=2, cin_g=2, cout_g=1, kernel=(3, 2), stride=(1, 2), padding=(2, 1),
         dilation=(2, 1), size=(5, 7), output_padding=(0, 0), bias=False),
    # stride 1: the input gradient as a convolution of dout (_input_gradient_as_conv2d)
    dict(N=2, G=2, cin_g=2, cout_g=3, kernel=(3, 2), stride=(1, 1), padding=(1, 0),
         dilation=(2, 1), size=(6, 5), output_padding=(0, 0), bias=True),
]
CONV_T_EXAMPLES = [
    dict(N=2, G=1, cin_g=2, cout_g=2, kernel=(4, 4), stride=(2, 2), padding=(1, 1),
         dilation=(1, 1), size=(3, 4), output_padding=(0, 0), bias=True),
    dict(N=1, G=2, cin_g=1, cout_g=2, kernel=(3, 2), stride=(2, 3), padding=(1, 0),
         dilation=(1, 2), size=(3, 2), output_padding=(1, 1), bias=False),
]


@example(CONV_EXAMPLES[0], 1)
@example(CONV_EXAMPLES[1], 2)
@example(CONV_EXAMPLES[2], 3)
@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_gradients(cfg, seed):
    x, w, b, kwargs = make_conv(cfg, seed)
    wrt = [0, 1, 2] if b is not None else [0, 1]
    check_op(ops.conv2d_forward, ops.conv2d_backward, [x, w, b], wrt=wrt, kwargs=kwargs,
             mode="full", seed=seed)
    out, cache = ops.conv2d_forward(x, w, b, **kwargs)
    grads = ops.conv2d_backward(np.ones_like(out), cache)
    assert len(grads) == 3 and (grads[2] is None) == (b is None)


@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_backward_without_dx_gives_the_same_dw_and_db(cfg, seed):
    x, w, b, kwargs = make_conv(cfg, seed)
    out, cache = ops.conv2d_forward(x, w, b, **kwargs)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dx, dw, db = ops.conv2d_backward(dout, cache)
    none, dw_only, db_only = ops.conv2d_backward(dout, cache, need_dx=False)
    assert none is None
    # with stride 1, dw comes from dout's columns when dx is computed too: other sums, same value
    np.testing.assert_allclose(dw_only, dw, rtol=1e-12, atol=1e-12 * np.abs(dw).max())
    if b is None:
        assert db_only is None
    else:
        np.testing.assert_array_equal(db_only, db)


def test_functional_conv2d_skips_dx_only_for_inputs_without_grad(monkeypatch):
    from npseg import Tensor
    from npseg import functional as F
    calls = []
    backward = ops.conv2d_backward

    def spy(dout, cache, *, need_dx=True):
        calls.append(need_dx)
        return backward(dout, cache, need_dx=need_dx)

    monkeypatch.setattr(ops, "conv2d_backward", spy)
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((2, 3, 3, 3)), requires_grad=True)
    for x_grad in (False, True):
        x = Tensor(rng.standard_normal((1, 3, 5, 5)), requires_grad=x_grad)
        F.conv2d(x, w, padding=1).sum().backward()
        assert (x.grad is not None) == x_grad and w.grad is not None
    assert calls == [False, True]


@example(CONV_T_EXAMPLES[0], 1)
@example(CONV_T_EXAMPLES[1], 2)
@given(conv_configs(transposed=True), st.integers(0, 2**16))
def test_conv_transpose2d_gradients(cfg, seed):
    x, w, b, kwargs = make_conv_t(cfg, seed)
    wrt = [0, 1, 2] if b is not None else [0, 1]
    check_op(ops.conv_transpose2d_forward, ops.conv_transpose2d_backward, [x, w, b], wrt=wrt,
             kwargs=kwargs, mode="full", seed=seed)
    out, cache = ops.conv_transpose2d_forward(x, w, b, **kwargs)
    grads = ops.conv_transpose2d_backward(np.ones_like(out), cache)
    assert len(grads) == 3 and (grads[2] is None) == (b is None)


# --------------------------------------------------------------------------- properties


@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_matches_formula(cfg, seed):
    x, w, b, kwargs = make_conv(cfg, seed)
    out, _ = ops.conv2d_forward(x, w, b, **kwargs)
    np.testing.assert_allclose(out, naive_conv2d(x, w, b, **kwargs), rtol=1e-10, atol=1e-10)


@given(conv_configs(transposed=True), st.integers(0, 2**16))
def test_conv_transpose2d_matches_formula(cfg, seed):
    x, w, b, kwargs = make_conv_t(cfg, seed)
    out, _ = ops.conv_transpose2d_forward(x, w, b, **kwargs)
    np.testing.assert_allclose(out, naive_conv_transpose2d(x, w, b, **kwargs),
                               rtol=1e-10, atol=1e-10)


@given(conv_configs(), st.integers(0, 2**16))
def test_conv_transpose_is_adjoint_of_conv(cfg, seed):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> with the same w (no bias)."""
    x, w, _, kwargs = make_conv(cfg, seed)
    y, _ = ops.conv2d_forward(x, w, **kwargs)
    y = np.random.default_rng(seed + 1).standard_normal(y.shape)
    # the output padding that gives back x's size
    output_padding = tuple((x.shape[2 + k] + 2 * kwargs["padding"][k]
                            - kwargs["dilation"][k] * (w.shape[2 + k] - 1) - 1)
                           % kwargs["stride"][k] for k in range(2))
    xt, _ = ops.conv_transpose2d_forward(y, w, output_padding=output_padding, **kwargs)
    assert xt.shape == x.shape
    lhs = np.sum(ops.conv2d_forward(x, w, **kwargs)[0] * y)
    assert lhs == pytest.approx(np.sum(x * xt), rel=1e-10, abs=1e-10)


@given(conv_configs(), st.integers(0, 2**16))
def test_im2col_col2im_adjoint(cfg, seed):
    x, w, _, kwargs = make_conv(cfg, seed)
    geometry = dict(kernel_size=w.shape[2:], stride=kwargs["stride"],
                    padding=kwargs["padding"], dilation=kwargs["dilation"])
    cols = ops.im2col(x, **geometry)
    c = np.random.default_rng(seed + 1).standard_normal(cols.shape)
    back = ops.col2im(c, x.shape[2:], **geometry)
    assert back.shape == x.shape
    assert np.sum(cols * c) == pytest.approx(np.sum(x * back), rel=1e-10, abs=1e-10)


@settings(max_examples=10)
@given(conv_configs(max_groups=1), st.integers(0, 2**16))
def test_im2col_matches_formula(cfg, seed):
    x, w, _, kwargs = make_conv(cfg, seed)
    geometry = dict(kernel=w.shape[2:], stride=kwargs["stride"], padding=kwargs["padding"],
                    dilation=kwargs["dilation"])
    got = ops.im2col(x, geometry["kernel"], geometry["stride"], geometry["padding"],
                     geometry["dilation"])
    np.testing.assert_array_equal(got, naive_im2col(x, **geometry))


@given(conv_configs(), st.integers(0, 2**16))
def test_groups_are_independent_convs(cfg, seed):
    x, w, b, kwargs = make_conv(cfg, seed)
    G = kwargs.pop("groups")
    out, _ = ops.conv2d_forward(x, w, b, groups=G, **kwargs)
    Cg, Og = x.shape[1] // G, w.shape[0] // G
    for g in range(G):
        bg = None if b is None else b[g * Og:(g + 1) * Og]
        part, _ = ops.conv2d_forward(x[:, g * Cg:(g + 1) * Cg], w[g * Og:(g + 1) * Og], bg,
                                     **kwargs)
        np.testing.assert_allclose(out[:, g * Og:(g + 1) * Og], part, rtol=1e-12, atol=1e-12)


@given(conv_configs(max_groups=1), st.integers(0, 2**16))
def test_stride_subsamples_the_stride_one_conv(cfg, seed):
    x, w, b, kwargs = make_conv(cfg, seed)
    out, _ = ops.conv2d_forward(x, w, b, **kwargs)
    sh, sw = kwargs.pop("stride")
    dense, _ = ops.conv2d_forward(x, w, b, stride=1, **kwargs)
    np.testing.assert_allclose(out, dense[:, :, ::sh, ::sw][:, :, :out.shape[2], :out.shape[3]],
                               rtol=1e-12, atol=1e-12)


@given(conv_configs(), st.integers(0, 2**16), st.integers(1, 3))
def test_input_gradient_as_a_convolution_equals_col2im(cfg, seed, cout_factor):
    """With stride 1 the input gradient is conv2d(dout, flipped w^T); it must give col2im's dx
    (the other path), for every padding the identity holds for and any channel ratio."""
    cfg = dict(cfg, stride=(1, 1), cout_g=cfg["cout_g"] * cout_factor)
    x, w, b, kwargs = make_conv(cfg, seed)
    out, cache = ops.conv2d_forward(x, w, b, **kwargs)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    pitch = cache[3]
    as_conv2d = conv_module._input_gradient_as_conv2d(w, cfg["G"], pitch)
    fits = all(p <= d * (k - 1) for p, d, k in zip(cfg["padding"], cfg["dilation"],
                                                   cfg["kernel"]))
    assert (as_conv2d is not None) == (fits and cfg["cout_g"] <= 2 * cfg["cin_g"])
    if as_conv2d is None:
        return
    w_t, pitch_t = as_conv2d
    dx_conv = np.empty_like(x)
    conv_module._conv2d_block(dout, w_t, None, cfg["G"], pitch_t, dx_conv)
    dcols = np.matmul(w.reshape(cfg["G"], -1, w[0].size).swapaxes(-1, -2),
                      pitch.to_pitch(dout).reshape(cfg["G"], -1, x.shape[0] * pitch.L))
    dx_col2im = conv_module._col2im_pitched(  # dcols (C_in, kH, kW, N, L) -> (N, C_in, ...)
        dcols.reshape((x.shape[1],) + cfg["kernel"] + (x.shape[0], pitch.L)).transpose(
            3, 0, 1, 2, 4), pitch)
    np.testing.assert_allclose(dx_conv, dx_col2im, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ops.conv2d_backward(dout, cache)[0], dx_col2im,
                               rtol=1e-12, atol=1e-12)


def test_kernel_offsets_grouped_by_shift_cover_every_tap_once():
    """The pitched im2col/col2im copy or add the kernel taps that share a shift in one operation
    (``_shift_groups``); col2im relies on a group's phases being all written before or none."""
    im2col_module = importlib.import_module("npseg.ops.im2col")
    geometries = [(k, s, d) for k in range(1, 9) for s in range(1, 6) for d in range(1, 5)]
    for k, s, d in geometries:
        groups = im2col_module._shift_groups(k, s, d)
        taps = [(p, a, shift) for shift, p_slice, a_slice in groups
                for p, a in zip(range(k)[p_slice], range(s)[a_slice], strict=True)]
        assert taps == [(p, d * p % s, d * p // s) for p in range(k)]
    for rows in geometries[::7]:
        for columns in geometries[::5]:
            written = np.zeros((rows[1], columns[1]), dtype=bool)
            for _, _, a in im2col_module._shift_groups(*rows):
                for _, _, b in im2col_module._shift_groups(*columns):
                    assert written[a, b].all() or not written[a, b].any()
                    written[a, b] = True


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    ((16, 16), (8, 8), (4, 4), (1, 1)),   # FCN-8s's upscore8: 2x2 groups of 8x8 taps
    ((4, 4), (2, 2), (1, 1), (1, 1)),     # FCN's 2x upsampling
    ((5, 3), (4, 3), (2, 0), (3, 1)),     # groups of two taps, phases 3 apart
    ((3, 7), (2, 5), (1, 2), (2, 2)),
])
def test_large_strides_and_dilations_match_the_formulas(kernel, stride, padding, dilation):
    """Kernels with several taps per shift group, both convolutions, values and gradients."""
    rng = np.random.default_rng(0)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    x = rng.standard_normal((2, 3, 19, 21))
    w = rng.standard_normal((2, 3) + kernel)
    b = rng.standard_normal(2)
    out, _ = ops.conv2d_forward(x, w, b, **kwargs)
    np.testing.assert_allclose(out, naive_conv2d(x, w, b, groups=1, **kwargs), atol=1e-10)
    check_op(ops.conv2d_forward, ops.conv2d_backward, [x, w, b], wrt=[0, 1, 2], kwargs=kwargs,
             mode="random")
    wt = rng.standard_normal((3, 2) + kernel)       # (C_in, C_out, kH, kW) for the transpose
    y = rng.standard_normal((2, 3, 4, 5))
    out_t, _ = ops.conv_transpose2d_forward(y, wt, b, **kwargs)
    expected = naive_conv_transpose2d(y, wt, b, output_padding=(0, 0), groups=1, **kwargs)
    np.testing.assert_allclose(out_t, expected, atol=1e-10)
    check_op(ops.conv_transpose2d_forward, ops.conv_transpose2d_backward, [y, wt, b],
             wrt=[0, 1, 2], kwargs=kwargs, mode="random")


def test_conv_1x1_is_a_matrix_product():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 7, 4))
    w = rng.standard_normal((6, 5, 1, 1))
    b = rng.standard_normal(6)
    out, _ = ops.conv2d_forward(x, w, b)
    expected = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_conv_known_values():
    """A hand-computed case: a 3x3 ramp, a 2x2 kernel of ones (window sums), no padding."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    out, _ = ops.conv2d_forward(x, np.ones((1, 1, 2, 2)), np.array([0.5]))
    np.testing.assert_array_equal(out[0, 0], [[0 + 1 + 3 + 4 + 0.5, 1 + 2 + 4 + 5 + 0.5],
                                              [3 + 4 + 6 + 7 + 0.5, 4 + 5 + 7 + 8 + 0.5]])
    # transposed conv of a single pixel stamps the kernel at stride 2, overlaps summed
    xt = np.ones((1, 1, 1, 2))
    kernel = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    out, _ = ops.conv_transpose2d_forward(xt, kernel, stride=2)
    np.testing.assert_array_equal(out[0, 0], [[1, 2, 3 + 1, 2, 3], [4, 5, 6 + 4, 5, 6]])


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_float32_in_float32_out(op):
    cfg = dict(N=2, G=2, cin_g=3, cout_g=2, kernel=(3, 2), stride=(2, 1), padding=(1, 2),
               dilation=(1, 2), size=(9, 7), output_padding=(1, 0), bias=True)
    make = make_conv if op == "conv2d" else make_conv_t
    forward, backward = getattr(ops, op + "_forward"), getattr(ops, op + "_backward")
    x64, w64, b64, kwargs = make(cfg, 0)
    x32, w32, b32 = (a.astype(np.float32) for a in (x64, w64, b64))
    out64, cache64 = forward(x64, w64, b64, **kwargs)
    out32, cache32 = forward(x32, w32, b32, **kwargs)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    dout = np.random.default_rng(1).standard_normal(out64.shape)
    for g32, g64 in zip(backward(dout.astype(np.float32), cache32), backward(dout, cache64)):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-3)
    cols = ops.im2col(x32, 3, 2, 1)
    assert cols.dtype == np.float32 and ops.col2im(cols, (9, 7), 3, 2, 1).dtype == np.float32


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_inputs_not_mutated(op):
    cfg = dict(N=2, G=1, cin_g=3, cout_g=4, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
               dilation=(1, 1), size=(6, 5), output_padding=(1, 1), bias=True)
    make = make_conv if op == "conv2d" else make_conv_t
    forward, backward = getattr(ops, op + "_forward"), getattr(ops, op + "_backward")
    x, w, b, kwargs = make(cfg, 0)
    copies = [a.copy() for a in (x, w, b)]
    out, cache = forward(x, w, b, **kwargs)
    dout = np.ones_like(out)
    backward(dout, cache)
    backward(dout, cache)  # a second backward gives the same (the cache is not consumed)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(dout, np.ones_like(out))
    g1, g2 = backward(dout, cache), backward(dout, cache)
    for a, c in zip(g1, g2):
        np.testing.assert_array_equal(a, c)
    cols = ops.im2col(x, 2)
    cols_copy = cols.copy()
    ops.col2im(cols, x.shape[2:], 2)
    np.testing.assert_array_equal(cols, cols_copy)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 2, 6)).transpose(2, 1, 3, 0)  # (2, 4, 6, 5), not contiguous
    w = rng.standard_normal((3, 3, 4, 2)).transpose(2, 3, 0, 1)[:, :, ::-1]  # (4, 2, 3, 3)
    out, cache = ops.conv2d_forward(x, w, stride=(1, 2), padding=1, groups=2)
    np.testing.assert_allclose(out, naive_conv2d(x, w, None, (1, 2), (1, 1), (1, 1), 2),
                               rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape[::-1]).T  # non-contiguous upstream gradient
    ref = ops.conv2d_backward(np.ascontiguousarray(dout), cache)
    for a, r in zip(ops.conv2d_backward(dout, cache), ref):
        if r is not None:
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_empty_batch(op):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 2, 3, 3))
    x = np.zeros((0, 4 if op == "conv2d" else 6, 5, 5))
    b = np.ones(6 if op == "conv2d" else 4)
    out, cache = getattr(ops, op + "_forward")(x, w, b, stride=2, padding=1, groups=2)
    assert out.shape[0] == 0
    dx, dw, db = getattr(ops, op + "_backward")(out, cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)


@pytest.mark.parametrize("block_bytes", [1, 4 << 20, 1 << 40])
def test_image_blocks_give_the_same_result(block_bytes, monkeypatch):
    """The batch goes through the column matrix in blocks of images: one image per block,
    a few, or all at once must agree with the formulas."""
    monkeypatch.setattr(conv_module, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((5, 32, 23, 29)), rng.standard_normal((4, 16, 3, 3))
    out, cache = ops.conv2d_forward(x, w, None, padding=1, groups=2)
    np.testing.assert_allclose(out, naive_conv2d(x, w, None, (1, 1), (1, 1), (1, 1), 2),
                               rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = ops.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dx, naive_conv_transpose2d(dout, w, None, (1, 1), (1, 1), (0, 0),
                                                          (1, 1), 2), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, naive_conv2d_dw(x, dout, w.shape, (1, 1), (1, 1), (1, 1), 2),
                               rtol=1e-10, atol=1e-10)
    wt = rng.standard_normal((32, 3, 4, 4))
    out, cache = ops.conv_transpose2d_forward(x, wt, None, stride=2, padding=1, groups=2)
    np.testing.assert_allclose(out, naive_conv_transpose2d(x, wt, None, (2, 2), (1, 1), (0, 0),
                                                           (1, 1), 2), rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    dx, dw, _ = ops.conv_transpose2d_backward(dout, cache)
    np.testing.assert_allclose(dx, naive_conv2d(dout, wt, None, (2, 2), (1, 1), (1, 1), 2),
                               rtol=1e-10, atol=1e-10)


# -------------------------------------------------------------------------------- bad input


def _good():
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((6, 2, 3, 3)), np.zeros(6)


@pytest.mark.parametrize("mutate, error, match", [
    (lambda x, w, b, kw: (x[0], w, b, kw), ValueError, "x must be 4-D"),
    (lambda x, w, b, kw: ([[1.0]], w, b, kw), TypeError, "x must be an array"),
    (lambda x, w, b, kw: (x.astype(np.int64), w, b, kw), TypeError, "x must be float32"),
    (lambda x, w, b, kw: (x, w[0], b, kw), ValueError, "w must be 4-D"),
    (lambda x, w, b, kw: (x, w.astype(np.float32), b, kw), TypeError, "w must have the dtype"),
    (lambda x, w, b, kw: (x, w, b.astype(np.float32), kw), TypeError, "b must have the dtype"),
    (lambda x, w, b, kw: (x, w, b[:5], kw), ValueError, "b must have shape"),
    (lambda x, w, b, kw: (x, w[:, :1], b, kw), ValueError, "w must have C_in/groups"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, groups=3)), ValueError, "groups"),
    (lambda x, w, b, kw: (x, w[:5], b[:5], dict(kw, groups=2)), ValueError, "groups"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, groups=0)), ValueError, "groups"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, stride=0)), ValueError, "stride"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, stride=(1, 2, 3))), TypeError, "stride"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, padding=-1)), ValueError, "padding"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, dilation=1.5)), TypeError, "dilation"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, dilation=4)), ValueError, "larger than the padded"),
    (lambda x, w, b, kw: (x[:, :, :2], w, b, kw), ValueError, "larger than the padded"),
])
def test_conv2d_bad_input(mutate, error, match):
    x, w, b = _good()
    x, w, b, kwargs = mutate(x, w, b, dict(groups=2))
    with pytest.raises(error, match=match):
        ops.conv2d_forward(x, w, b, **kwargs)


@pytest.mark.parametrize("mutate, error, match", [
    (lambda x, w, b, kw: (x[0], w, b, kw), ValueError, "x must be 4-D"),
    (lambda x, w, b, kw: (x, w[:3], b, kw), ValueError, "w must have C_in"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, groups=3)), ValueError, "groups"),
    (lambda x, w, b, kw: (x, w, b[:3], kw), ValueError, "b must have shape"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, output_padding=2)), ValueError, "output_padding"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, output_padding=(0, 3), dilation=(1, 3))),
     ValueError, "output_padding"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, output_padding=-1)), ValueError, "output_padding"),
    (lambda x, w, b, kw: (x, w.astype(np.float32), b, kw), TypeError, "w must have the dtype"),
    (lambda x, w, b, kw: (x, w, b, dict(kw, padding=9)), ValueError, "padding"),
    (lambda x, w, b, kw: (x, "w", b, kw), TypeError, "w must be an array"),
])
def test_conv_transpose2d_bad_input(mutate, error, match):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((4, 3, 3, 3)), np.zeros(6)
    x, w, b, kwargs = mutate(x, w, b, dict(groups=2, stride=2))
    with pytest.raises(error, match=match):
        ops.conv_transpose2d_forward(x, w, b, **kwargs)
    # output_padding 1 with stride 1 is allowed when the dilation is 2 (PyTorch's rule)
    ops.conv_transpose2d_forward(rng.standard_normal((1, 2, 3, 3)),
                                 rng.standard_normal((2, 1, 2, 2)), output_padding=1, dilation=2)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_backward_bad_dout(op):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 5, 5)), rng.standard_normal((4, 4, 3, 3))
    out, cache = getattr(ops, op + "_forward")(x, w, None)
    backward = getattr(ops, op + "_backward")
    with pytest.raises(ValueError, match="dout must have shape"):
        backward(np.ones(out.shape[:3] + (out.shape[3] + 1,)), cache)
    with pytest.raises(TypeError, match="dout must have the dtype"):
        backward(np.ones(out.shape, np.float32), cache)
    with pytest.raises(ValueError, match="dout must be 4-D"):
        backward(np.ones(out.shape[1:]), cache)


@pytest.mark.parametrize("call, error, match", [
    (lambda x: ops.im2col(x[0], 3), ValueError, "x must be 4-D"),
    (lambda x: ops.im2col(x, 0), ValueError, "kernel_size"),
    (lambda x: ops.im2col(x, 7), ValueError, "larger than the padded"),
    (lambda x: ops.im2col(x.astype(np.float16), 3), TypeError, "x must be float32"),
    (lambda x: ops.col2im(ops.im2col(x, 3), (6, 5), 3), ValueError, "cols"),
    (lambda x: ops.col2im(ops.im2col(x, 3), (5, 5), (2, 3)), ValueError, "cols"),
    (lambda x: ops.col2im(ops.im2col(x, 3)[0], (5, 5), 3), ValueError, "cols must be 3-D"),
    (lambda x: ops.col2im(ops.im2col(x, 3), 0, 3), ValueError, "output_size"),
])
def test_im2col_bad_input(call, error, match):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    with pytest.raises(error, match=match):
        call(x)


# ------------------------------------------------------------------------------ PyTorch


def _torch_check(cfg, seed, transposed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, kwargs = (make_conv_t if transposed else make_conv)(cfg, seed)
    forward = ops.conv_transpose2d_forward if transposed else ops.conv2d_forward
    backward = ops.conv_transpose2d_backward if transposed else ops.conv2d_backward
    out, cache = forward(x, w, b, **kwargs)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    ref = (F.conv_transpose2d if transposed else F.conv2d)(xt, wt, bt, **kwargs)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    ref.backward(torch.tensor(dout))
    dx, dw, db = backward(dout, cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if b is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.torch
@given(conv_configs(), st.integers(0, 2**16))
def test_conv2d_matches_torch(cfg, seed):
    _torch_check(cfg, seed, transposed=False)


@pytest.mark.torch
@given(conv_configs(transposed=True), st.integers(0, 2**16))
def test_conv_transpose2d_matches_torch(cfg, seed):
    _torch_check(cfg, seed, transposed=True)


@pytest.mark.torch
@given(conv_configs(), st.integers(0, 2**16))
def test_im2col_col2im_match_torch(cfg, seed):
    torch = pytest.importorskip("torch")
    x, w, _, kwargs = make_conv(cfg, seed)
    geometry = dict(kernel_size=w.shape[2:], stride=kwargs["stride"],
                    padding=kwargs["padding"], dilation=kwargs["dilation"])
    cols = ops.im2col(x, **geometry)
    np.testing.assert_array_equal(cols, torch.nn.functional.unfold(torch.tensor(x), **geometry))
    c = np.random.default_rng(seed).standard_normal(cols.shape)
    np.testing.assert_allclose(ops.col2im(c, x.shape[2:], **geometry),
                               torch.nn.functional.fold(torch.tensor(c), x.shape[2:], **geometry),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.torch
def test_float32_realistic_shapes_match_torch():
    """The fast float32 path on a network-sized layer: stride 2, padding, 3 channels in."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 33, 40), dtype=np.float32)
    w = rng.standard_normal((8, 3, 7, 7), dtype=np.float32) * 0.1
    out, cache = ops.conv2d_forward(x, w, None, stride=2, padding=3)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ref = torch.nn.functional.conv2d(xt, wt, stride=2, padding=3)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-4, atol=1e-4)
    ref.backward(torch.ones_like(ref))
    dx, dw, _ = ops.conv2d_backward(np.ones_like(out), cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-4, atol=1e-3)
