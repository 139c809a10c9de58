"""The one registry of GPU parity cases: every op of ``npseg.ops``, with tiny random inputs.

``REGISTRY`` maps an op name to a :class:`Case`:

* a *pair* name (``"conv2d"`` for ``conv2d_forward`` / ``conv2d_backward``), or
* a *plain function* name (``"im2col"``, ``"nms"``, ...).

``test_gpu_parity.py`` runs every case on both devices and compares them, and fails for any
name of ``npseg.ops.OPS`` this registry or ``npseg_gpu.ops.OPS`` lacks: a new op cannot be left
out. To add an op, add a strategy below (tiny inputs: the simulator costs about 0.1 ms per
thread per launch) and a ``Case`` in ``REGISTRY``.

A strategy draws a :class:`Call`: positional ``args`` and keyword ``kwargs`` holding NumPy
arrays (the tests move them to the device for the GPU side), plain values, and :class:`Uniforms`
placeholders where an op takes a random generator (each side then gets a generator that draws
the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from npseg.ops import batch_norm_forward
from npseg.ops._checks import conv_output_size


@dataclass
class Call:
    """The arguments of one forward (or plain function) call."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    seed: int = 0  # for the upstream gradient dout


@dataclass(frozen=True)
class Uniforms:
    """Stands for a random generator: both devices get one that draws the same uniforms."""

    seed: int


@dataclass(frozen=True)
class Case:
    """How to compare one op on both devices.

    ``inputs(dtype)`` is a strategy of :class:`Call`. ``kind`` is ``"pair"`` (forward, then
    backward on a random ``dout`` for the forward output, or for its first element when it is a
    tuple) or ``"function"`` (outputs only). ``mutated``: positions of arguments the forward
    updates in place (compared after the call); every other array argument must come back
    unchanged.
    """

    inputs: object
    kind: str = "pair"
    mutated: tuple = ()


seeds = st.integers(0, 2**32 - 1)


def pick(*values):
    """One of ``values``; hypothesis's simplest choice is the first, so put a typical value
    first (a derandomized run with few examples starts from the simplest ones)."""
    return st.sampled_from(values)


def _values(rng, shape, dtype, ties=False, specials=False):
    """Uniform values in [-2, 2); with ``ties`` small integers (many equal values); with
    ``specials`` a few -inf / NaN."""
    if ties:
        x = rng.integers(-2, 3, shape).astype(dtype)
    else:
        x = rng.uniform(-2.0, 2.0, shape).astype(dtype)
    if specials and x.size:
        k = rng.integers(0, x.size, 2)
        x.reshape(-1)[k[0]] = -np.inf
        x.reshape(-1)[k[1]] = np.nan
    return x


def _call(draw, args, kwargs=None):
    return Call(tuple(args), kwargs or {}, draw(seeds))


# --- convolutions -----------------------------------------------------------------------------

@st.composite
def _conv_geometry(draw):
    k = (draw(pick(3, 1, 2)), draw(pick(3, 2, 1)))
    s = (draw(pick(1, 2)), draw(pick(1, 2)))
    p = (draw(pick(1, 0)), draw(pick(1, 0)))
    d = (draw(pick(1, 2)), draw(pick(1, 2)))
    return k, s, p, d


def conv2d_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        (kh, kw), s, p, d = draw(_conv_geometry())
        groups = draw(pick(1, 2))
        c_in, c_out = groups * draw(pick(2, 1)), groups * draw(pick(2, 1))
        n = draw(pick(2, 1, 0))
        # a size the dilated kernel fits in, plus up to 3
        h = max(1, d[0] * (kh - 1) + 1 - 2 * p[0] + draw(pick(2, 3, 0, 1)))
        w = max(1, d[1] * (kw - 1) + 1 - 2 * p[1] + draw(pick(3, 2, 0, 1)))
        x = _values(rng, (n, c_in, h, w), dtype)
        weight = _values(rng, (c_out, c_in // groups, kh, kw), dtype)
        bias = _values(rng, (c_out,), dtype) if draw(pick(True, False)) else None
        return _call(draw, (x, weight, bias),
                     dict(stride=s, padding=p, dilation=d, groups=groups))
    return build()


def conv_transpose2d_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        (kh, kw), s, p, d = draw(_conv_geometry())
        op = tuple(draw(st.integers(0, max(s[a], d[a]) - 1)) for a in (0, 1))
        groups = draw(pick(1, 2))
        c_in, c_out = groups * draw(pick(2, 1)), groups * draw(pick(2, 1))
        n = draw(pick(2, 1, 0))
        h, w = draw(pick(3, 2, 1, 4)), draw(pick(2, 3, 1, 4))
        # no padding where it would leave no output (that error is the NumPy op's own check)
        p = tuple(p[a] if ((h, w)[a] - 1) * s[a] + d[a] * ((kh, kw)[a] - 1) + op[a] >= 2 * p[a]
                  else 0 for a in (0, 1))
        x = _values(rng, (n, c_in, h, w), dtype)
        weight = _values(rng, (c_in, c_out // groups, kh, kw), dtype)
        bias = _values(rng, (c_out,), dtype) if draw(pick(True, False)) else None
        return _call(draw, (x, weight, bias),
                     dict(stride=s, padding=p, output_padding=op, dilation=d, groups=groups))
    return build()


def linear_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        lead = draw(pick((3,), (2, 3), (), (0,), (1, 2)))
        n_in, n_out = draw(pick(4, 1, 5)), draw(pick(3, 1, 5))
        x = _values(rng, lead + (n_in,), dtype)
        weight = _values(rng, (n_out, n_in), dtype)
        bias = _values(rng, (n_out,), dtype) if draw(pick(True, False)) else None
        return _call(draw, (x, weight, bias))
    return build()


def _window_inputs(draw, dtype, dilation: bool, **value_options):
    """x and the window arguments of a pooling / im2col, the window fitting in the input."""
    rng = np.random.default_rng(draw(seeds))
    k = (draw(pick(2, 3, 1)), draw(pick(3, 2, 1)))
    s = draw(pick(None, (1, 1), (2, 1), (1, 3), (2, 2)))
    p = (draw(pick(*range(k[0] // 2, -1, -1))), draw(pick(*range(k[1] // 2, -1, -1))))
    d = (draw(pick(1, 2)), draw(pick(2, 1))) if dilation else (1, 1)
    n, c = draw(pick(2, 1, 0)), draw(pick(2, 1))
    h = max(1, d[0] * (k[0] - 1) + 1 - 2 * p[0] + draw(pick(2, 3, 0, 1)))
    w = max(1, d[1] * (k[1] - 1) + 1 - 2 * p[1] + draw(pick(3, 1, 0, 2)))
    x = _values(rng, (n, c, h, w), dtype, **value_options)
    return x, k, s, p, d


def im2col_inputs(dtype):
    @st.composite
    def build(draw):
        x, k, s, p, d = _window_inputs(draw, dtype, dilation=True)
        return _call(draw, (x, k), dict(stride=s or 1, padding=p, dilation=d))
    return build()


def col2im_inputs(dtype):
    @st.composite
    def build(draw):
        x, k, s, p, d = _window_inputs(draw, dtype, dilation=True)
        s = s or (1, 1)
        n, c, h, w = x.shape
        windows = [conv_output_size(x.shape[2 + a], k[a], s[a], p[a], d[a]) for a in (0, 1)]
        rng = np.random.default_rng(draw(seeds))
        cols = _values(rng, (n, c * k[0] * k[1], windows[0] * windows[1]), dtype)
        return _call(draw, (cols, (h, w), k), dict(stride=s, padding=p, dilation=d))
    return build()


# --- pooling ----------------------------------------------------------------------------------

def max_pool2d_inputs(dtype):
    @st.composite
    def build(draw):
        ties, specials = draw(pick(False, True)), draw(pick(False, True, False))
        x, k, s, p, d = _window_inputs(draw, dtype, dilation=True, ties=ties, specials=specials)
        return _call(draw, (x, k), dict(stride=s, padding=p, dilation=d,
                                        ceil_mode=draw(pick(True, False))))
    return build()


def avg_pool2d_inputs(dtype):
    @st.composite
    def build(draw):
        x, k, s, p, _ = _window_inputs(draw, dtype, dilation=False)
        return _call(draw, (x, k), dict(stride=s, padding=p, ceil_mode=draw(pick(True, False)),
                                        count_include_pad=draw(pick(False, True))))
    return build()


def max_unpool2d_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        n, c = draw(pick(2, 1, 0)), draw(pick(2, 1))
        h, w = draw(pick(2, 3, 1)), draw(pick(3, 2, 1))
        out_h, out_w = h + draw(pick(2, 0, 1, 3)), w + draw(pick(1, 0, 2, 3))
        x = _values(rng, (n, c, h, w), dtype)
        # distinct indices in each plane (with repeated ones the kept value is unspecified)
        planes = [rng.permutation(out_h * out_w)[:h * w] for _ in range(n * c)]
        indices = np.array(planes, dtype=np.int64).reshape(n, c, h, w)
        size = (out_h, out_w) if draw(pick(True, False)) or out_h != out_w else out_h
        return _call(draw, (x, indices, size))
    return build()


# --- normalization, activations, dropout ------------------------------------------------------

def batch_norm_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        ndim = draw(pick(4, 2, 3))
        training = draw(pick(True, False))
        n, c = draw(pick(2, 3, 1)), draw(pick(3, 1, 2))
        spatial = tuple(draw(pick(3, 2, 1)) for _ in range(ndim - 2))
        if training and n * int(np.prod(spatial)) == 1:
            n = 2
        x = _values(rng, (n, c) + spatial, dtype) * 3 + 1
        gamma, beta = _values(rng, (c,), dtype), _values(rng, (c,), dtype)
        running_mean = _values(rng, (c,), dtype)
        running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
        momentum = draw(pick(0.1, 0.0, 0.5, 1.0))
        eps = draw(pick(1e-5, 1e-2))
        return _call(draw, (x, gamma, beta, running_mean, running_var, training),
                     dict(momentum=momentum, eps=eps))
    return build()


def batch_norm_relu_inputs(dtype):
    """batch_norm's inputs, none of whose batch-norm outputs lies within 1e-3 of ReLU's kink at
    0 (where the two devices' roundings could fall on either side of it)."""
    def away_from_the_kink(call):
        copies = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in call.args]
        y, _ = batch_norm_forward(*copies, **call.kwargs)
        return not (np.abs(y) < 1e-3).any()
    return batch_norm_inputs(dtype).filter(away_from_the_kink)


def _small_shape(draw):
    return tuple(draw(st.lists(pick(3, 2, 1, 4), min_size=1, max_size=3))) + (draw(pick(4, 1)),)


def activation_inputs(dtype, **kwargs_strategies):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        x = _values(rng, _small_shape(draw), dtype, ties=draw(pick(True, False)))  # zeros too
        kwargs = {k: draw(v) for k, v in kwargs_strategies.items()}
        return _call(draw, (x,), kwargs)
    return build()


def dropout_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        x = _values(rng, _small_shape(draw), dtype)
        p = draw(pick(0.5, 0.25, 0.0, 1.0))
        return _call(draw, (x, p, draw(pick(True, False)), Uniforms(draw(seeds))))
    return build()


# --- interpolation ----------------------------------------------------------------------------

def interpolate_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        n, c = draw(pick(2, 1, 0)), draw(pick(2, 1))
        h, w = draw(pick(3, 2, 1, 5)), draw(pick(2, 4, 1, 3))
        x = _values(rng, (n, c, h, w), dtype)
        size = (draw(pick(5, 2, 1, 7, 3)), draw(pick(3, 7, 1, 2)))
        mode = draw(pick("bilinear", "nearest"))
        align = draw(pick(False, True, None)) if mode == "bilinear" else False
        return _call(draw, (x, size), dict(mode=mode, align_corners=align))
    return build()


# --- losses -----------------------------------------------------------------------------------

def cross_entropy_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        n, classes = draw(pick(2, 1, 3)), draw(pick(3, 1, 2, 4))
        spatial = draw(pick((3,), (2, 3), (), (1, 1)))
        logits = _values(rng, (n, classes) + spatial, dtype) * draw(pick(1, 30))
        ignore_index = draw(pick(-100, 0))
        target = rng.integers(0, classes, (n,) + spatial)
        target[rng.random(target.shape) < 0.2] = ignore_index
        target = target.astype(draw(pick(np.int64, np.int32)))
        weight = rng.uniform(0.1, 2.0, classes).astype(dtype) if draw(pick(True, False)) else None
        pixel_weight = (rng.uniform(0.0, 2.0, target.shape).astype(dtype)
                        if draw(pick(False, True)) else None)
        reduction = draw(pick("mean", "sum", "none"))
        return _call(draw, (logits, target), dict(weight=weight, ignore_index=ignore_index,
                                                  reduction=reduction,
                                                  pixel_weight=pixel_weight))
    return build()


def bce_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        shape = _small_shape(draw)
        logits = _values(rng, shape, dtype) * draw(pick(1, 40))
        target = rng.random(shape).astype(dtype)
        weight = None
        if draw(pick(True, False)):   # a shape that broadcasts: some axes 1, maybe fewer axes
            w_shape = tuple(1 if draw(st.booleans()) else s for s in shape)
            w_shape = w_shape[draw(st.integers(0, len(w_shape))):]
            weight = rng.uniform(0.0, 2.0, w_shape).astype(dtype)
        reduction = draw(pick("mean", "sum", "none"))
        return _call(draw, (logits, target), dict(weight=weight, reduction=reduction))
    return build()


def smooth_l1_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        shape = _small_shape(draw)
        pred, target = _values(rng, shape, dtype), _values(rng, shape, dtype)
        beta = draw(pick(1.0, 0.5, 0.0, 2.0))
        reduction = draw(pick("mean", "sum", "none"))
        return _call(draw, (pred, target), dict(beta=beta, reduction=reduction))
    return build()


# --- detection --------------------------------------------------------------------------------

def _boxes(rng, k, dtype, integer=False, zero_size=0.0, extent=40.0):
    """``k`` boxes in an ``extent``-pixel square, in clusters of boxes of similar place and size
    (many IoUs around 0.5); a share ``zero_size`` of zero width and height; ``integer``: whole
    coordinates (exact IoU ties)."""
    groups = max(k // 6, 1)
    member = rng.integers(0, groups, k)
    centre = rng.uniform(0.1, 0.9, (groups, 2))[member] * extent
    centre = centre + rng.normal(0, extent / 60, (k, 2))
    size = rng.uniform(2.0, extent / 3, (groups, 2))[member] * rng.uniform(0.75, 1.3, (k, 2))
    size = size * (rng.random((k, 1)) >= zero_size)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    if integer:
        boxes = np.round(boxes)
    return boxes.astype(dtype)


def _bad_boxes(draw, rng, boxes):
    """Sometimes spoil ``boxes`` (NaN, x2 < x1) so both devices must refuse them alike."""
    bad = draw(pick(None, None, None, None, None, None, "nan", "order"))
    if bad and boxes.shape[0]:
        boxes = boxes.copy()
        k = int(rng.integers(0, boxes.shape[0]))
        if bad == "nan":
            boxes[k, 1] = np.nan
        else:
            boxes[k, 2] = boxes[k, 0] - 1
    return boxes


def roi_inputs(dtype, align: bool):
    """A tiny map and a few RoIs around (and partly outside) it, in image pixels: integer
    corners (bins and samples on pixel boundaries) or not, zero-size RoIs, both batch items.
    Sometimes the first RoI straddles a corner of the map so that, with one sample per bin,
    RoIAlign samples lie exactly on its bounds -1 and H (W); RoIPool gets tied values."""
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        n, c = draw(pick(2, 1)), draw(pick(2, 1, 3, 2, 1, 0))
        h, w = draw(pick(5, 4, 3, 1)), draw(pick(6, 3, 1, 4))
        x = _values(rng, (n, c, h, w), dtype, ties=not align and draw(pick(True, False)))
        scale = draw(pick(1.0, 0.5, 0.25, 2.0))
        k = draw(pick(3, 2, 1, 3, 2, 0))
        start = rng.uniform(-0.3, 1.0, (k, 2)) * (w / scale, h / scale)
        size = rng.uniform(0.0, 0.9, (k, 2)) * (w / scale, h / scale)
        size[rng.random(k) < 0.15] = 0.0
        corners = np.concatenate([start, start + size], axis=1)
        if draw(pick(False, True)):
            corners = np.floor(corners)
        edge = k > 0 and draw(pick(False, True, False))
        if edge:   # one sample per 2-pixel bin: samples at -1 and 1, or at W (H) and W + 2
            corners[0] = ([-2, -2, 2, 2] if draw(st.booleans())
                          else [w - 1, h - 1, w + 3, h + 3]) / np.float64(scale)
        rois = np.concatenate([rng.integers(0, n, (k, 1)), corners], axis=1).astype(dtype)
        bad = draw(pick(None, None, None, None, "batch", "nan", "order"))
        if bad and k:
            rois[-1, {"batch": 0, "nan": 2, "order": 3}[bad]] = {
                "batch": n, "nan": np.nan, "order": rois[-1, 1] - 1}[bad]
        size = (2, 2) if edge else draw(pick((2, 2), 2, (1, 3), (3, 2)))
        kwargs = dict(spatial_scale=scale)
        if align:
            kwargs.update(sampling_ratio=1 if edge else draw(pick(-1, 2, 0, 1)),
                          aligned=False if edge else draw(pick(False, True)))
        return _call(draw, (x, rois, size), kwargs)
    return build()


def box_iou_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        integer = draw(pick(False, True))
        a = _boxes(rng, draw(pick(5, 0, 1, 7)), dtype, integer, zero_size=0.2)
        b = _boxes(rng, draw(pick(4, 1, 0, 6)), dtype, integer, zero_size=0.2)
        return _call(draw, (_bad_boxes(draw, rng, a), b))
    return build()


def nms_inputs(dtype, batched: bool):
    """Clustered boxes (some of zero size, integer corners), scores with ties; up to 70 boxes,
    past one 64-box mask word. The threshold is often exactly the IoU of the best box with
    another box of its label (the best box is always kept, so that pair decides: kept at
    ``IoU == threshold``, dropped above; in float32 the rounded IoU meets a float64 threshold)."""
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        k = draw(pick(12, 70, 0, 5, 1, 70))
        integer = draw(pick(True, False))
        boxes = _bad_boxes(draw, rng, _boxes(rng, k, dtype, integer, zero_size=0.1))
        scores = np.round(rng.random(k), draw(pick(8, 1))).astype(dtype)
        idxs = rng.integers(0, draw(pick(3, 1, 2)), k).astype(draw(pick(np.int64, np.int32)))
        threshold = draw(pick("tie", 0.5, "tie", 0.0, 0.3, 0.7, 1.0))
        if threshold == "tie":
            threshold = 0.5
            if k > 1 and np.isfinite(boxes).all():
                best = int(np.argsort(-scores, kind="stable")[0])
                with np.errstate(invalid="ignore", divide="ignore"):
                    iou = _iou64(boxes)[best]
                same = (idxs == idxs[best]) if batched else np.ones(k, bool)
                candidates = np.flatnonzero(np.isfinite(iou) & (iou > 0) & same
                                            & (np.arange(k) != best))
                if candidates.size:
                    threshold = float(iou[rng.choice(candidates)])
        if not batched:
            return _call(draw, (boxes, scores, threshold))
        return _call(draw, (boxes, scores, idxs, threshold))
    return build()


def _iou64(boxes):
    """Every pairwise IoU of ``boxes`` in float64, by the definition (for thresholds)."""
    b = boxes.astype(np.float64)
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area[:, None] + area[None, :] - inter)


_WEIGHTS = ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 1.5))


def encode_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        k = draw(pick(6, 0, 1))
        reference = _boxes(rng, k, dtype)
        proposals = _boxes(rng, k, dtype)
        return _call(draw, (_bad_boxes(draw, rng, reference), proposals, draw(pick(*_WEIGHTS))))
    return build()


def decode_inputs(dtype):
    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(seeds))
        k, classes = draw(pick(6, 0, 1)), draw(pick(1, 3))
        boxes = _bad_boxes(draw, rng, _boxes(rng, k, dtype, zero_size=0.1))
        deltas = (rng.standard_normal((k, 4 * classes)) * draw(pick(1.0, 20.0))).astype(dtype)
        kwargs = {}
        if draw(pick(False, True)):
            kwargs["scale_clamp"] = draw(pick(2.0, 0.5))
        return _call(draw, (deltas, boxes, draw(pick(*_WEIGHTS))), kwargs)
    return build()


REGISTRY = {
    # convolutions
    "conv2d": Case(conv2d_inputs),
    "conv_transpose2d": Case(conv_transpose2d_inputs),
    "linear": Case(linear_inputs),
    "im2col": Case(im2col_inputs, kind="function"),
    "col2im": Case(col2im_inputs, kind="function"),
    # pooling
    "max_pool2d": Case(max_pool2d_inputs),
    "max_unpool2d": Case(max_unpool2d_inputs),
    "avg_pool2d": Case(avg_pool2d_inputs),
    # normalization (running_mean, running_var: updated in place)
    "batch_norm": Case(batch_norm_inputs, mutated=(3, 4)),
    "batch_norm_relu": Case(batch_norm_relu_inputs, mutated=(3, 4)),
    # activations, dropout
    "relu": Case(activation_inputs),
    "leaky_relu": Case(lambda dtype: activation_inputs(
        dtype, negative_slope=st.sampled_from([0.01, 0.2, -0.5]))),
    "sigmoid": Case(activation_inputs),
    "tanh": Case(activation_inputs),
    "dropout": Case(dropout_inputs),
    # interpolation
    "interpolate": Case(interpolate_inputs),
    # losses
    "cross_entropy": Case(cross_entropy_inputs),
    "binary_cross_entropy_with_logits": Case(bce_inputs),
    "smooth_l1_loss": Case(smooth_l1_inputs),
    # detection
    "roi_align": Case(lambda dtype: roi_inputs(dtype, align=True)),
    "roi_pool": Case(lambda dtype: roi_inputs(dtype, align=False)),
    "box_iou": Case(box_iou_inputs, kind="function"),
    "nms": Case(lambda dtype: nms_inputs(dtype, batched=False), kind="function"),
    "batched_nms": Case(lambda dtype: nms_inputs(dtype, batched=True), kind="function"),
    "encode_boxes": Case(encode_inputs, kind="function"),
    "decode_boxes": Case(decode_inputs, kind="function"),
}
