"""npseg.detection: anchors, level mapping, matching, sampling, proposals, RoI and mask targets.

Hand-made cases with known answers, independent reference implementations written plainly in
this file (loops are fine here), property tests on hypothesis-drawn inputs, bad input, and
optional comparisons with torchvision.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npseg import ops
from npseg.detection import (AnchorGenerator, BalancedPositiveNegativeSampler, BoxCoder, Matcher,
                             ProposalConfig, RoITargetConfig, assign_levels, base_anchors,
                             build_roi_targets, build_roi_targets_for_image, clip_boxes_to_image,
                             flatten_rpn_outputs, generate_anchors, generate_proposals,
                             mask_targets, multiscale_roi_align, paste_masks_in_image,
                             subsample_labels)

# ----------------------------------------------------------------------------- plain references


def iou_ref(a, b):
    """IoU matrix (len(a), len(b)), written out."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def decode_ref(deltas, boxes, weights, clamp=math.log(1000 / 16)):
    wx, wy, ww, wh = weights
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = np.minimum(deltas[:, 2] / ww, clamp)
    dh = np.minimum(deltas[:, 3] / wh, clamp)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = np.exp(dw) * w, np.exp(dh) * h
    return np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], axis=1)


def greedy_nms_ref(boxes, scores, threshold):
    """Indices kept by greedy NMS, highest score first (a loop over boxes)."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou_ref(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= threshold]
    return keep


def random_boxes(rng, n, size=100.0, min_wh=2.0, max_wh=40.0, dtype=np.float64):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(min_wh, max_wh, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(dtype)


# ----------------------------------------------------------------------------- anchors


def test_anchor_counts_and_centres_on_stride_grid():
    gen = AnchorGenerator()
    sizes = [(5, 7), (3, 4), (2, 2), (1, 3), (1, 1)]
    anchors = gen(sizes)
    assert gen.num_anchors_per_location() == [3] * 5
    for level, ((h, w), a, stride) in enumerate(zip(sizes, anchors, (4, 8, 16, 32, 64))):
        assert a.shape == (h * w * 3, 4) and a.dtype == np.float32
        grid = a.reshape(h, w, 3, 4)                      # (y, x, anchor) order
        cx = (grid[..., 0] + grid[..., 2]) / 2
        cy = (grid[..., 1] + grid[..., 3]) / 2
        np.testing.assert_array_equal(cx, np.broadcast_to(np.arange(w)[None, :, None] * stride,
                                                          (h, w, 3)))
        np.testing.assert_array_equal(cy, np.broadcast_to(np.arange(h)[:, None, None] * stride,
                                                          (h, w, 3)))
        # every cell holds the level's three cell anchors around its centre
        centres = np.stack([cx, cy, cx, cy], axis=-1)
        np.testing.assert_array_equal(grid - centres, np.broadcast_to(gen.cell_anchors[level],
                                                                      (h, w, 3, 4)))
        assert sorted(np.unique(np.round((grid[..., 2] - grid[..., 0]) *
                                         (grid[..., 3] - grid[..., 1]) / gen.sizes[level][0] ** 2,
                                         1)).tolist()) == [1.0]


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512, 45])
def test_base_anchor_area_and_ratio(size):
    ratios = (0.5, 1.0, 2.0)
    exact = base_anchors(size, ratios, round_base=False)
    w, h = exact[:, 2] - exact[:, 0], exact[:, 3] - exact[:, 1]
    np.testing.assert_allclose(w * h, size ** 2, rtol=1e-12)
    np.testing.assert_allclose(h / w, ratios, rtol=1e-12)
    np.testing.assert_allclose(exact[:, :2], -exact[:, 2:], rtol=1e-12)   # centred at 0
    rounded = base_anchors(size, ratios, round_base=True)
    np.testing.assert_array_equal(rounded, np.round(rounded))
    assert np.abs(rounded - exact).max() <= 0.5
    rw, rh = rounded[:, 2] - rounded[:, 0], rounded[:, 3] - rounded[:, 1]
    np.testing.assert_allclose(rh / rw, ratios, rtol=2.0 / size + 1e-12)


def test_anchor_options_offset_pair_stride_and_several_sizes():
    gen = AnchorGenerator(sizes=((16, 24),), aspect_ratios=((0.5, 2.0),), strides=((4, 8),),
                          offset=0.5, round_base=False)
    assert gen.num_anchors_per_location() == [4]
    (a,) = gen([(2, 3)], dtype=np.float64)
    grid = a.reshape(2, 3, 4, 4)
    np.testing.assert_allclose((grid[..., 0] + grid[..., 2]) / 2,
                               np.broadcast_to((np.arange(3)[None, :, None] + 0.5) * 8, (2, 3, 4)))
    np.testing.assert_allclose((grid[..., 1] + grid[..., 3]) / 2,
                               np.broadcast_to((np.arange(2)[:, None, None] + 0.5) * 4, (2, 3, 4)))
    # ratio-major, size-minor: (r=0.5, s=16), (0.5, 24), (2, 16), (2, 24)
    wh = np.stack([grid[0, 0, :, 2] - grid[0, 0, :, 0], grid[0, 0, :, 3] - grid[0, 0, :, 1]], 1)
    np.testing.assert_allclose(wh[:, 0] * wh[:, 1], [256, 576, 256, 576])
    np.testing.assert_allclose(wh[:, 1] / wh[:, 0], [0.5, 0.5, 2, 2])
    # the function form and `like`
    like = np.zeros(1, np.float64)
    b = generate_anchors([(2, 3)], sizes=((16, 24),), aspect_ratios=((0.5, 2.0),),
                         strides=((4, 8),), offset=0.5, round_base=False, like=like)
    np.testing.assert_array_equal(a, b[0])
    assert b[0].dtype == np.float64


def test_anchor_empty_feature_map():
    (a,) = AnchorGenerator(sizes=(32,), strides=(8,))([(0, 5)])
    assert a.shape == (0, 4)


def test_anchor_bad_input():
    with pytest.raises(ValueError, match="sizes"):
        AnchorGenerator(sizes=(32, -64), strides=(4, 8))
    with pytest.raises(ValueError, match="strides"):
        AnchorGenerator(sizes=(32, 64), strides=(4,))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(sizes=(32, 64), strides=(4, 8), aspect_ratios=((1.0,), (1.0,), (1.0,)))
    with pytest.raises(ValueError, match="feature_sizes"):
        AnchorGenerator()([(4, 4)])
    with pytest.raises(ValueError, match="offset"):
        AnchorGenerator(offset=1.0)


@pytest.mark.torch
def test_anchors_match_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchors
    from torchvision.models.detection.image_list import ImageList

    sizes = ((32,), (64,), (128, 160), (256,), (512,))
    ratios = ((0.5, 1.0, 2.0),) * 5
    feats = [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]     # image 128 x 64: strides 4..64
    tv = TVAnchors(sizes, ratios)
    images = ImageList(torch.zeros(1, 3, 128, 64), [(128, 64)])
    maps = [torch.zeros(1, 1, h, w) for h, w in feats]
    expected = tv(images, maps)[0].numpy()
    ours = AnchorGenerator(sizes, ratios, strides=(4, 8, 16, 32, 64))(feats)
    np.testing.assert_array_equal(np.concatenate(ours), expected)


# ----------------------------------------------------------------------------- level mapping


def square(size, x0=10.0, y0=20.0, dtype=np.float32):
    return np.array([[x0, y0, x0 + size, y0 + size]], dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, level", [(224, 4), (112, 3), (448, 5), (56, 2), (223, 3),
                                         (10, 2), (0.5, 2), (3000, 5), (111.9, 2),
                                         (224 * (1 - 3e-7), 4), (448 * (1 - 3e-7), 5)])
def test_assign_levels_hand_made(size, level, dtype):
    # the last two sizes are a rounding error below 224 * 2**n: eps keeps them on level 4 + n
    got = assign_levels(square(size, dtype=dtype), 2, 5)
    assert got.dtype == np.int64 and got.tolist() == [level]


def test_assign_levels_non_square_and_empty():
    boxes = np.array([[0, 0, 112, 448], [0, 0, 448, 112], [5, 5, 5, 5]], np.float32)
    assert assign_levels(boxes, 2, 5).tolist() == [4, 4, 2]     # sqrt(area) = 224; empty -> k_min
    assert assign_levels(np.zeros((0, 4), np.float32), 2, 5).shape == (0,)
    assert assign_levels(square(224), 3, 6, canonical_size=112, canonical_level=3).tolist() == [4]


@pytest.mark.torch
def test_assign_levels_match_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.ops.poolers import LevelMapper

    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 500, size=800, min_wh=1, max_wh=700, dtype=np.float32)
    expected = LevelMapper(2, 5)([torch.from_numpy(boxes)]).numpy()
    np.testing.assert_array_equal(assign_levels(boxes, 2, 5) - 2, expected)


def test_multiscale_roi_align_uses_each_rois_level():
    rng = np.random.default_rng(1)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    feats = [rng.standard_normal((2, 3, 512 // s, 512 // s)) for s in (4, 8, 16, 32)]
    boxes = np.concatenate([random_boxes(rng, 6, size=300, min_wh=4, max_wh=60),       # P2
                            random_boxes(rng, 6, size=300, min_wh=120, max_wh=200),    # P3
                            random_boxes(rng, 6, size=200, min_wh=240, max_wh=400),    # P4
                            random_boxes(rng, 3, size=50, min_wh=460, max_wh=500)])    # P5
    rois = np.concatenate([rng.integers(0, 2, (len(boxes), 1)).astype(np.float64), boxes], axis=1)
    out = multiscale_roi_align(feats, rois, 5, scales, sampling_ratio=2, aligned=True)
    assert out.shape == (len(rois), 3, 5, 5)
    levels = assign_levels(boxes, 2, 5)
    assert set(levels.tolist()) == {2, 3, 4, 5}, "the test should cover every level"
    for i, k in enumerate(levels):
        expected, _ = ops.roi_align_forward(feats[k - 2], rois[i:i + 1], (5, 5),
                                            spatial_scale=scales[k - 2], sampling_ratio=2,
                                            aligned=True)
        np.testing.assert_allclose(out[i], expected[0], rtol=1e-12, atol=1e-12)
    empty = multiscale_roi_align(feats, rois[:0], (7, 3), scales)
    assert empty.shape == (0, 3, 7, 3)


def test_level_mapping_bad_input():
    with pytest.raises(ValueError, match="boxes"):
        assign_levels(np.array([[0, 0, np.nan, 4]], np.float32), 2, 5)
    with pytest.raises(ValueError, match="x2 >= x1"):
        assign_levels(np.array([[5, 0, 4, 4]], np.float32), 2, 5)
    with pytest.raises(ValueError, match="boxes"):
        assign_levels(np.zeros((3, 5), np.float32), 2, 5)
    with pytest.raises(ValueError, match="k_max"):
        assign_levels(square(10), 5, 2)
    feats = [np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 4, 4))]
    with pytest.raises(ValueError, match="scales"):
        multiscale_roi_align(feats, np.zeros((1, 5)), 2, [1 / 4, 1 / 16])
    with pytest.raises(ValueError, match="rois"):
        multiscale_roi_align(feats, np.zeros((1, 4)), 2, [1 / 4, 1 / 8])


# ----------------------------------------------------------------------------- matcher


def test_matcher_rpn_hand_made():
    iou = np.array([[0.80, 0.50, 0.10, 0.00, 0.65, 0.30],
                    [0.20, 0.69, 0.25, 0.00, 0.60, 0.69]])
    matches, labels = Matcher(0.7, 0.3)(iou)
    assert matches.dtype == np.int64
    assert matches.tolist() == [0, 1, 1, 0, 0, 1]
    assert labels.tolist() == [1, -1, 0, 0, -1, -1]
    # gt 1 never reaches 0.7: its best anchors (a tie at 0.69) are rescued
    matches, labels = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert matches.tolist() == [0, 1, 1, 0, 0, 1]
    assert labels.tolist() == [1, 1, 0, 0, -1, 1]


def test_matcher_low_quality_keeps_argmax_and_ignores_zero_overlap_gt():
    # gt 1's best prediction is 0, which overlaps gt 0 more: positive, still matched to gt 0
    matches, labels = Matcher(0.7, 0.3, True)(np.array([[0.6, 0.1], [0.5, 0.2]]))
    assert matches.tolist() == [0, 1] and labels.tolist() == [1, 0]
    # gt 0 overlaps nothing: it rescues no prediction
    matches, labels = Matcher(0.7, 0.3, True)(np.array([[0.0, 0.0, 0.0], [0.9, 0.1, 0.0]]))
    assert labels.tolist() == [1, 0, 0]


def test_matcher_single_threshold_heads():
    iou = np.array([[0.5, 0.4999, 0.7, 0.0], [0.1, 0.2, 0.3, 0.52]], np.float32)
    matches, labels = Matcher(0.5, 0.5)(iou)
    assert labels.tolist() == [1, 0, 1, 1] and matches.tolist() == [0, 0, 0, 1]


def test_matcher_empty():
    matches, labels = Matcher(0.7, 0.3, True)(np.zeros((0, 5)))
    assert matches.tolist() == [0] * 5 and labels.tolist() == [0] * 5
    matches, labels = Matcher(0.7, 0.3, True)(np.zeros((3, 0)))
    assert matches.shape == labels.shape == (0,)


@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2 ** 31 - 1))
def test_matcher_properties(num_gt, num_pred, seed):
    rng = np.random.default_rng(seed)
    iou = iou_ref(random_boxes(rng, num_gt, 50), random_boxes(rng, num_pred, 50))
    matches, labels = Matcher(0.7, 0.3, True)(iou)
    best = iou.max(axis=0)
    np.testing.assert_array_equal(iou[matches, np.arange(num_pred)], best)
    assert np.all(labels[best >= 0.7] == 1) and np.all(labels[(best < 0.3) & (labels != 1)] == 0)
    for g in range(num_gt):       # every gt that overlaps something has a positive at its best
        if iou[g].max() > 0:
            assert np.all(labels[iou[g] == iou[g].max()] == 1)
    plain = Matcher(0.7, 0.3, False)(iou)[1]
    assert np.all((labels == plain) | (labels == 1))


@pytest.mark.torch
def test_matcher_matches_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import Matcher as TVMatcher

    rng = np.random.default_rng(3)
    iou = rng.uniform(0, 1, (7, 300))
    iou[2] *= 0.5                                   # a gt that needs a low-quality match
    tv = TVMatcher(0.7, 0.3, allow_low_quality_matches=True)(torch.from_numpy(iou)).numpy()
    matches, labels = Matcher(0.7, 0.3, True)(iou)
    np.testing.assert_array_equal(labels, np.select([tv >= 0, tv == -1], [1, 0], -1))
    np.testing.assert_array_equal(matches[tv >= 0], tv[tv >= 0])


def test_matcher_bad_input():
    with pytest.raises(ValueError, match="iou"):
        Matcher()(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="iou"):
        Matcher()(np.zeros(4))
    with pytest.raises(TypeError, match="iou"):
        Matcher()(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


# ----------------------------------------------------------------------------- sampler


def make_labels(rng, pos, neg, ignore):
    labels = np.array([1] * pos + [0] * neg + [-1] * ignore, np.int64)
    return labels[rng.permutation(labels.size)]


@pytest.mark.parametrize("pos, neg, batch, fraction, want_pos, want_neg", [
    (200, 1000, 256, 0.5, 128, 128),    # RPN: positives capped at half
    (10, 1000, 256, 0.5, 10, 246),      # fewer positives than the quota: negatives fill
    (10, 20, 256, 0.5, 10, 20),         # too few of both
    (300, 2000, 512, 0.25, 128, 384),   # heads: positives capped at 25 %
    (300, 50, 512, 0.25, 128, 50),
    (0, 0, 256, 0.5, 0, 0),
])
def test_sampler_counts(pos, neg, batch, fraction, want_pos, want_neg):
    rng = np.random.default_rng(0)
    labels = make_labels(rng, pos, neg, 37)
    pos_idx, neg_idx = BalancedPositiveNegativeSampler(batch, fraction)(labels, rng)
    assert (pos_idx.size, neg_idx.size) == (want_pos, want_neg)
    assert pos_idx.dtype == neg_idx.dtype == np.int64
    assert np.all(labels[pos_idx] == 1) and np.all(labels[neg_idx] == 0)
    assert len(set(pos_idx.tolist()) | set(neg_idx.tolist())) == want_pos + want_neg


def test_sampler_reproducible_and_seed_dependent():
    labels = make_labels(np.random.default_rng(0), 200, 2000, 100)
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    a = sampler(labels, np.random.default_rng(7))
    b = sampler(labels, np.random.default_rng(7))
    c = sampler(labels, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_sampler_is_uniform():
    labels = np.array([1] * 20 + [0] * 5, np.int64)
    rng = np.random.default_rng(11)
    counts = np.zeros(20)
    for _ in range(2000):
        pos_idx, _ = subsample_labels(labels, 10, 0.5, rng)
        counts[pos_idx] += 1
    # each positive is drawn with probability 5/20: mean 500, sd ~19
    assert np.all(np.abs(counts - 500) < 80), counts


@given(st.lists(st.sampled_from([-1, 0, 1, 2, 3]), max_size=300), st.integers(0, 300),
       st.floats(0, 1), st.integers(0, 2 ** 31 - 1))
def test_sampler_properties(values, batch, fraction, seed):
    labels = np.array(values, np.int64)
    pos_idx, neg_idx = subsample_labels(labels, batch, fraction, np.random.default_rng(seed))
    n_pos, n_neg = int((labels >= 1).sum()), int((labels == 0).sum())
    want_pos = min(n_pos, int(batch * fraction))
    assert pos_idx.size == want_pos
    assert neg_idx.size == min(n_neg, batch - want_pos)
    assert np.all(labels[pos_idx] >= 1) and np.all(labels[neg_idx] == 0)
    assert np.unique(pos_idx).size == pos_idx.size and np.unique(neg_idx).size == neg_idx.size


def test_sampler_bad_input():
    with pytest.raises(TypeError, match="rng"):
        subsample_labels(np.zeros(3, np.int64), 2, 0.5, 42)
    with pytest.raises(TypeError, match="labels"):
        subsample_labels(np.zeros(3), 2, 0.5, np.random.default_rng())
    with pytest.raises(ValueError, match="labels"):
        subsample_labels(np.zeros((3, 1), np.int64), 2, 0.5, np.random.default_rng())
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(256, 1.5)


# ----------------------------------------------------------------------------- box coder


def test_box_coder_round_trip_and_multiclass_decode():
    rng = np.random.default_rng(4)
    props = random_boxes(rng, 20, min_wh=5)
    gts = random_boxes(rng, 20, min_wh=5)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = coder.encode(gts, props)
    np.testing.assert_allclose(coder.decode(deltas, props), gts, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(coder.decode(deltas, props),
                               decode_ref(deltas, props, coder.weights), rtol=1e-9, atol=1e-9)
    multi = rng.normal(0, 1, (20, 3 * 4))
    out = coder.decode(multi, props)
    assert out.shape == (20, 3, 4)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], decode_ref(multi[:, 4 * c:4 * c + 4], props,
                                                         coder.weights), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="deltas"):
        coder.decode(multi[:, :6], props)
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0, 1.0))


# ----------------------------------------------------------------------------- proposals


def rpn_inputs(rng, feature_sizes, batch=2, dtype=np.float64, sizes=(16, 32), strides=(8, 16),
               delta_sd=0.3):
    anchors = AnchorGenerator(sizes=sizes, strides=strides)(feature_sizes, dtype=dtype)
    logits = [rng.standard_normal((batch, len(a))).astype(dtype) for a in anchors]
    deltas = [(delta_sd * rng.standard_normal((batch, len(a), 4))).astype(dtype) for a in anchors]
    return logits, deltas, anchors


def proposals_ref(logits, deltas, anchors, image_size, image, pre_k, post_k, thresh, min_size):
    """Detectron2's find_top_rpn_proposals for one image, written out with loops."""
    kept_boxes, kept_scores = [], []
    for lvl, (s, d, a) in enumerate(zip(logits, deltas, anchors)):
        order = np.argsort(-s[image], kind="stable")[:pre_k]
        boxes = decode_ref(d[image][order], a[order], (1, 1, 1, 1))
        scores = s[image][order]
        h, w = image_size
        boxes = np.stack([np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h),
                          np.clip(boxes[:, 2], 0, w), np.clip(boxes[:, 3], 0, h)], axis=1)
        ok = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
        boxes, scores = boxes[ok], scores[ok]
        keep = greedy_nms_ref(boxes, scores, thresh)
        kept_boxes.append(boxes[keep])
        kept_scores.append(scores[keep])
    boxes, scores = np.concatenate(kept_boxes), np.concatenate(kept_scores)
    order = np.argsort(-scores, kind="stable")[:post_k]
    return boxes[order], scores[order]


@pytest.mark.parametrize("training", [False, True])
def test_proposals_match_reference(training):
    rng = np.random.default_rng(5)
    feature_sizes = [(8, 6), (4, 3)]
    # close sizes on the two levels: boxes of different levels overlap a lot (NMS must not mix)
    logits, deltas, anchors = rpn_inputs(rng, feature_sizes, sizes=(24, 26))
    image_sizes = [(64, 48), (50, 40)]
    config = ProposalConfig(pre_nms_topk_train=60, pre_nms_topk_test=40, post_nms_topk_train=50,
                            post_nms_topk_test=30, nms_thresh=0.7, min_size=2.0)
    out = generate_proposals(logits, deltas, anchors, image_sizes, training=training,
                             config=config)
    assert len(out) == 2
    for i, (boxes, scores) in enumerate(out):
        ref_boxes, ref_scores = proposals_ref(
            logits, deltas, anchors, image_sizes[i], i, config.pre_nms_topk(training),
            config.post_nms_topk(training), 0.7, 2.0)
        assert boxes.shape == (len(scores), 4) and boxes.dtype == scores.dtype == np.float64
        assert len(scores) <= config.post_nms_topk(training)
        np.testing.assert_allclose(boxes, ref_boxes, rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(scores, ref_scores)


@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 30), st.integers(1, 30),
       st.sampled_from([0.3, 0.5, 0.7]), st.sampled_from([np.float32, np.float64]))
@settings(max_examples=10)
def test_proposals_properties_single_level(seed, pre_k, post_k, thresh, dtype):
    rng = np.random.default_rng(seed)
    logits, deltas, anchors = rpn_inputs(rng, [(6, 5)], batch=1, dtype=dtype, sizes=(24,),
                                         strides=(8,), delta_sd=0.5)
    config = ProposalConfig(pre_nms_topk_test=pre_k, post_nms_topk_test=post_k, nms_thresh=thresh)
    ((boxes, scores),) = generate_proposals(logits, deltas, anchors, [(45, 37)], config=config)
    assert boxes.dtype == scores.dtype == dtype
    assert len(scores) <= min(pre_k, post_k)
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 37) and np.all(boxes[:, [1, 3]] <= 45)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all(np.diff(scores) <= 0)                                # sorted by score
    top = np.sort(logits[0])[::-1][:pre_k]
    assert np.all(np.isin(scores, top))                                # from the level's top k
    iou = iou_ref(boxes.astype(np.float64), boxes.astype(np.float64))
    np.fill_diagonal(iou, 0)
    assert np.all(iou <= thresh + 1e-6)                               # NMS applied


def test_proposals_empty_nonfinite_and_no_mutation():
    rng = np.random.default_rng(6)
    logits, deltas, anchors = rpn_inputs(rng, [(0, 0), (3, 2)])
    deltas[1][0, :4] = np.nan                                          # four broken anchors
    logits[1][1, 3] = np.inf
    copies = [x.copy() for x in logits + deltas + anchors]
    out = generate_proposals(logits, deltas, anchors, [(40, 40), (40, 40)])
    for boxes, scores in out:
        assert np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))
    for original, copy in zip(logits + deltas + anchors, copies):
        np.testing.assert_array_equal(original, copy)
    # a level with no anchors and zero budgets give empty results of the right shapes
    logits, deltas, anchors = rpn_inputs(rng, [(0, 0)], sizes=(16,), strides=(8,))
    ((boxes, scores), _) = generate_proposals(logits, deltas, anchors, [(8, 8), (8, 8)])
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    logits, deltas, anchors = rpn_inputs(rng, [(3, 3)], sizes=(16,), strides=(8,))
    ((boxes, scores), _) = generate_proposals(logits, deltas, anchors, [(24, 24)] * 2,
                                              config=ProposalConfig(post_nms_topk_test=0))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_flatten_rpn_outputs_matches_anchor_order():
    n, a, h, w = 2, 3, 4, 5
    obj = np.arange(n * a * h * w, dtype=np.float64).reshape(n, a, h, w)
    deltas = np.arange(n * a * 4 * h * w, dtype=np.float64).reshape(n, a * 4, h, w)
    scores, flat = flatten_rpn_outputs(obj, deltas)
    assert scores.shape == (n, h * w * a) and flat.shape == (n, h * w * a, 4)
    for (i, j, k) in [(0, 0, 0), (1, 2, 1), (3, 4, 2)]:
        row = (i * w + j) * a + k                      # the anchors' (y, x, anchor) order
        assert scores[1, row] == obj[1, k, i, j]
        np.testing.assert_array_equal(flat[1, row], deltas[1, 4 * k:4 * k + 4, i, j])
    with pytest.raises(ValueError, match="deltas"):
        flatten_rpn_outputs(obj, deltas[:, :8])


def test_clip_boxes_to_image():
    boxes = np.array([[-5, -3, 50, 10], [3, 4, 5, 6]], np.float32)
    np.testing.assert_array_equal(clip_boxes_to_image(boxes, (8, 40)),
                                  [[0, 0, 40, 8], [3, 4, 5, 6]])


def test_proposals_bad_input():
    rng = np.random.default_rng(0)
    logits, deltas, anchors = rpn_inputs(rng, [(2, 2), (1, 1)])
    with pytest.raises(ValueError, match="deltas"):
        generate_proposals(logits, deltas[:1], anchors, [(8, 8)] * 2)
    with pytest.raises(ValueError, match=r"anchors\[1\]"):
        generate_proposals(logits, deltas, [anchors[0], anchors[0]], [(8, 8)] * 2)
    with pytest.raises(ValueError, match="image_sizes"):
        generate_proposals(logits, deltas, anchors, [(8, 8)])
    bad = anchors[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"anchors\[0\] must be finite"):
        generate_proposals(logits, deltas, [bad, anchors[1]], [(8, 8)] * 2)
    with pytest.raises(ValueError, match="deltas"):
        generate_proposals(logits, [d[..., :3] for d in deltas], anchors, [(8, 8)] * 2)
    with pytest.raises(ValueError, match="nms_thresh"):
        ProposalConfig(nms_thresh=1.5)


# ----------------------------------------------------------------------------- RoI targets


def test_roi_targets_hand_made():
    gt_boxes = np.array([[10, 10, 50, 50], [60, 20, 90, 80]], np.float64)
    gt_labels = np.array([3, 1], np.int64)
    proposals = np.array([[12, 11, 50, 52],     # ~0.9 with gt 0          -> class 3
                          [62, 22, 92, 78],     # ~0.85 with gt 1         -> class 1
                          [30, 30, 70, 70],     # < 0.5 with both         -> background
                          [0, 0, 8, 8],         # no overlap              -> background
                          [10, 10, 33, 50]],    # 0.575 with gt 0         -> class 3
                         np.float64)
    t = build_roi_targets_for_image(proposals, gt_boxes, gt_labels, np.random.default_rng(0))
    assert t.proposals.shape == (7, 4) and t.num_foreground == 5
    fg = t.labels > 0
    assert np.all(fg[:5]) and not np.any(fg[5:])                      # foreground first
    # the ground truth boxes were appended and are foreground of their own class
    for g in range(2):
        rows = np.nonzero((t.proposals == gt_boxes[g]).all(axis=1))[0]
        assert len(rows) == 1 and t.labels[rows[0]] == gt_labels[g] and t.matched_gt[rows[0]] == g
    iou = iou_ref(gt_boxes, t.proposals)
    np.testing.assert_array_equal(t.matched_gt[fg], iou[:, fg].argmax(axis=0))
    np.testing.assert_array_equal(t.labels[fg], gt_labels[t.matched_gt[fg]])
    assert np.all(iou[:, fg].max(axis=0) >= 0.5) and np.all(iou[:, ~fg].max(axis=0) < 0.5)
    assert np.all(t.matched_gt[~fg] == -1) and np.all(t.regression_targets[~fg] == 0)
    # regression targets decode back to the matched ground truth boxes
    decoded = decode_ref(t.regression_targets[fg], t.proposals[fg], (10, 10, 5, 5))
    np.testing.assert_allclose(decoded, gt_boxes[t.matched_gt[fg]], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(BoxCoder((10, 10, 5, 5)).decode(t.regression_targets[fg],
                                                               t.proposals[fg]),
                               gt_boxes[t.matched_gt[fg]], rtol=1e-9, atol=1e-9)


def test_roi_targets_sampling_sizes_and_options():
    rng = np.random.default_rng(2)
    gt_boxes = random_boxes(rng, 4, size=200, min_wh=30, max_wh=80)
    gt_labels = rng.integers(1, 6, 4)
    near = gt_boxes[rng.integers(0, 4, 600)] + rng.normal(0, 2, (600, 4))
    near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
    proposals = np.concatenate([near, random_boxes(rng, 1500, size=250)])
    config = RoITargetConfig(batch_size_per_image=256, positive_fraction=0.25)
    (t,) = build_roi_targets([proposals], [gt_boxes], [gt_labels], rng, config)
    assert t.proposals.shape == (256, 4) and t.num_foreground == 64
    assert t.labels.dtype == t.matched_gt.dtype == np.int64
    config = RoITargetConfig(batch_size_per_image=2000, positive_fraction=0.5,
                             append_gt_boxes=False, bg_iou_threshold=0.1)
    t = build_roi_targets_for_image(proposals, gt_boxes, gt_labels, rng, config)
    best = iou_ref(gt_boxes, t.proposals).max(axis=0)
    assert np.all(best[t.labels == 0] < 0.1)                         # the band is ignored
    assert not any((t.proposals == g).all(axis=1).any() for g in gt_boxes)


def test_roi_targets_no_ground_truth():
    rng = np.random.default_rng(0)
    proposals = random_boxes(rng, 30)
    t = build_roi_targets_for_image(proposals, np.zeros((0, 4)), np.zeros(0, np.int64), rng)
    assert t.proposals.shape == (30, 4) and np.all(t.labels == 0)
    assert np.all(t.matched_gt == -1) and np.all(t.regression_targets == 0)
    t = build_roi_targets_for_image(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, np.int64),
                                    rng)
    assert t.proposals.shape == (0, 4) and t.labels.shape == (0,)


def test_roi_targets_bad_input():
    rng = np.random.default_rng(0)
    props = np.array([[0, 0, 10, 10]], np.float64)
    gt = np.array([[0, 0, 10, 10]], np.float64)
    with pytest.raises(ValueError, match="gt_labels"):
        build_roi_targets_for_image(props, gt, np.array([0]), rng)
    with pytest.raises(ValueError, match="gt_labels"):
        build_roi_targets_for_image(props, gt, np.array([1, 2]), rng)
    with pytest.raises(ValueError, match="gt_boxes"):
        build_roi_targets_for_image(props, np.array([[0, 0, np.nan, 1.0]]), np.array([1]), rng)
    with pytest.raises(ValueError, match="proposals"):
        build_roi_targets_for_image(np.array([[5, 0, 1, 1.0]]), gt, np.array([1]), rng)
    with pytest.raises(TypeError, match="gt_boxes"):
        build_roi_targets_for_image(props, gt.astype(np.float32), np.array([1]), rng)
    with pytest.raises(ValueError, match="one entry per image"):
        build_roi_targets([props], [gt, gt], [np.array([1])], rng)


# ----------------------------------------------------------------------------- masks


def rectangle_mask(height, width, box):
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), bool)
    mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_target_and_paste_round_trip(dtype):
    h, w = 40, 64
    obj = (10, 8, 30, 24)
    gt = np.stack([rectangle_mask(h, w, (40, 30, 50, 38)), rectangle_mask(h, w, obj)])
    boxes = np.array([obj, (10, 8, 50, 24), (20, 8, 34, 24)], dtype)
    targets = mask_targets(gt, boxes, np.array([1, 1, 1]))
    assert targets.shape == (3, 28, 28) and targets.dtype == dtype
    np.testing.assert_array_equal(targets[0], 1)                  # the object fills its own box
    for r, ones in ((1, 14), (2, 20)):                            # 20/40 and 10/14 of the width
        expected = np.zeros((28, 28), dtype)
        expected[:, :ones] = 1
        np.testing.assert_array_equal(targets[r], expected)
    pasted = paste_masks_in_image(targets, boxes, (h, w))
    assert pasted.shape == (3, h, w) and pasted.dtype == bool
    np.testing.assert_array_equal(pasted[0], gt[1])
    np.testing.assert_array_equal(pasted[1], gt[1])
    np.testing.assert_array_equal(pasted[2], gt[1] & rectangle_mask(h, w, (20, 8, 34, 24)))


@given(st.integers(0, 2 ** 31 - 1))
def test_paste_rectangle_up_to_border_pixel(seed):
    rng = np.random.default_rng(seed)
    h, w = 30, 36
    x1, y1 = rng.uniform(0, 12, 2)
    x2, y2 = x1 + rng.uniform(6, 20), y1 + rng.uniform(6, 16)
    box = np.array([[x1, y1, x2, y2]])
    pasted = paste_masks_in_image(np.ones((1, 28, 28)), box, (h, w))[0]
    cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
    in_x, in_y = (cx >= x1) & (cx <= x2), (cy >= y1) & (cy <= y2)
    inside = in_y[:, None] & in_x[None, :]
    # within half a mask cell of an edge, zero padding weakens the mask (corners drop below
    # 0.5); deeper inside it is exactly the mask's value
    core_x = in_x & (cx - x1 >= 0.5 * (x2 - x1) / 28) & (x2 - cx >= 0.5 * (x2 - x1) / 28)
    core_y = in_y & (cy - y1 >= 0.5 * (y2 - y1) / 28) & (y2 - cy >= 0.5 * (y2 - y1) / 28)
    core = core_y[:, None] & core_x[None, :]
    assert not np.any(pasted & ~inside)                                 # never outside the box
    assert np.all(pasted[core])                                         # all of the inside ...
    assert np.all(pasted[inside & (core_y[:, None] | core_x[None, :])])  # ... but the corners
    soft = paste_masks_in_image(np.full((1, 28, 28), 0.8), box, (h, w), threshold=None)[0]
    assert np.all(soft[~inside] == 0) and np.all(soft <= 0.8 + 1e-12)
    np.testing.assert_allclose(soft[core], 0.8, rtol=1e-12)
    assert np.all(soft[inside] >= 0.8 * 0.25 - 1e-12)


def bilinear_ref(mask, u, v):
    """grid_sample(align_corners=False, zeros padding) at mask coordinates (u, v), one point."""
    m_h, m_w = mask.shape
    u0, v0 = math.floor(u), math.floor(v)
    total = 0.0
    for yy, wy in ((v0, 1 - (v - v0)), (v0 + 1, v - v0)):
        for xx, wx in ((u0, 1 - (u - u0)), (u0 + 1, u - u0)):
            if 0 <= yy < m_h and 0 <= xx < m_w:
                total += wy * wx * mask[yy, xx]
    return total


def test_paste_soft_matches_pointwise_reference():
    rng = np.random.default_rng(9)
    masks = rng.uniform(0, 1, (3, 5, 6))
    boxes = np.array([[2.3, 1.7, 9.1, 7.4], [-3.0, 4.0, 6.0, 14.5], [5.0, 5.0, 5.0, 9.0]])
    h, w = 12, 11
    soft = paste_masks_in_image(masks, boxes, (h, w), threshold=None)
    for r in range(3):
        x1, y1, x2, y2 = boxes[r]
        for y in range(h):
            for x in range(w):
                cx, cy = x + 0.5, y + 0.5
                if x2 > x1 and y2 > y1 and x1 <= cx <= x2 and y1 <= cy <= y2:
                    u = (cx - x1) / (x2 - x1) * 6 - 0.5
                    v = (cy - y1) / (y2 - y1) * 5 - 0.5
                    expected = bilinear_ref(masks[r], u, v)
                else:
                    expected = 0.0
                assert soft[r, y, x] == pytest.approx(expected, abs=1e-12)
    hard = paste_masks_in_image(masks, boxes, (h, w), threshold=0.5, max_chunk_bytes=1)
    np.testing.assert_array_equal(hard, soft >= 0.5)                  # chunking changes nothing


@pytest.mark.torch
def test_paste_matches_grid_sample():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    masks = rng.uniform(0, 1, (4, 28, 28))
    boxes = np.concatenate([random_boxes(rng, 4, size=40, min_wh=5, max_wh=30)])
    h, w = 48, 52
    soft = paste_masks_in_image(masks, boxes, (h, w), threshold=None)
    for r in range(4):
        x1, y1, x2, y2 = boxes[r]
        gx = (np.arange(w) + 0.5 - x1) / (x2 - x1) * 2 - 1
        gy = (np.arange(h) + 0.5 - y1) / (y2 - y1) * 2 - 1
        grid = np.stack(np.broadcast_arrays(gx[None, :], gy[:, None]), axis=-1)[None]
        ref = torch.nn.functional.grid_sample(torch.from_numpy(masks[r][None, None]),
                                              torch.from_numpy(grid), align_corners=False)
        inside = (np.abs(gx)[None, :] <= 1) & (np.abs(gy)[:, None] <= 1)
        np.testing.assert_allclose(soft[r][inside], ref[0, 0].numpy()[inside], atol=1e-12)


@pytest.mark.torch
def test_mask_targets_match_torchvision_roi_align():
    torch = pytest.importorskip("torch")
    from torchvision.ops import roi_align

    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[:60, :70]
    centres = rng.uniform(15, 50, (3, 2))
    gt = np.stack([(xx - cx) ** 2 / 200 + (yy - cy) ** 2 / 120 < 1 for cx, cy in centres])
    boxes = random_boxes(rng, 8, size=50, min_wh=5, max_wh=40)
    matched = rng.integers(0, 3, 8)
    ours = mask_targets(gt, boxes, matched, mask_size=(28, 21))
    rois = torch.from_numpy(np.concatenate([matched[:, None].astype(np.float64), boxes], 1))
    ref = roi_align(torch.from_numpy(gt[:, None].astype(np.float64)), rois, (28, 21), 1.0, 0,
                    aligned=True)[:, 0].numpy() >= 0.5
    np.testing.assert_array_equal(ours, ref)


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(13)
    gt_boxes = random_boxes(rng, 3, size=40, min_wh=8, max_wh=20)
    proposals = np.concatenate([gt_boxes + 1, random_boxes(rng, 20, size=40)])
    gt_labels = np.array([1, 2, 3])
    gt_masks = rng.uniform(0, 1, (3, 64, 64)) > 0.5
    iou = iou_ref(gt_boxes, proposals)
    masks = rng.uniform(0, 1, (5, 28, 28))
    args = [gt_boxes, proposals, gt_labels, gt_masks, iou, masks]
    copies = [a.copy() for a in args]
    Matcher(0.7, 0.3, True)(iou)
    t = build_roi_targets_for_image(proposals, gt_boxes, gt_labels, rng)
    pos = t.labels > 0
    mask_targets(gt_masks, t.proposals[pos], t.matched_gt[pos])
    paste_masks_in_image(masks, proposals[:5], (64, 64))
    assign_levels(proposals, 2, 5)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


def test_masks_empty_and_bad_input():
    gt = np.zeros((2, 10, 10), bool)
    assert mask_targets(gt, np.zeros((0, 4)), np.zeros(0, np.int64)).shape == (0, 28, 28)
    assert paste_masks_in_image(np.zeros((0, 28, 28)), np.zeros((0, 4)), (5, 6)).shape == (0, 5, 6)
    box = np.array([[1.0, 1.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="matched_gt"):
        mask_targets(gt, box, np.array([2]))
    with pytest.raises(ValueError, match="matched_gt"):
        mask_targets(gt, box, np.array([0, 1]))
    with pytest.raises(ValueError, match="gt_masks"):
        mask_targets(gt[0], box, np.array([0]))
    with pytest.raises(ValueError, match="boxes"):
        mask_targets(gt, np.array([[1.0, 1.0, np.nan, 5.0]]), np.array([0]))
    with pytest.raises(ValueError, match="x2 >= x1"):
        paste_masks_in_image(np.zeros((1, 28, 28)), np.array([[5.0, 1.0, 1.0, 5.0]]), (8, 8))
    with pytest.raises(ValueError, match="boxes"):
        paste_masks_in_image(np.zeros((2, 28, 28)), box, (8, 8))
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(np.zeros((1, 1, 28, 28)), box, (8, 8))
