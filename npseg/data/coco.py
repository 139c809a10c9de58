"""COCO-format instance data: a reader, mask codecs, and an exporter for the shapes set.

The COCO annotation format (one json file)::

    {"images":      [{"id", "file_name", "height", "width"}, ...],
     "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h],
                      "area", "iscrowd": 0 | 1, "segmentation": polygons | RLE}, ...],
     "categories":  [{"id", "name"}, ...]}

Masks come in three encodings, all decoded here to ``bool (H, W)`` arrays:

* **polygons**: a list of flat ``[x1, y1, x2, y2, ...]`` lists in continuous pixel coordinates
  (pixel ``(row r, column c)`` covers ``[c, c+1) x [r, r+1)``). They are rasterised in NumPy by
  the pixel-centre rule: a pixel belongs to the mask when its centre ``(c + 0.5, r + 0.5)`` lies
  inside the polygon (even-odd rule; a centre exactly on an edge goes to the polygon on its
  left, so polygons sharing an edge share no pixel; the polygons of one object are united). pycocotools
  rasterises with its own sub-pixel scheme, so a mask may differ from its by a pixel along the
  edges (on random polygons the areas agree on average).
* **uncompressed RLE**: ``{"size": [H, W], "counts": [n0, n1, n2, ...]}``: run lengths of the
  mask flattened in column-major (Fortran) order, alternating 0-runs and 1-runs and starting
  with a 0-run (possibly of length 0). Encoded and decoded here in NumPy.
* **compressed RLE**: the same runs packed into a string. Decoding needs pycocotools
  (``pip install pycocotools``, or npseg's ``coco`` extra); without it a clear ``ImportError``.

Crowd annotations (``iscrowd = 1``, a region of many objects, usually an RLE): by default
:class:`CocoDataset` leaves them out of the instances and marks their pixels (those no ordinary
instance covers) with the ignore index in the semantic ``label`` map, which is what detector
training wants. ``include_crowd=True`` keeps them as instances and adds an ``iscrowd`` array.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
from PIL import Image

from npseg.data.folder import read_image

__all__ = [
    "CocoDataset",
    "shapes_to_coco",
    "mask_to_rle",
    "rle_to_mask",
    "polygons_to_mask",
    "annotation_to_mask",
    "load_json",
]


# --------------------------------------------------------------------------- mask codecs


def mask_to_rle(mask) -> dict:
    """``bool (H, W)`` -> uncompressed COCO RLE ``{"size": [H, W], "counts": [...]}``.

    The mask is read column by column (Fortran order); ``counts`` are the lengths of the
    alternating runs of 0s and 1s, the first run counting 0s (so it is 0 when the first pixel
    is set). ``sum(counts) == H * W``. Plain Python ints, ready for ``json.dump``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {mask.shape}")
    h, w = mask.shape
    flat = mask.astype(bool).ravel(order="F")
    # run boundaries: where a pixel differs from the one before it
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], starts, [flat.size]])
    counts = np.diff(bounds)
    if flat.size and flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def _pycocotools_mask():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "compressed COCO RLE (a 'counts' string) needs pycocotools: "
            "pip install pycocotools  (or: pip install 'npseg[coco]')"
        ) from err
    return mask_utils


def rle_to_mask(rle, height: int | None = None, width: int | None = None) -> np.ndarray:
    """COCO RLE (uncompressed list counts, or compressed string counts) -> ``bool (H, W)``."""
    if not isinstance(rle, dict) or "counts" not in rle:
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle.get("size", [height, width])
    if size is None or None in size:
        raise ValueError("rle has no 'size' and no height/width were given")
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        mask_utils = _pycocotools_mask()
        obj = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
        with warnings.catch_warnings():  # pycocotools' __array__ predates NumPy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(obj).astype(bool)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise ValueError("rle counts must be a flat list of non-negative run lengths")
    if int(counts.sum()) != h * w:
        raise ValueError(f"rle counts sum to {int(counts.sum())}, expected H*W = {h}*{w} = {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T.copy()  # column-major -> (H, W)


def polygons_to_mask(polygons, height: int, width: int) -> np.ndarray:
    """COCO polygons (list of flat ``[x1, y1, x2, y2, ...]``) -> ``bool (H, W)``.

    Scan-line rasterisation by the pixel-centre rule, vectorized over edges and rows: for every
    edge and every row whose centre ``y = r + 0.5`` it crosses (half-open in y, so a vertex is
    counted once), the crossing ``x`` toggles the inside/outside state of all pixels whose
    centre lies to its right; a running sum along each row, taken mod 2, gives the mask
    (even-odd rule). A centre exactly on a crossing is not toggled by it: it belongs to the
    polygon on its left. The masks of several polygons are united.
    """
    h, w = int(height), int(width)
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(p) < 3:
            continue
        x0, y0 = p[:, 0], p[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        y_lo, y_hi = np.minimum(y0, y1), np.maximum(y0, y1)
        # rows r with y_lo <= r + 0.5 < y_hi (horizontal edges cross no row)
        r_start = np.clip(np.ceil(y_lo - 0.5), 0, h).astype(np.int64)
        r_stop = np.clip(np.ceil(y_hi - 0.5), 0, h).astype(np.int64)
        n = np.maximum(r_stop - r_start, 0)
        edge = np.repeat(np.arange(len(p)), n)
        rows = np.repeat(r_start, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
        x_cross = x0[edge] + t * (x1[edge] - x0[edge])
        # first column whose centre c + 0.5 is strictly right of the crossing
        col = np.clip(np.floor(x_cross - 0.5) + 1, 0, w).astype(np.int64)
        toggles = np.bincount(rows * (w + 1) + col, minlength=h * (w + 1)).reshape(h, w + 1)
        mask |= (np.cumsum(toggles, axis=1)[:, :w] % 2).astype(bool)
    return mask


def annotation_to_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The ``bool (H, W)`` mask of one COCO annotation (polygons or RLE).

    An annotation without a segmentation gets the filled rectangle of its ``bbox``.
    """
    segm = ann.get("segmentation")
    if segm is None or (isinstance(segm, list) and len(segm) == 0):
        x, y, bw, bh = ann["bbox"]
        return polygons_to_mask([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], height, width)
    if isinstance(segm, list):
        return polygons_to_mask(segm, height, width)
    if isinstance(segm, dict):
        mask = rle_to_mask(segm, height, width)
        if mask.shape != (height, width):
            raise ValueError(
                f"annotation {ann.get('id')}: RLE size {list(mask.shape)} differs from its "
                f"image's size [{height}, {width}]")
        return mask
    raise ValueError(f"annotation {ann.get('id')}: unknown segmentation type {type(segm).__name__}")


def load_json(source):
    """A COCO dict/list from a dict/list (returned as is) or a json file path."""
    if isinstance(source, (dict, list)):
        return source
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- reader


class CocoDataset:
    """Images and instance annotations from a COCO json, as npseg samples.

    Args:
        annotation_json: path of the json file, or the already loaded dict.
        image_root: folder holding the images' ``file_name`` paths.
        include_crowd: keep ``iscrowd`` annotations as instances (and add an ``iscrowd`` array);
            by default they are dropped and their pixels become ``ignore_index`` in ``label``.
        ignore_index: value of ignored pixels in ``label``.

    Category ids are mapped to contiguous labels ``1..K`` in increasing id order (0 is the
    background): ``label_to_category`` / ``category_to_label`` translate.

    A sample (``dataset[i]``) is a dict:

    * ``image``: float32 ``(3, H, W)`` in ``[0, 1]``;
    * ``label``: int64 ``(H, W)`` semantic map: each instance's mask painted with its label in
      annotation order (a later annotation wins where two overlap), crowd regions
      ``ignore_index``, 0 elsewhere;
    * ``masks`` bool ``(K, H, W)``, ``boxes`` float32 ``(K, 4)`` (COCO ``[x, y, w, h]`` turned
      into ``(x1, y1, x2, y2)`` and clipped to the image), ``labels`` int64 ``(K,)``;
    * ``image_id``: the COCO image id.

    Annotations whose clipped box has no width or height are skipped.
    """

    def __init__(self, annotation_json, image_root, include_crowd: bool = False,
                 ignore_index: int = 255):
        data = load_json(annotation_json)
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"annotation_json has no {key!r} list (not a COCO file?)")
        self.image_root = os.fspath(image_root)
        if not os.path.isdir(self.image_root):
            raise FileNotFoundError(f"image_root folder not found: {self.image_root}")
        self.include_crowd = bool(include_crowd)
        self.ignore_index = int(ignore_index)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.category_to_label = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.label_to_category = {k + 1: cid for k, cid in enumerate(self.category_ids)}
        self.class_names = ("background",) + tuple(str(c.get("name", c["id"])) for c in cats)
        self.num_classes = len(self.class_names)
        self.images = list(data["images"])
        self.image_ids = [int(im["id"]) for im in self.images]
        self._anns = {iid: [] for iid in self.image_ids}
        for ann in data["annotations"]:
            iid = int(ann["image_id"])
            if iid not in self._anns:
                raise ValueError(f"annotation {ann.get('id')} refers to unknown image_id {iid}")
            if int(ann["category_id"]) not in self.category_to_label:
                raise ValueError(
                    f"annotation {ann.get('id')} has category_id {ann['category_id']}, "
                    f"not among the categories {self.category_ids}")
            self._anns[iid].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def annotations(self, index: int) -> list:
        """The raw COCO annotations of image ``index``."""
        return self._anns[self.image_ids[index]]

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} images")
        info = self.images[index]
        image = read_image(os.path.join(self.image_root, info["file_name"]))
        h, w = image.shape[1:]
        if ("height" in info and int(info["height"]) != h) or ("width" in info and int(info["width"]) != w):
            raise ValueError(
                f"image {info['file_name']} is {h}x{w} (HxW) but the json says "
                f"{info.get('height')}x{info.get('width')}")

        masks, boxes, labels, crowd = [], [], [], []
        for ann in self._anns[int(info["id"])]:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            masks.append(annotation_to_mask(ann, h, w))
            boxes.append(box)
            labels.append(self.category_to_label[int(ann["category_id"])])
            crowd.append(bool(ann.get("iscrowd", 0)))
        masks = np.array(masks, dtype=bool).reshape(-1, h, w)
        boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.array(labels, dtype=np.int64)
        crowd = np.array(crowd, dtype=bool)

        label = np.zeros((h, w), dtype=np.int64)
        if crowd.any():
            label[masks[crowd].any(axis=0)] = self.ignore_index
        for m, c in zip(masks[~crowd], labels[~crowd]):
            label[m] = c

        sample = {"image": image, "label": label, "image_id": int(info["id"])}
        if self.include_crowd:
            sample.update(masks=masks, boxes=boxes, labels=labels, iscrowd=crowd)
        else:
            keep = ~crowd
            sample.update(masks=masks[keep], boxes=boxes[keep], labels=labels[keep])
        return sample


# --------------------------------------------------------------------------- exporter


def shapes_to_coco(dataset, indices=None, image_dir=None) -> dict:
    """The ground truth of an instance data set (e.g. ``ShapesDataset``) as a COCO dict.

    Works for any data set whose samples carry ``masks``/``boxes``/``labels`` and that has
    ``class_names`` (index 0 the background). Image ids are the samples' ``image_id`` (the index
    for the shapes set), annotation ids count from 1 (pycocotools treats id 0 as "unmatched"),
    ``bbox`` is ``[x1, y1, x2 - x1, y2 - y1]``, ``area`` the mask's pixel count and
    ``segmentation`` an uncompressed RLE.

    ``image_dir``: when given, each image is also written there as a PNG (``file_name``), so
    :class:`CocoDataset` can read the export back.
    """
    if indices is None:
        indices = range(len(dataset))
    names = list(getattr(dataset, "class_names"))
    categories = [{"id": k, "name": str(n)} for k, n in enumerate(names) if k > 0]
    images, annotations = [], []
    split = getattr(dataset, "split", "data")
    if image_dir is not None:
        os.makedirs(image_dir, exist_ok=True)
    for i in indices:
        sample = dataset[int(i)]
        h, w = sample["image"].shape[1:]
        image_id = int(sample.get("image_id", i))
        file_name = f"{split}_{image_id:06d}.png"
        images.append({"id": image_id, "file_name": file_name, "height": int(h), "width": int(w)})
        if image_dir is not None:
            rgb = np.clip(np.rint(sample["image"].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(os.path.join(image_dir, file_name))
        for mask, box, lab in zip(sample["masks"], sample["boxes"], sample["labels"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(lab),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(mask.sum()),
                "iscrowd": 0,
                "segmentation": mask_to_rle(mask),
            })
    return {"images": images, "annotations": annotations, "categories": categories}
