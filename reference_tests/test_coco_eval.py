"""npseg.metrics.coco_eval: COCO AP/AR in NumPy, against hand-worked cases and pycocotools."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npseg.data import ShapesDataset, mask_to_rle, rle_to_mask, shapes_to_coco
from npseg.metrics import evaluate_detections, to_coco_results
from npseg.metrics.coco_eval import IOU_THRESHOLDS, greedy_match

# pycocotools (used for comparisons) predates NumPy 2's __array__ copy keyword
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

STAT_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def make_gt(boxes, cats=(1,), size=(100, 100), crowd=None, image_ids=None):
    """Ground truth with boxes ``[(image_id, category_id, [x, y, w, h]), ...]``."""
    image_ids = sorted({b[0] for b in boxes} | set(image_ids or []))
    anns = []
    for j, (iid, cid, box) in enumerate(boxes):
        anns.append({"id": j + 1, "image_id": iid, "category_id": cid, "bbox": list(box),
                     "area": box[2] * box[3], "iscrowd": int(bool(crowd and crowd[j]))})
    return {"images": [{"id": i, "height": size[0], "width": size[1]} for i in image_ids],
            "annotations": anns, "categories": [{"id": c} for c in cats]}


def det(iid, cid, box, score):
    return {"image_id": iid, "category_id": cid, "bbox": list(box), "score": score}


# --------------------------------------------------------------------------- hand-worked


def test_perfect_detections_give_one():
    ds = ShapesDataset("val", size=6, image_size=64, seed=0)
    gt = shapes_to_coco(ds)
    preds = [{"boxes": ds[i]["boxes"], "labels": ds[i]["labels"], "masks": ds[i]["masks"],
              "scores": np.linspace(1.0, 0.5, len(ds[i]["labels"]))} for i in range(len(ds))]
    dt = to_coco_results(preds)
    for iou_type in ("bbox", "segm"):
        r = evaluate_detections(gt, dt, iou_type)
        assert r["AP"] == 1.0 and r["AP50"] == 1.0 and r["AP75"] == 1.0 and r["AR100"] == 1.0
        assert all(v == 1.0 for v in r["per_category_AP"].values())


def test_false_positive_ranked_first():
    gt = make_gt([(1, 1, [10, 10, 20, 20])])
    tp = det(1, 1, [10, 10, 20, 20], 0.8)
    fp = det(1, 1, [60, 60, 20, 20], 0.9)
    # precision/recall points: (0 / 1, recall 0), (1 / 2, recall 1) -> monotone precision 0.5
    assert evaluate_detections(gt, [tp, fp])["AP"] == pytest.approx(0.5)
    fp["score"] = 0.7  # ranked below the true positive: it costs nothing
    assert evaluate_detections(gt, [tp, fp])["AP"] == pytest.approx(1.0)


def test_two_ground_truths_fp_tp_tp():
    gt = make_gt([(1, 1, [0, 0, 10, 10]), (1, 1, [50, 50, 10, 10])])
    dt = [det(1, 1, [80, 0, 10, 10], 0.9), det(1, 1, [0, 0, 10, 10], 0.8), det(1, 1, [50, 50, 10, 10], 0.7)]
    # precisions 0, 1/2, 2/3 at recalls 0, 1/2, 1; made monotone: 2/3 everywhere
    r = evaluate_detections(gt, dt)
    assert r["AP"] == pytest.approx(2 / 3) and r["AR100"] == pytest.approx(1.0)
    assert r["AR1"] == pytest.approx(0.0)  # the top detection of the image is the false positive


def test_iou_decides_the_thresholds():
    gt = make_gt([(1, 1, [0, 0, 10, 10])])
    r = evaluate_detections(gt, [det(1, 1, [0, 0, 10, 7.2], 0.9)])  # IoU 0.72
    # matched at 0.50 .. 0.70 (5 of 10 thresholds)
    assert r["AP50"] == 1.0 and r["AP75"] == 0.0 and r["AP"] == pytest.approx(0.5)


def test_categories_without_ground_truth_are_left_out():
    gt = make_gt([(1, 1, [0, 0, 10, 10]), (1, 2, [30, 30, 10, 10])], cats=(1, 2, 3))
    dt = [det(1, 1, [0, 0, 10, 10], 0.9), det(1, 3, [60, 60, 10, 10], 0.8), det(1, 7, [0, 0, 5, 5], 0.9)]
    r = evaluate_detections(gt, dt)
    # category 1 perfect, category 2 missed, category 3 has no ground truth, 7 is unknown
    assert r["per_category_AP"] == {1: 1.0, 2: 0.0, 3: -1.0}
    assert r["AP"] == pytest.approx(0.5)


def test_crowd_regions_are_ignored():
    boxes = [(1, 1, [0, 0, 10, 10]), (1, 1, [40, 40, 40, 40])]
    dt = [det(1, 1, [0, 0, 10, 10], 0.5), det(1, 1, [50, 50, 10, 10], 0.9), det(1, 1, [45, 45, 10, 10], 0.8)]
    # the second ground truth a crowd: detections inside it (IoU = inter / area_d = 1) are
    # ignored, any number of them; the first ground truth is then found without false positives
    assert evaluate_detections(make_gt(boxes, crowd=[0, 1]), dt)["AP"] == pytest.approx(1.0)
    # as an ordinary object: one of the two is a true positive, the other a false positive
    r = evaluate_detections(make_gt(boxes), dt)
    assert r["AP50"] < 1.0 and r["AP"] < 0.5


def test_area_ranges():
    gt = make_gt([(1, 1, [0, 0, 10, 10]), (1, 1, [20, 20, 100, 100])], size=(150, 150))
    small_fp = det(1, 1, [130, 0, 8, 8], 0.95)
    dt = [det(1, 1, [0, 0, 10, 10], 0.9), det(1, 1, [20, 20, 100, 100], 0.8), small_fp]
    r = evaluate_detections(gt, dt)
    assert r["APm"] == -1.0 and r["ARm"] == -1.0  # no medium ground truth
    assert r["APl"] == 1.0  # the small false positive is outside the large range: ignored
    assert r["APs"] == pytest.approx(0.5)  # inside the small range it ranks above the hit
    assert r["ARs"] == 1.0 and r["ARl"] == 1.0


def test_max_dets_keeps_the_best_scores():
    gt = make_gt([(1, 1, [0, 0, 10, 10]), (1, 1, [20, 0, 10, 10]), (1, 1, [40, 0, 10, 10])])
    dt = [det(1, 1, [0, 0, 10, 10], 0.3), det(1, 1, [20, 0, 10, 10], 0.2), det(1, 1, [40, 0, 10, 10], 0.1),
          det(1, 1, [0, 60, 10, 10], 0.9), det(1, 1, [20, 60, 10, 10], 0.8)]
    assert evaluate_detections(gt, dt, max_dets=2)["AP"] == 0.0
    r = evaluate_detections(gt, dt, max_dets=3)
    assert set(r) >= {"AR1", "AR3"} and r["AR3"] == pytest.approx(1 / 3)
    assert evaluate_detections(gt, dt)["AR100"] == 1.0


def test_segm_uses_masks():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 3:8] = True
    half = mask.copy()
    half[7:] = False  # half of the pixels: IoU 0.5
    gt = {"images": [{"id": 4, "height": 20, "width": 20}], "categories": [{"id": 1}],
          "annotations": [{"id": 1, "image_id": 4, "category_id": 1, "bbox": [3, 2, 5, 10], "area": 50,
                           "iscrowd": 0, "segmentation": mask_to_rle(mask)}]}
    dt = [{"image_id": 4, "category_id": 1, "score": 0.9, "segmentation": mask_to_rle(half)}]
    r = evaluate_detections(gt, dt, "segm")
    assert r["AP50"] == 1.0 and r["AP"] == pytest.approx(0.1)


def test_bad_input():
    gt = make_gt([(1, 1, [0, 0, 10, 10])])
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_detections(gt, [], "keypoints")
    with pytest.raises(ValueError, match="image_id 9"):
        evaluate_detections(gt, [det(9, 1, [0, 0, 1, 1], 0.5)])
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_detections(gt, [det(1, 1, [0, 0, 1, 1], 0.5)], "segm")
    with pytest.raises(ValueError, match="max_dets"):
        evaluate_detections(gt, [], max_dets=0)
    assert evaluate_detections(gt, [])["AP"] == 0.0


# --------------------------------------------------------------------------- matching


def loop_match(ious, gt_ignore, gt_crowd, thr):
    """Reference: the matching rule written as plain loops, one threshold at a time."""
    d_count, g_count = ious.shape
    matched = np.zeros(d_count, bool)
    ignored = np.zeros(d_count, bool)
    taken = np.zeros(g_count, bool)
    for d in range(d_count):
        best, best_iou = -1, min(thr, 1 - 1e-10)
        for g in range(g_count):
            if taken[g] and not gt_crowd[g]:
                continue
            if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                break  # a regular match beats every ignored ground truth
            if ious[d, g] >= best_iou:
                best, best_iou = g, ious[d, g]
        if best > -1:
            matched[d], ignored[d], taken[best] = True, gt_ignore[best], True
    return matched, ignored


@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 2 ** 31 - 1))
def test_greedy_match_matches_loops(d_count, g_count, seed):
    rng = np.random.default_rng(seed)
    ious = np.round(rng.random((d_count, g_count)), 1)  # ties on purpose
    gt_ignore = np.sort(rng.random(g_count) < 0.4)  # ignored ones last
    gt_crowd = gt_ignore & (rng.random(g_count) < 0.5)
    matched, ignored = greedy_match(ious, gt_ignore, gt_crowd)
    for t, thr in enumerate(IOU_THRESHOLDS):
        m, i = loop_match(ious, gt_ignore, gt_crowd, thr)
        np.testing.assert_array_equal(matched[t], m)
        np.testing.assert_array_equal(ignored[t], i)


# --------------------------------------------------------------------------- pycocotools


def random_fixture(seed, n_img=8, n_cat=3, tie_scores=False):
    """Random objects (ellipse masks), jittered and misclassified detections, misses,
    spurious boxes, some crowd regions, image and category ids that are not 0..n."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []

    def ellipse(h, w, x, y, bw, bh):
        yy, xx = np.mgrid[0:h, 0:w] + 0.5
        return ((xx - x - bw / 2) / (bw / 2)) ** 2 + ((yy - y - bh / 2) / (bh / 2)) ** 2 <= 1

    def score():
        s = rng.random()
        return float(np.round(s, 1) if tie_scores else s)

    for i in range(n_img):
        h, w = (int(v) for v in rng.integers(60, 240, 2))
        iid = 3 * i + 1
        images.append({"id": iid, "height": h, "width": w, "file_name": f"{iid}.png"})
        for _ in range(rng.integers(0, 7)):
            cat = 2 * int(rng.integers(1, n_cat + 1))
            bw, bh = rng.uniform(4, 0.8 * w), rng.uniform(4, 0.8 * h)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            m = ellipse(h, w, x, y, bw, bh)
            if not m.any():
                continue
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": float(m.sum()), "iscrowd": int(rng.random() < 0.1),
                         "segmentation": mask_to_rle(m)})
            for _ in range(rng.integers(0, 3)):  # 0 (a miss), 1 or 2 (a duplicate) detections
                j = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
                dx, dy, dw, dh = x + j[0], y + j[1], max(bw + j[2], 1), max(bh + j[3], 1)
                c = cat if rng.random() < 0.85 else 2 * int(rng.integers(1, n_cat + 1))
                dets.append({"image_id": iid, "category_id": c, "bbox": [dx, dy, dw, dh], "score": score(),
                             "segmentation": mask_to_rle(ellipse(h, w, dx, dy, dw, dh))})
        for _ in range(rng.integers(0, 3)):  # spurious
            bw, bh = rng.uniform(4, 0.5 * w), rng.uniform(4, 0.5 * h)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            m = np.zeros((h, w), bool)
            m[int(y):int(y + bh), int(x):int(x + bw)] = True
            dets.append({"image_id": iid, "category_id": 2 * int(rng.integers(1, n_cat + 1)),
                         "bbox": [x, y, bw, bh], "score": score(), "segmentation": mask_to_rle(m)})
    cats = [{"id": 2 * k, "name": f"c{k}"} for k in range(1, n_cat + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def pycocotools_eval(gt, dt, iou_type, max_dets=(1, 10, 100)):
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = copy.deepcopy(dt)
    for r in results:
        if iou_type == "segm":
            r.pop("bbox")  # else loadRes takes the area from the box
            h, w = r["segmentation"]["size"]
            r["segmentation"] = mask_utils.frPyObjects(r["segmentation"], h, w)
        else:
            r.pop("segmentation")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), iou_type)
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_pycocotools(seed, iou_type):
    pytest.importorskip("pycocotools")
    gt, dt = random_fixture(seed, tie_scores=seed == 3)
    assert any(a["iscrowd"] for a in gt["annotations"]) or seed != 0
    ours = evaluate_detections(gt, dt, iou_type)
    theirs = pycocotools_eval(gt, dt, iou_type).stats
    for key, value in zip(STAT_KEYS, theirs):
        assert ours[key] == pytest.approx(value, abs=1e-3), key
    assert 0.05 < ours["AP"] < 0.95  # a fixture that tests something


def test_agrees_with_pycocotools_few_detections():
    pytest.importorskip("pycocotools")
    gt, dt = random_fixture(11, n_img=5)
    ev = pycocotools_eval(gt, dt, "bbox", max_dets=(1, 2, 3))
    ours = evaluate_detections(gt, dt, "bbox", max_dets=3)
    # summarize() reads maxDets=100 only; average the accumulated arrays at maxDets=3 instead
    precision = ev.eval["precision"][:, :, :, 0, -1]
    recall = ev.eval["recall"][:, :, 0, :]
    assert ours["AP"] == pytest.approx(precision[precision > -1].mean(), abs=1e-3)
    assert ours["AP50"] == pytest.approx(precision[0][precision[0] > -1].mean(), abs=1e-3)
    for key, m in (("AR1", 0), ("AR3", 2)):
        r = recall[..., m]
        assert ours[key] == pytest.approx(r[r > -1].mean(), abs=1e-3), key
    assert ours["AP"] < evaluate_detections(gt, dt, "bbox")["AP"]


# --------------------------------------------------------------------------- export


def test_to_coco_results_format():
    masks = np.zeros((2, 6, 8), np.float32)
    masks[0, 1:3, 2:5] = 0.9
    masks[1, 4:, :] = 0.4  # below the threshold: an empty mask
    pred = {"boxes": np.array([[2, 1, 5, 3], [0.5, 4, 8, 6]], np.float32), "scores": np.array([0.9, 0.3]),
            "labels": np.array([1, 2]), "masks": masks[:, None]}
    res = to_coco_results([pred], image_ids=[42], label_to_category={1: 7, 2: 9})
    json.dumps(res)
    assert [r["category_id"] for r in res] == [7, 9]
    assert res[0]["image_id"] == 42 and res[0]["score"] == pytest.approx(0.9)
    assert res[0]["bbox"] == [2.0, 1.0, 3.0, 2.0] and res[1]["bbox"] == [0.5, 4.0, 7.5, 2.0]
    np.testing.assert_array_equal(rle_to_mask(res[0]["segmentation"]), masks[0] >= 0.5)
    assert not rle_to_mask(res[1]["segmentation"]).any()
    plain = to_coco_results({"boxes": pred["boxes"], "scores": pred["scores"], "labels": pred["labels"],
                             "image_id": 5})
    assert [r["image_id"] for r in plain] == [5, 5] and "segmentation" not in plain[0]
    assert [r["category_id"] for r in plain] == [1, 2]
    with pytest.raises(ValueError, match="rle"):
        to_coco_results([pred], rle="zip")
    with pytest.raises(ValueError, match="masks"):
        to_coco_results([dict(pred, masks=masks[:1])])


def test_to_coco_results_compressed():
    pytest.importorskip("pycocotools")
    mask = np.zeros((1, 5, 7), bool)
    mask[0, 1:4, 2:6] = True
    pred = {"boxes": np.array([[2, 1, 6, 4]]), "scores": np.array([0.5]), "labels": np.array([1]), "masks": mask}
    res = to_coco_results([pred], rle="compressed")
    assert isinstance(res[0]["segmentation"]["counts"], str)
    json.dumps(res)
    np.testing.assert_array_equal(rle_to_mask(res[0]["segmentation"]), mask[0])
