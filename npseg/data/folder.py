"""Semantic segmentation data from a folder of images and PNG label maps.

Two layouts are recognised (``layout="auto"`` picks the one that is there):

``"voc"`` (Pascal VOC)::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png          palette PNG: pixel value = class index, 255 = ignore
    root/ImageSets/Segmentation/<split>.txt  one <id> a line (train.txt, val.txt, trainval.txt)

  With ``split=None`` every label PNG with its JPEG is used (VOC has more JPEGs than labels).

``"simple"``::

    root/images/<stem>.<jpg|jpeg|png|bmp|tif|tiff>
    root/labels/<stem>.png                   single-channel (L) or palette (P) PNG

  With a split: ``root/<split>/images`` + ``root/<split>/labels`` when that folder exists, else
  the stems listed in ``root/<split>.txt``.

Label maps hold class indices ``0..num_classes-1``; ``ignore_index`` (255) marks pixels without
a label (VOC's object borders). Any other value is an error naming the file and the value. A
sample is ``{"image": float32 (3, H, W) in [0, 1], "label": int64 (H, W), "image_id": stem}``.
Images are read lazily, one per ``__getitem__``; :meth:`FolderDataset.validate` reads them all.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

__all__ = ["FolderDataset", "VOC_CLASSES", "IMAGE_EXTENSIONS"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_LABEL_MODES = ("P", "L", "1", "I", "I;16")


def _require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def read_image(path: str) -> np.ndarray:
    """An image file -> float32 ``(3, H, W)`` in ``[0, 1]``."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from err
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def read_label(path: str) -> np.ndarray:
    """A single-channel or palette PNG -> int64 ``(H, W)`` of its pixel values (palette indices)."""
    try:
        with Image.open(path) as im:
            if im.mode not in _LABEL_MODES:
                raise ValueError(
                    f"label file {path} has image mode {im.mode!r}; expected a single-channel "
                    f"(L) or palette (P) PNG whose pixel values are class indices")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    except OSError as err:
        raise ValueError(f"cannot read label file {path}: {err}") from err
    return arr.astype(np.int64)


class FolderDataset:
    """Images + PNG label maps from ``root`` (layouts in the module docstring).

    Args:
        root: the data set folder.
        split: ``None`` (everything), or a split name (``"train"``, ``"val"``, ...).
        layout: ``"auto"``, ``"voc"`` or ``"simple"``.
        num_classes: number of classes including the background; defaults to 21 for VOC,
            ``len(class_names)`` when names are given; required otherwise.
        class_names: names of the classes (defaults to :data:`VOC_CLASSES` for VOC).
        ignore_index: the label value of unlabelled pixels (excluded from losses and metrics).
    """

    def __init__(self, root, split: str | None = None, layout: str = "auto",
                 num_classes: int | None = None, class_names=None, ignore_index: int = 255):
        self.root = os.fspath(root)
        _require_dir(self.root, "data set root")
        if layout not in ("auto", "voc", "simple"):
            raise ValueError(f"layout must be one of 'auto', 'voc', 'simple', got {layout!r}")
        if layout == "auto":
            if os.path.isdir(os.path.join(self.root, "JPEGImages")):
                layout = "voc"
            elif (os.path.isdir(os.path.join(self.root, "images"))
                  or (split is not None and os.path.isdir(os.path.join(self.root, split, "images")))):
                layout = "simple"
            else:
                raise FileNotFoundError(
                    f"no data set layout recognised under {self.root}: expected "
                    f"{os.path.join(self.root, 'JPEGImages')} (VOC) or "
                    f"{os.path.join(self.root, 'images')} + {os.path.join(self.root, 'labels')}")
        self.layout = layout
        self.split = split
        self.ignore_index = int(ignore_index)

        if class_names is None and layout == "voc" and num_classes in (None, len(VOC_CLASSES)):
            class_names = VOC_CLASSES
        if num_classes is None:
            if class_names is None:
                raise ValueError("num_classes (or class_names) is required for the 'simple' layout")
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names is not None else tuple(
            str(k) for k in range(self.num_classes))

        self.items = self._scan_voc() if layout == "voc" else self._scan_simple()

    # ------------------------------------------------------------------ scanning

    def _scan_voc(self) -> list[tuple[str, str, str]]:
        image_dir = _require_dir(os.path.join(self.root, "JPEGImages"), "VOC image")
        label_dir = _require_dir(os.path.join(self.root, "SegmentationClass"), "VOC label")
        if self.split is None:
            ids = sorted(f[:-4] for f in os.listdir(label_dir) if f.lower().endswith(".png"))
        else:
            ids = _read_ids(os.path.join(self.root, "ImageSets", "Segmentation", f"{self.split}.txt"))
        items = []
        for i in ids:
            image = os.path.join(image_dir, f"{i}.jpg")
            label = os.path.join(label_dir, f"{i}.png")
            if not os.path.isfile(image):
                raise FileNotFoundError(f"image file not found: {image} (listed id {i!r})")
            if not os.path.isfile(label):
                raise FileNotFoundError(f"image {image} has no label file: expected {label}")
            items.append((i, image, label))
        return items

    def _scan_simple(self) -> list[tuple[str, str, str]]:
        base, stems = self.root, None
        if self.split is not None:
            split_dir = os.path.join(self.root, self.split)
            split_file = os.path.join(self.root, f"{self.split}.txt")
            if os.path.isdir(split_dir):
                base = split_dir
            elif os.path.isfile(split_file):
                stems = _read_ids(split_file)
            else:
                raise FileNotFoundError(
                    f"split {self.split!r} not found: expected the folder {split_dir} "
                    f"or the list {split_file}")
        image_dir = _require_dir(os.path.join(base, "images"), "image")
        label_dir = _require_dir(os.path.join(base, "labels"), "label")
        by_stem = {}
        for f in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_EXTENSIONS:
                by_stem.setdefault(stem, os.path.join(image_dir, f))
        if stems is None:
            stems = sorted(by_stem)
        items = []
        for stem in stems:
            if stem not in by_stem:
                raise FileNotFoundError(
                    f"no image for {stem!r} in {image_dir} (extensions {', '.join(IMAGE_EXTENSIONS)})")
            label = os.path.join(label_dir, f"{stem}.png")
            if not os.path.isfile(label):
                raise FileNotFoundError(f"image {by_stem[stem]} has no label file: expected {label}")
            items.append((stem, by_stem[stem], label))
        return items

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} images")
        stem, image_path, label_path = self.items[index]
        image = read_image(image_path)
        label = read_label(label_path)
        if label.shape != image.shape[1:]:
            raise ValueError(
                f"label file {label_path} is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[2]}")
        bad = ((label >= self.num_classes) | (label < 0)) & (label != self.ignore_index)
        if bad.any():
            values = np.unique(label[bad])
            raise ValueError(
                f"label file {label_path} has value {int(values[0])}"
                + (f" (and {', '.join(map(str, values[1:8].tolist()))})" if values.size > 1 else "")
                + f", outside 0..{self.num_classes - 1} (num_classes={self.num_classes}); only 0..{self.num_classes - 1} and the "
                f"ignore index {self.ignore_index} are allowed")
        return {"image": image, "label": label, "image_id": stem}

    def validate(self) -> None:
        """Read every sample once; raises the first error (bad label value, unreadable file...)."""
        for i in range(len(self)):
            self[i]

    def __repr__(self):
        return (f"FolderDataset(root={self.root!r}, split={self.split!r}, layout={self.layout!r}, "
                f"num_classes={self.num_classes}, size={len(self)})")
