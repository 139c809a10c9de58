"""COCO-style detection and instance-segmentation AP, in NumPy.

Implements the rules of pycocotools' ``COCOeval`` (bbox and segm; per category, ``useCats=1``),
so numbers can be compared with published ones:

* **IoU**: boxes ``[x, y, w, h]``: ``inter / (area_d + area_g - inter)``; masks: pixel counts,
  the intersections of all detection/ground-truth pairs of an image at once as one matrix
  product of the flattened masks. Against a *crowd* ground truth the union is the detection's
  own area (``inter / area_d``: a detection inside a crowd region is not penalised).
* **Per image and category**: detections sorted by decreasing score (stable), at most
  ``max_dets`` kept. A ground truth is *ignored* when it is a crowd (``iscrowd``) or its
  ``area`` falls outside the area range; ignored ones are put last. At each IoU threshold
  ``t`` in ``0.50:0.05:0.95``, detections in score order are matched greedily: among the
  ground truths not yet matched (crowds may match any number of times) with ``IoU >= t``, the
  one of highest IoU (ties: the later one), preferring non-ignored ground truths; a detection
  matched to an ignored ground truth is ignored, an unmatched detection is a false positive
  unless its own area is outside the area range (then ignored too).
* **Per category**: the kept detections of all images are merged in decreasing score order
  (stable, images in increasing id order); ``TP``/``FP`` cumulative counts give
  ``recall = TP / G`` (G = non-ignored ground truths) and ``precision = TP / (TP + FP)``;
  precision is made monotone from the right (``p[i] = max(p[i:])``) and read at the 101 recall
  thresholds ``0:0.01:1`` (the first point with recall >= r; 0 beyond the last). AP is the
  mean over thresholds and recall points; categories without ground truth are left out of the
  mean. AR is the recall at the end of the list, averaged the same way.
* Area ranges: all ``[0, 1e10]``, small ``[0, 32^2]``, medium ``[32^2, 96^2]``, large
  ``[96^2, 1e10]`` (ends included), ground-truth area from the annotation's ``area`` (computed
  from the box / mask where missing), detection area ``w*h`` for bbox and the mask's pixel
  count for segm.
* Detections on images absent from the ground truth are an error (pycocotools asserts too);
  detections of categories absent from it are skipped. A ground truth's ``ignore`` field is
  not read (pycocotools overwrites it with ``iscrowd``). Undefined summaries are -1, as in
  pycocotools.

For segm, pycocotools' ``loadRes`` takes a result's area from its ``bbox`` when the result has
one (not from its mask); to compare with pycocotools, drop ``bbox`` from segm results (as
detectron2 does). Polygons are rasterised by :func:`npseg.data.coco.polygons_to_mask`, which can
differ from pycocotools by edge pixels; RLE masks are decoded exactly.
"""

from __future__ import annotations

import numbers
from collections import defaultdict

import numpy as np

from npseg._device import array_module
from npseg.data.coco import annotation_to_mask, load_json, mask_to_rle

__all__ = ["evaluate_detections", "to_coco_results", "IOU_THRESHOLDS", "RECALL_THRESHOLDS",
           "AREA_RANGES"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # 0.50, 0.55, ..., 0.95
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # 0.00, 0.01, ..., 1.00
AREA_RANGES = (("all", 0.0, 1e10), ("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2),
               ("large", 96.0 ** 2, 1e10))


# --------------------------------------------------------------------------- IoU


def bbox_iou_xywh(dt_boxes, gt_boxes, gt_crowd) -> np.ndarray:
    """``(D, G)`` IoU of ``[x, y, w, h]`` boxes; against crowd ground truths ``inter / area_d``."""
    d = np.asarray(dt_boxes, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    iw = (np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2])
          - np.maximum(d[:, None, 0], g[None, :, 0]))
    ih = (np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3])
          - np.maximum(d[:, None, 1], g[None, :, 1]))
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_d = (d[:, 2] * d[:, 3])[:, None]
    area_g = (g[:, 2] * g[:, 3])[None, :]
    return _ratio(inter, area_d, area_g, gt_crowd)


def mask_iou(dt_masks, gt_masks, gt_crowd) -> np.ndarray:
    """``(D, G)`` IoU of boolean masks ``(D, H, W)``, ``(G, H, W)``.

    ``inter = Md @ Mg^T`` with the masks flattened to rows of 0/1 (float32 products are exact
    for counts below 2^24 pixels; larger images use float64).
    """
    d, g = np.asarray(dt_masks, dtype=bool), np.asarray(gt_masks, dtype=bool)
    d = d.reshape(d.shape[0], int(np.prod(d.shape[1:])))
    g = g.reshape(g.shape[0], int(np.prod(g.shape[1:])))
    ftype = np.float32 if d.shape[1] < 2 ** 24 else np.float64
    df, gf = d.astype(ftype), g.astype(ftype)
    inter = (df @ gf.T).astype(np.float64)
    area_d = d.sum(axis=1, dtype=np.float64)[:, None]
    area_g = g.sum(axis=1, dtype=np.float64)[None, :]
    return _ratio(inter, area_d, area_g, gt_crowd)


def _ratio(inter, area_d, area_g, gt_crowd):
    crowd = np.asarray(gt_crowd, dtype=bool).reshape(1, -1)
    union = np.where(crowd, area_d, area_d + area_g - inter)
    out = np.zeros(inter.shape)
    np.divide(inter, union, out=out, where=union > 0)
    return out


# --------------------------------------------------------------------------- matching


def greedy_match(ious, gt_ignore, gt_crowd, thresholds=IOU_THRESHOLDS):
    """COCO greedy matching of score-sorted detections at every IoU threshold at once.

    ``ious`` is ``(D, G)`` with detections by decreasing score and ground truths sorted so the
    ignored ones come last. Returns bool ``(T, D)`` arrays ``matched`` and ``ignored`` (matched
    to an ignored ground truth). Loops over detections only (each depends on the earlier ones);
    thresholds and ground truths are vectorized.
    """
    ious = np.asarray(ious, dtype=np.float64)
    d_count, g_count = ious.shape
    t_count = len(thresholds)
    matched = np.zeros((t_count, d_count), dtype=bool)
    ignored = np.zeros((t_count, d_count), dtype=bool)
    if d_count == 0 or g_count == 0:
        return matched, ignored
    gt_ignore = np.asarray(gt_ignore, dtype=bool)
    gt_crowd = np.asarray(gt_crowd, dtype=bool)
    thr = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
    taken = np.zeros((t_count, g_count), dtype=bool)
    for d in range(d_count):
        iou = ious[d][None, :]
        ok = (iou >= thr) & (~taken | gt_crowd)  # (T, G) candidates
        regular = ok & ~gt_ignore
        cand = np.where(regular.any(axis=1, keepdims=True), regular, ok)
        found = cand.any(axis=1)
        if not found.any():
            continue
        score = np.where(cand, iou, -np.inf)
        best = g_count - 1 - np.argmax(score[:, ::-1], axis=1)  # highest IoU, ties -> later gt
        t_idx, best = np.flatnonzero(found), best[found]
        matched[t_idx, d] = True
        ignored[t_idx, d] = gt_ignore[best]
        taken[t_idx, best] = True
    return matched, ignored


# --------------------------------------------------------------------------- evaluation


def _check_max_dets(max_dets):
    if not isinstance(max_dets, numbers.Integral) or isinstance(max_dets, bool) or max_dets < 1:
        raise ValueError(f"max_dets must be an int >= 1, got {max_dets!r}")
    return int(max_dets)


def evaluate_detections(gt, dt, iou_type: str = "bbox", max_dets: int = 100) -> dict:
    """COCO AP/AR of detections ``dt`` against ground truth ``gt`` (rules: module docstring).

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``) or its json
            path (e.g. :func:`npseg.data.shapes_to_coco`).
        dt: a list of COCO results (``image_id``, ``category_id``, ``score``, and ``bbox``
            ``[x, y, w, h]`` or ``segmentation``) or its json path (:func:`to_coco_results`).
        iou_type: ``"bbox"`` or ``"segm"``.
        max_dets: detections kept per image and category (highest scores).

    Returns a dict of floats: ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``APs``, ``APm``,
    ``APl`` (area ranges), ``AR1``, ``AR10``, ``AR<max_dets>``, ``ARs``, ``ARm``, ``ARl``, and
    ``per_category_AP`` (category id -> AP, -1 without ground truth). -1 where undefined.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    max_dets = _check_max_dets(max_dets)
    det_limits = [m for m in (1, 10) if m < max_dets] + [max_dets]
    gt = load_json(gt)
    dt = load_json(dt)
    if not isinstance(dt, list):
        raise TypeError(f"dt must be a list of COCO results, got {type(dt).__name__}")

    images = {int(im["id"]): im for im in gt["images"]}
    img_ids = sorted(images)
    cat_ids = sorted(int(c["id"]) for c in gt["categories"])
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    gts, dts = defaultdict(list), defaultdict(list)
    for ann in gt["annotations"]:
        key = (int(ann["image_id"]), int(ann["category_id"]))
        if key[0] in images and key[1] in cat_index:
            gts[key].append(ann)
    for res in dt:
        iid = int(res["image_id"])
        if iid not in images:
            raise ValueError(f"a detection has image_id {iid}, which the ground truth does not have")
        if iou_type == "bbox" and "bbox" not in res:
            raise ValueError("iou_type='bbox' needs a 'bbox' in every detection")
        if iou_type == "segm" and "segmentation" not in res:
            raise ValueError("iou_type='segm' needs a 'segmentation' in every detection")
        if int(res["category_id"]) in cat_index:
            dts[(iid, int(res["category_id"]))].append(res)

    t_count, r_count = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    k_count, a_count, m_count = len(cat_ids), len(AREA_RANGES), len(det_limits)
    # per_image[k][a]: (scores (D,), matched (T, D), ignored (T, D), gt_ignore (G,)) per image
    per_image = [[[] for _ in range(a_count)] for _ in range(k_count)]

    for iid in img_ids:
        h, w = int(images[iid].get("height", 0)), int(images[iid].get("width", 0))
        for cid in cat_ids:
            g, d = gts.get((iid, cid), []), dts.get((iid, cid), [])
            if not g and not d:
                continue
            order = np.argsort([-float(x["score"]) for x in d], kind="mergesort")[:max_dets]
            d = [d[i] for i in order]
            scores = np.array([float(x["score"]) for x in d], dtype=np.float64)
            crowd = np.array([bool(x.get("iscrowd", 0)) for x in g], dtype=bool)
            if iou_type == "bbox":
                d_boxes = np.array([x["bbox"] for x in d], dtype=np.float64).reshape(-1, 4)
                g_boxes = np.array([x["bbox"] for x in g], dtype=np.float64).reshape(-1, 4)
                ious = bbox_iou_xywh(d_boxes, g_boxes, crowd)
                d_area = d_boxes[:, 2] * d_boxes[:, 3]
                g_area_fallback = g_boxes[:, 2] * g_boxes[:, 3]
            else:
                d_masks = np.array([annotation_to_mask(x, h, w) for x in d], dtype=bool).reshape(-1, h, w)
                g_masks = np.array([annotation_to_mask(x, h, w) for x in g], dtype=bool).reshape(-1, h, w)
                ious = mask_iou(d_masks, g_masks, crowd)
                d_area = d_masks.sum(axis=(1, 2)).astype(np.float64)
                g_area_fallback = g_masks.sum(axis=(1, 2)).astype(np.float64)
            g_area = np.array([float(x["area"]) if "area" in x else g_area_fallback[j]
                               for j, x in enumerate(g)], dtype=np.float64)
            k = cat_index[cid]
            for a, (_, lo, hi) in enumerate(AREA_RANGES):
                g_ignore = crowd | (g_area < lo) | (g_area > hi)
                g_order = np.argsort(g_ignore, kind="mergesort")  # ignored ground truths last
                matched, ignored = greedy_match(ious[:, g_order], g_ignore[g_order], crowd[g_order])
                d_outside = (d_area < lo) | (d_area > hi)
                ignored |= ~matched & d_outside[None, :]
                per_image[k][a].append((scores, matched, ignored, g_ignore))

    precision = -np.ones((t_count, r_count, k_count, a_count, m_count))
    recall = -np.ones((t_count, k_count, a_count, m_count))
    for k in range(k_count):
        for a in range(a_count):
            entries = per_image[k][a]
            if not entries:
                continue
            n_pos = int(sum(np.count_nonzero(~e[3]) for e in entries))
            if n_pos == 0:
                continue
            for m, limit in enumerate(det_limits):
                scores = np.concatenate([e[0][:limit] for e in entries])
                order = np.argsort(-scores, kind="mergesort")
                matched = np.concatenate([e[1][:, :limit] for e in entries], axis=1)[:, order]
                ignored = np.concatenate([e[2][:, :limit] for e in entries], axis=1)[:, order]
                tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
                fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
                n_det = tp.shape[1]
                rc = tp / n_pos
                pr = np.zeros_like(tp)  # (pycocotools adds eps to the denominator instead)
                np.divide(tp, tp + fp, out=pr, where=tp + fp > 0)
                recall[:, k, a, m] = rc[:, -1] if n_det else 0.0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone from the right
                for t in range(t_count):
                    idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    valid = idx < n_det
                    q = np.zeros(r_count)
                    q[valid] = pr[t, idx[valid]]
                    precision[t, :, k, a, m] = q

    def mean(values):
        values = values[values > -1]
        return float(values.mean()) if values.size else -1.0

    last = m_count - 1
    result = {
        "AP": mean(precision[:, :, :, 0, last]),
        "AP50": mean(precision[0, :, :, 0, last]),
        "AP75": mean(precision[5, :, :, 0, last]),
        "APs": mean(precision[:, :, :, 1, last]),
        "APm": mean(precision[:, :, :, 2, last]),
        "APl": mean(precision[:, :, :, 3, last]),
    }
    for m, limit in enumerate(det_limits):
        result[f"AR{limit}"] = mean(recall[:, :, 0, m])
    result["ARs"] = mean(recall[:, :, 1, last])
    result["ARm"] = mean(recall[:, :, 2, last])
    result["ARl"] = mean(recall[:, :, 3, last])
    result["per_category_AP"] = {cid: mean(precision[:, :, k, 0, last]) for k, cid in enumerate(cat_ids)}
    return result


# --------------------------------------------------------------------------- export


def _to_host(x):
    if x is None:
        return None
    return x.get() if array_module(x) is not np else np.asarray(x)


def _compressed_rle(mask) -> dict:
    try:
        from pycocotools import mask as mask_utils
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("rle='compressed' needs pycocotools: pip install pycocotools "
                          "(or: pip install 'npseg[coco]')") from err
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def to_coco_results(predictions, image_ids=None, label_to_category=None,
                    mask_threshold: float = 0.5, rle: str = "uncompressed") -> list:
    """Per-image predictions -> a COCO result list (JSON-ready).

    Args:
        predictions: a list (one per image) of dicts with ``boxes`` ``(K, 4)``
            ``(x1, y1, x2, y2)``, ``scores`` ``(K,)``, ``labels`` ``(K,)`` and optionally
            ``masks``: bool, or probabilities thresholded at ``>= mask_threshold``, shaped
            ``(K, H, W)`` or ``(K, 1, H, W)`` (full-image masks). NumPy or CuPy arrays.
        image_ids: the images' ids; default each prediction's ``image_id``, else its position.
        label_to_category: contiguous label -> COCO category id (e.g.
            ``CocoDataset.label_to_category``); default the label itself.
        rle: ``"uncompressed"`` (list counts written in NumPy, no dependency) or
            ``"compressed"`` (pycocotools' string counts, needed by pycocotools' ``loadRes``
            for results without a ``bbox``).

    Each entry: ``image_id``, ``category_id``, ``bbox`` ``[x1, y1, x2 - x1, y2 - y1]``,
    ``score`` and, with masks, ``segmentation``.
    """
    if rle not in ("uncompressed", "compressed"):
        raise ValueError(f"rle must be 'uncompressed' or 'compressed', got {rle!r}")
    if isinstance(predictions, dict):
        predictions = [predictions]
    if image_ids is not None and len(image_ids) != len(predictions):
        raise ValueError(f"image_ids has {len(image_ids)} ids for {len(predictions)} predictions")
    results = []
    for i, pred in enumerate(predictions):
        image_id = image_ids[i] if image_ids is not None else pred.get("image_id", i)
        boxes = _to_host(pred["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _to_host(pred["scores"]).astype(np.float64).reshape(-1)
        labels = _to_host(pred["labels"]).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"prediction {i}: boxes, scores and labels differ in length "
                             f"({len(boxes)}, {len(scores)}, {len(labels)})")
        masks = _to_host(pred.get("masks"))
        if masks is not None:
            if masks.ndim == 4 and masks.shape[1] == 1:
                masks = masks[:, 0]
            if masks.ndim != 3 or len(masks) != len(boxes):
                raise ValueError(f"prediction {i}: masks must be (K, H, W) with K={len(boxes)}, "
                                 f"got shape {masks.shape}")
            if masks.dtype != bool:
                masks = masks >= mask_threshold
        for j in range(len(boxes)):
            label = int(labels[j])
            x1, y1, x2, y2 = boxes[j]
            entry = {
                "image_id": int(image_id),
                "category_id": int(label_to_category[label]) if label_to_category is not None else label,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "score": float(scores[j]),
            }
            if masks is not None:
                entry["segmentation"] = (mask_to_rle(masks[j]) if rle == "uncompressed"
                                         else _compressed_rle(masks[j]))
            results.append(entry)
    return results
