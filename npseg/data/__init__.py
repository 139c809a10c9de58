"""Data sets, transforms and a loader for segmentation.

Every data set returns samples as dicts of NumPy arrays:

* ``image``: float32 ``(3, H, W)`` in ``[0, 1]`` (``transforms.Normalize`` standardises it);
* ``label``: int64 ``(H, W)`` semantic map (class index per pixel, 255 = ignore);
* instance data sets also give ``masks`` bool ``(K, H, W)``, ``boxes`` float32 ``(K, 4)``
  ``(x1, y1, x2, y2)`` in pixels (x2, y2 exclusive) and ``labels`` int64 ``(K,)`` (1..C-1);
* ``image_id``.

Modules: :mod:`~npseg.data.shapes` (synthetic squares/circles/triangles),
:mod:`~npseg.data.folder` (images + PNG label maps, VOC layout),
:mod:`~npseg.data.coco` (COCO json, mask codecs, export of the shapes ground truth),
:mod:`~npseg.data.transforms` and :mod:`~npseg.data.loader`.
"""

from npseg.data.coco import (CocoDataset, annotation_to_mask, mask_to_rle, polygons_to_mask,
                             rle_to_mask, shapes_to_coco)
from npseg.data.folder import VOC_CLASSES, FolderDataset
from npseg.data.loader import DataLoader, collate
from npseg.data.shapes import SHAPES_CLASSES, ShapesDataset, draw_shapes_sample
from npseg.data.transforms import (Compose, Normalize, RandomHorizontalFlip, RandomScaleCrop,
                                   Resize, masks_to_boxes)

__all__ = [
    "SHAPES_CLASSES", "ShapesDataset", "draw_shapes_sample",
    "VOC_CLASSES", "FolderDataset",
    "CocoDataset", "shapes_to_coco", "mask_to_rle", "rle_to_mask", "polygons_to_mask",
    "annotation_to_mask",
    "Compose", "RandomHorizontalFlip", "RandomScaleCrop", "Resize", "Normalize", "masks_to_boxes",
    "DataLoader", "collate",
]
