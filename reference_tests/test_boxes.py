"""Box utilities (npseg.ops.boxes): IoU, NMS, batched NMS, box coding."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npseg.ops import batched_nms, box_iou, decode_boxes, encode_boxes, nms

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 1.5)]


def _boxes(rng, k, integer=False, zero_size=0.0, dtype=np.float64):
    """``k`` boxes in a 100x100 picture; clustered so that many overlap; some of zero size."""
    centre = rng.uniform(10, 90, (max(k // 4, 1), 2))[rng.integers(0, max(k // 4, 1), k)]
    centre = centre + rng.normal(0, 4, (k, 2))
    size = rng.uniform(1, 30, (k, 2)) * (rng.random((k, 1)) >= zero_size)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    if integer:                                   # exact coordinates: exact IoU ties
        boxes = np.round(boxes)
    return boxes.astype(dtype)


def _iou_by_definition(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_by_definition(boxes, scores, threshold):
    """NMS straight from its definition, one pair at a time."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(_iou_by_definition(boxes[i], boxes[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


case = st.tuples(st.integers(0, 2**16), st.integers(1, 40), st.booleans())
thresholds = st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0])


# ------------------------------------------------------------------------------------ box_iou

@given(seed=st.integers(0, 2**16), k=st.integers(0, 12), m=st.integers(0, 12),
       integer=st.booleans())
def test_box_iou_by_definition_and_properties(seed, k, m, integer):
    rng = np.random.default_rng(seed)
    a = _boxes(rng, k, integer, zero_size=0.2)
    b = _boxes(rng, m, integer, zero_size=0.2)
    iou = box_iou(a, b)
    assert iou.shape == (k, m) and iou.dtype == np.float64
    expected = np.array([[_iou_by_definition(p, q) for q in b] for p in a]).reshape(k, m)
    np.testing.assert_allclose(iou, expected, rtol=1e-12, atol=1e-15)
    assert np.all((iou >= 0) & (iou <= 1))
    np.testing.assert_allclose(box_iou(b, a), iou.T, rtol=1e-12, atol=0)
    self_iou = np.diag(box_iou(a, a))
    positive = (a[:, 2] > a[:, 0]) & (a[:, 3] > a[:, 1])
    np.testing.assert_allclose(self_iou[positive], 1.0, rtol=1e-12)
    assert not self_iou[~positive].any()          # zero-area boxes: 0, not NaN


def test_box_iou_float32_and_empty():
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=np.float32)
    iou = box_iou(a, a)
    assert iou.dtype == np.float32
    np.testing.assert_allclose(iou, [[1, 1 / 7], [1 / 7, 1]], rtol=1e-6)
    empty = box_iou(np.zeros((0, 4), np.float32), a)
    assert empty.shape == (0, 2) and empty.dtype == np.float32


# ---------------------------------------------------------------------------------------- nms

@given(case=case, threshold=thresholds)
def test_nms_properties(case, threshold):
    seed, k, integer = case
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, k, integer, zero_size=0.1)
    # scores with ties (coarse values) to exercise the stable order
    scores = np.round(rng.random(k), 1 if integer else 8)
    keep = nms(boxes, scores, threshold)
    assert keep.dtype == np.int64 and keep.ndim == 1
    assert keep.tolist() == _greedy_by_definition(boxes, scores, threshold)
    # decreasing score; among kept boxes no pair above the threshold
    assert np.all(np.diff(scores[keep]) <= 0)
    iou = box_iou(boxes[keep], boxes[keep])
    assert not np.any(np.triu(iou, 1) > threshold)
    # every dropped box overlaps a kept box that comes before it in the visiting order
    rank = np.empty(k, dtype=np.int64)
    rank[np.lexsort((np.arange(k), -scores))] = np.arange(k)
    dropped = np.setdiff1d(np.arange(k), keep)
    cover = box_iou(boxes[dropped], boxes[keep]) > threshold
    earlier = rank[keep][None, :] < rank[dropped][:, None]
    assert np.all((cover & earlier).any(axis=1))


@given(seed=st.integers(0, 2**16), k=st.integers(1, 40), threshold=thresholds)
def test_nms_independent_of_input_order(seed, k, threshold):
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, k)
    scores = rng.permutation(k).astype(np.float64)             # distinct scores
    perm = rng.permutation(k)
    keep = nms(boxes, scores, threshold)
    keep_perm = nms(boxes[perm], scores[perm], threshold)
    np.testing.assert_array_equal(perm[keep_perm], keep)


def test_nms_hand_made():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.9])
    # IoU(0, 1) = 90 / 110 = 0.818; box 3 equals box 0 (IoU 1) and ties its score: index 0 first
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.85), [0, 1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 1.0), [0, 3, 1, 2])
    # IoU exactly at the threshold is kept (only > threshold is dropped)
    half = np.array([[0, 0, 2, 1], [0, 0, 1, 1.0]])            # IoU = 1/2
    np.testing.assert_array_equal(nms(half, np.array([1.0, 0.5]), 0.5), [0, 1])
    np.testing.assert_array_equal(nms(half, np.array([1.0, 0.5]), 0.49), [0])


def test_nms_empty_and_float32():
    keep = nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    keep = batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    rng = np.random.default_rng(0)
    boxes = _boxes(rng, 30)
    scores = rng.random(30)
    np.testing.assert_array_equal(nms(boxes.astype(np.float32), scores.astype(np.float32), 0.5),
                                  nms(boxes, scores, 0.5))


@given(case=case, threshold=thresholds, classes=st.integers(1, 4))
def test_batched_nms_is_per_class_nms_merged(case, threshold, classes):
    seed, k, integer = case
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, k, integer, zero_size=0.1)
    scores = np.round(rng.random(k), 2)
    idxs = rng.integers(0, classes, k) * 7 - 3                 # arbitrary integer labels
    keep = batched_nms(boxes, scores, idxs, threshold)
    merged = []
    for label in np.unique(idxs):
        members = np.flatnonzero(idxs == label)
        merged.extend(members[nms(boxes[members], scores[members], threshold)])
    merged = sorted(merged, key=lambda i: (-scores[i], i))
    assert keep.dtype == np.int64
    assert keep.tolist() == merged


# ------------------------------------------------------------------------------- box coding

@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(seed=st.integers(0, 2**16), k=st.integers(0, 30))
def test_encode_decode_round_trip(weights, dtype, seed, k):
    rng = np.random.default_rng(seed)
    proposals = _boxes(rng, k, dtype=dtype)
    # ground truth within a factor 20 of its proposal's size (inside the clamp of log(62.5))
    centre = (proposals[:, :2] + proposals[:, 2:]) / 2 + rng.normal(0, 10, (k, 2))
    size = (proposals[:, 2:] - proposals[:, :2]) * np.exp(rng.uniform(-3, 3, (k, 2)))
    reference = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(dtype)
    deltas = encode_boxes(reference, proposals, weights)
    assert deltas.shape == (k, 4) and deltas.dtype == dtype
    decoded = decode_boxes(deltas, proposals, weights)
    assert decoded.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(decoded, reference, rtol=tol, atol=tol * 100)
    # encoding a box against itself gives zero deltas
    np.testing.assert_allclose(encode_boxes(proposals, proposals, weights), 0, atol=tol)


def test_encode_hand_made():
    proposals = np.array([[0.0, 0.0, 10.0, 20.0]])             # centre (5, 10), size 10 x 20
    reference = np.array([[5.0, 10.0, 25.0, 30.0]])            # centre (15, 20), size 20 x 20
    for wx, wy, ww, wh in WEIGHTS:
        deltas = encode_boxes(reference, proposals, (wx, wy, ww, wh))
        np.testing.assert_allclose(deltas, [[wx * 10 / 10, wy * 10 / 20, ww * math.log(2), 0]],
                                   rtol=1e-12, atol=1e-15)


def test_decode_class_specific_groups():
    rng = np.random.default_rng(4)
    boxes = _boxes(rng, 6)
    deltas = rng.normal(0, 1, (6, 4 * 3))
    out = decode_boxes(deltas, boxes, (10, 10, 5, 5))
    assert out.shape == (6, 12)
    for g in range(3):
        alone = decode_boxes(deltas[:, 4 * g:4 * g + 4], boxes, (10, 10, 5, 5))
        np.testing.assert_array_equal(out[:, 4 * g:4 * g + 4], alone)
    empty = decode_boxes(np.zeros((0, 8), np.float32), np.zeros((0, 4), np.float32), (1, 1, 1, 1))
    assert empty.shape == (0, 8) and empty.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_clamps_huge_deltas(dtype):
    boxes = np.array([[0, 0, 16, 32], [10, 10, 11, 12]], dtype=dtype)
    deltas = np.array([[0, 0, 1e4, 1e30], [0, 0, 3e38, 88.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise"):
        out = decode_boxes(deltas, boxes, (1, 1, 1, 1))
    assert np.isfinite(out).all()
    widths, heights = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    np.testing.assert_allclose(widths, (boxes[:, 2] - boxes[:, 0]) * 1000 / 16, rtol=1e-5)
    np.testing.assert_allclose(heights, (boxes[:, 3] - boxes[:, 1]) * 1000 / 16, rtol=1e-5)
    # a custom clamp
    out = decode_boxes(deltas, boxes, (1, 1, 1, 1), scale_clamp=0.0)
    np.testing.assert_allclose(out[:, 2] - out[:, 0], boxes[:, 2] - boxes[:, 0], rtol=1e-6)


# ------------------------------------------------------------------------ bad input, mutation

def test_bad_input():
    good = np.array([[0, 0, 2, 2], [1, 1, 3, 3.0]])
    scores = np.array([0.5, 0.4])
    nan = good.copy()
    nan[1, 2] = np.nan
    flipped = np.array([[0, 0, 2, 2], [3, 1, 1, 3.0]])
    for fn in (lambda b: box_iou(b, good), lambda b: nms(b, scores, 0.5),
               lambda b: batched_nms(b, scores, np.zeros(2, np.int64), 0.5)):
        with pytest.raises(ValueError, match="finite"):
            fn(nan)
        with pytest.raises(ValueError, match="x2 >= x1"):
            fn(flipped)
        with pytest.raises(ValueError, match=r"\(K, 4\)"):
            fn(good[:, :3])
        with pytest.raises(TypeError, match="float32 or float64"):
            fn(good.astype(np.int64))
    with pytest.raises(ValueError, match="b must be finite"):
        box_iou(good, nan)
    with pytest.raises(ValueError, match="b must have x2 >= x1"):
        box_iou(good, flipped)
    with pytest.raises(TypeError, match="b must have the dtype of a"):
        box_iou(good, good.astype(np.float32))
    with pytest.raises(ValueError, match="scores"):
        nms(good, scores[:1], 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(good, np.array([np.nan, 1.0]), 0.5)
    with pytest.raises(TypeError, match="scores"):
        nms(good, scores.astype(np.float32), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(good, scores, float("nan"))
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(good, scores, 1.5)
    with pytest.raises(TypeError, match="idxs"):
        batched_nms(good, scores, np.zeros(2), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(good, scores, np.zeros(3, np.int64), 0.5)
    with pytest.raises(ValueError, match="proposals.*positive width"):
        encode_boxes(good, np.array([[0, 0, 0, 2], [1, 1, 3, 3.0]]), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="reference.*positive width"):
        encode_boxes(np.array([[0, 0, 2, 0], [1, 1, 3, 3.0]]), good, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="reference must be finite"):
        encode_boxes(nan, good, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="proposals"):
        encode_boxes(good, good[:1], (1, 1, 1, 1))
    with pytest.raises(TypeError, match="weights"):
        encode_boxes(good, good, (1, 1, 1))
    with pytest.raises(ValueError, match="weights"):
        decode_boxes(good, good, (1, 1, 0, 1))
    with pytest.raises(ValueError, match="deltas"):
        decode_boxes(np.zeros((2, 5)), good, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="deltas must be finite"):
        decode_boxes(nan, good, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="boxes must have one row"):
        decode_boxes(np.zeros((3, 4)), good, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="boxes must have x2 >= x1"):
        decode_boxes(np.zeros((2, 4)), flipped, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="scale_clamp"):
        decode_boxes(np.zeros((2, 4)), good, (1, 1, 1, 1), scale_clamp=float("inf"))


def test_inputs_not_mutated():
    rng = np.random.default_rng(2)
    boxes = _boxes(rng, 20)
    scores = rng.random(20)
    idxs = rng.integers(0, 3, 20)
    deltas = rng.normal(0, 1, (20, 8))
    saved = [a.copy() for a in (boxes, scores, idxs, deltas)]
    box_iou(boxes, boxes)
    nms(boxes, scores, 0.5)
    batched_nms(boxes, scores, idxs, 0.5)
    encode_boxes(boxes + [0, 0, 1, 1], boxes + [0, 0, 2, 2], (10, 10, 5, 5))
    decode_boxes(deltas, boxes, (10, 10, 5, 5))
    for a, b in zip((boxes, scores, idxs, deltas), saved):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ torchvision

@pytest.mark.torch
@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), k=st.integers(0, 200), threshold=thresholds,
       classes=st.integers(1, 5))
def test_matches_torchvision(seed, k, threshold, classes):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, k, dtype=np.float32) * 8                # image-sized coordinates
    scores = rng.random(k).astype(np.float32)
    idxs = rng.integers(0, classes, k)
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    np.testing.assert_allclose(box_iou(boxes, boxes[: k // 2]),
                               tv.box_iou(tb, tb[: k // 2]).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(nms(boxes, scores, threshold), tv.nms(tb, ts, threshold).numpy())
    np.testing.assert_array_equal(batched_nms(boxes, scores, idxs, threshold),
                                  tv.batched_nms(tb, ts, torch.from_numpy(idxs), threshold).numpy())


@pytest.mark.torch
@pytest.mark.parametrize("weights", WEIGHTS)
def test_box_coder_matches_torchvision(weights):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(5)
    proposals = _boxes(rng, 50, dtype=np.float32)
    reference = _boxes(rng, 50, dtype=np.float32)
    coder = BoxCoder(weights)
    expected = coder.encode_single(torch.from_numpy(reference), torch.from_numpy(proposals))
    np.testing.assert_allclose(encode_boxes(reference, proposals, weights), expected.numpy(),
                               rtol=1e-5, atol=1e-5)
    deltas = rng.normal(0, 3, (50, 12)).astype(np.float32)
    expected = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(proposals))
    np.testing.assert_allclose(decode_boxes(deltas, proposals, weights), expected.numpy(),
                               rtol=1e-5, atol=1e-3)
