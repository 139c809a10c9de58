"""Composable transforms on samples.

A sample is a dict (see :mod:`npseg.data`): ``image`` float32 ``(C, H, W)``, optionally a
``label`` int64 ``(H, W)`` semantic map and the instances ``masks`` bool ``(K, H, W)``,
``boxes`` float32 ``(K, 4)`` as ``(x1, y1, x2, y2)`` (x2, y2 exclusive), ``labels`` int64
``(K,)`` (and ``iscrowd`` bool ``(K,)`` where a data set gives it). Other keys pass through.

A transform is called as ``t(sample, rng)`` and returns a new dict; it never changes its input.
Randomness comes only from ``rng``, a ``numpy.random.Generator`` given at call time, and every
random transform draws the same count of numbers whatever the sample, so a training loop that
seeds its generators from (seed, epoch, index) replays the same epochs.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "INSTANCE_KEYS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "masks_to_boxes",
    "resize_image",
    "resize_nearest",
    "select_instances",
    "Compose",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "Resize",
    "Normalize",
]

#: keys that hold one entry per instance (filtered together when instances are dropped)
INSTANCE_KEYS = ("masks", "boxes", "labels", "iscrowd")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def masks_to_boxes(masks) -> np.ndarray:
    """Tight boxes around masks: ``bool (K, H, W)`` -> float32 ``(K, 4)`` ``(x1, y1, x2, y2)``.

    ``x1`` is the first column holding a mask pixel, ``x2`` one past the last (so the box
    width ``x2 - x1`` counts pixels); the same for rows. An empty mask gets ``(0, 0, 0, 0)``.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {masks.shape}")
    k, h, w = masks.shape
    cols = masks.any(axis=1)  # (K, W): columns holding a pixel
    rows = masks.any(axis=2)  # (K, H)
    x1 = cols.argmax(axis=1)
    x2 = w - cols[:, ::-1].argmax(axis=1)
    y1 = rows.argmax(axis=1)
    y2 = h - rows[:, ::-1].argmax(axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    boxes[~cols.any(axis=1)] = 0
    return boxes


def _linear_taps(n_out: int, n_in: int):
    """Source indices and weights of 1-D linear interpolation, half-pixel centres.

    Output pixel ``i`` samples the input at ``s = (i + 0.5) * n_in / n_out - 0.5`` (clamped to
    ``[0, n_in - 1]``): ``out[i] = (1 - f) * in[floor(s)] + f * in[floor(s) + 1]``, ``f = s - floor(s)``
    (PyTorch's ``align_corners=False``).
    """
    s = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    s = np.clip(s, 0, n_in - 1)
    i0 = np.floor(s).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (s - i0).astype(np.float32)
    return i0, i1, f


def resize_image(image, size) -> np.ndarray:
    """Bilinear resize of ``(C, H, W)`` to ``size = (h, w)`` (half-pixel centres, no antialias)."""
    h, w = size
    c, h_in, w_in = image.shape
    y0, y1, fy = _linear_taps(h, h_in)
    x0, x1, fx = _linear_taps(w, w_in)
    rows = image[:, y0, :] * (1 - fy)[:, None] + image[:, y1, :] * fy[:, None]
    out = rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx
    return out.astype(image.dtype, copy=False)


def resize_nearest(array, size) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes to ``size = (h, w)``.

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * n_in / n_out)`` (the input pixel
    under the output pixel's centre), for label maps and masks.
    """
    h, w = size
    h_in, w_in = array.shape[-2:]
    yi = np.minimum(((np.arange(h) + 0.5) * (h_in / h)).astype(np.int64), h_in - 1)
    xi = np.minimum(((np.arange(w) + 0.5) * (w_in / w)).astype(np.int64), w_in - 1)
    return array[..., yi[:, None], xi[None, :]]


def _size_pair(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"{name} must be an int or an (h, w) pair of ints, got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def _check_rng(rng, who):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{who} needs rng, a numpy.random.Generator passed at call time "
            f"(t(sample, rng)), got {type(rng).__name__}")


def _check_sample(sample, who):
    if not isinstance(sample, dict) or "image" not in sample:
        raise TypeError(f"{who} expects a sample dict with an 'image', got {type(sample).__name__}")
    image = sample["image"]
    if getattr(image, "ndim", None) != 3:
        raise ValueError(f"{who}: sample['image'] must be (C, H, W), got shape {np.shape(image)}")


def select_instances(sample: dict, keep) -> dict:
    """A copy of ``sample`` with only the instances where ``keep`` (bool ``(K,)``) is true."""
    out = dict(sample)
    for key in INSTANCE_KEYS:
        if key in out:
            out[key] = out[key][keep]
    return out


class Compose:
    """Apply transforms in order: ``Compose([t1, t2])(sample, rng) == t2(t1(sample, rng), rng)``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose takes callables, got {type(t).__name__}")

    def __call__(self, sample, rng=None):
        for t in self.transforms:
            sample = t(sample, rng)
        return sample

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``: image, label, masks and boxes together.

    A box ``(x1, y1, x2, y2)`` becomes ``(W - x2, y1, W - x1, y2)`` (exclusive ``x2``, so a box
    tight around a mask stays tight around the flipped mask). Draws one uniform number per call.
    """

    def __init__(self, p: float = 0.5):
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, sample, rng=None):
        _check_rng(rng, "RandomHorizontalFlip")
        _check_sample(sample, "RandomHorizontalFlip")
        if not rng.random() < self.p:
            return dict(sample)
        out = dict(sample)
        w = sample["image"].shape[-1]
        out["image"] = np.ascontiguousarray(sample["image"][..., ::-1])
        if "label" in sample:
            out["label"] = np.ascontiguousarray(sample["label"][..., ::-1])
        if "masks" in sample:
            out["masks"] = np.ascontiguousarray(sample["masks"][..., ::-1])
        if "boxes" in sample:
            b = np.asarray(sample["boxes"])
            out["boxes"] = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1).astype(b.dtype)
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomScaleCrop:
    """Rescale by a random factor, then pad (bottom/right) and crop at random to ``crop_size``.

    1. ``s ~ U(scales[0], scales[1])``; the sample is resized to ``(round(H s), round(W s))``:
       bilinear for the image, nearest for ``label`` and ``masks``.
    2. Where the result is smaller than ``crop_size`` it is padded at the bottom/right: the
       image with ``fill``, the label with ``ignore_index`` (no loss there), masks with False.
    3. A ``crop_size`` window at a uniformly random offset is cut out.

    Instances: with masks, boxes are recomputed tight around the transformed masks and the
    instances whose mask vanished (fewer than ``min_area`` pixels left) are dropped; without
    masks, boxes are scaled, shifted, clipped to the crop, and dropped when empty.
    Draws three numbers per call (scale, y offset, x offset).
    """

    def __init__(self, scales=(0.5, 2.0), crop_size=256, ignore_index: int = 255,
                 fill: float = 0.0, min_area: int = 1):
        if (not isinstance(scales, (tuple, list)) or len(scales) != 2
                or not all(isinstance(s, numbers.Real) for s in scales)
                or not 0 < scales[0] <= scales[1]):
            raise ValueError(f"scales must be a (low, high) pair with 0 < low <= high, got {scales!r}")
        self.scales = (float(scales[0]), float(scales[1]))
        self.crop_size = _size_pair(crop_size, "crop_size")
        self.ignore_index = int(ignore_index)
        self.fill = float(fill)
        self.min_area = int(min_area)

    def __call__(self, sample, rng=None):
        _check_rng(rng, "RandomScaleCrop")
        _check_sample(sample, "RandomScaleCrop")
        s = rng.uniform(self.scales[0], self.scales[1])
        u_y, u_x = rng.random(2)
        image = sample["image"]
        h, w = image.shape[1:]
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        ch, cw = self.crop_size
        ph, pw = max(nh, ch), max(nw, cw)  # padded size
        y0 = min(int(u_y * (ph - ch + 1)), ph - ch)
        x0 = min(int(u_x * (pw - cw + 1)), pw - cw)

        def place(resized, fill, dtype):
            """Pad ``resized`` (..., nh, nw) to (..., ph, pw) with ``fill``, crop the window."""
            canvas = np.full(resized.shape[:-2] + (ph, pw), fill, dtype=dtype)
            canvas[..., :nh, :nw] = resized
            return np.ascontiguousarray(canvas[..., y0:y0 + ch, x0:x0 + cw])

        out = dict(sample)
        out["image"] = place(resize_image(image, (nh, nw)), self.fill, image.dtype)
        if "label" in sample:
            label = sample["label"]
            out["label"] = place(resize_nearest(label, (nh, nw)), self.ignore_index, label.dtype)
        if "masks" in sample:
            masks = place(resize_nearest(sample["masks"], (nh, nw)), False, bool)
            out["masks"] = masks
            out["boxes"] = masks_to_boxes(masks)
            keep = masks.sum(axis=(1, 2)) >= self.min_area
            out = select_instances(out, keep)
        elif "boxes" in sample:
            b = np.asarray(sample["boxes"], dtype=np.float32)
            sx, sy = nw / w, nh / h
            b = b * np.array([sx, sy, sx, sy], np.float32) - np.array([x0, y0, x0, y0], np.float32)
            b = np.clip(b, 0, np.array([cw, ch, cw, ch], np.float32))
            out["boxes"] = b
            out = select_instances(out, (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
        return out

    def __repr__(self):
        return (f"RandomScaleCrop(scales={self.scales}, crop_size={self.crop_size}, "
                f"ignore_index={self.ignore_index})")


class Resize:
    """Deterministic resize to ``size = (h, w)`` (bilinear image, nearest label/masks).

    Boxes are recomputed from the masks when there are masks, else scaled. For evaluating on
    images of differing sizes with a fixed input size.
    """

    def __init__(self, size):
        self.size = _size_pair(size, "size")

    def __call__(self, sample, rng=None):
        _check_sample(sample, "Resize")
        h, w = sample["image"].shape[1:]
        out = dict(sample)
        out["image"] = resize_image(sample["image"], self.size)
        if "label" in sample:
            out["label"] = resize_nearest(sample["label"], self.size)
        if "masks" in sample:
            out["masks"] = resize_nearest(sample["masks"], self.size)
            out["boxes"] = masks_to_boxes(out["masks"])
            out = select_instances(out, out["masks"].any(axis=(1, 2)))
        elif "boxes" in sample:
            sy, sx = self.size[0] / h, self.size[1] / w
            out["boxes"] = (np.asarray(sample["boxes"], np.float32)
                            * np.array([sx, sy, sx, sy], np.float32))
        return out

    def __repr__(self):
        return f"Resize(size={self.size})"


class Normalize:
    """``image = (image - mean[c]) / std[c]`` per channel (float32). Put it last in a pipeline.

    Defaults are the ImageNet statistics of images in ``[0, 1]`` (what pretrained backbones
    expect).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean and std must have the same length, got {self.mean.size} and {self.std.size}")
        if not np.all(self.std > 0):
            raise ValueError(f"std must be positive, got {self.std.tolist()}")

    def __call__(self, sample, rng=None):
        _check_sample(sample, "Normalize")
        image = sample["image"]
        if image.shape[0] != self.mean.size:
            raise ValueError(
                f"Normalize has {self.mean.size} channel statistics but the image has "
                f"{image.shape[0]} channels")
        out = dict(sample)
        out["image"] = ((image - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)
        return out

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
