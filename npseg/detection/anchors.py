"""Anchors: the fixed reference boxes that the RPN scores and refines, per FPN level.

Conventions (torchvision's ``AnchorGenerator``; Detectron2 agrees for one size per level):

* Base ("cell") anchors are centred at 0. For a size ``s`` and an aspect ratio ``r = h / w``,
  ``w = s / sqrt(r)`` and ``h = s * sqrt(r)``, so the area is ``s**2`` and ``h / w = r``. The box
  is ``(-w/2, -h/2, w/2, h/2)``, **rounded to integers** (``round half to even``) as torchvision
  does; ``round_base=False`` keeps the exact values (Detectron2). Order within a location:
  aspect-ratio-major, size-minor (``A = len(aspect_ratios) * len(sizes)`` anchors).
* They are shifted to every cell of a level's ``(H, W)`` feature map: the centre of cell
  ``(i, j)`` is ``(x, y) = ((j + offset) * stride, (i + offset) * stride)``, ``offset = 0`` by
  default (torchvision; Detectron2's ``offset`` option).
* A level's anchors are an ``(H * W * A, 4)`` array ordered ``(y, x, anchor)``: row
  ``(i * W + j) * A + a``. This is the order of an RPN head output reshaped
  ``(N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, H*W*A, 4)`` (and the scores
  ``(N, A, H, W) -> (N, H, W, A) -> (N, H*W*A)``); see ``proposals.flatten_rpn_outputs``.

Defaults: sizes ``(32, 64, 128, 256, 512)`` on strides ``(4, 8, 16, 32, 64)`` (P2-P6), aspect
ratios ``(0.5, 1, 2)``: 3 anchors per location, 15 shapes in all.
"""

from __future__ import annotations

import numbers

import numpy as np

from npseg._device import array_module
from npseg.ops._checks import check_bool, check_number, pair

__all__ = [
    "AnchorGenerator",
    "base_anchors",
    "grid_anchors",
    "generate_anchors",
    "DEFAULT_SIZES",
    "DEFAULT_STRIDES",
    "DEFAULT_ASPECT_RATIOS",
]

DEFAULT_SIZES = (32, 64, 128, 256, 512)
DEFAULT_STRIDES = (4, 8, 16, 32, 64)
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _positive_numbers(values, name: str) -> tuple:
    """A number or a non-empty sequence of positive numbers -> a tuple of floats."""
    if isinstance(values, (numbers.Real, np.number)) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them, "
                         f"got {values!r}")
    return tuple(check_number(v, name, low=0.0, low_open=True) for v in values)


def base_anchors(sizes, aspect_ratios, round_base: bool = True) -> np.ndarray:
    """The ``(A, 4)`` float64 anchors of one location, centred at 0.

    For every aspect ratio ``r`` (outer) and size ``s`` (inner):
    ``w = s / sqrt(r)``, ``h = s * sqrt(r)``, box ``(-w/2, -h/2, w/2, h/2)``, rounded to
    integers when ``round_base`` (torchvision). ``A = len(aspect_ratios) * len(sizes)``.
    """
    sizes = np.asarray(_positive_numbers(sizes, "sizes"), dtype=np.float64)
    ratios = np.asarray(_positive_numbers(aspect_ratios, "aspect_ratios"), dtype=np.float64)
    check_bool(round_base, "round_base")
    h_ratios = np.sqrt(ratios)
    w_ratios = 1.0 / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)   # (A,), ratio-major
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    anchors = np.stack([-ws, -hs, ws, hs], axis=1) / 2.0
    return np.round(anchors) if round_base else anchors


def grid_anchors(cell_anchors, feature_size, stride, offset: float = 0.0, xp=np,
                 dtype=np.float32):
    """Shift the ``(A, 4)`` ``cell_anchors`` to every cell of an ``(H, W)`` feature map.

    ``stride`` is an int or an ``(sy, sx)`` pair (image pixels per feature cell). Returns an
    ``(H * W * A, 4)`` array of ``xp`` (NumPy or CuPy) and ``dtype``, ordered ``(y, x, anchor)``;
    the anchor ``a`` of cell ``(i, j)`` is ``cell_anchors[a] + (x, y, x, y)`` with
    ``x = (j + offset) * sx``, ``y = (i + offset) * sy``.
    """
    height, width = pair(feature_size, "feature_size", minimum=0)
    sy, sx = pair(stride, "stride", minimum=1)
    offset = check_number(offset, "offset", low=0.0, high=1.0, high_open=True)
    cell = xp.asarray(cell_anchors, dtype=xp.float64)
    if cell.ndim != 2 or cell.shape[1] != 4:
        raise ValueError(f"cell_anchors must have shape (A, 4), got {tuple(cell.shape)}")
    shift_x = (xp.arange(width, dtype=np.float64) + offset) * sx        # (W,)
    shift_y = (xp.arange(height, dtype=np.float64) + offset) * sy       # (H,)
    grid_y, grid_x = xp.meshgrid(shift_y, shift_x, indexing="ij")       # (H, W) each
    shifts = xp.stack([grid_x, grid_y, grid_x, grid_y], axis=-1)         # (H, W, 4)
    anchors = shifts[:, :, None, :] + cell[None, None, :, :]             # (H, W, A, 4)
    return anchors.reshape(-1, 4).astype(dtype)


class AnchorGenerator:
    """Anchors for every FPN level.

    ``sizes``: one entry per level, a number or a tuple of numbers (several sizes on one level).
    ``aspect_ratios``: ``h / w`` values shared by every level, or one tuple per level.
    ``strides``: one int (or ``(sy, sx)``) per level. ``offset``: cell-centre offset in
    ``[0, 1)`` (0: torchvision). ``round_base``: round the cell anchors (torchvision) or not.

    ``generator(feature_sizes, like=None, dtype=None)`` returns one ``(H_l * W_l * A_l, 4)``
    array per level; ``like`` (an array) picks the array module (NumPy/CuPy) and default dtype.
    """

    def __init__(self, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS,
                 strides=DEFAULT_STRIDES, offset: float = 0.0, round_base: bool = True):
        if not isinstance(sizes, (tuple, list)) or not sizes:
            raise ValueError(f"sizes must be a non-empty sequence (one entry per level), "
                             f"got {sizes!r}")
        if not isinstance(strides, (tuple, list)) or len(strides) != len(sizes):
            raise ValueError(f"strides must have one entry per level ({len(sizes)}), "
                             f"got {strides!r}")
        per_level_ratios = (isinstance(aspect_ratios, (tuple, list)) and aspect_ratios
                            and all(isinstance(r, (tuple, list)) for r in aspect_ratios))
        if per_level_ratios:
            if len(aspect_ratios) != len(sizes):
                raise ValueError(f"aspect_ratios must have one tuple per level ({len(sizes)}) or "
                                 f"be shared by all levels, got {aspect_ratios!r}")
            ratios = [tuple(r) for r in aspect_ratios]
        else:
            ratios = [aspect_ratios] * len(sizes)
        self.sizes = tuple(_positive_numbers(s, "sizes") for s in sizes)
        self.aspect_ratios = tuple(_positive_numbers(r, "aspect_ratios") for r in ratios)
        self.strides = tuple(pair(s, "strides", minimum=1) for s in strides)
        self.offset = check_number(offset, "offset", low=0.0, high=1.0, high_open=True)
        self.round_base = check_bool(round_base, "round_base")
        self.cell_anchors = [base_anchors(s, r, self.round_base)
                             for s, r in zip(self.sizes, self.aspect_ratios)]

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def num_anchors_per_location(self) -> list[int]:
        """``A_l`` for every level (what the RPN head must predict per cell)."""
        return [len(c) for c in self.cell_anchors]

    def __repr__(self):
        return (f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, "
                f"strides={self.strides}, offset={self.offset}, round_base={self.round_base})")

    def __call__(self, feature_sizes, like=None, dtype=None):
        if not isinstance(feature_sizes, (tuple, list)) or len(feature_sizes) != self.num_levels:
            raise ValueError(f"feature_sizes must have one (H, W) per level ({self.num_levels}), "
                             f"got {feature_sizes!r}")
        xp = np if like is None else array_module(like)
        if dtype is None:
            dtype = like.dtype if like is not None else np.float32
        return [grid_anchors(cell, size, stride, self.offset, xp=xp, dtype=dtype)
                for cell, size, stride in zip(self.cell_anchors, feature_sizes, self.strides)]


def generate_anchors(feature_sizes, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS,
                     strides=DEFAULT_STRIDES, offset: float = 0.0, round_base: bool = True,
                     like=None, dtype=None):
    """All levels' anchors in one call: ``AnchorGenerator(...)(feature_sizes, like, dtype)``."""
    generator = AnchorGenerator(sizes, aspect_ratios, strides, offset, round_base)
    return generator(feature_sizes, like=like, dtype=dtype)
