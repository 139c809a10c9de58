"""A synthetic "shapes" data set: squares, circles and triangles on plain or shaded backgrounds.

Small enough to train every model in minutes on a CPU, yet it has what segmentation needs:
several classes, instances of one class that touch or overlap (later objects occlude earlier
ones), objects of many sizes, and backgrounds that are not a single colour.

Each sample is drawn afresh (nothing is cached) from its own random generator, seeded from
``np.random.SeedSequence([seed, split_id, index])``: sample ``i`` is a pure function of
``(seed, split, i)``, and the train, val and test splits never share a generator.

Classes: 0 background, 1 square, 2 circle, 3 triangle (:data:`SHAPES_CLASSES`). A sample is a
dict:

* ``image``: float32 ``(3, H, W)`` in ``[0, 1]`` (apply ``transforms.Normalize`` for a
  pretrained backbone);
* ``label``: int64 ``(H, W)``, the class of the visible object at each pixel, 0 elsewhere;
* ``masks``: bool ``(K, H, W)``, the *visible* part of each instance (instances do not
  overlap in their masks; their union, each with its class, is exactly ``label``);
* ``boxes``: float32 ``(K, 4)``, ``(x1, y1, x2, y2)`` tight around the visible mask, ``x2`` and
  ``y2`` exclusive (width ``x2 - x1`` pixels);
* ``labels``: int64 ``(K,)`` classes in drawing order (back to front);
* ``image_id``: the index.

Instances whose visible area falls below ``min_area`` pixels after occlusion are dropped and
their leftover pixels show the background, so image, label and instances always agree. The
front object is never occluded, so ``K >= 1``.
"""

from __future__ import annotations

import numbers

import numpy as np
from PIL import Image, ImageDraw

from npseg.data.transforms import masks_to_boxes

__all__ = ["SHAPES_CLASSES", "ShapesDataset", "draw_shapes_sample"]

SHAPES_CLASSES = ("background", "square", "circle", "triangle")
_SPLITS = {"train": 0, "val": 1, "test": 2}


def _background(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float background: a plain colour or a linear gradient, plus faint noise.

    Also returns the colours it is made of (to keep objects away from them).
    """
    c0 = rng.uniform(0.0, 1.0, 3)
    if rng.random() < 0.5:  # plain
        colours = c0[None]
        bg = np.broadcast_to(c0.astype(np.float32), (h, w, 3))
    else:  # gradient from c0 to c1 along a random direction
        c1 = np.clip(c0 + rng.uniform(-0.35, 0.35, 3), 0, 1)
        colours = np.stack([c0, c1])
        theta = rng.uniform(0, 2 * np.pi)
        t = (np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(theta))
             + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(theta)))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        bg = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)
    return bg, colours


def _pick_colour(rng, avoid: np.ndarray) -> np.ndarray:
    """The one of 8 random colours farthest (min L2 distance) from the colours in ``avoid``."""
    cand = rng.uniform(0.0, 1.0, (8, 3))
    dist = np.linalg.norm(cand[:, None, :] - avoid[None, :, :], axis=2).min(axis=1)
    return cand[np.argmax(dist)]


def _shape_mask(kind: int, x: float, y: float, s: float, angle: float, h: int, w: int) -> np.ndarray:
    """bool (H, W) mask of one shape whose bounding square has corner (x, y) and side s."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    if kind == 1:  # square (axis aligned)
        draw.rectangle([x, y, x + s - 1, y + s - 1], fill=1)
    elif kind == 2:  # circle
        draw.ellipse([x, y, x + s - 1, y + s - 1], fill=1)
    else:  # triangle: equilateral, inscribed in the circle of the bounding square, rotated
        r = (s - 1) / 2
        cx, cy = x + r, y + r
        a = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        draw.polygon(list(zip(cx + r * np.cos(a), cy + r * np.sin(a))), fill=1)
    return np.asarray(img, dtype=bool)


def draw_shapes_sample(rng: np.random.Generator, image_size=(128, 128), max_instances: int = 4,
                       min_area: int = 10, size_range=(0.15, 0.45), noise: float = 0.03) -> dict:
    """Draw one sample with generator ``rng`` (see the module docstring for the fields).

    ``size_range``: object side as a fraction of ``min(H, W)``; ``noise``: the largest standard
    deviation of the (uniform) pixel noise (each image draws its own in ``[0, noise]``).
    """
    h, w = image_size
    bg, bg_colours = _background(rng, h, w)
    n = int(rng.integers(1, max_instances + 1))
    kinds = rng.integers(1, len(SHAPES_CLASSES), size=n)
    short = min(h, w)
    sizes = np.maximum(np.round(rng.uniform(*size_range, size=n) * short), 3).astype(int)
    sizes = np.minimum(sizes, short)
    xs = rng.uniform(0, 1, n) * (w - sizes)
    ys = rng.uniform(0, 1, n) * (h - sizes)
    angles = rng.uniform(0, 2 * np.pi, n)
    colours = np.zeros((n, 3))
    for k in range(n):
        colours[k] = _pick_colour(rng, np.concatenate([bg_colours, colours[:k]]))
    masks = np.stack([_shape_mask(int(kinds[k]), xs[k], ys[k], float(sizes[k]), angles[k], h, w)
                      for k in range(n)])

    # occlusion: instance k is visible where no later instance covers it
    covered_after = np.zeros((n, h, w), dtype=bool)
    if n > 1:
        covered_after[:-1] = np.logical_or.accumulate(masks[::-1], axis=0)[::-1][1:]
    visible = masks & ~covered_after
    keep = visible.sum(axis=(1, 2)) >= min_area
    visible, kinds, colours = visible[keep], kinds[keep], colours[keep]

    # paint: each pixel takes the colour of the visible instance there, else the background
    k_idx, y_idx, x_idx = np.nonzero(visible)
    image = np.array(bg, dtype=np.float32)
    image[y_idx, x_idx] = colours[k_idx]
    # faint pixel noise, uniform in [-a, a] with a = sqrt(3) sigma (standard deviation sigma)
    a = np.float32(np.sqrt(3.0) * rng.uniform(0, noise))
    image += (rng.random((h, w, 3), dtype=np.float32) - np.float32(0.5)) * (2 * a)
    image = np.clip(image, 0.0, 1.0, out=image).transpose(2, 0, 1)

    labels = kinds.astype(np.int64)
    label = np.zeros((h, w), dtype=np.int64)
    label[y_idx, x_idx] = labels[k_idx]
    return {
        "image": np.ascontiguousarray(image),
        "label": label,
        "masks": visible,
        "boxes": masks_to_boxes(visible),
        "labels": labels,
    }


class ShapesDataset:
    """``len(ds)`` synthetic samples of one split; ``ds[i]`` draws sample ``i`` (see module doc).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of samples.
        image_size: int or ``(H, W)``.
        seed: the data set seed; together with the split and the index it fixes each sample.
        max_instances: objects per image are drawn uniformly from ``1..max_instances``.
        min_area: instances with fewer visible pixels are dropped.
    """

    num_classes = len(SHAPES_CLASSES)
    class_names = SHAPES_CLASSES

    def __init__(self, split: str = "train", size: int = 1000, image_size=128, seed: int = 0,
                 max_instances: int = 4, min_area: int = 10):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}")
        for name, value, low in (("size", size, 0), ("seed", seed, 0),
                                 ("max_instances", max_instances, 1), ("min_area", min_area, 1)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if isinstance(image_size, numbers.Integral):
            image_size = (image_size, image_size)
        if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
                or not all(isinstance(v, numbers.Integral) for v in image_size)
                or min(image_size) < 8):
            raise ValueError(f"image_size must be an int or an (H, W) pair, each >= 8, got {image_size!r}")
        self.split = split
        self.size = int(size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)
        self.max_instances = int(max_instances)
        self.min_area = int(min_area)

    def __len__(self) -> int:
        return self.size

    def rng(self, index: int) -> np.random.Generator:
        """The generator that draws sample ``index``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, _SPLITS[self.split], index]))

    def __getitem__(self, index) -> dict:
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a data set of {self.size} samples")
        index = int(index) % self.size
        sample = draw_shapes_sample(self.rng(index), self.image_size, self.max_instances, self.min_area)
        sample["image_id"] = index
        return sample

    def __repr__(self):
        return (f"ShapesDataset(split={self.split!r}, size={self.size}, image_size={self.image_size}, "
                f"seed={self.seed})")
