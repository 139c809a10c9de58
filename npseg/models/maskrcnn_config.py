"""``MaskRCNNConfig``: every size, threshold and weight of Mask R-CNN in one explicit dataclass.

The defaults are Detectron2's (``mask_rcnn_R_50_FPN``); :meth:`MaskRCNNConfig.shapes` is a preset
small enough to train from scratch on a CPU on the 128 x 128 shapes images. ``to_dict()`` gives
plain JSON values (tuples become lists) and ``from_dict()`` reads them back, so a checkpoint can
store the config and rebuild the model.

Choices where Detectron2 and torchvision differ (documented here once):

* box head deltas are **class specific without a background slot**: ``4 * num_classes`` outputs,
  columns ``4 (k - 1) .. 4 k - 1`` for class ``k`` in ``1..num_classes`` (Detectron2);
* both smooth L1 losses default to ``beta = 0`` (plain L1, Detectron2's default);
* the RPN losses are divided by the number of anchors actually sampled in the batch (Detectron2
  divides by ``batch_size_per_image * num_images``, the same number whenever an image has enough
  anchors, which 128 x 128 images always have); the box loss by the number of sampled RoIs;
* the class scores have the background in column 0 (labels ``1..num_classes`` are objects).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field

__all__ = ["MaskRCNNConfig", "LOSS_NAMES"]

#: the keys of the training losses, in the order the model returns them
LOSS_NAMES = ("loss_rpn_objectness", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask")

_TUPLE_FIELDS = ("backbone_blocks", "pixel_mean", "pixel_std", "anchor_sizes", "anchor_strides",
                 "anchor_aspect_ratios", "box_reg_weights")


def _default_loss_weights() -> dict:
    return {name: 1.0 for name in LOSS_NAMES}


@dataclass
class MaskRCNNConfig:
    """Mask R-CNN hyper-parameters (Detectron2 defaults). See the module docstring."""

    # --- backbone (npseg.models.ResNet) and input normalisation -----------------------------
    backbone_depth: int = 50
    backbone_width: float = 1.0
    backbone_blocks: tuple | None = None         # blocks per stage; None: the depth's own
    #: images in [0, 1] are normalised inside the model: (x - mean) / std per channel
    pixel_mean: tuple = (0.485, 0.456, 0.406)
    pixel_std: tuple = (0.229, 0.224, 0.225)
    # --- FPN ----------------------------------------------------------------------------------
    fpn_channels: int = 256
    # --- anchors and RPN ----------------------------------------------------------------------
    anchor_sizes: tuple = (32, 64, 128, 256, 512)    # one size per level P2..P6
    anchor_strides: tuple = (4, 8, 16, 32, 64)
    anchor_aspect_ratios: tuple = (0.5, 1.0, 2.0)    # h / w
    rpn_fg_iou_threshold: float = 0.7
    rpn_bg_iou_threshold: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_nms_threshold: float = 0.7
    rpn_pre_nms_topk_train: int = 2000
    rpn_post_nms_topk_train: int = 1000
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_min_size: float = 0.0
    rpn_smooth_l1_beta: float = 0.0
    # --- RoI heads: sampling and box coding ---------------------------------------------------
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_iou_threshold: float = 0.5
    box_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    # --- RoIAlign over the FPN levels P2..P5 --------------------------------------------------
    box_pooler_resolution: int = 7
    pooler_sampling_ratio: int = 0               # 0: adaptive, ceil(roi size / bins)
    pooler_canonical_size: float = 224.0
    pooler_canonical_level: int = 4
    # --- box head -----------------------------------------------------------------------------
    box_fc_dim: int = 1024
    box_smooth_l1_beta: float = 0.0
    # --- mask head ----------------------------------------------------------------------------
    mask_size: int = 28                           # predicted mask side; RoIAlign gives half
    mask_conv_dim: int = 256
    mask_num_conv: int = 4
    # --- inference ----------------------------------------------------------------------------
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5
    # --- losses -------------------------------------------------------------------------------
    loss_weights: dict = field(default_factory=_default_loss_weights)

    # ------------------------------------------------------------------------------------------
    def __post_init__(self):
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    def validate(self) -> "MaskRCNNConfig":
        """Raise a ``ValueError``/``TypeError`` naming the first bad field."""

        def integer(name, minimum):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")

        def number(name, low=None, high=None, low_open=False):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
            if (low is not None and (v < low or (low_open and v == low))) or \
                    (high is not None and v > high):
                raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}], "
                                 f"got {v!r}")

        def numbers_tuple(name, length=None, positive=True):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not v or (length is not None and len(v) != length):
                want = f"{length} numbers" if length else "a non-empty tuple of numbers"
                raise ValueError(f"{name} must be {want}, got {v!r}")
            for x in v:
                if not isinstance(x, numbers.Real) or isinstance(x, bool) or \
                        (positive and not x > 0):
                    raise ValueError(f"{name} must hold positive numbers, got {v!r}")

        if self.backbone_depth not in (18, 34, 50, 101):
            raise ValueError(f"backbone_depth must be 18, 34, 50 or 101, "
                             f"got {self.backbone_depth!r}")
        number("backbone_width", 0, None, low_open=True)
        if self.backbone_blocks is not None:
            numbers_tuple("backbone_blocks", 4)
            if not all(isinstance(b, numbers.Integral) for b in self.backbone_blocks):
                raise ValueError(f"backbone_blocks must be 4 ints, got {self.backbone_blocks!r}")
        numbers_tuple("pixel_mean", 3, positive=False)
        numbers_tuple("pixel_std", 3)
        integer("fpn_channels", 1)
        numbers_tuple("anchor_sizes", 5)
        numbers_tuple("anchor_strides", 5)
        numbers_tuple("anchor_aspect_ratios")
        number("rpn_fg_iou_threshold", 0, 1)
        number("rpn_bg_iou_threshold", 0, self.rpn_fg_iou_threshold)
        integer("rpn_batch_size_per_image", 1)
        number("rpn_positive_fraction", 0, 1)
        number("rpn_nms_threshold", 0, 1)
        for name in ("rpn_pre_nms_topk_train", "rpn_post_nms_topk_train",
                     "rpn_pre_nms_topk_test", "rpn_post_nms_topk_test"):
            integer(name, 1)
        number("rpn_min_size", 0)
        number("rpn_smooth_l1_beta", 0)
        integer("roi_batch_size_per_image", 1)
        number("roi_positive_fraction", 0, 1)
        number("roi_iou_threshold", 0, 1)
        numbers_tuple("box_reg_weights", 4)
        integer("box_pooler_resolution", 1)
        integer("pooler_sampling_ratio", 0)
        number("pooler_canonical_size", 0, None, low_open=True)
        integer("pooler_canonical_level", 2)
        integer("box_fc_dim", 1)
        number("box_smooth_l1_beta", 0)
        integer("mask_size", 2)
        if self.mask_size % 2:
            raise ValueError(f"mask_size must be even (RoIAlign gives mask_size / 2, the "
                             f"transposed conv doubles it), got {self.mask_size}")
        integer("mask_conv_dim", 1)
        integer("mask_num_conv", 0)
        number("score_threshold", 0, 1)
        number("nms_threshold", 0, 1)
        integer("detections_per_image", 1)
        number("mask_threshold", 0, 1)
        if not isinstance(self.loss_weights, dict) or set(self.loss_weights) != set(LOSS_NAMES):
            raise ValueError(f"loss_weights must be a dict with exactly the keys "
                             f"{', '.join(LOSS_NAMES)}, got {self.loss_weights!r}")
        for key, w in self.loss_weights.items():
            if not isinstance(w, numbers.Real) or isinstance(w, bool) or w < 0:
                raise ValueError(f"loss_weights[{key!r}] must be a number >= 0, got {w!r}")
        return self

    # --- presets ----------------------------------------------------------------------------
    @classmethod
    def default(cls, **overrides) -> "MaskRCNNConfig":
        """Detectron2's Mask R-CNN R50-FPN (the dataclass defaults), with ``overrides``."""
        return cls(**overrides)

    @classmethod
    def shapes(cls, **overrides) -> "MaskRCNNConfig":
        """A small Mask R-CNN that trains from scratch on a CPU on 128 x 128 shapes images.

        ResNet-18 layout (basic blocks) at half width with one block per stage (C2..C5 of
        32/64/128/256 channels), FPN and mask head of 64 channels, FC layers of 256, anchors
        8..128 for objects of 19..58 pixels, 500/250 proposals in training and 250/100 at test
        time, 128 RoIs per image.
        """
        preset = dict(
            backbone_depth=18, backbone_width=0.5, backbone_blocks=(1, 1, 1, 1),
            fpn_channels=64,
            anchor_sizes=(8, 16, 32, 64, 128),
            rpn_pre_nms_topk_train=500, rpn_post_nms_topk_train=250,
            rpn_pre_nms_topk_test=250, rpn_post_nms_topk_test=100,
            roi_batch_size_per_image=128,
            box_fc_dim=256,
            mask_conv_dim=64,
        )
        preset.update(overrides)
        return cls(**preset)

    @classmethod
    def tiny(cls, **overrides) -> "MaskRCNNConfig":
        """The smallest sensible model (tests, gradient checks): 32 x 32 images and up."""
        preset = dict(
            backbone_depth=18, backbone_width=0.125, backbone_blocks=(1, 1, 1, 1),
            fpn_channels=8,
            anchor_sizes=(4, 8, 16, 32, 64),
            rpn_batch_size_per_image=64,
            rpn_pre_nms_topk_train=100, rpn_post_nms_topk_train=50,
            rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50,
            roi_batch_size_per_image=32,
            box_pooler_resolution=4, mask_size=8,
            box_fc_dim=16, mask_conv_dim=8, mask_num_conv=2,
            detections_per_image=20,
        )
        preset.update(overrides)
        return cls(**preset)

    # --- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON values: tuples as lists, the loss weights as a dict of floats."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = {k: float(v) for k, v in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "MaskRCNNConfig":
        """The inverse of :meth:`to_dict` (also accepts a JSON string). Unknown keys are an
        error; missing keys take their defaults."""
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict (from to_dict), got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MaskRCNNConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "MaskRCNNConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
